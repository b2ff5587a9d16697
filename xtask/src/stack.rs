//! The local stack: every part of DESIGN.md's port table that runs without Docker.
//!
//! Each part has a port, a way to start, a readiness probe and a way to stop. State, logs and pid files live
//! in `.distlab/` at the workspace root (git-ignored). `up` is idempotent: a part that is healthy and was
//! started by this checkout is left alone; a port taken by anything else is an error, never silently reused.
//! Readiness is probed (pg_isready, PING, ruok, a Kafka produce and fetch, `/readyz`) with a deadline, never
//! slept for; a broker, Redis or ZooKeeper that runs but fails its probe is restarted by `up`.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use distlab_messaging::kafka;

use crate::install::{self, run};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres {
        databases: &'static [&'static str],
    },
    Kafka,
    Redis,
    ZooKeeper,
    Service {
        binary: &'static str,
        package: &'static str,
    },
    /// A node of the Raft config service; node 3 initialises the cluster once all three run.
    ConfigNode {
        id: u64,
    },
}

/// The config service's binary and package.
const CONFIG_BINARY: &str = "distlab-config";
const CONFIG_PACKAGE: &str = "config";

#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub name: &'static str,
    pub port: u16,
    kind: Kind,
}

impl Part {
    fn is_service(&self) -> bool {
        matches!(self.kind, Kind::Service { .. } | Kind::ConfigNode { .. })
    }

    fn binary(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Service { binary, .. } => Some(binary),
            Kind::ConfigNode { .. } => Some(CONFIG_BINARY),
            _ => None,
        }
    }
}

/// Every part, in start order (stopped in reverse).
pub const PARTS: &[Part] = &[
    Part {
        name: "orders-db",
        port: 15432,
        kind: Kind::Postgres {
            databases: &["orders", "coordinator", "locks"],
        },
    },
    Part {
        name: "inventory-db",
        port: 15433,
        kind: Kind::Postgres {
            databases: &["inventory"],
        },
    },
    Part {
        name: "kafka",
        port: 19092,
        kind: Kind::Kafka,
    },
    Part {
        name: "redis-16379",
        port: 16379,
        kind: Kind::Redis,
    },
    Part {
        name: "redis-16380",
        port: 16380,
        kind: Kind::Redis,
    },
    Part {
        name: "redis-16381",
        port: 16381,
        kind: Kind::Redis,
    },
    Part {
        name: "zookeeper",
        port: 12181,
        kind: Kind::ZooKeeper,
    },
    Part {
        name: "config-1",
        port: 8091,
        kind: Kind::ConfigNode { id: 1 },
    },
    Part {
        name: "config-2",
        port: 8092,
        kind: Kind::ConfigNode { id: 2 },
    },
    Part {
        name: "config-3",
        port: 8093,
        kind: Kind::ConfigNode { id: 3 },
    },
    Part {
        name: "inventory",
        port: 8082,
        kind: Kind::Service {
            binary: "distlab-inventory",
            package: "inventory",
        },
    },
    Part {
        name: "order",
        port: 8081,
        kind: Kind::Service {
            binary: "distlab-order",
            package: "order",
        },
    },
    Part {
        name: "coordinator",
        port: 8083,
        kind: Kind::Service {
            binary: "distlab-coordinator",
            package: "coordinator",
        },
    },
    Part {
        name: "lock",
        port: 8084,
        kind: Kind::Service {
            binary: "distlab-lock",
            package: "lock",
        },
    },
];

