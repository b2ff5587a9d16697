//! Test support for distlab's integration tests, which run against the real local stack.
//!
//! - [`require_stack`]: fails the test with a clear message when PostgreSQL or Kafka of the stack is down —
//!   a test never skips silently;
//! - [`TestDatabase`]: a fresh database per test on one of the stack's clusters (`test_<uuid>`; `cargo xtask
//!   test` drops the leftovers of earlier runs);
//! - [`unique_kafka`]: topic and group names of the test's own, so tests run in parallel;
//! - [`PrivateBroker`]: a tansu broker of the test's own, which the test may kill, wipe and start again, and
//!   [`kafka_tap`], a relay in front of it that tells when a produce, fetch or commit goes through;
//! - [`PrivateRedis`]: a Redis server of the test's own, to kill under RedLock;
//! - [`browser`]: a headless Chromium driven through WebDriver (chromedriver), for pages and their scripts,
//!   with their console errors;
//! - [`eventually`]: polls a condition until a deadline — tests never sleep to wait;
//! - [`otlp`]: an OTLP/HTTP receiver that keeps the spans services export, and a check that spans form one
//!   connected trace;
//! - [`processes`]: the workspace's service binaries run as processes of the test's own;
//! - [`raft_cluster`]: config-service nodes of the test's own, to kill, restart and partition;
//! - [`linearizability`]: a Porcupine-style checker for histories of a key-value store;
//! - [`flash_sale`]: the 秒杀 scenario, shared by its test and `cargo xtask scenario flash-sale`;
//! - [`base`]: the BASE experiment's open-model schedule and judging, for `cargo xtask scenario base`.

#![allow(clippy::unwrap_used)] // test support: a failed step should fail the test right there

pub mod base;
pub mod browser;
pub mod cap;
pub mod cap_config;
pub mod flash_sale;
pub mod in_process;
pub mod kafka_tap;
pub mod linearizability;
pub mod otlp;
pub mod processes;
pub mod raft_cluster;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use distlab_messaging::kafka::{self, KafkaArgs};
pub use kafka_tap::{ApiKey, KafkaTap};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;
use uuid::Uuid;

/// How often [`eventually`] checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Server URL (no database) of the orders-db cluster.
pub fn orders_server() -> String {
    env_or("DISTLAB_ORDERS_DB", "postgres://postgres@127.0.0.1:15432")
}

/// Server URL (no database) of the inventory-db cluster.
pub fn inventory_server() -> String {
    env_or(
        "DISTLAB_INVENTORY_DB",
        "postgres://postgres@127.0.0.1:15433",
    )
}

/// Kafka bootstrap servers of the stack.
pub fn kafka_brokers() -> String {
    env_or("DISTLAB_KAFKA_BROKERS", "127.0.0.1:19092")
}

/// Base URL of the stack's order service.
pub fn order_url() -> String {
    env_or("DISTLAB_ORDER_URL", "http://127.0.0.1:8081")
}

/// Base URL of the stack's 2PC coordinator.
pub fn coordinator_url() -> String {
    env_or("DISTLAB_COORDINATOR_URL", "http://127.0.0.1:8083")
}

/// Base URL of the stack's chaos sidecar (admin API).
pub fn chaos_url() -> String {
    env_or("DISTLAB_CHAOS_URL", "http://127.0.0.1:8474")
}

/// Panics with a clear message unless the stack's chaos sidecar answers.
pub fn require_chaos() {
    assert_reachable(&[("chaos", host_port_owned(&chaos_url()))]);
}

/// Base URL of the stack's lock service.
pub fn lock_url() -> String {
    env_or("DISTLAB_LOCK_URL", "http://127.0.0.1:8084")
}

/// The stack's three independent Redis instances (RedLock's; the first is also the redis backend's).
pub fn redis_urls() -> Vec<String> {
    env_or(
        "DISTLAB_REDIS_URLS",
        "redis://127.0.0.1:16379,redis://127.0.0.1:16380,redis://127.0.0.1:16381",
    )
    .split(',')
    .map(str::to_owned)
    .collect()
}

/// The stack's ZooKeeper.
pub fn zookeeper() -> String {
    env_or("DISTLAB_ZOOKEEPER", "127.0.0.1:12181")
}

/// Panics with a clear message unless the lock backends' stores answer: orders-db (the `locks`
/// database's cluster), the three Redis instances and ZooKeeper — and, with `service`, the lock service.
pub fn require_lock_stores(service: bool) {
    let mut parts = vec![
        ("orders-db".to_owned(), host_port_owned(&orders_server())),
        ("zookeeper".to_owned(), zookeeper()),
    ];
    for url in redis_urls() {
        parts.push((format!("redis {url}"), host_port_owned(&url)));
    }
    if service {
        parts.push(("lock".to_owned(), host_port_owned(&lock_url())));
    }
    assert_reachable(&parts);
}

