//! `cargo xtask compose up|down|test|check|proxies`: the Docker Compose stack of `deploy/`, run for real on a
//! machine that cannot pull images.
//!
//! `deploy/docker-compose.yml` names public images (PostgreSQL, Apache Kafka, Redis, ZooKeeper) and builds
//! the services from source. `deploy/compose.offline.yml` swaps every one of them for an image built here:
//! a Debian base made with `mmdebstrap` and turned into an image with `docker import`, then one small image
//! per role (`deploy/offline/*.Dockerfile`), the services' image holding the release binaries compiled on
//! the host and the broker's image holding tansu, the local stack's Kafka-compatible broker.
//!
//! `compose test` brings the core stack up with the override, waits for every container to be healthy,
//! runs the walkthrough against it (an outbox order confirmed, a 2PC order, a lock with its fencing token, a
//! config write and read, a chaos fault and its heal, the storefront page) and takes it down with its
//! volumes. It publishes on 127.0.0.2 (`DISTLAB_HOST`), with the same port numbers, so that it can run
//! beside the local stack, which holds them on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::install;
use crate::stack::links::{self, Network};

/// The compose project of `compose up|down`: containers are `distlab_<service>_1` (1.29) or
/// `distlab-<service>-1` (v2).
const PROJECT: &str = "distlab";

/// The project of `compose test`: its own, so that the test (and its `down --volumes`) never touches a
/// stack someone started with `compose up`.
const TEST_PROJECT: &str = "distlabtest";

/// The Debian suite of the offline base and the packages baked into it: the servers of the core profile
/// (PostgreSQL 15, Redis 7, ZooKeeper 3.8 and its Java runtime), curl and netcat for the healthchecks.
const SUITE: &str = "bookworm";
const BASE_PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "netcat-openbsd",
    "postgresql-15",
    "redis-server",
    "zookeeper",
    "default-jre-headless",
];

/// The images the override names, and the Dockerfile each is built from (`deploy/offline/`).
const ROLES: &[(&str, &str)] = &[
    ("distlab-offline/postgres:latest", "postgres.Dockerfile"),
    ("distlab-offline/redis:latest", "redis.Dockerfile"),
    ("distlab-offline/zookeeper:latest", "zookeeper.Dockerfile"),
    ("distlab-offline/kafka:latest", "kafka.Dockerfile"),
    ("distlab-offline/services:latest", "services.Dockerfile"),
];

/// The service binaries the services' image holds.
const BINARIES: &[(&str, &str)] = &[
    ("order", "distlab-order"),
    ("inventory", "distlab-inventory"),
    ("coordinator", "distlab-coordinator"),
    ("lock", "distlab-lock"),
    ("config", "distlab-config"),
    ("chaos", "distlab-chaos"),
    ("gateway", "distlab-gateway"),
];

/// The services of the profiles `observability` and `load`: not part of the core stack (docker-compose
/// 1.29's `config --services` lists them too).
const PROFILED: &[&str] = &["jaeger", "prometheus", "grafana", "k6"];

/// The one-shot jobs of the core profile: done when they exited 0.
const JOBS: &[&str] = &["kafka-init", "config-init", "shop-seed"];

/// How long the core stack may take to become healthy once its containers are created.
const HEALTHY_WITHIN: Duration = Duration::from_secs(240);

/// The loopback address `compose test` publishes on (the local stack holds 127.0.0.1's ports).
const TEST_HOST: &str = "127.0.0.2";

/// The project of a stack published on `host`.
fn project(host: &str) -> &'static str {
    if host == TEST_HOST {
        TEST_PROJECT
    } else {
        PROJECT
    }
}

#[derive(Debug, Subcommand)]
pub enum ComposeCommand {
    /// Build the offline images and start the core stack with deploy/compose.offline.yml; waits until every
    /// container is healthy.
    Up,
    /// Stop the compose stack and remove its containers and volumes.
    Down,
    /// Up, the walkthrough against it, down (with volumes) — what `cargo xtask test` runs when a Docker engine
    /// answers.
    Test,
    /// Validate deploy/docker-compose.yml (alone, with every profile, and with the offline override) with
    /// `docker-compose config`; needs no Docker engine.
    Check,
    /// Rewrite deploy/chaos-proxies.json from xtask's link table.
    Proxies,
}