/// The admin token of the local stack's services, unless `ADMIN_TOKEN` is set (loopback only; see README).
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
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // Empty while a process is between fork and exec: too early to tell, so not a stranger.
        let ours = cmdline.is_empty() || String::from_utf8_lossy(&cmdline).contains(program);
        (ours && is_alive(pid)).then_some(pid)
    }

    /// Whether the part does its job, and if not, why. Each probe exercises the part itself: PostgreSQL
    /// accepts connections, Redis answers PING, ZooKeeper `ruok`, the broker stores a record and serves it
    /// back, a service's `/readyz` is 200 (its own dependencies included), a config node is alive.
    fn check(&self, part: &Part) -> anyhow::Result<()> {
        match part.kind {
            Kind::Postgres { .. } => {
                let bin = install::postgres_bin_dir().context("PostgreSQL is not installed")?;
                let ready = Command::new(bin.join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &part.port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                anyhow::ensure!(ready, "pg_isready: not accepting connections");
                Ok(())
            }
            Kind::Redis => {
                let answer = tcp_exchange(
                    part.port,
                    b"PING\r\n",
                    |answer| answer.ends_with(b"\r\n"),
                    Duration::from_secs(1),
                )
                .context("no answer to PING")?;
                anyhow::ensure!(answer.starts_with("+PONG"), "PING answered {answer:?}");
                Ok(())
            }
            Kind::ZooKeeper => {
                let answer = tcp_exchange(part.port, b"ruok", |_| false, Duration::from_secs(1))
                    .context("no answer to ruok")?;
                anyhow::ensure!(answer == "imok", "ruok answered {answer:?}");
                Ok(())
            }
            Kind::Kafka => {
                anyhow::ensure!(port_open(part.port), "not listening");
                block_on(kafka::round_trip(
                    &format!("127.0.0.1:{}", part.port),
                    KAFKA_PROBE_TIMEOUT,
                ))
                .map(drop)
                .context("a produce and fetch round trip failed")
            }
            Kind::Service { .. } => {
                let (status, body) =
                    http_get(part.port, "/readyz").context("/readyz: no answer")?;
                anyhow::ensure!(status == 200, "/readyz answered {status}: {body}");
                Ok(())
            }
            // Alive; whether the cluster has a leader is `after_ready`'s and `status`'s business.
            Kind::ConfigNode { .. } => {
                let (status, _) = http_get(part.port, "/healthz").context("/healthz: no answer")?;
                anyhow::ensure!(status == 200, "/healthz answered {status}");
                Ok(())
            }
        }
    }

    fn healthy(&self, part: &Part) -> bool {
        self.check(part).is_ok()
    }

    /// Whether a part that runs but fails its probe is restarted by `up`. Infrastructure whose probe tests
    /// the process itself, yes: a broker whose storage failed keeps its port and answers errors for ever.
    /// PostgreSQL may be replaying its WAL, and a service may only wait for one of its dependencies: those
    /// are waited for, never killed.
    fn restart_when_stuck(&self, part: &Part) -> bool {
        matches!(part.kind, Kind::Kafka | Kind::Redis | Kind::ZooKeeper)
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
        if with_services {
            println!("==> building the services (release)");
            let mut build = Command::new(env!("CARGO"));
            build
                .current_dir(&self.root)
                .args(["build", "--release", "--quiet"]);
            for part in PARTS {
                if let Kind::Service { package, .. } = part.kind {
                    build.args(["-p", package]);
                }
            }
            build.args(["-p", CONFIG_PACKAGE]);
            run(&mut build)?;
        }
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
                Kind::Kafka | Kind::ZooKeeper | Kind::Service { .. } | Kind::ConfigNode { .. }
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
                let mut command = Command::new(tansu);
                command.current_dir(&self.state).args([
                    "broker",
                    "--listener-url",
                    &listener,
                    "--advertised-listener-url",
                    &listener,
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
                    );
                self.spawn(part, &mut command)
            }
            Kind::Service { binary, .. } => {
                let mut command = self.service_command(binary)?;
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

    /// Where a PostgreSQL cluster's files live: `.distlab/<part>`, owned by `postgres` when running as root.
    /// If the `postgres` user cannot reach the checkout (e.g. it is under a private home directory), the
    /// files go to `/var/tmp/distlab-<hash>/<part>` and `.distlab/<part>` is a symbolic link to it.
    fn prepare_pg_dir(&self, part: &Part) -> anyhow::Result<PathBuf> {
        let dir = self.state.join(part.name);
        if !install::is_root() {
            fs::create_dir_all(&dir)?;
            return Ok(dir);
        }
        if !dir.exists() {
            fs::create_dir_all(&self.state)?;
            let reachable = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-x", path_str(&self.state)?])
                .status()
                .is_ok_and(|s| s.success());
            if reachable {
                fs::create_dir_all(&dir)?;
            } else {
                let outside = PathBuf::from(format!(
                    "/var/tmp/distlab-{:016x}",
                    fnv1a(path_str(&self.root)?)
                ))
                .join(part.name);
                fs::create_dir_all(&outside)?;
                std::os::unix::fs::symlink(&outside, &dir)?;
            }
        }
        run(Command::new("chown").args([
            "-R",
            "postgres:postgres",
            &format!("{}/", path_str(&dir)?),
        ]))?;
        Ok(dir)
    }

    fn start_postgres(&self, part: &Part) -> anyhow::Result<()> {
        let bin = install::postgres_bin_dir().context("PostgreSQL is not installed")?;
        let dir = self.prepare_pg_dir(part)?;
        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            as_postgres(bin.join("initdb"))
                .args([
                    "-D",
                    path_str(&data)?,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ])
                .stdout(Stdio::null())
                .status()
                .context("initdb failed")?
                .success()
                .then_some(())
                .context("initdb failed")?;
        }
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_prepared_transactions=64 -c max_connections=200 \
             -c shared_buffers=256MB -c fsync=on -c synchronous_commit=on \
             -c shared_preload_libraries=pg_stat_statements",
            part.port,
            path_str(&dir)?
        );
        let status = as_postgres(bin.join("pg_ctl"))
            .args([
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&dir.join("postgres.log"))?,
                "-o",
                &options,
            ])
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "pg_ctl start failed; see {}",
            dir.join("postgres.log").display()
        );
        Ok(())
    }

    fn psql(&self, part: &Part, sql: &str) -> anyhow::Result<String> {
        self.psql_in(part, "postgres", sql)
    }

    fn psql_in(&self, part: &Part, database: &str, sql: &str) -> anyhow::Result<String> {
        let bin = install::postgres_bin_dir().context("PostgreSQL is not installed")?;
        let output = Command::new(bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &part.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "psql on {}: {}",
            part.name,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn create_database(&self, part: &Part, database: &str) -> anyhow::Result<()> {
        let exists = self.psql(
            part,
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        )?;
        if exists.trim() != "1" {
            self.psql(part, &format!("CREATE DATABASE \"{database}\""))?;
        }
        Ok(())
    }

    /// Drops the databases that tests made (`test_…`) and left behind — first rolling back the prepared
    /// transactions a failed 2PC test may have left in them (they would keep the database in use).
    pub fn drop_test_databases(&self) -> anyhow::Result<()> {
        for part in PARTS
            .iter()
            .filter(|p| matches!(p.kind, Kind::Postgres { .. }))
        {
            let prepared = self.psql(
                part,
                "SELECT database || ' ' || gid FROM pg_prepared_xacts WHERE database LIKE 'test\\_%'",
            )?;
            for line in prepared.lines() {
                let Some((database, gid)) = line.split_once(' ') else {
                    continue;
                };
                if gid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    self.psql_in(part, database, &format!("ROLLBACK PREPARED '{gid}'"))?;
                }
            }
            let names = self.psql(
                part,
                "SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'",
            )?;
            for name in names.lines().filter(|n| !n.is_empty()) {
                self.psql(part, &format!("DROP DATABASE \"{name}\" WITH (FORCE)"))?;
            }
        }
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

/// A command run as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: PathBuf) -> Command {
    if install::is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
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

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Sends `request` and returns what comes back before `complete` says it is all there, the peer closes or
/// `wait` passes (at most 16 KiB).
fn tcp_exchange(
    port: u16,
    request: &[u8],
    complete: fn(&[u8]) -> bool,
    wait: Duration,
) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while answer.len() < 16 * 1024 {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if complete(&answer) {
                    break;
                }
            }
            Err(_) if !answer.is_empty() => break,
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&answer).trim().to_owned())
}

