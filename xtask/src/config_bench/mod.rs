//! `cargo xtask bench config`: the config service (`distlab-config`, three nodes) against a three-member
//! etcd cluster (Debian `etcd-server`), both started by the bench on loopback ports, in one run. It needs
//! none of the stack.
//!
//! Per round and per system (the order alternates between rounds):
//! 1. **writes**: `clients` closed-loop HTTP clients put the same small value (18 bytes) on `keys` keys for
//!    `seconds`;
//! 2. **linearizable reads**: the same clients read those keys — distlab with `consistency=linearizable`
//!    (ReadIndex on the leader), etcd with a default range (not `serializable`: ReadIndex too).
//!
//! Requests/s and the p50/p99 of one request are measured at the client; medians over the rounds are
//! printed with distlab/etcd. Then **failover**, `kills` times per system: SIGKILL the leader and time
//! until a PUT at a survivor succeeds (a probe every 20 ms to the survivors in turn, each with a 500 ms
//! timeout); the member is restarted and a leader agreed on before the next kill.
//!
//! Why it is fair: both systems run three members on the same machine with their default durability (a
//! write is acknowledged once it is fsynced on a majority; never a relaxed setting) and default timing;
//! both are driven over HTTP/1.1 + JSON — etcd through its JSON gateway — by one pooled `reqwest::Client`
//! per system, built the same way, at the same concurrency; every request goes to the leader of both (a
//! follower would forward it, in both). Only answered successes count; errors are counted and printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use distlab_testkit::raft_cluster::RaftCluster;

use crate::stack::{Stack, block_on};

mod client;
mod etcd;
mod failover;
mod load;

use client::{Op, System, Target, exchange};
use etcd::EtcdCluster;
use failover::{Cluster, failover, print_failover};
use load::{Measured, closed_loop, print_throughput, warm_up};

#[derive(Debug, Clone, clap::Args)]
pub struct ConfigBenchArgs {
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent closed-loop clients, the same for both systems.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Rounds; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leader kills per system for the failover time.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Distinct keys the writes spread over (and the reads read).
    #[arg(long, default_value_t = 100)]
    keys: usize,
}

const ETCD: &str = "/usr/bin/etcd";
/// The value written: a 16-character JSON string, 18 bytes with its quotes, stored as these bytes by both.
const VALUE: &str = "0123456789abcdef";
/// distlab's timing, passed explicitly (they are the service's defaults).
const DISTLAB_ENV: [(&str, &str); 3] = [
    ("ELECTION_TIMEOUT_MIN_MS", "150"),
    ("ELECTION_TIMEOUT_MAX_MS", "300"),
    ("HEARTBEAT_INTERVAL_MS", "50"),
];
/// etcd's timing, passed explicitly (they are etcd's defaults).
const ETCD_HEARTBEAT_MS: u64 = 100;
const ETCD_ELECTION_MS: u64 = 1000;
const MEMBERS: u64 = 3;
const WARM_UP: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_EVERY: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// Calm time after a restarted member is back, before the next kill.
const SETTLE: Duration = Duration::from_secs(1);
const ETCD_START_LIMIT: Duration = Duration::from_secs(30);
const FAILOVER_KEY: &str = "bench-failover";

pub fn bench(stack: &Stack, args: ConfigBenchArgs) -> anyhow::Result<()> {
    let binary = build_config_binary(stack.root())?;
    block_on(bench_async(&binary, args))
}

/// Builds the release `distlab-config` and returns its path.
fn build_config_binary(root: &Path) -> anyhow::Result<PathBuf> {
    println!("==> cargo build --release -p config --bin distlab-config");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "config",
            "--bin",
            "distlab-config",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "cannot build distlab-config ({status})");
    Ok(root.join("target/release/distlab-config"))
}

async fn bench_async(binary: &Path, args: ConfigBenchArgs) -> anyhow::Result<()> {
    let (rounds, clients) = (args.rounds.max(1), args.clients.max(1));
    let seconds = Duration::from_secs(args.seconds);
    let keys: Arc<Vec<String>> = Arc::new(
        (0..args.keys.max(1))
            .map(|i| format!("bench-k-{i:04}"))
            .collect(),
    );

    let mut distlab = RaftCluster::start(binary, MEMBERS, &DISTLAB_ENV).await;
    let mut etcd = EtcdCluster::start(MEMBERS).await?;
    let etcd_version = etcd.version().await.unwrap_or_else(|| "?".to_owned());
    let clients_of = |system: System| Target::new(system, clients);
    let (distlab_http, etcd_http) = (clients_of(System::Distlab)?, clients_of(System::Etcd)?);
    println!(
        "bench config: distlab-config ×{MEMBERS} against etcd {etcd_version} ×{MEMBERS}, {rounds} round(s) of {} s per phase, \
         {clients} closed-loop clients, {} keys, values of {} bytes; every request goes to the leader, in both",
        args.seconds,
        keys.len(),
        VALUE.len() + 2
    );

    for target in [&distlab_http, &etcd_http] {
        let leader = target.leader_url(&distlab, &etcd).await?;
        warm_up(target, &leader, &keys, clients).await?;
    }

    let mut measured: BTreeMap<System, Vec<Measured>> = BTreeMap::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [&distlab_http, &etcd_http]
        } else {
            [&etcd_http, &distlab_http]
        };
        for target in order {
            let leader = target.leader_url(&distlab, &etcd).await?;
            let m = Measured {
                writes: closed_loop(target, &leader, Op::Write, &keys, clients, seconds).await?,
                reads: closed_loop(target, &leader, Op::Read, &keys, clients, seconds).await?,
            };
            println!(
                "  round {round} {:<7} writes {} · linearizable reads {}",
                target.system.name(),
                m.writes,
                m.reads
            );
            measured.entry(target.system).or_default().push(m);
        }
    }
    let distlab_m = Measured::median_of(measured.get(&System::Distlab).map_or(&[], Vec::as_slice));
    let etcd_m = Measured::median_of(measured.get(&System::Etcd).map_or(&[], Vec::as_slice));
    print_throughput(rounds, clients, &distlab_m, &etcd_m);

    println!();
    if args.kills == 0 {
        println!("failover: not measured (--kills 0)");
    } else {
        println!(
            "failover: SIGKILL the leader, then a PUT every {PROBE_EVERY:?} to the survivors in turn ({PROBE_TIMEOUT:?} timeout each) until one succeeds"
        );
        let distlab_failover = failover(&mut distlab, &distlab_http, args.kills).await;
        let etcd_failover = failover(&mut etcd, &etcd_http, args.kills).await;
        print_failover(args.kills, &distlab_failover, &etcd_failover);
    }
    print_notes(&etcd_version);
    Ok(())
}

fn print_notes(etcd_version: &str) {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!();
    println!(
        "machine: {cores} cores; everything on this one box (3 distlab nodes, 3 etcd members, the client), loopback \
         only; distlab at its default log level (info, RUST_LOG unset), etcd at its default (info): no debug logs"
    );
    println!(
        "distlab: election timeout 150–300 ms, heartbeat 50 ms, log appends fsynced (redb Durability::Immediate) \
         before they count; other settings default; release build"
    );
    println!(
        "etcd {etcd_version}: defaults — heartbeat {ETCD_HEARTBEAT_MS} ms, election timeout {ETCD_ELECTION_MS} ms, \
         WAL fsync on; JSON gateway (grpc-gateway) on the client port"
    );
}