pub fn run(root: &Path, command: ComposeCommand) -> anyhow::Result<()> {
    match command {
        ComposeCommand::Up => {
            let host = std::env::var("DISTLAB_HOST").unwrap_or_else(|_| "127.0.0.1".into());
            up(root, &host).map(|_| ())
        }
        ComposeCommand::Down => down(root, "127.0.0.1"),
        ComposeCommand::Test => test(root),
        ComposeCommand::Check => check(root),
        ComposeCommand::Proxies => write_proxies(root),
    }
}

/// Whether a Docker engine answers (`docker info`), or why not.
pub fn engine() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
        Err(error) => Err(format!("cannot run docker: {error}")),
    }
}

/// `compose test` inside `cargo xtask test`: runs it when a Docker engine answers, and says plainly when it
/// did not.
pub fn test_if_engine(root: &Path) -> anyhow::Result<()> {
    check(root)?;
    match engine() {
        Ok(()) => test(root),
        Err(why) => {
            println!("==> compose test SKIPPED: no Docker engine answers ({why})");
            Ok(())
        }
    }
}

/// `docker-compose` (Debian's 1.29) when installed, else Compose v2 as `docker compose`.
fn compose_program() -> Vec<String> {
    if install::which("docker-compose").is_some() {
        vec!["docker-compose".into()]
    } else {
        vec!["docker".into(), "compose".into()]
    }
}

/// A compose command on `files` of `deploy/`, publishing on `host`.
fn compose(root: &Path, files: &[&str], host: &str) -> Command {
    let program = compose_program();
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]).current_dir(root.join("deploy"));
    command.args(["--project-name", project(host)]);
    for file in files {
        command.args(["--file", file]);
    }
    command.env("DISTLAB_HOST", host);
    command
}

const DEFAULT: &[&str] = &["docker-compose.yml"];
const OFFLINE: &[&str] = &["docker-compose.yml", "compose.offline.yml"];

fn output(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn stdout(command: &mut Command) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&output(command)?.stdout).into_owned())
}

/// `docker-compose config` of the default file alone, with every profile, and with the offline override;
/// also that deploy/chaos-proxies.json is the link table.
pub fn check(root: &Path) -> anyhow::Result<()> {
    println!(
        "==> docker-compose config (deploy/docker-compose.yml, every profile, offline override)"
    );
    install::ensure_package("docker-compose")?;
    let resolved = stdout(compose(root, DEFAULT, "127.0.0.1").args(["config"]))?;
    for service in [
        "orders-db",
        "kafka",
        "order",
        "gateway",
        "chaos",
        "config-3",
    ] {
        anyhow::ensure!(
            resolved.contains(&format!("\n  {service}:\n")),
            "docker-compose config lost the service {service}"
        );
    }
    output(
        compose(root, DEFAULT, "127.0.0.1")
            .args(["--profile", "observability", "--profile", "load"])
            .args(["config", "--quiet"]),
    )?;
    output(compose(root, OFFLINE, "127.0.0.1").args(["config", "--quiet"]))?;
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/chaos-proxies.json"))
            .context("reading deploy/chaos-proxies.json")?,
    )?;
    anyhow::ensure!(
        committed == links::proxies_json_for(Network::Compose),
        "deploy/chaos-proxies.json is out of date: run `cargo xtask compose proxies`"
    );
    Ok(())
}

