//! `cargo xtask bench chaos`: what the chaos sidecar (`distlab-chaos`, the stack's) costs with no fault
//! active, against the same traffic without it, in the same run.
//!
//! The bench creates its own proxies through the sidecar's admin API (127.0.0.1:8474) for the run —
//! `bench->orders-db`, `bench->inventory` (`tcp`), `bench->inventory-http` (`http`), `bench->echo` — with
//! no toxic, and deletes them after the run, whatever happened. Per round (the order of the ways
//! rotates from round to round, so a machine that slows down during a round does not favour one way):
//!
//! 1. **pgbench**: the order write path's SQL (the script of `bench outbox`) on a scratch database of
//!    orders-db with the orders schema, straight to 127.0.0.1:15432 and through the `tcp` proxy, same
//!    clients and seconds; tables truncated and a `CHECKPOINT` before each run, so both start alike.
//!    pgbench's tps and its average latency.
//! 2. **HTTP**: wrk (`--latency`) against a cheap GET of a distlab service — the inventory's
//!    `GET /products/{sku}` by default, or the config service's `GET /v1/kv/{key}?consistency=stale` —
//!    direct, through a `tcp` proxy, through an `http` proxy (hyper per request), and through a plain
//!    tokio byte relay of this process (`copy_bidirectional`, no fault logic: the reference for what any
//!    user-space hop costs on this machine): requests/s, p50 and p99 at `--http-connections` connections
//!    (saturating: latency there is mostly queueing), then with one connection (latency there is the
//!    cost of the hop itself: the goal on the added p50 is read there).
//! 3. **connections held**: `--hold` TCP connections through the `tcp` proxy to an echo server of this
//!    process, all opened, then every one checked by a round trip while all are open; the sidecar's RSS and
//!    open descriptors (from /proc) before, during and after.
//!
//! Medians over the rounds are printed with the ratios and the goals: ≥ 0.9 × direct throughput on pgbench
//! and on HTTP, added p50 ≤ 50 µs, ≥ 1,000 connections held.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::bench::{PGBENCH_SCRIPT, median, verdict};
use crate::stack::{LOCAL_ADMIN_TOKEN, Stack, block_on};

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosBenchArgs {
    /// Seconds of each measurement (each pgbench and each wrk run).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// pgbench connections (the same both ways).
    #[arg(long, default_value_t = 32)]
    pg_clients: usize,
    /// wrk connections of the throughput runs (the latency runs use one).
    #[arg(long, default_value_t = 32)]
    http_connections: usize,
    /// wrk threads of the throughput runs.
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// Connections held open through one proxy at once.
    #[arg(long, default_value_t = 1000)]
    hold: usize,
    /// The service whose GET the HTTP runs load.
    #[arg(long, value_enum, default_value_t = Target::Inventory)]
    http_target: Target,
}

/// The service the HTTP runs read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `GET /products/BENCH-CHAOS` of the inventory service (8082): one indexed PostgreSQL read.
    Inventory,
    /// `GET /v1/kv/bench/chaos?consistency=stale` of config node 1 (8091): served from memory.
    Config,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Inventory => "inventory",
            Target::Config => "config",
        }
    }

    fn upstream(self) -> &'static str {
        match self {
            Target::Inventory => "127.0.0.1:8082",
            Target::Config => "127.0.0.1:8091",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Target::Inventory => "/products/BENCH-CHAOS",
            Target::Config => "/v1/kv/bench/chaos?consistency=stale",
        }
    }

    /// Makes the GET answer 200.
    async fn seed(self, http: &reqwest::Client) -> anyhow::Result<()> {
        let (url, body) = match self {
            Target::Inventory => (
                "http://127.0.0.1:8082/products/BENCH-CHAOS",
                json!({"name": "bench", "price_cents": 1, "stock": 1}),
            ),
            Target::Config => (
                "http://127.0.0.1:8091/v1/kv/bench/chaos",
                json!({"value": "0123456789abcdef"}),
            ),
        };
        let response = http.put(url).json(&body).send().await.with_context(|| {
            format!(
                "the {} service does not answer on {}: start the stack with `cargo xtask up`",
                self.name(),
                self.upstream()
            )
        })?;
        anyhow::ensure!(
            response.status().is_success(),
            "cannot seed {url}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        let check = http
            .get(format!("http://{}{}", self.upstream(), self.path()))
            .send()
            .await?;
        anyhow::ensure!(
            check.status().is_success(),
            "GET {} answers {} after seeding",
            self.path(),
            check.status()
        );
        Ok(())
    }
}