/// A free loopback port (nothing listens on it once this returns).
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis server of the test's own (no persistence) on a free port, which the test may kill.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = unused_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (installed by `cargo xtask install`)");
        let redis = Self {
            port,
            child: Some(child),
        };
        let addr = format!("127.0.0.1:{port}");
        eventually(
            "the private redis to listen",
            Duration::from_secs(10),
            || {
                let up = reachable(&addr);
                async move { up.then_some(()) }
            },
        )
        .await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Base URL of the stack's inventory service.
pub fn inventory_url() -> String {
    env_or("DISTLAB_INVENTORY_URL", "http://127.0.0.1:8082")
}

fn host_port(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split('/').next().unwrap_or(rest)
}

fn reachable(host_port: &str) -> bool {
    host_port
        .parse::<SocketAddr>()
        .ok()
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// Panics with a clear message unless the stack's databases and broker answer (and, with `services`, the
/// order and inventory services too).
pub fn require_stack(services: bool) {
    let mut parts = vec![
        ("orders-db", host_port_owned(&orders_server())),
        ("inventory-db", host_port_owned(&inventory_server())),
        (
            "kafka",
            kafka_brokers()
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
    ];
    if services {
        parts.push(("order", host_port_owned(&order_url())));
        parts.push(("inventory", host_port_owned(&inventory_url())));
        parts.push(("coordinator", host_port_owned(&coordinator_url())));
    }
    assert_reachable(&parts);
}

/// Panics naming every part of the stack (name, host:port) that does not accept a connection.
fn assert_reachable<N: std::fmt::Display>(parts: &[(N, String)]) {
    let down: Vec<String> = parts
        .iter()
        .filter(|(_, addr)| !reachable(addr))
        .map(|(name, addr)| format!("{name} ({addr})"))
        .collect();
    assert!(
        down.is_empty(),
        "the distlab stack is not running: {} not reachable. Start it with `cargo xtask up` \
         (or run the whole suite with `cargo xtask test`).",
        down.join(", ")
    );
}

fn host_port_owned(url: &str) -> String {
    host_port(url).to_owned()
}

/// A database of the test's own.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// Creates `test_<uuid>` on the cluster at `server` (a URL without database).
    pub async fn create(server: &str) -> Self {
        let name = format!("test_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!("cannot connect to {server}: {e}. Is the stack up (`cargo xtask up`)?")
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .expect("CREATE DATABASE");
        admin.close().await;
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// A pool of the test's own on this database.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

/// Kafka settings with topic names of this test's own (created by the services at start-up).
pub fn unique_kafka(brokers: &str) -> KafkaArgs {
    let tag = Uuid::new_v4().simple().to_string();
    KafkaArgs {
        brokers: brokers.to_owned(),
        order_events_topic: format!("test-{tag}-order-events"),
        inventory_events_topic: format!("test-{tag}-inventory-events"),
        topic_partitions: 4,
        replication_factor: 1,
        fetch_wait_max_ms: 10,
    }
}

/// A consumer group name of this test's own.
pub fn unique_group(role: &str) -> String {
    format!("test-{}-{role}", Uuid::new_v4().simple())
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// A client in `group` (if any) and the high watermark of each partition of `topic`, read off the thread
/// pool because the calls block.
async fn with_watermarks<T: Send + 'static>(
    brokers: &str,
    group: Option<&str>,
    topic: &str,
    read: impl FnOnce(&BaseConsumer, &str, Vec<i64>) -> T + Send + 'static,
) -> T {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    if let Some(group) = group {
        config.set("group.id", group);
    }
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(&topic), KAFKA_TIMEOUT)
            .unwrap();
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let highs = (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, KAFKA_TIMEOUT)
                    .unwrap()
                    .1
            })
            .collect();
        read(&consumer, &topic, highs)
    })
    .await
    .unwrap()
}

/// Messages in `topic` (the sum of its partitions' high watermarks).
pub async fn topic_message_count(brokers: &str, topic: &str) -> i64 {
    with_watermarks(brokers, None, topic, |_, _, highs| highs.iter().sum()).await
}

/// Messages of `topic` that `group` has not committed yet (its lag), counting a partition it never
/// committed as wholly unread.
pub async fn consumer_lag(brokers: &str, group: &str, topic: &str) -> i64 {
    with_watermarks(brokers, Some(group), topic, |consumer, topic, highs| {
        let mut list = TopicPartitionList::new();
        for p in 0..highs.len() as i32 {
            list.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(list, KAFKA_TIMEOUT).unwrap();
        highs
            .iter()
            .enumerate()
            .map(|(p, high)| {
                match committed
                    .find_partition(topic, p as i32)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(done)) => high - done,
                    _ => *high,
                }
            })
            .sum()
    })
    .await
}