fn write_proxies(root: &Path) -> anyhow::Result<()> {
    let path = root.join("deploy/chaos-proxies.json");
    let text = serde_json::to_string_pretty(&links::proxies_json_for(Network::Compose))? + "\n";
    std::fs::write(&path, text)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The tag of the offline base: it changes with the suite and the package list.
fn base_tag() -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(SUITE);
    for package in BASE_PACKAGES {
        hash.update(b"\0");
        hash.update(package);
    }
    format!(
        "distlab-offline/base:{SUITE}-{}",
        &hex::encode(hash.finalize())[..12]
    )
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Debian base: made once per package list (`mmdebstrap`, then `docker import`), kept as an image.
fn ensure_base(root: &Path) -> anyhow::Result<String> {
    let tag = base_tag();
    if image_exists(&tag) {
        return Ok(tag);
    }
    install::ensure_package("mmdebstrap")?;
    let dir = root.join(".distlab/compose");
    std::fs::create_dir_all(&dir)?;
    let tarball = dir.join("base.tar");
    println!(
        "==> making the offline Debian base with mmdebstrap ({SUITE}: {}; about 4 minutes, ~1 GB)",
        BASE_PACKAGES.join(", ")
    );
    let started = Instant::now();
    install::run(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase"])
            .arg(format!("--include={}", BASE_PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&tarball),
    )
    .context("mmdebstrap failed")?;
    println!(
        "    base made in {:.0?}; docker import {tag}",
        started.elapsed()
    );
    install::run(Command::new("docker").arg("import").arg(&tarball).arg(&tag))?;
    std::fs::remove_file(&tarball)?;
    Ok(tag)
}

/// Builds the release binaries and the offline images.
fn build_images(root: &Path) -> anyhow::Result<()> {
    println!("==> building the services (release)");
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(root)
        .args(["build", "--release", "--quiet"]);
    for (package, _) in BINARIES {
        build.args(["-p", package]);
    }
    install::run(&mut build)?;
    let tansu =
        install::tansu_bin().context("tansu is not installed: run `cargo xtask install`")?;
    let base = ensure_base(root)?;

    // Build contexts with only what each image copies: the binaries, tansu, the entrypoints.
    let contexts = root.join(".distlab/compose/contexts");
    let _ = std::fs::remove_dir_all(&contexts);
    let services = contexts.join("services");
    let kafka = contexts.join("kafka");
    std::fs::create_dir_all(&services)?;
    std::fs::create_dir_all(&kafka)?;
    for (_, binary) in BINARIES {
        std::fs::copy(
            root.join("target/release").join(binary),
            services.join(binary),
        )
        .with_context(|| format!("copying {binary}"))?;
    }
    std::fs::copy(&tansu, kafka.join("tansu")).context("copying tansu")?;
    let offline = root.join("deploy/offline");
    for (tag, dockerfile) in ROLES {
        let context: PathBuf = match *dockerfile {
            "services.Dockerfile" => services.clone(),
            "kafka.Dockerfile" => kafka.clone(),
            _ => offline.clone(),
        };
        println!("    docker build {tag}");
        output(
            Command::new("docker")
                .args(["build", "--quiet", "--build-arg"])
                .arg(format!("BASE={base}"))
                .args(["--tag", tag, "--file"])
                .arg(offline.join(dockerfile))
                .arg(&context),
        )?;
    }
    Ok(())
}

/// One container of the project: its compose service, state, health (when it has a healthcheck), exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Container {
    service: String,
    status: String,
    health: Option<String>,
    exit_code: i64,
}

impl Container {
    fn from_inspect(value: &Value) -> Option<Container> {
        Some(Container {
            service: value["Config"]["Labels"]["com.docker.compose.service"]
                .as_str()?
                .to_owned(),
            status: value["State"]["Status"].as_str()?.to_owned(),
            health: value["State"]["Health"]["Status"]
                .as_str()
                .map(str::to_owned),
            exit_code: value["State"]["ExitCode"].as_i64().unwrap_or(-1),
        })
    }

    fn is_job(&self) -> bool {
        JOBS.contains(&self.service.as_str())
    }

    fn done(&self) -> bool {
        if self.is_job() {
            self.status == "exited" && self.exit_code == 0
        } else {
            self.status == "running" && self.health.as_deref() == Some("healthy")
        }
    }

    fn failed(&self) -> bool {
        if self.is_job() {
            self.status == "exited" && self.exit_code != 0
        } else {
            // `restart: unless-stopped` turns a crash into "restarting", never "exited".
            matches!(self.status.as_str(), "exited" | "restarting")
                || self.health.as_deref() == Some("unhealthy")
        }
    }

    fn describe(&self) -> String {
        match (&self.health, self.is_job()) {
            (_, true) if self.status == "exited" => format!("exited {}", self.exit_code),
            (Some(health), _) => format!("{} ({health})", self.status),
            (None, _) => self.status.clone(),
        }
    }
}

/// The project's containers, as `docker inspect` describes them.
fn containers(host: &str) -> anyhow::Result<Vec<Container>> {
    let ids = stdout(Command::new("docker").args([
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label=com.docker.compose.project={}", project(host)),
    ]))?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let inspected: Value =
        serde_json::from_str(&stdout(Command::new("docker").arg("inspect").args(&ids))?)?;
    let mut containers: Vec<Container> = inspected
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Container::from_inspect)
        .collect();
    containers.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(containers)
}