const ADMIN_URL: &str = "http://127.0.0.1:8474";
const ORDERS_DB_PORT: u16 = 15432;
const ORDERS_SERVER: &str = "postgres://postgres@127.0.0.1:15432";
const SCRATCH_DB: &str = "bench_chaos";
const DROP_SCRATCH: &str = "DROP DATABASE IF EXISTS bench_chaos WITH (FORCE)";
const PG_PROXY: &str = "bench->orders-db";
const TCP_PROXY: &str = "bench->inventory";
const HTTP_PROXY: &str = "bench->inventory-http";
const ECHO_PROXY: &str = "bench->echo";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once while building up the held set.
const OPENING_AT_ONCE: usize = 128;

/// Every way the HTTP runs go, in their first round's order.
const WAYS: [Way; 4] = [Way::Direct, Way::Tcp, Way::Http, Way::Relay];

/// How the traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    Tcp,
    Http,
    /// The reference: a plain tokio byte relay in this process (no fault logic at all).
    Relay,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Tcp => "tcp proxy",
            Way::Http => "http proxy",
            Way::Relay => "plain relay",
        }
    }

    fn index(self) -> usize {
        match self {
            Way::Direct => 0,
            Way::Tcp => 1,
            Way::Http => 2,
            Way::Relay => 3,
        }
    }
}

pub fn bench(stack: &Stack, args: ChaosBenchArgs) -> anyhow::Result<()> {
    block_on(run(stack, args))
}

async fn run(stack: &Stack, args: ChaosBenchArgs) -> anyhow::Result<()> {
    let rounds = args.rounds.max(1);
    println!(
        "==> checking the chaos sidecar ({ADMIN_URL}), orders-db (127.0.0.1:{ORDERS_DB_PORT}) and the {} service",
        args.http_target.name()
    );
    let sidecar = Sidecar::connect().await?;
    let pid = sidecar_pid(stack.root());
    match pid {
        Some(pid) => println!("    distlab-chaos is pid {pid}"),
        None => println!(
            "    warning: no distlab-chaos process found (.distlab/pids/chaos.pid, /proc): its RSS will not be reported"
        ),
    }
    let admin_db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&format!("{ORDERS_SERVER}/postgres"))
        .await
        .with_context(|| {
            format!(
                "orders-db does not answer on 127.0.0.1:{ORDERS_DB_PORT}: start the stack with `cargo xtask up`"
            )
        })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    args.http_target.seed(&http).await?;
    crate::install::ensure_package("wrk")?;
    let pgbench_bin = crate::install::postgres_bin_dir()
        .context("PostgreSQL is not installed (no pgbench)")?
        .join("pgbench");

    // This process holds both ends of every held connection (the client's and the echo server's).
    let own_limit = raise_open_files(2 * args.hold as u64 + 512)?;
    let sidecar_limit = pid.and_then(open_files_limit);
    if let Some((soft, hard)) = &sidecar_limit {
        println!("    open files: this process {own_limit}, the sidecar soft {soft} / hard {hard}");
        if soft
            .parse::<u64>()
            .is_ok_and(|soft| soft < 2 * args.hold as u64 + 64)
        {
            println!(
                "    warning: the sidecar's soft limit ({soft}) is below the {} descriptors {} held connections need (one client and one upstream socket each)",
                2 * args.hold,
                args.hold
            );
        }
    }

    println!("==> preparing the scratch database {SCRATCH_DB} on orders-db (orders schema)");
    let scratch = scratch_database(stack, &admin_db).await?;
    let script = stack.root().join(".distlab/pgbench-chaos.sql");
    std::fs::create_dir_all(stack.root().join(".distlab"))?;
    std::fs::write(&script, PGBENCH_SCRIPT)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let echo = Echo::start().await?;
    let relay = PlainRelay::start(args.http_target.upstream()).await?;

    // A run that was interrupted may have left its proxies behind.
    for name in [PG_PROXY, TCP_PROXY, HTTP_PROXY, ECHO_PROXY] {
        sidecar.delete(name).await?;
    }
    let setup = Setup {
        args: &args,
        rounds,
        sidecar: &sidecar,
        pid,
        pgbench: &pgbench_bin,
        script: &script,
        admin_db: &admin_db,
        scratch: &scratch,
        echo: &echo,
        relay: &relay,
    };
    let outcome = setup.measure().await;

    println!("==> removing the bench's proxies and the scratch database");
    let mut cleanup = Vec::new();
    for name in [PG_PROXY, TCP_PROXY, HTTP_PROXY, ECHO_PROXY] {
        if let Err(error) = sidecar.delete(name).await {
            cleanup.push(format!("proxy {name}: {error:#}"));
        }
    }
    scratch.close().await;
    if let Err(error) = sqlx::query(DROP_SCRATCH).execute(&admin_db).await {
        cleanup.push(format!("database {SCRATCH_DB}: {error}"));
    }
    drop(echo);
    drop(relay);
    let results = outcome?;
    if !cleanup.is_empty() {
        println!("warning: cleanup failed: {}", cleanup.join("; "));
    }
    print_table(&args, rounds, &results, sidecar_limit);
    Ok(())
}