/// The status code and body of `GET path` on the port, if it answers HTTP.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    // A service's /readyz asks its own dependencies (Kafka with a 1.5 s deadline) before it answers.
    let response = tcp_exchange(port, request.as_bytes(), |_| false, Duration::from_secs(3))?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body.trim());
    Some((status, body.to_owned()))
}

/// The admin token the stack's services get.
fn admin_token() -> String {
    std::env::var("ADMIN_TOKEN").unwrap_or(LOCAL_ADMIN_TOKEN.into())
}

/// Initialises the config cluster through node 1 (once: an initialised cluster answers 409), then waits
/// until it has elected a leader.
async fn init_config_cluster() -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let response = http
        .post("http://127.0.0.1:8091/v1/cluster/init")
        .bearer_auth(admin_token())
        .send()
        .await
        .context("POST /v1/cluster/init")?;
    match response.status().as_u16() {
        200 => println!("    config cluster initialised (nodes 1–3)"),
        409 => {}
        other => bail!(
            "initialising the config cluster: {other} {}",
            response.text().await.unwrap_or_default()
        ),
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while http_get(8091, "/readyz").map(|(status, _)| status) != Some(200) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the config cluster elected no leader within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    Ok(())
}

/// `  follower of 2, term 3` for `cargo xtask status`.
async fn raft_role(port: u16) -> String {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return String::new();
    };
    let url = format!("http://127.0.0.1:{port}/v1/cluster");
    let Ok(response) = http.get(url).send().await else {
        return String::new();
    };
    let Ok(status) = response.json::<serde_json::Value>().await else {
        return String::new();
    };
    let term = &status["term"];
    match (status["state"].as_str(), status["leader"].as_u64()) {
        (Some("leader"), _) => format!(" — LEADER, term {term}"),
        (Some(state), Some(leader)) => format!(" — {state} of node {leader}, term {term}"),
        (Some(state), None) => format!(" — {state}, no leader known, term {term}"),
        _ => String::new(),
    }
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