/// The services of the core profile, as `docker-compose config --services` lists them.
fn core_services(root: &Path) -> anyhow::Result<Vec<String>> {
    Ok(
        stdout(compose(root, OFFLINE, "127.0.0.1").args(["config", "--services"]))?
            .lines()
            .filter(|s| !PROFILED.contains(s))
            .map(str::to_owned)
            .collect(),
    )
}

/// What `up` measured.
struct Started {
    to_healthy: Duration,
}

/// Builds the images, starts the core stack on `host` and waits until every container is healthy and every
/// job finished.
fn up(root: &Path, host: &str) -> anyhow::Result<Started> {
    engine().map_err(|why| anyhow::anyhow!("no Docker engine answers: {why}"))?;
    build_images(root)?;
    let services = core_services(root)?;
    println!(
        "==> docker-compose up ({} services, published on {host})",
        services.len()
    );
    let started = Instant::now();
    // `up` starts dependents only once their dependencies are healthy, so it returns late; it fails when a
    // dependency turns unhealthy or a job fails.
    let up = compose(root, OFFLINE, host)
        .args(["up", "--detach", "--no-build"])
        .status()?;
    if !up.success() {
        print_failures(root, host);
        bail!("docker-compose up failed ({up})");
    }
    let deadline = Instant::now() + HEALTHY_WITHIN;
    let mut last = String::new();
    loop {
        let containers = containers(host)?;
        let waiting: Vec<String> = containers
            .iter()
            .filter(|c| !c.done())
            .map(|c| format!("{} {}", c.service, c.describe()))
            .collect();
        let missing: Vec<&String> = services
            .iter()
            .filter(|s| !containers.iter().any(|c| &c.service == *s))
            .collect();
        if waiting.is_empty() && missing.is_empty() {
            break;
        }
        if let Some(failed) = containers.iter().find(|c| c.failed()) {
            print_failures(root, host);
            bail!("{} failed: {}", failed.service, failed.describe());
        }
        let now = format!("waiting for {}", waiting.join(", "));
        if now != last {
            println!("    {now}");
            last = now;
        }
        if Instant::now() > deadline {
            print_failures(root, host);
            bail!(
                "not healthy within {HEALTHY_WITHIN:?}: {}",
                waiting.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let to_healthy = started.elapsed();
    println!("==> core stack healthy in {to_healthy:.1?}");
    print_memory(host)?;
    Ok(Started { to_healthy })
}

/// Memory of every running container and the total (`docker stats`).
fn print_memory(host: &str) -> anyhow::Result<()> {
    let project = project(host);
    let stats = stdout(Command::new("docker").args([
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}\t{{.MemUsage}}",
    ]))?;
    let mut total = 0.0;
    let mut rows = Vec::new();
    for line in stats.lines() {
        let Some((name, usage)) = line.split_once('\t') else {
            continue;
        };
        if !(name.starts_with(&format!("{project}_")) || name.starts_with(&format!("{project}-"))) {
            continue;
        }
        let used = usage.split('/').next().unwrap_or("").trim();
        if let Some(mib) = parse_mib(used) {
            total += mib;
        }
        rows.push(format!("    {name:<32} {usage}"));
    }
    rows.sort();
    println!("==> memory (used / limit)");
    for row in rows {
        println!("{row}");
    }
    println!("    {:<32} {total:.0} MiB", "total");
    Ok(())
}

/// `12.5MiB`, `1.2GiB`, `800KiB` → MiB.
fn parse_mib(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let factor = match unit {
        "B" => 1.0 / 1024.0 / 1024.0,
        "KiB" | "kB" => 1.0 / 1024.0,
        "MiB" | "MB" => 1.0,
        "GiB" | "GB" => 1024.0,
        _ => return None,
    };
    Some(number * factor)
}

/// The state of every container and the last lines of the log of those not done.
fn print_failures(root: &Path, host: &str) {
    let Ok(containers) = containers(host) else {
        return;
    };
    for container in &containers {
        println!("    {:<14} {}", container.service, container.describe());
    }
    for container in containers.iter().filter(|c| !c.done()) {
        println!("---- logs of {} ----", container.service);
        let _ = compose(root, OFFLINE, host)
            .args(["logs", "--no-color", "--tail", "40", &container.service])
            .status();
    }
}

fn down(root: &Path, host: &str) -> anyhow::Result<()> {
    println!("==> docker-compose down --volumes");
    install::run(compose(root, OFFLINE, host).args(["down", "--volumes", "--remove-orphans"]))
}

/// Up on 127.0.0.2, the walkthrough, down (also after a failure).
fn test(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    // A stack left over by an interrupted run would hold the ports.
    if !containers(TEST_HOST)?.is_empty() {
        down(root, TEST_HOST)?;
    }
    let outcome = up(root, TEST_HOST).and_then(|up| {
        let walked = crate::stack::block_on(walkthrough(TEST_HOST));
        if walked.is_err() {
            print_failures(root, TEST_HOST);
        }
        walked.map(|()| up)
    });
    let downed = down(root, TEST_HOST);
    let up = outcome?;
    downed?;
    println!(
        "==> compose test passed in {:.0?} (core stack healthy {:.1?} after `up`)",
        started.elapsed(),
        up.to_healthy
    );
    Ok(())
}

async fn expect_json(
    request: reqwest::RequestBuilder,
    status: u16,
    what: &str,
) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| what.to_owned())?;
    let got = response.status().as_u16();
    let body = response.text().await?;
    anyhow::ensure!(
        got == status,
        "{what}: expected {status}, got {got}: {body}"
    );
    serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {body}"))
}