/// Everything a run measures with.
struct Setup<'a> {
    args: &'a ChaosBenchArgs,
    rounds: usize,
    sidecar: &'a Sidecar,
    pid: Option<u32>,
    pgbench: &'a Path,
    script: &'a Path,
    admin_db: &'a PgPool,
    scratch: &'a PgPool,
    echo: &'a Echo,
    relay: &'a PlainRelay,
}

/// One round's measures.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    /// Direct, through the proxy.
    pgbench: [PgRun; 2],
    /// Direct, tcp proxy, http proxy, plain relay, at `http_connections`.
    loaded: [HttpRun; 4],
    /// The same with one connection.
    single: [HttpRun; 4],
    held: Held,
}

impl Setup<'_> {
    async fn measure(&self) -> anyhow::Result<Vec<Round>> {
        let args = self.args;
        let target = args.http_target;
        let pg_proxy = self
            .sidecar
            .create(PG_PROXY, &format!("127.0.0.1:{ORDERS_DB_PORT}"), "tcp")
            .await?;
        let tcp_proxy = self
            .sidecar
            .create(TCP_PROXY, target.upstream(), "tcp")
            .await?;
        let http_proxy = self
            .sidecar
            .create(HTTP_PROXY, target.upstream(), "http")
            .await?;
        let echo_proxy = self
            .sidecar
            .create(ECHO_PROXY, &self.echo.addr.to_string(), "tcp")
            .await?;
        println!(
            "==> proxies (no toxic): {PG_PROXY} on {pg_proxy}, {TCP_PROXY} on {tcp_proxy}, {HTTP_PROXY} on {http_proxy}, {ECHO_PROXY} on {echo_proxy}"
        );
        let url = |way: Way| {
            let address = match way {
                Way::Direct => target.upstream().to_owned(),
                Way::Tcp => tcp_proxy.to_string(),
                Way::Http => http_proxy.to_string(),
                Way::Relay => self.relay.addr.to_string(),
            };
            format!("http://{address}{}", target.path())
        };
        // One request each way first: a proxy that does not work fails here, not in the middle of a round.
        for way in WAYS {
            let answer = reqwest::get(url(way))
                .await
                .with_context(|| format!("GET through the {}", way.name()))?;
            anyhow::ensure!(
                answer.status().is_success(),
                "GET {} answers {}",
                url(way),
                answer.status()
            );
        }

        // A second of load each way before the first measure: connection pools (the service's, the
        // http proxy's upstream connections) and caches filled before anything is counted.
        for way in WAYS {
            wrk(
                &url(way),
                args.wrk_threads.min(args.http_connections).max(1),
                args.http_connections.max(1),
                1,
            )
            .await
            .with_context(|| format!("warming up the {}", way.name()))?;
        }

        let seconds = args.seconds.max(1);
        println!(
            "chaos sidecar benchmark: {} round(s), {seconds} s per measurement; pgbench {} clients; wrk {} connections / 1 connection on GET {} ({}); {} connections held",
            self.rounds,
            args.pg_clients,
            args.http_connections,
            target.path(),
            target.name(),
            args.hold
        );
        let mut rounds = Vec::new();
        for round in 1..=self.rounds {
            let mut r = Round::default();
            let pg_order = if round % 2 == 1 {
                [(0, None), (1, Some(pg_proxy))]
            } else {
                [(1, Some(pg_proxy)), (0, None)]
            };
            for (index, proxy) in pg_order {
                let port = proxy.map_or(ORDERS_DB_PORT, |a: SocketAddr| a.port());
                println!(
                    "==> round {round}/{}: pgbench {} ({} clients, {seconds} s)",
                    self.rounds,
                    if proxy.is_some() {
                        "through the sidecar"
                    } else {
                        "direct"
                    },
                    args.pg_clients
                );
                r.pgbench[index] = self.pgbench_run(port, seconds).await?;
            }
            let ways = rotated(&WAYS, round - 1);
            for &way in &ways {
                println!(
                    "==> round {round}/{}: wrk {} ({} connections, {seconds} s)",
                    self.rounds,
                    way.name(),
                    args.http_connections
                );
                r.loaded[way.index()] = wrk(
                    &url(way),
                    args.wrk_threads.min(args.http_connections).max(1),
                    args.http_connections.max(1),
                    seconds,
                )
                .await?;
            }
            for &way in &ways {
                println!(
                    "==> round {round}/{}: wrk {} (1 connection, {seconds} s)",
                    self.rounds,
                    way.name()
                );
                r.single[way.index()] = wrk(&url(way), 1, 1, seconds).await?;
            }
            println!(
                "==> round {round}/{}: holding {} connections through {ECHO_PROXY}",
                self.rounds, args.hold
            );
            r.held = hold(echo_proxy, args.hold, self.echo, self.pid).await;
            print_round(round, &r);
            rounds.push(r);
        }
        Ok(rounds)
    }

    /// One pgbench run on the scratch database through `port`, from empty tables after a checkpoint.
    async fn pgbench_run(&self, port: u16, seconds: u64) -> anyhow::Result<PgRun> {
        sqlx::query("TRUNCATE orders, outbox CASCADE")
            .execute(self.scratch)
            .await?;
        sqlx::query("CHECKPOINT").execute(self.admin_db).await?;
        let clients = self.args.pg_clients.max(1);
        let output = tokio::process::Command::new(self.pgbench)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "postgres", "-n", "-M", "prepared"])
            .args(["-j", &clients.min(2).to_string()])
            .args(["-c", &clients.to_string()])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(self.script)
            .arg(SCRATCH_DB)
            .output()
            .await
            .context("cannot run pgbench")?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "pgbench on port {port} failed: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_pgbench(&text).with_context(|| format!("cannot read pgbench's output:\n{text}"))
    }
}

