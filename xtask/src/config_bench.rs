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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use distlab_testkit::raft_cluster::RaftCluster;
use distlab_testkit::unused_port;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::bench::{median, quantile_ms, verdict};
use crate::stack::{Stack, block_on};

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

// ---------------------------------------------------------------------------------------------------------
// The two systems' client APIs

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Distlab,
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write,
    Read,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Distlab => "distlab",
            Self::Etcd => "etcd",
        }
    }

    /// The request of `op` on `key` at the member whose client URL is `base`.
    fn request(
        self,
        http: &reqwest::Client,
        base: &str,
        op: Op,
        key: &str,
    ) -> reqwest::RequestBuilder {
        match (self, op) {
            (Self::Distlab, Op::Write) => http
                .put(format!("{base}/v1/kv/{key}"))
                .json(&json!({ "value": VALUE })),
            (Self::Distlab, Op::Read) => {
                http.get(format!("{base}/v1/kv/{key}?consistency=linearizable"))
            }
            (Self::Etcd, Op::Write) => http.post(format!("{base}/v3/kv/put")).json(&json!({
                "key": BASE64.encode(key),
                "value": BASE64.encode(format!("\"{VALUE}\"")),
            })),
            (Self::Etcd, Op::Read) => http
                .post(format!("{base}/v3/kv/range"))
                .json(&json!({ "key": BASE64.encode(key) })),
        }
    }

    /// Whether a 200 answer is a success: a read must have found its key (distlab answers 404 if not).
    fn found(self, op: Op, body: &[u8]) -> bool {
        match (self, op) {
            (Self::Etcd, Op::Read) => body.windows(5).any(|w| w == b"\"kvs\""),
            _ => true,
        }
    }
}

/// Sends `request` and reads the whole answer; an error unless it is a success.
async fn exchange(system: System, op: Op, request: reqwest::RequestBuilder) -> anyhow::Result<()> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status != StatusCode::OK || !system.found(op, &body) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        bail!("{} {op:?} answered {status}: {shown}", system.name());
    }
    Ok(())
}

/// One system under load: its HTTP client (one per system, built the same way for both).
#[derive(Debug)]
struct Target {
    system: System,
    http: reqwest::Client,
}