/// Polls `check` every 200 ms until it gives a value or `within` passes.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The walkthrough against the compose stack on `host`: each step as the README shows it with curl.
async fn walkthrough(host: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let url = |port: u16, path: &str| format!("http://{host}:{port}{path}");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let sku = format!("COMPOSE-{}", &run[..8]);

    println!("==> walkthrough on {host}");
    // 1. A product, and an order through the outbox: PENDING, then CONFIRMED.
    expect_json(
        http.put(url(8082, &format!("/products/{sku}")))
            .json(&json!({"name": "Compose widget", "price_cents": 1999, "stock": 10})),
        200,
        "PUT /products",
    )
    .await?;
    let placed = expect_json(
        http.post(url(8081, "/orders"))
            .header("idempotency-key", format!("compose-{run}"))
            .json(&json!({"customer_id": "alice", "items": [{"sku": sku, "quantity": 3}]})),
        202,
        "POST /orders (outbox)",
    )
    .await?;
    let id = placed["id"].as_str().context("order id")?.to_owned();
    eventually(
        "the outbox order to be CONFIRMED",
        Duration::from_secs(30),
        || {
            let request = http.get(url(8081, &format!("/orders/{id}")));
            async move {
                let order = expect_json(request, 200, "GET /orders/{id}").await?;
                anyhow::ensure!(order["status"] != "REJECTED", "order rejected: {order}");
                Ok((order["status"] == "CONFIRMED").then_some(()))
            }
        },
    )
    .await?;
    let product = expect_json(
        http.get(url(8082, &format!("/products/{sku}"))),
        200,
        "GET /products",
    )
    .await?;
    anyhow::ensure!(
        product["available"] == 7 && product["reserved"] == 3,
        "stock after the outbox order: {product}"
    );
    println!("    outbox order {id} CONFIRMED; stock 7 available, 3 reserved");

    // 2. The same order through 2PC: 201 CONFIRMED at once.
    let twopc = expect_json(
        http.post(url(8081, "/orders")).json(
            &json!({"customer_id": "bob", "items": [{"sku": sku, "quantity": 2}], "mode": "2pc"}),
        ),
        201,
        "POST /orders (2pc)",
    )
    .await?;
    anyhow::ensure!(twopc["status"] == "CONFIRMED", "2PC order: {twopc}");
    println!(
        "    2PC order {} CONFIRMED",
        twopc["id"].as_str().unwrap_or("?")
    );

    // 3. A lock and its fencing token; a second owner is refused while it is held.
    let lock = format!("compose-{}", &run[..8]);
    let lease = expect_json(
        http.post(url(8084, &format!("/locks/{lock}/acquire")))
            .json(&json!({"backend": "redis", "owner": "worker-1", "ttl_ms": 10000, "wait_ms": 0})),
        200,
        "acquire",
    )
    .await?;
    let token = lease["fencing_token"].as_u64().context("fencing token")?;
    expect_json(
        http.post(url(8084, &format!("/locks/{lock}/acquire")))
            .json(&json!({"backend": "redis", "owner": "worker-2", "ttl_ms": 10000, "wait_ms": 0})),
        409,
        "second acquire",
    )
    .await?;
    expect_json(
        http.post(url(8084, &format!("/locks/{lock}/release")))
            .json(&json!({"backend": "redis", "lease_id": lease["lease_id"]})),
        200,
        "release",
    )
    .await?;
    println!(
        "    lock {lock} held with fencing token {token}, refused to a second owner, released"
    );

    // 4. A config write through one node, read linearizably from another.
    let key = format!("walkthrough/compose-{}", &run[..8]);
    expect_json(
        http.put(url(8092, &format!("/v1/kv/{key}")))
            .json(&json!({"value": "written through node 2"})),
        200,
        "PUT /v1/kv",
    )
    .await?;
    let read = expect_json(
        http.get(url(8093, &format!("/v1/kv/{key}"))),
        200,
        "GET /v1/kv",
    )
    .await?;
    anyhow::ensure!(
        read["value"] == "written through node 2",
        "read back {read}"
    );
    println!("    config {key} written on node 2, read on node 3");

    // 5. A chaos fault and its heal: 300 ms on the order service's database link, then none.
    let order_read = || {
        let request = http.get(url(8081, &format!("/orders/{id}")));
        async move {
            let started = Instant::now();
            expect_json(request, 200, "GET /orders/{id}").await?;
            anyhow::Ok(started.elapsed())
        }
    };
    expect_json(
        http.post(url(8474, "/proxies/order->orders-db/toxics"))
            .json(&json!({
                "name": "compose-latency", "type": "latency", "stream": "downstream",
                "attributes": {"latency": 300}
            })),
        200,
        "add a latency toxic",
    )
    .await?;
    let slow = order_read().await?;
    anyhow::ensure!(
        slow >= Duration::from_millis(300),
        "a read through a 300 ms link took {slow:?}"
    );
    let events = expect_json(http.get(url(8474, "/events")), 200, "GET /events").await?;
    anyhow::ensure!(
        events.to_string().contains("compose-latency"),
        "the fault is not in the event log: {events}"
    );
    let reset = http.post(url(8474, "/reset")).send().await?;
    anyhow::ensure!(reset.status() == 204, "POST /reset: {}", reset.status());
    // Reads that were in flight when the fault went drain first; then they are fast.
    let fast = eventually(
        "reads to be fast again after the heal",
        Duration::from_secs(10),
        || async {
            let took = order_read().await?;
            Ok((took < Duration::from_millis(100)).then_some(took))
        },
    )
    .await?;
    println!(
        "    chaos: a read took {slow:.0?} with +300 ms on order->orders-db, {fast:.0?} after the heal"
    );

    // 6. The storefront: the shop's products (seeded by shop-seed) on a full page. The fault above made
    // the bestsellers panel (the order service's database) time out, so the gateway served degraded pages
    // until its breaker closed again; that takes a couple of seconds.
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let last = std::sync::Mutex::new(String::new());
    let html = eventually("a full storefront page", Duration::from_secs(20), || {
        let request = http.get(url(8080, "/"));
        let last = &last;
        async move {
            let page = request.send().await?;
            anyhow::ensure!(page.status() == 200, "storefront: {}", page.status());
            let kind = header(&page, "x-distlab-page");
            *last.lock().unwrap_or_else(|e| e.into_inner()) =
                format!("{kind} ({})", header(&page, "x-distlab-degraded-because"));
            let html = page.text().await?;
            Ok((kind == "full").then_some(html))
        }
    })
    .await
    .with_context(|| {
        let last = last.lock().unwrap_or_else(|e| e.into_inner());
        format!("the last page was {last}")
    })?;
    anyhow::ensure!(
        html.contains("data-sku=\"shop-mug\""),
        "the storefront does not show shop-mug"
    );
    println!("    storefront: a full page with the shop's products");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_to_mib() {
        assert_eq!(parse_mib("12.5MiB"), Some(12.5));
        assert_eq!(parse_mib("1.5GiB"), Some(1536.0));
        assert_eq!(parse_mib("512KiB"), Some(0.5));
        assert_eq!(parse_mib("n/a"), None);
    }

    #[test]
    fn a_job_is_done_when_it_exited_zero_and_a_server_when_healthy() {
        let container = |service: &str, status: &str, health: Option<&str>, exit_code| Container {
            service: service.into(),
            status: status.into(),
            health: health.map(str::to_owned),
            exit_code,
        };
        assert!(container("config-init", "exited", None, 0).done());
        assert!(container("config-init", "exited", None, 1).failed());
        assert!(!container("config-init", "running", None, 0).done());
        assert!(container("order", "running", Some("healthy"), 0).done());
        assert!(!container("order", "running", Some("starting"), 0).done());
        assert!(container("order", "running", Some("unhealthy"), 0).failed());
        assert!(container("order", "exited", None, 1).failed());
        assert!(container("order", "restarting", None, 1).failed());
    }

    #[test]
    fn the_profiled_services_are_those_with_a_profile() {
        let compose = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker-compose.yml"),
        )
        .unwrap();
        let mut service = "";
        let mut profiled = Vec::new();
        for line in compose.lines() {
            if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
                && !name.starts_with(' ')
            {
                service = name;
            }
            if line.trim_start().starts_with("profiles:") {
                profiled.push(service);
            }
        }
        assert_eq!(profiled, PROFILED);
    }

    #[test]
    fn the_base_tag_follows_the_package_list() {
        let tag = base_tag();
        assert!(tag.starts_with("distlab-offline/base:bookworm-"), "{tag}");
        assert_eq!(tag, base_tag());
    }

    #[test]
    fn the_shop_seed_script_seeds_the_products_of_the_local_stack() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/shop-seed.sh"),
        )
        .unwrap();
        for (sku, name, price, stock) in crate::stack::SHOP {
            let line = format!("seed {sku} \"{name}\" {price} {stock}");
            assert!(script.contains(&line), "shop-seed.sh lacks `{line}`");
        }
    }
}