/// The items, started at `by` (wrapping).
fn rotated<T: Copy>(items: &[T], by: usize) -> Vec<T> {
    (0..items.len())
        .map(|i| items[(i + by) % items.len()])
        .collect()
}

/// The scratch database `bench_chaos` with the orders schema (as `bench outbox` makes `bench_baseline`).
async fn scratch_database(stack: &Stack, admin: &PgPool) -> anyhow::Result<PgPool> {
    sqlx::query(DROP_SCRATCH).execute(admin).await?;
    sqlx::query("CREATE DATABASE bench_chaos")
        .execute(admin)
        .await?;
    let scratch = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{ORDERS_SERVER}/{SCRATCH_DB}"))
        .await?;
    distlab_messaging::service::migrator().run(&scratch).await?;
    Migrator::new(stack.root().join("migrations/orders"))
        .await?
        .run(&scratch)
        .await?;
    Ok(scratch)
}

// ---------------------------------------------------------------------------------------------------
// The sidecar's admin API

/// The running sidecar's admin API.
struct Sidecar {
    http: reqwest::Client,
    token: String,
}

impl Sidecar {
    /// Fails with a clear message when nothing answers `GET /version`.
    async fn connect() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        // Sent on every call: harmless when the sidecar runs without CHAOS_ADMIN_TOKEN.
        let token = std::env::var("CHAOS_ADMIN_TOKEN")
            .or_else(|_| std::env::var("ADMIN_TOKEN"))
            .unwrap_or_else(|_| LOCAL_ADMIN_TOKEN.to_owned());
        let version = http
            .get(format!("{ADMIN_URL}/version"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "the chaos sidecar does not answer on {ADMIN_URL} ({error}): start the stack, with its sidecar, with `cargo xtask up`"
                )
            })?;
        anyhow::ensure!(
            version.status().is_success(),
            "GET {ADMIN_URL}/version answers {}: is that the chaos sidecar (with CHAOS_ADMIN_TOKEN set, export it)?",
            version.status()
        );
        let body: Value = version.json().await.unwrap_or_default();
        println!("    sidecar: {body}");
        Ok(Self { http, token })
    }

    /// Creates a proxy listening on a free loopback port; the address it listens on.
    async fn create(
        &self,
        name: &str,
        upstream: &str,
        protocol: &str,
    ) -> anyhow::Result<SocketAddr> {
        let response = self
            .http
            .post(format!("{ADMIN_URL}/proxies"))
            .bearer_auth(&self.token)
            .json(&json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "protocol": protocol}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "cannot create the proxy {name}: {status} {body}"
        );
        body["listen"]
            .as_str()
            .and_then(|listen| listen.parse().ok())
            .with_context(|| format!("the proxy {name} has no listen address: {body}"))
    }

    /// Deletes a proxy; one that does not exist is fine.
    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{ADMIN_URL}/proxies/{}", name.replace('>', "%3E")))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success() || status == reqwest::StatusCode::NOT_FOUND,
            "cannot delete the proxy {name}: {status}"
        );
        Ok(())
    }
}

