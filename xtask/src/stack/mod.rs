//! The local stack: every part of docs/architecture.md's port table.
//!
//! Each part has a port, a way to start, a readiness probe and a way to stop. State, logs and pid files live
//! in `.distlab/` at the workspace root (git-ignored). `up` is idempotent: a part that is healthy and was
//! started by this checkout is left alone; a port taken by anything else is an error, never silently reused.
//! Readiness is probed (pg_isready, PING, ruok, a Kafka produce and fetch, `/readyz`) with a deadline, never
//! slept for; a broker, Redis or ZooKeeper that runs but fails its probe is restarted by `up`.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use distlab_messaging::kafka;

use crate::install::{self, run};

mod config_cluster;
pub mod links;
mod parts;
mod postgres;
mod probe;
mod relaunch;

use config_cluster::{init_config_cluster, raft_role};
use parts::{CHAOS_BINARY, CHAOS_PACKAGE, CONFIG_BINARY, CONFIG_PACKAGE, Kind};
pub use parts::{PARTS, Part};
use postgres::as_postgres;
use probe::port_open;
pub use relaunch::kill_hard;

/// How long one part may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a stopped process may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `up` gives a running part that fails its probe before restarting it (see
/// `Stack::restart_when_stuck`): long enough for one that is still starting.
const STUCK_GRACE: Duration = Duration::from_secs(10);
/// How long the broker's produce-and-fetch probe may take.
const KAFKA_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Partitions of the topics the stack creates, unless `KAFKA_TOPIC_PARTITIONS` says otherwise. Enough for
/// two replicas of each service; every partition costs the local broker CPU even when idle (tansu runs a
/// few SQLite queries per partition per fetch).
pub const TOPIC_PARTITIONS: i32 = 4;