/// A tansu broker of the test's own, on a free port, with its own storage; it can be killed, wiped and
/// started again on the same port (messages and committed offsets survive a kill, not a wipe).
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    /// The address clients use: the broker's own, or a [`KafkaTap`]'s in front of it.
    advertised: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let port = unused_port();
        Self::start_advertising(port, SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// A broker that clients reach through a [`KafkaTap`] (the broker advertises the tap's address), so a test
    /// can act when a given request reaches it.
    pub async fn start_tapped() -> (Self, KafkaTap) {
        let port = unused_port();
        let tap = KafkaTap::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
        (Self::start_advertising(port, tap.addr()).await, tap)
    }

    /// A broker listening on `port` (see [`unused_port`]) that tells its clients to reach it at `advertised`
    /// (a relay or proxy in front of it, which must be running before this is called).
    pub async fn start_advertising(port: u16, advertised: SocketAddr) -> Self {
        let mut broker = Self {
            port,
            advertised,
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        broker.start_again().await;
        broker
    }

    pub fn brokers(&self) -> String {
        self.advertised.to_string()
    }

    /// Starts the broker (again) and waits until it serves metadata.
    pub async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "the private broker is already running"
        );
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://{}", self.advertised);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("open the broker log");
        let cluster_id =
            tansu_cluster_id(self.dir.path()).expect("write the private broker's cluster id");
        let child = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(["--cluster-id", &cluster_id])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu (installed by `cargo xtask install`)");
        self.child = Some(child);
        let producer = kafka::producer(&self.brokers(), "testkit-probe").expect("a Kafka client");
        eventually(
            "the private broker to serve metadata",
            Duration::from_secs(30),
            || {
                let producer = producer.clone();
                async move {
                    kafka::probe(&producer, Duration::from_millis(500))
                        .await
                        .ok()
                }
            },
        )
        .await;
    }

    /// Kills the broker with SIGKILL, as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Deletes the stopped broker's data, as if it were replaced by a new one: it starts again with no
    /// topics, no offsets and another cluster id.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "stop the broker before wiping it");
        for file in ["tansu.db", "tansu.db-wal", "tansu.db-shm"] {
            let path = self.dir.path().join(file);
            if path.exists() {
                std::fs::remove_file(&path).expect("remove the broker's data");
            }
        }
    }

    /// The last lines of the broker's log (for a failing test's message).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `tansu` binary: on `PATH`, or where `cargo install` puts it. Shared with `cargo xtask`.
pub fn find_tansu() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        Some(home.join("bin/tansu")).filter(|p| p.is_file())
    })
}

/// The cluster id a tansu broker storing its data in `dir` (as `tansu.db`) starts with: made anew, and kept
/// in `dir/cluster-id`, whenever the database does not exist yet — so a broker that comes back without its
/// data reports another id, as an Apache Kafka broker does once its storage is formatted again. Consumers
/// watch it to notice a replaced broker (`distlab_messaging::offsets`). Shared with `cargo xtask`.
///
/// tansu keeps each cluster's data apart inside its database, by this id: a database made before ids were
/// kept here holds its data under tansu's default id, which is therefore the one it keeps.
pub fn tansu_cluster_id(dir: &std::path::Path) -> std::io::Result<String> {
    const TANSU_DEFAULT: &str = "tansu_cluster";
    let file = dir.join("cluster-id");
    let id = if dir.join("tansu.db").exists() {
        match std::fs::read_to_string(&file) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
            _ => TANSU_DEFAULT.to_owned(),
        }
    } else {
        format!("distlab-{}", Uuid::new_v4().simple())
    };
    std::fs::write(&file, &id)?;
    Ok(id)
}

fn tansu_bin() -> PathBuf {
    find_tansu().expect("tansu is not installed: run `cargo xtask install`")
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Asserts that `response` has `status` and the JSON error body of docs/contracts.md with `code` and a message;
/// returns the body.
pub async fn expect_error(
    response: reqwest::Response,
    status: reqwest::StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().await.expect("the error body is JSON");
    assert_error_body(&body, code);
    body
}

/// Asserts that `body` is the shared error body with `code` and a message.
#[track_caller]
pub fn assert_error_body(body: &serde_json::Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the error has a message: {body}"
    );
}

/// `GET url` and its JSON body, asserting a 2xx.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = http.get(url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}