/// The sidecar's pid: its pid file; else the `distlab-chaos` process that listens on the admin port (other
/// instances may run beside the stack's, a test's for one); else the only process of that name.
fn sidecar_pid(root: &Path) -> Option<u32> {
    let is_chaos = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "distlab-chaos")
    };
    let from_file = std::fs::read_to_string(root.join(".distlab/pids/chaos.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        .filter(|pid| is_chaos(*pid));
    if from_file.is_some() {
        return from_file;
    }
    let chaos: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_chaos(*pid))
        .collect();
    let listening = admin_socket_inode().and_then(|inode| {
        let link = format!("socket:[{inode}]");
        chaos.iter().copied().find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str())
                })
            })
        })
    });
    listening.or(match chaos[..] {
        [only] => Some(only),
        _ => None,
    })
}

/// The inode of the socket listening on 127.0.0.1:8474 (`/proc/net/tcp`: local address in hex, state 0A).
fn admin_socket_inode() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"0100007F:211A") && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9).map(|inode| (*inode).to_owned()))
            .flatten()
    })
}

/// A process's RSS and open descriptors.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    rss_kib: u64,
    fds: u64,
}

impl Usage {
    fn of(pid: Option<u32>) -> Option<Usage> {
        let pid = pid?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some(Usage { rss_kib, fds })
    }
}

/// The soft and hard limits of open files of a process.
fn open_files_limit(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.split_whitespace().skip(3);
    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
}

/// Raises this process's soft limit of open files to at least `needed` (up to the hard limit); the
/// soft limit now in force.
fn raise_open_files(needed: u64) -> anyhow::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(soft);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    anyhow::ensure!(
        hard >= needed,
        "this process may open at most {hard} files (hard limit) and needs {needed}: raise it (`ulimit -Hn`) or hold fewer connections (--hold)"
    );
    let wanted = hard.min(needed.max(16_384));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        },
    )
    .context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(wanted)
}

// ---------------------------------------------------------------------------------------------------
// pgbench and wrk

#[derive(Debug, Clone, Copy, Default)]
struct PgRun {
    tps: f64,
    latency_ms: f64,
}