fn topic_partitions() -> i32 {
    std::env::var("KAFKA_TOPIC_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TOPIC_PARTITIONS)
}

/// The admin token of the local stack's services, unless `ADMIN_TOKEN` is set (loopback only; see docs/two-phase-commit.md, "fault switches").
pub const LOCAL_ADMIN_TOKEN: &str = "distlab-local-admin";

#[derive(Debug)]
pub struct Stack {
    root: PathBuf,
    state: PathBuf,
}

impl Stack {
    /// The stack of the workspace this xtask was built from.
    pub fn discover() -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let state = root.join(".distlab");
        Ok(Self { root, state })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pid_file(&self, part: &Part) -> PathBuf {
        self.state.join("pids").join(format!("{}.pid", part.name))
    }

    fn log_file(&self, part: &Part) -> PathBuf {
        match part.kind {
            Kind::Postgres { .. } => self.state.join(part.name).join("postgres.log"),
            _ => self.state.join("logs").join(format!("{}.log", part.name)),
        }
    }

    fn pg_data(&self, part: &Part) -> PathBuf {
        self.state.join(part.name).join("data")
    }

    /// The pid of the part's process, if this stack started one and it is alive. A pid file that survived
    /// its process (a reboot, a crash) may name a pid that now belongs to another program: the process's
    /// command line must name the part's program too, or the pid is not ours.
    fn pid(&self, part: &Part) -> Option<u32> {
        let file = match part.kind {
            Kind::Postgres { .. } => self.pg_data(part).join("postmaster.pid"),
            _ => self.pid_file(part),
        };
        let text = fs::read_to_string(file).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        let program = match part.kind {
            Kind::Postgres { .. } => "postgres",
            Kind::Kafka => "tansu",
            Kind::Redis => "redis-server",
            Kind::ZooKeeper => "QuorumPeerMain",
            Kind::Service { binary, .. } => binary,
            Kind::ConfigNode { .. } => CONFIG_BINARY,
            Kind::Chaos => CHAOS_BINARY,
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // Empty while a process is between fork and exec: too early to tell, so not a stranger.
        let ours = cmdline.is_empty() || String::from_utf8_lossy(&cmdline).contains(program);
        (ours && is_alive(pid)).then_some(pid)
    }

    fn healthy(&self, part: &Part) -> bool {
        self.check(part).is_ok()
    }

    /// Whether a part that runs but fails its probe is restarted by `up`. Infrastructure whose probe tests
    /// the process itself, yes: a broker whose storage failed keeps its port and answers errors for ever.
    /// PostgreSQL may be replaying its WAL, and a service may only wait for one of its dependencies: those
    /// are waited for, never killed.
    fn restart_when_stuck(&self, part: &Part) -> bool {
        matches!(
            part.kind,
            Kind::Kafka | Kind::Redis | Kind::ZooKeeper | Kind::Chaos
        )
    }

    pub fn is_fully_healthy(&self) -> bool {
        PARTS
            .iter()
            .all(|p| self.pid(p).is_some() && self.healthy(p))
    }

    /// Starts every part that is not running (services too when `with_services`).
    pub fn up(&self, with_services: bool) -> anyhow::Result<()> {
        self.up_recording(with_services, &mut Vec::new())
    }

    /// [`Stack::up`], adding to `started` each part it started (not those already running), also when it
    /// fails halfway, so that the caller can stop exactly those.
    pub fn up_recording(
        &self,
        with_services: bool,
        started_parts: &mut Vec<&'static Part>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        install::ensure_all(false)?;
        for dir in ["pids", "logs"] {
            fs::create_dir_all(self.state.join(dir))?;
        }
        // The chaos sidecar carries every link, infrastructure-only stacks included.
        println!(
            "==> building the {} (release)",
            if with_services {
                "services"
            } else {
                "chaos sidecar"
            }
        );
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(&self.root)
            .args(["build", "--release", "--quiet", "-p", CHAOS_PACKAGE]);
        if with_services {
            for part in PARTS {
                if let Kind::Service { package, .. } = part.kind {
                    build.args(["-p", package]);
                }
            }
            build.args(["-p", CONFIG_PACKAGE]);
        }
        run(&mut build)?;
        for part in PARTS.iter().filter(|p| with_services || !p.is_service()) {
            let was_running = self.pid(part).is_some();
            let result = self.up_part(part);
            if !was_running && self.pid(part).is_some() {
                started_parts.push(part);
            }
            result.with_context(|| format!("cannot start {}", part.name))?;
        }
        println!("==> stack up in {:.1?}", started.elapsed());
        Ok(())
    }

    fn up_part(&self, part: &Part) -> anyhow::Result<()> {
        if let (Some(pid), true) = (self.pid(part), self.binary_is_newer(part)) {
            println!(
                "    {:<13} :{:<5} rebuilt since it started; restarting",
                part.name, part.port
            );
            stop_pid(pid)?;
            let _ = fs::remove_file(self.pid_file(part));
        }
        let ours = self.pid(part);
        let health = ours.map(|_| self.check(part));
        if let Some(Ok(())) = health {
            println!("    {:<13} :{:<5} already running", part.name, part.port);
            return self.after_ready(part);
        }
        if let (Some(pid), Some(Err(why))) = (ours, &health)
            && self.restart_when_stuck(part)
            && self.wait_ready_within(part, STUCK_GRACE).is_err()
        {
            println!(
                "    {:<13} :{:<5} runs but is not healthy ({why:#}); restarting it",
                part.name, part.port
            );
            stop_pid(pid).or_else(|error| {
                // It did not stop on SIGTERM and was killed: gone either way.
                println!("    {:<13} {error:#}", part.name);
                anyhow::Ok(())
            })?;
            let _ = fs::remove_file(self.pid_file(part));
            let t = Instant::now();
            self.start(part)?;
            self.wait_ready(part)?;
            println!(
                "    {:<13} :{:<5} restarted in {:.1?}",
                part.name,
                part.port,
                t.elapsed()
            );
            return self.after_ready(part);
        }
        if ours.is_none() && port_open(part.port) {
            bail!(
                "port {} is taken by a process this stack did not start; stop it or free the port",
                part.port
            );
        }
        if ours.is_none() {
            let t = Instant::now();
            self.start(part)?;
            self.wait_ready(part)?;
            println!(
                "    {:<13} :{:<5} started in {:.1?}",
                part.name,
                part.port,
                t.elapsed()
            );
        } else {
            self.wait_ready(part)?;
            println!("    {:<13} :{:<5} became ready", part.name, part.port);
        }
        self.after_ready(part)
    }

    /// Whether a running service's binary was rebuilt after the service started.
    fn binary_is_newer(&self, part: &Part) -> bool {
        let Some(binary) = part.binary() else {
            return false;
        };
        let modified = |path: PathBuf| fs::metadata(path).and_then(|m| m.modified()).ok();
        match (
            modified(self.root.join("target/release").join(binary)),
            modified(self.pid_file(part)),
        ) {
            (Some(built), Some(started)) => built > started,
            _ => false,
        }
    }

    fn wait_ready(&self, part: &Part) -> anyhow::Result<()> {
        self.wait_ready_within(part, READY_TIMEOUT)
    }

    fn wait_ready_within(&self, part: &Part, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let why = match self.check(part) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            // PostgreSQL and Redis daemonise and write their own pid files a moment later; the processes
            // this stack spawns itself have theirs from the start.
            let spawned = matches!(
                part.kind,
                Kind::Kafka
                    | Kind::ZooKeeper
                    | Kind::Service { .. }
                    | Kind::ConfigNode { .. }
                    | Kind::Chaos
            );
            if spawned && self.pid(part).is_none() {
                bail!(
                    "{} exited during start-up; last log lines:\n{}",
                    part.name,
                    self.tail(part, 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?} ({why:#}); last log lines:\n{}",
                    part.name,
                    self.tail(part, 20)
                );
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// Work that needs the part ready: databases for PostgreSQL, topics for Kafka.
    fn after_ready(&self, part: &Part) -> anyhow::Result<()> {
        match part.kind {
            Kind::Postgres { databases } => databases
                .iter()
                .try_for_each(|db| self.create_database(part, db)),
            Kind::Kafka => {
                let brokers = format!("127.0.0.1:{}", part.port);
                let topics = [
                    distlab_messaging::events::ORDER_EVENTS,
                    distlab_messaging::events::INVENTORY_EVENTS,
                ];
                block_on(kafka::ensure_topics(
                    &brokers,
                    &topics,
                    topic_partitions(),
                    1,
                ))
                .map(drop)
            }
            Kind::ConfigNode { id: 3 } => block_on(init_config_cluster()),
            Kind::Service {
                binary: "distlab-gateway",
                ..
            } => block_on(seed_shop()),
            _ => Ok(()),
        }
    }

    fn start(&self, part: &Part) -> anyhow::Result<()> {
        match part.kind {
            Kind::Postgres { .. } => self.start_postgres(part),
            Kind::Kafka => {
                let tansu =
                    install::tansu_bin().context("tansu is not installed (cargo xtask install)")?;
                let dir = self.state.join("kafka");
                fs::create_dir_all(&dir)?;
                // A new database is a new broker, and says so with a new cluster id.
                let cluster_id = distlab_testkit::tansu_cluster_id(&dir)?;
                let listener = format!("tcp://127.0.0.1:{}", part.port);
                // Clients are told to reach the broker through its chaos proxy (see `links`).
                let advertised = format!("tcp://{}", links::address(links::KAFKA_ADVERTISED));
                let mut command = Command::new(tansu);
                command.current_dir(&self.state).args([
                    "broker",
                    "--listener-url",
                    &listener,
                    "--advertised-listener-url",
                    &advertised,
                    "--storage-engine",
                    "sqlite://kafka/tansu.db",
                    "--cluster-id",
                    &cluster_id,
                ]);
                self.spawn(part, &mut command)
            }
            Kind::Redis => {
                let dir = self.state.join(part.name);
                fs::create_dir_all(&dir)?;
                run(Command::new("redis-server").args([
                    "--port",
                    &part.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--daemonize",
                    "yes",
                    "--save",
                    "",
                    // The lock backends keep fencing counters here: an append-only file, fsynced every
                    // second, so a restart does not send tokens back to zero.
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--dir",
                    path_str(&dir)?,
                    "--pidfile",
                    path_str(&self.pid_file(part))?,
                    "--logfile",
                    path_str(&self.log_file(part))?,
                ]))
            }
            Kind::ZooKeeper => {
                let dir = self.state.join(part.name);
                fs::create_dir_all(dir.join("data"))?;
                let config = dir.join("zoo.cfg");
                fs::write(
                    &config,
                    format!(
                        "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                         clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                         minSessionTimeout=1000\nmaxSessionTimeout=60000\nmaxClientCnxns=0\n\
                         4lw.commands.whitelist=ruok,stat,srvr\n",
                        path_str(&dir.join("data"))?,
                        part.port
                    ),
                )?;
                let mut command = Command::new("java");
                command.current_dir(&dir).args([
                    "-Xmx256m",
                    // Empty lock directories (container nodes) are reaped every 5 s, not every minute.
                    "-Dznode.container.checkIntervalMs=5000",
                    "-cp",
                    &format!("/etc/zookeeper/conf:{}", install::ZOOKEEPER_JAR),
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                    path_str(&config)?,
                ]);
                self.spawn(part, &mut command)
            }
            Kind::ConfigNode { id } => {
                let mut command = self.service_command(CONFIG_BINARY)?;
                command
                    .env("NODE_ID", id.to_string())
                    .env("LISTEN_ADDR", format!("127.0.0.1:{}", part.port))
                    .env("DATA_DIR", self.state.join(part.name))
                    .env(
                        "INITIAL_MEMBERS",
                        "1=127.0.0.1:8091,2=127.0.0.1:8092,3=127.0.0.1:8093",
                    )
                    .env("PEER_ROUTES", links::config_peer_routes(id));
                self.spawn(part, &mut command)
            }
            Kind::Service { binary, .. } => {
                let mut command = self.service_command(binary)?;
                command.envs(links::service_env(binary));
                self.spawn(part, &mut command)
            }
            Kind::Chaos => {
                let dir = self.state.join("chaos");
                fs::create_dir_all(&dir)?;
                let file = dir.join("proxies.json");
                fs::write(&file, serde_json::to_string_pretty(&links::proxies_json())?)?;
                let mut command = self.service_command(CHAOS_BINARY)?;
                command
                    .env("LISTEN_ADDR", format!("127.0.0.1:{}", part.port))
                    .env("CHAOS_PROXIES_FILE", &file);
                self.spawn(part, &mut command)
            }
        }
    }

    /// A release binary of the workspace, run from the checkout with the stack's admin token.
    fn service_command(&self, binary: &str) -> anyhow::Result<Command> {
        let exe = self.root.join("target/release").join(binary);
        anyhow::ensure!(exe.is_file(), "{} is not built", exe.display());
        let mut command = Command::new(exe);
        // Without RUST_LOG the services use their own default filter (which quiets chatty crates).
        if let Ok(filter) = std::env::var("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command
            .current_dir(&self.root)
            .env("ADMIN_TOKEN", admin_token());
        Ok(command)
    }

    /// Starts a long-running process in its own process group, logging to its log file.
    fn spawn(&self, part: &Part, command: &mut Command) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(part))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot spawn {command:?}"))?;
        fs::write(self.pid_file(part), child.id().to_string())?;
        Ok(())
    }

    /// Stops every part this stack started, services first.
    pub fn down(&self) -> anyhow::Result<()> {
        self.stop(PARTS)
    }

    /// Stops the given parts that are running, in reverse start order. A part that fails to stop does not
    /// keep the others running: every part is tried, and the failures are reported together.
    pub fn stop<'a>(&self, parts: impl IntoIterator<Item = &'a Part>) -> anyhow::Result<()> {
        let mut parts: Vec<&Part> = parts.into_iter().collect();
        parts.sort_by_key(|part| std::cmp::Reverse(PARTS.iter().position(|p| p.name == part.name)));
        let mut failures = Vec::new();
        for part in parts {
            let Some(pid) = self.pid(part) else { continue };
            match self.stop_part(part, pid) {
                Ok(()) => println!("    {:<13} stopped (pid {pid})", part.name),
                Err(error) => failures.push(format!("{}: {error:#}", part.name)),
            }
            let _ = fs::remove_file(self.pid_file(part));
        }
        anyhow::ensure!(
            failures.is_empty(),
            "some parts did not stop cleanly: {}",
            failures.join("; ")
        );
        Ok(())
    }

    fn stop_part(&self, part: &Part, pid: u32) -> anyhow::Result<()> {
        match part.kind {
            Kind::Postgres { .. } => {
                let bin = install::postgres_bin_dir().context("PostgreSQL is not installed")?;
                let status = as_postgres(bin.join("pg_ctl"))
                    .args([
                        "-D",
                        path_str(&self.pg_data(part))?,
                        "-m",
                        "fast",
                        "-w",
                        "stop",
                    ])
                    .stdout(Stdio::null())
                    .status()?;
                anyhow::ensure!(status.success(), "pg_ctl stop failed");
                Ok(())
            }
            _ => stop_pid(pid),
        }
    }

    pub fn status(&self) -> anyhow::Result<()> {
        println!("{:<13} {:>6} {:>8}  health", "part", "port", "pid");
        for part in PARTS {
            let pid = self.pid(part);
            let health = match (pid, self.check(part)) {
                (Some(_), Ok(())) => "healthy".to_owned(),
                (Some(_), Err(why)) => format!("NOT HEALTHY: {why:#}"),
                (None, Ok(())) => "answers, but not started by this stack".to_owned(),
                (None, Err(_)) => "stopped".to_owned(),
            };
            let pid = pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let raft = match part.kind {
                Kind::ConfigNode { .. } => block_on(raft_role(part.port)),
                _ => String::new(),
            };
            println!(
                "{:<13} {:>6} {:>8}  {health}{raft}",
                part.name, part.port, pid
            );
        }
        crate::chaos_cli::print_links_if_running();
        Ok(())
    }

    pub fn logs(&self, name: &str, lines: usize, follow: bool) -> anyhow::Result<()> {
        let part = PARTS.iter().find(|p| p.name == name).with_context(|| {
            let names: Vec<&str> = PARTS.iter().map(|p| p.name).collect();
            format!("no part called {name}; parts: {}", names.join(", "))
        })?;
        let file = self.log_file(part);
        anyhow::ensure!(
            file.exists(),
            "{} has no log yet ({})",
            part.name,
            file.display()
        );
        let mut tail = Command::new("tail");
        tail.args(["-n", &lines.to_string()]);
        if follow {
            tail.arg("-F");
        }
        run(tail.arg(&file))
    }

    fn tail(&self, part: &Part, lines: usize) -> String {
        let text = fs::read_to_string(self.log_file(part)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3)
    })
}

fn is_alive(pid: u32) -> bool {
    // A zombie (state Z) has exited; only its parent has not reaped it yet.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn stop_pid(pid: u32) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_alive(pid) {
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            bail!("pid {pid} did not stop within {STOP_TIMEOUT:?}; killed");
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    Ok(())
}

/// The admin token the stack's services get.
fn admin_token() -> String {
    std::env::var("ADMIN_TOKEN").unwrap_or(LOCAL_ADMIN_TOKEN.into())
}

/// Runs a future on the xtask's runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime can be built")
        })
        .block_on(future)
}