impl Target {
    fn new(system: System, clients: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients * 2)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self { system, http })
    }

    async fn leader_url(
        &self,
        distlab: &RaftCluster,
        etcd: &EtcdCluster,
    ) -> anyhow::Result<String> {
        Ok(match self.system {
            System::Distlab => distlab.url(distlab.leader().await),
            System::Etcd => etcd.url(etcd.find_leader().await?),
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Load

/// What one phase's clients saw.
#[derive(Debug, Clone, Default)]
struct Phase {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    first_error: Option<String>,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
            self.per_s, self.p50_ms, self.p99_ms
        )?;
        if self.errors > 0 {
            write!(f, " {} ERRORS", self.errors)?;
        }
        Ok(())
    }
}

/// One round of one system.
#[derive(Debug, Clone, Default)]
struct Measured {
    writes: Phase,
    reads: Phase,
}

impl Measured {
    /// Medians of the rates and latencies; errors summed over the rounds.
    fn median_of(rounds: &[Self]) -> Self {
        let of = |phase: fn(&Self) -> &Phase| {
            let field = |f: fn(&Phase) -> f64| {
                let values: Vec<f64> = rounds.iter().map(|r| f(phase(r))).collect();
                if values.is_empty() {
                    0.0
                } else {
                    median(&values)
                }
            };
            Phase {
                per_s: field(|p| p.per_s),
                p50_ms: field(|p| p.p50_ms),
                p99_ms: field(|p| p.p99_ms),
                errors: rounds.iter().map(|r| phase(r).errors).sum(),
                first_error: rounds.iter().find_map(|r| phase(r).first_error.clone()),
            }
        };
        Self {
            writes: of(|m| &m.writes),
            reads: of(|m| &m.reads),
        }
    }
}

/// Latencies and errors of one client.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// `clients` closed loops of `op` at `base` for `duration`, client `c` on keys `c`, `c + clients`, …
async fn closed_loop(
    target: &Target,
    base: &str,
    op: Op,
    keys: &Arc<Vec<String>>,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let (system, http) = (target.system, target.http.clone());
            let (base, keys) = (base.to_owned(), keys.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = client;
                while Instant::now() < deadline {
                    let key = &keys[next % keys.len()];
                    next += clients;
                    let sent = Instant::now();
                    match exchange(system, op, system.request(&http, &base, op, key)).await {
                        Ok(()) => tally.latencies_us.push(sent.elapsed().as_micros() as u64),
                        Err(error) => {
                            tally.errors += 1;
                            tally
                                .first_error
                                .get_or_insert_with(|| format!("{error:#}"));
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for worker in workers {
        let tally = worker.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        all.first_error = all.first_error.or(tally.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Phase {
        per_s: all.latencies_us.len() as f64 / elapsed,
        p50_ms: quantile_ms(&mut all.latencies_us, 0.5),
        p99_ms: quantile_ms(&mut all.latencies_us, 0.99),
        errors: all.errors,
        first_error: all.first_error,
    })
}

/// Writes every key once (so that the reads find them), then `WARM_UP` of writes, not measured.
async fn warm_up(
    target: &Target,
    leader: &str,
    keys: &Arc<Vec<String>>,
    clients: usize,
) -> anyhow::Result<()> {
    for key in keys.iter() {
        let request = target.system.request(&target.http, leader, Op::Write, key);
        exchange(target.system, Op::Write, request)
            .await
            .with_context(|| format!("seeding {key}"))?;
    }
    let warm = closed_loop(target, leader, Op::Write, keys, clients, WARM_UP).await?;
    println!("  warm-up {:<7} writes {warm}", target.system.name());
    Ok(())
}

fn print_throughput(rounds: usize, clients: usize, distlab: &Measured, etcd: &Measured) {
    println!();
    println!(
        "medians of {rounds} round(s), {clients} clients, requests to the leader in both (latency of one request at the client)"
    );
    println!(
        "{:<20} {:>10} {:>8} {:>8} {:>10} {:>8} {:>8} {:>13} {:>13}",
        "",
        "distlab/s",
        "p50 ms",
        "p99 ms",
        "etcd/s",
        "p50 ms",
        "p99 ms",
        "ratio (rate)",
        "ratio (p99)"
    );
    for (name, d, e) in [
        ("writes", &distlab.writes, &etcd.writes),
        ("linearizable reads", &distlab.reads, &etcd.reads),
    ] {
        println!(
            "{name:<20} {:>10.0} {:>8.2} {:>8.2} {:>10.0} {:>8.2} {:>8.2} {:>13.2} {:>13.2}",
            d.per_s,
            d.p50_ms,
            d.p99_ms,
            e.per_s,
            e.p50_ms,
            e.p99_ms,
            d.per_s / e.per_s,
            d.p99_ms / e.p99_ms
        );
    }
    println!("(ratios are distlab/etcd: above 1 is better for the rate, below 1 for the p99)");
    for (system, m) in [("distlab", distlab), ("etcd", etcd)] {
        for (phase, p) in [("writes", &m.writes), ("reads", &m.reads)] {
            match &p.first_error {
                Some(error) => println!(
                    "ERRORS: {system} {phase}: {} failed request(s) over the rounds; first: {error}",
                    p.errors
                ),
                None => println!("errors: {system} {phase}: none"),
            }
        }
    }
    let writes = distlab.writes.per_s / etcd.writes.per_s;
    let reads = distlab.reads.per_s / etcd.reads.per_s;
    println!(
        "goals: writes ≥ 1.0 × etcd: {writes:.2}, {} | linearizable reads ≥ 1.0 × etcd: {reads:.2}, {}",
        verdict(writes >= 1.0),
        verdict(reads >= 1.0)
    );
}

// ---------------------------------------------------------------------------------------------------------
// Failover

/// What the failover measurement needs of a cluster.
trait Cluster {
    /// The leader every running member agrees on.
    async fn find_leader(&self) -> anyhow::Result<u64>;
    /// SIGKILL, as a crash.
    fn kill_member(&mut self, id: u64);
    /// Starts the member again and waits until every member agrees on a leader.
    async fn restart(&mut self, id: u64) -> anyhow::Result<()>;
    /// The client URLs of the running members.
    fn survivors(&self) -> Vec<String>;
}

impl Cluster for RaftCluster {
    async fn find_leader(&self) -> anyhow::Result<u64> {
        Ok(self.leader().await)
    }

    fn kill_member(&mut self, id: u64) {
        self.kill(id);
    }

    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id).await;
        self.leader().await;
        Ok(())
    }

    fn survivors(&self) -> Vec<String> {
        self.running().into_iter().map(|id| self.url(id)).collect()
    }
}

/// The failover times of up to `kills` kills, and the error that stopped them early, if one did.
#[derive(Debug, Default)]
struct Failovers {
    samples_us: Vec<u64>,
    stopped: Option<String>,
}

async fn failover<C: Cluster>(cluster: &mut C, target: &Target, kills: usize) -> Failovers {
    let mut failovers = Failovers::default();
    for _ in 0..kills {
        match one_failover(cluster, target).await {
            Ok(took) => failovers.samples_us.push(took.as_micros() as u64),
            Err(error) => {
                failovers.stopped = Some(format!("{error:#}"));
                break;
            }
        }
    }
    let shown: Vec<String> = failovers
        .samples_us
        .iter()
        .map(|us| format!("{}", us / 1000))
        .collect();
    println!(
        "  {:<7} kill → first write, ms: {}",
        target.system.name(),
        shown.join(" ")
    );
    failovers
}

async fn one_failover<C: Cluster>(cluster: &mut C, target: &Target) -> anyhow::Result<Duration> {
    let leader = cluster.find_leader().await?;
    cluster.kill_member(leader);
    let killed_at = Instant::now();
    let took = first_write(target, &cluster.survivors(), killed_at).await?;
    cluster.restart(leader).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(took)
}

/// Time from `killed_at` to the first successful PUT at one of `survivors`: a probe every `PROBE_EVERY`,
/// to the survivors in turn, each given `PROBE_TIMEOUT`.
async fn first_write(
    target: &Target,
    survivors: &[String],
    killed_at: Instant,
) -> anyhow::Result<Duration> {
    anyhow::ensure!(!survivors.is_empty(), "no member survived");
    let system = target.system;
    let mut probes = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(PROBE_EVERY);
    let mut sent = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                anyhow::ensure!(
                    killed_at.elapsed() < FAILOVER_LIMIT,
                    "no write succeeded within {FAILOVER_LIMIT:?} of the kill"
                );
                let base = &survivors[sent % survivors.len()];
                sent += 1;
                let request = system
                    .request(&target.http, base, Op::Write, FAILOVER_KEY)
                    .timeout(PROBE_TIMEOUT);
                probes.spawn(async move {
                    exchange(system, Op::Write, request).await.map(|()| Instant::now())
                });
            }
            Some(done) = probes.join_next() => {
                if let Ok(Ok(succeeded_at)) = done {
                    return Ok(succeeded_at - killed_at);
                }
            }
        }
    }
}

fn print_failover(kills: usize, distlab: &Failovers, etcd: &Failovers) {
    println!();
    println!(
        "failover time, kill → first successful write (with {kills} kills the p99 is the max, or next to it)"
    );
    println!(
        "{:<8} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "", "kills", "median ms", "p99 ms", "min ms", "max ms"
    );
    for (name, f) in [("distlab", distlab), ("etcd", etcd)] {
        let mut samples = f.samples_us.clone();
        println!(
            "{name:<8} {:>6} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            samples.len(),
            quantile_ms(&mut samples, 0.5),
            quantile_ms(&mut samples, 0.99),
            quantile_ms(&mut samples, 0.0),
            quantile_ms(&mut samples, 1.0)
        );
        if let Some(error) = &f.stopped {
            println!(
                "ERROR: {name} failover stopped after {} kill(s): {error}",
                samples.len()
            );
        }
    }
    let mut samples = distlab.samples_us.clone();
    let p99 = quantile_ms(&mut samples, 0.99);
    println!(
        "goal: distlab failover p99 < 1 s: {p99:.0} ms, {}",
        verdict(!samples.is_empty() && distlab.stopped.is_none() && p99 < 1000.0)
    );
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

// ---------------------------------------------------------------------------------------------------------
// etcd

/// One etcd member: its ports and process.
#[derive(Debug)]
struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster of the bench's own, in a temporary folder; stopped and removed when dropped.
#[derive(Debug)]
struct EtcdCluster {
    dir: PathBuf,
    token: String,
    members: BTreeMap<u64, EtcdMember>,
    http: reqwest::Client,
}

impl EtcdCluster {
    /// Starts members `1..=size` and waits until all are healthy and agree on a leader.
    async fn start(size: u64) -> anyhow::Result<Self> {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let dir = std::env::temp_dir().join(format!("distlab-bench-etcd-{run}"));
        fs::create_dir_all(&dir)?;
        let members = (1..=size)
            .map(|id| {
                let member = EtcdMember {
                    name: format!("m{id}"),
                    client_port: unused_port(),
                    peer_port: unused_port(),
                    child: None,
                };
                (id, member)
            })
            .collect();
        let mut cluster = Self {
            dir,
            token: format!("bench-{run}"),
            members,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        cluster.wait_healthy().await?;
        cluster.find_leader().await?;
        Ok(cluster)
    }

    /// Starts member `id` with the same flags every time (with its data folder in place, etcd ignores
    /// `--initial-cluster-state` and rejoins).
    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let initial_cluster = self
            .members
            .values()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = self.members.get(&id).context("no such etcd member")?;
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let mut command = Command::new(ETCD);
        command
            .args(["--name", &member.name, "--data-dir"])
            .arg(self.dir.join(&member.name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &ETCD_HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ETCD_ELECTION_MS.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(arch) = unsupported_arch() {
            command.env("ETCD_UNSUPPORTED_ARCH", arch);
        }
        // Waited for in `kill_member` (also on drop).
        #[allow(clippy::zombie_processes)]
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {ETCD} (Debian package etcd-server)"))?;
        if let Some(member) = self.members.get_mut(&id) {
            member.child = Some(child);
        }
        Ok(())
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("m{id}.log"))
    }

    fn url(&self, id: u64) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.members.get(&id).map_or(0, |m| m.client_port)
        )
    }

    fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits until every running member answers `GET /health` with `{"health":"true"}`.
    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + ETCD_START_LIMIT;
        for id in self.running() {
            while !self.is_healthy(id).await {
                if Instant::now() > deadline {
                    bail!(
                        "etcd member m{id} is not healthy after {ETCD_START_LIMIT:?}; the end of its log:\n{}",
                        self.log_tail(id)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn is_healthy(&self, id: u64) -> bool {
        let Ok(response) = self
            .http
            .get(format!("{}/health", self.url(id)))
            .send()
            .await
        else {
            return false;
        };
        response
            .json::<Value>()
            .await
            .is_ok_and(|health| health["health"] == "true")
    }

    /// `POST /v3/maintenance/status` of member `id`.
    async fn status(&self, id: u64) -> Option<Value> {
        let response = self
            .http
            .post(format!("{}/v3/maintenance/status", self.url(id)))
            .json(&json!({}))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    async fn version(&self) -> Option<String> {
        let status = self.status(*self.running().first()?).await?;
        status["version"].as_str().map(str::to_owned)
    }

    /// The leader, if every running member answers and names the same running member.
    async fn agreed_leader(&self) -> Option<u64> {
        let mut by_member_id = BTreeMap::new();
        let mut leaders = BTreeSet::new();
        for id in self.running() {
            let status = self.status(id).await?;
            by_member_id.insert(decimal(&status["header"]["member_id"])?, id);
            leaders.insert(decimal(&status["leader"])?);
        }
        match leaders.into_iter().collect::<Vec<_>>()[..] {
            [leader] => by_member_id.get(&leader).copied(),
            _ => None,
        }
    }

    fn log_tail(&self, id: u64) -> String {
        let log = fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Cluster for EtcdCluster {
    async fn find_leader(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + ETCD_START_LIMIT;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("the etcd members do not agree on a leader after {ETCD_START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill_member(&mut self, id: u64) {
        if let Some(mut child) = self.members.get_mut(&id).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)?;
        self.wait_healthy().await?;
        self.find_leader().await?;
        Ok(())
    }

    fn survivors(&self) -> Vec<String> {
        self.running().into_iter().map(|id| self.url(id)).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for id in self.running() {
            self.kill_member(id);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A uint64 of etcd's JSON gateway: a decimal string (or a number).
fn decimal(value: &Value) -> Option<u64> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_u64())
}

/// `ETCD_UNSUPPORTED_ARCH` for etcd 3.4 off amd64 (not needed on x86_64).
fn unsupported_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => None,
        "aarch64" => Some("arm64"),
        other => Some(other),
    }
}