fn parse_pgbench(text: &str) -> Option<PgRun> {
    let number = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    };
    Some(PgRun {
        tps: number("tps = ")?,
        latency_ms: number("latency average = ")?,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct HttpRun {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// wrk against `url`; fails when a request failed or answered other than 2xx/3xx.
async fn wrk(
    url: &str,
    threads: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<HttpRun> {
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "--latency", url])
        .output()
        .await
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk {url} failed: {}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses") || l.contains("Socket errors"))
    {
        bail!("wrk {url}: {}\n{text}", line.trim());
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<HttpRun> {
    let percentile = |label: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| wrk_duration_us(rest.trim()))
    };
    let rps = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    Some(HttpRun {
        rps,
        p50_us: percentile("50%")?,
        p99_us: percentile("99%")?,
    })
}

/// A duration as wrk prints it (`512.00us`, `1.23ms`, `2.00s`, `1.00m`), in microseconds.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

// ---------------------------------------------------------------------------------------------------
// Connections held

/// An echo server of this process: the upstream of the held connections.
struct Echo {
    addr: SocketAddr,
    /// Connections open on it now.
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start() -> anyhow::Result<Echo> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((mut stream, _)) => {
                            let counter = counter.clone();
                            counter.fetch_add(1, Ordering::Relaxed);
                            connections.spawn(async move {
                                let (mut from, mut to) = stream.split();
                                let _ = tokio::io::copy(&mut from, &mut to).await;
                                counter.fetch_sub(1, Ordering::Relaxed);
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Echo { addr, open, task })
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// A minimal byte relay in this process — accept, connect upstream, `copy_bidirectional` — the reference
/// for what a user-space hop costs on this machine, whatever the proxy.
struct PlainRelay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PlainRelay {
    async fn start(upstream: &'static str) -> anyhow::Result<PlainRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((mut client, _)) => {
                            connections.spawn(async move {
                                let Ok(mut server) = TcpStream::connect(upstream).await else {
                                    return;
                                };
                                let _ = client.set_nodelay(true);
                                let _ = server.set_nodelay(true);
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(PlainRelay { addr, task })
    }
}

impl Drop for PlainRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Held {
    asked: usize,
    /// Connections the client side could open.
    opened: usize,
    /// Connections the echo server saw (the proxy connected upstream for each).
    upstream: usize,
    /// Connections that echoed a message back while all were open.
    passed: usize,
    before: Option<Usage>,
    during: Option<Usage>,
    after: Option<Usage>,
}

/// Opens `count` connections to `proxy`, checks each with a round trip while all are open, closes them.
async fn hold(proxy: SocketAddr, count: usize, echo: &Echo, pid: Option<u32>) -> Held {
    let before = Usage::of(pid);
    let mut streams: Vec<TcpStream> = futures::stream::iter(0..count)
        .map(|_| async move {
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(proxy))
                .await
                .ok()?
                .ok()
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let opened = streams.len();
    // The proxy connects upstream once it has accepted: wait until the echo server has them all.
    let deadline = Instant::now() + ROUND_TRIP_TIMEOUT;
    while echo.open() < opened && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let upstream = echo.open();
    let passed = futures::stream::iter(streams.iter_mut().enumerate())
        .map(|(i, stream)| async move {
            tokio::time::timeout(ROUND_TRIP_TIMEOUT, round_trip(stream, i))
                .await
                .is_ok_and(|r| r.is_ok())
        })
        .buffer_unordered(256)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let during = Usage::of(pid);
    drop(streams);
    let deadline = Instant::now() + ROUND_TRIP_TIMEOUT;
    while echo.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Held {
        asked: count,
        opened,
        upstream,
        passed,
        before,
        during,
        after: Usage::of(pid),
    }
}

/// Sends 16 bytes naming the connection and reads them back.
async fn round_trip(stream: &mut TcpStream, i: usize) -> anyhow::Result<()> {
    let message = format!("held {i:010}\n");
    stream.write_all(message.as_bytes()).await?;
    let mut echoed = vec![0u8; message.len()];
    stream.read_exact(&mut echoed).await?;
    anyhow::ensure!(
        echoed == message.as_bytes(),
        "connection {i} echoed other bytes"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Output

fn print_round(round: usize, r: &Round) {
    let [pg_direct, pg_proxy] = r.pgbench;
    println!(
        "  round {round}: pgbench {:.0} → {:.0} tps ({:.2}) | {}",
        pg_direct.tps,
        pg_proxy.tps,
        pg_proxy.tps / pg_direct.tps,
        WAYS.map(|way| {
            let (loaded, single) = (r.loaded[way.index()], r.single[way.index()]);
            format!(
                "{} {:.0} req/s p50 {:.0} µs, 1 conn p50 {:.0} µs p99 {:.0} µs",
                way.name(),
                loaded.rps,
                loaded.p50_us,
                single.p50_us,
                single.p99_us
            )
        })
        .join(" | ")
    );
    println!(
        "           held {} of {} (opened {}, upstream {}), sidecar RSS {} → {} → {}",
        r.held.passed,
        r.held.asked,
        r.held.opened,
        r.held.upstream,
        rss(r.held.before),
        rss(r.held.during),
        rss(r.held.after)
    );
}

fn rss(usage: Option<Usage>) -> String {
    usage.map_or("?".to_owned(), |u| {
        format!("{:.1} MiB ({} fds)", u.rss_kib as f64 / 1024.0, u.fds)
    })
}

/// `12345.6` → `12,346`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < -0.5 { format!("-{out}") } else { out }
}

fn signed_us(value: f64) -> String {
    if value >= 0.0 {
        format!("+{value:.0}")
    } else {
        format!("{value:.0}")
    }
}

fn print_table(
    args: &ChaosBenchArgs,
    rounds: usize,
    results: &[Round],
    sidecar_limit: Option<(String, String)>,
) {
    let m = |f: &dyn Fn(&Round) -> f64| median(&results.iter().map(f).collect::<Vec<_>>());
    let row = |measure: &str, baseline: &str, distlab: &str, ratio: &str, goal: &str, v: &str| {
        println!("{measure:<40} {baseline:<22} {distlab:<24} {ratio:<15} {goal:<18} {v}");
    };
    println!();
    println!(
        "medians of {rounds} round(s), {} s per measurement, no toxic; HTTP: GET {} ({})",
        args.seconds,
        args.http_target.path(),
        args.http_target.name()
    );
    row(
        "measure",
        "baseline (direct)",
        "through the sidecar",
        "ratio / added",
        "goal",
        "verdict",
    );
    let pg_direct = m(&|r| r.pgbench[0].tps);
    let pg_proxy = m(&|r| r.pgbench[1].tps);
    let pg_ratio = pg_proxy / pg_direct;
    row(
        &format!("pgbench, {} clients, tps", args.pg_clients),
        &thousands(pg_direct),
        &thousands(pg_proxy),
        &format!("{pg_ratio:.2}"),
        "≥ 0.9 × direct",
        verdict(pg_ratio >= 0.9),
    );
    let (lat_direct, lat_proxy) = (
        m(&|r| r.pgbench[0].latency_ms),
        m(&|r| r.pgbench[1].latency_ms),
    );
    row(
        "  pgbench latency average",
        &format!("{lat_direct:.2} ms"),
        &format!("{lat_proxy:.2} ms"),
        &format!("{:+.2} ms", lat_proxy - lat_direct),
        "",
        "",
    );
    let direct_rps = m(&|r| r.loaded[0].rps);
    let (direct_p50, direct_p99) = (m(&|r| r.loaded[0].p50_us), m(&|r| r.loaded[0].p99_us));
    let (single_p50, single_p99) = (m(&|r| r.single[0].p50_us), m(&|r| r.single[0].p99_us));
    for way in [Way::Tcp, Way::Http, Way::Relay] {
        let i = way.index();
        // The plain relay is the reference, not the sidecar: no goal.
        let judged = way != Way::Relay;
        let goal = |text: &'static str| if judged { text } else { "(reference)" };
        let judge = |ok: bool| if judged { verdict(ok) } else { "" };
        let rps = m(&|r| r.loaded[i].rps);
        let ratio = rps / direct_rps;
        row(
            &format!(
                "HTTP {}, {} conns, req/s",
                way.name(),
                args.http_connections
            ),
            &thousands(direct_rps),
            &thousands(rps),
            &format!("{ratio:.2}"),
            goal("≥ 0.9 × direct"),
            judge(ratio >= 0.9),
        );
        let (p50, p99) = (m(&|r| r.loaded[i].p50_us), m(&|r| r.loaded[i].p99_us));
        row(
            "  p50 / p99, µs",
            &format!("{} / {}", thousands(direct_p50), thousands(direct_p99)),
            &format!("{} / {}", thousands(p50), thousands(p99)),
            &format!(
                "{} / {}",
                signed_us(p50 - direct_p50),
                signed_us(p99 - direct_p99)
            ),
            "",
            "",
        );
        let (p50, p99) = (m(&|r| r.single[i].p50_us), m(&|r| r.single[i].p99_us));
        row(
            &format!("HTTP {}, 1 conn, p50 / p99, µs", way.name()),
            &format!("{} / {}", thousands(single_p50), thousands(single_p99)),
            &format!("{} / {}", thousands(p50), thousands(p99)),
            &format!(
                "{} / {}",
                signed_us(p50 - single_p50),
                signed_us(p99 - single_p99)
            ),
            goal("added p50 ≤ 50 µs"),
            judge(p50 - single_p50 <= 50.0),
        );
        row(
            "  req/s",
            &thousands(m(&|r| r.single[0].rps)),
            &thousands(m(&|r| r.single[i].rps)),
            &format!("{:.2}", m(&|r| r.single[i].rps) / m(&|r| r.single[0].rps)),
            "",
            "",
        );
    }
    let held = results.iter().map(|r| r.held.passed).min().unwrap_or(0);
    row(
        "connections held (round trip each)",
        "",
        &format!("{held} of {} (fewest)", args.hold),
        "",
        "≥ 1,000",
        verdict(held >= 1000 && held == args.hold),
    );
    let rss_of = |f: fn(&Held) -> Option<Usage>| {
        let values: Vec<f64> = results
            .iter()
            .filter_map(|r| f(&r.held))
            .map(|u| u.rss_kib as f64 / 1024.0)
            .collect();
        if values.is_empty() {
            "?".to_owned()
        } else {
            format!("{:.1}", median(&values))
        }
    };
    row(
        "  sidecar RSS, MiB",
        "",
        &format!(
            "{} → {} → {}",
            rss_of(|h| h.before),
            rss_of(|h| h.during),
            rss_of(|h| h.after)
        ),
        "before → during → after",
        "",
        "",
    );
    if let Some((soft, hard)) = sidecar_limit {
        row(
            "  sidecar open files limit",
            "",
            &format!("soft {soft}, hard {hard}"),
            "",
            "",
            "",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:8082/products/BENCH-CHAOS
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  20.00ms   90.00%
    Req/Sec     6.00k   500.00     7.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.40ms
     90%    1.80ms
     99%    3.45ms
  120000 requests in 10.00s, 20.00MB read
Requests/sec:  12000.50
Transfer/sec:      2.00MB
";
        let run = parse_wrk(text).expect("parsed");
        assert!((run.rps - 12000.5).abs() < 1e-6);
        assert!((run.p50_us - 1100.0).abs() < 1e-6);
        assert!((run.p99_us - 3450.0).abs() < 1e-6);
        assert_eq!(wrk_duration_us("512.00us"), Some(512.0));
        assert_eq!(wrk_duration_us("2.00s"), Some(2e6));
        assert_eq!(wrk_duration_us("1.00m"), Some(60e6));
    }

    #[test]
    fn reads_pgbench_output() {
        let text = "number of failed transactions: 0 (0.000%)
latency average = 7.756 ms
initial connection time = 12.345 ms
tps = 4125.123456 (without initial connection time)
";
        let run = parse_pgbench(text).expect("parsed");
        assert!((run.tps - 4125.123456).abs() < 1e-6);
        assert!((run.latency_ms - 7.756).abs() < 1e-9);
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(12345.6), "12,346");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(rotated(&[1, 2, 3], 1), vec![2, 3, 1]);
    }
}