/// The storefront's products (the gateway shows the SKUs starting with `shop-`): name, price in cents,
/// stock.
pub const SHOP: &[(&str, &str, i64, i64)] = &[
    ("shop-hoodie", "distlab hoodie", 5500, 200),
    ("shop-mug", "Two-phase mug", 1200, 500),
    ("shop-notebook", "Paxos notebook", 900, 300),
    ("shop-poster", "CAP poster", 1500, 300),
    ("shop-stickers", "Raft stickers", 300, 2000),
    ("shop-tshirt", "Eventually consistent T-shirt", 2500, 400),
];

/// Creates the storefront's products that do not exist yet, and puts back those that something renamed or
/// repriced (the contract check's generated requests rewrite existing products); the others keep their
/// stock.
async fn seed_shop() -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let inventory = "http://127.0.0.1:8082";
    let mut created = Vec::new();
    for (sku, name, price_cents, stock) in SHOP {
        let url = format!("{inventory}/products/{sku}");
        let found = http.get(&url).send().await?;
        let intact = found.status().is_success() && {
            let product: serde_json::Value = found.json().await?;
            product["name"] == *name && product["price_cents"] == *price_cents
        };
        if !intact {
            http.put(&url)
                .json(
                    &serde_json::json!({"name": name, "price_cents": price_cents, "stock": stock}),
                )
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("cannot create the shop's product {sku}"))?;
            created.push(*sku);
        }
    }
    if !created.is_empty() {
        println!("    shop          seeded {}", created.join(", "));
    }
    Ok(())
}
