//! The order service follows its default mode in the config service (the stack's nodes, 8091–8093): a `PUT`
//! of the key changes the mode of the next order without a restart; with the config service unreachable the
//! service stays ready on the value it has, and `/readyz` says it is not following.
//!
//! Each test follows a key of its own (`distlab/test/<uuid>/default_mode`, through `CONFIG_MODE_KEY`), so
//! tests running in parallel — and the stack's own order service — are not disturbed.
//!
//! 2PC orders go through a stand-in coordinator with one participant, the order service under test: the
//! stack's coordinator knows only the stack's order service as its order participant. The stand-in prepares
//! the service's order branch and decides commit; the service's own 2PC path does the rest (it commits its
//! branch and answers 201).

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use distlab_testkit::{TestDatabase, eventually, get_json, unique_group, unique_kafka};
use distlab_twopc::protocol::Decision;
use distlab_twopc::wire::{BeginRequest, PrepareRequest, TransactionView, Vote, VoteResponse};
use order::orders::Mode;
use order::{Application, Config, ConfigServiceArgs};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long a change of the key may take to reach the order service.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(15);

/// The stack's config nodes.
fn config_urls() -> Vec<String> {
    distlab_config_client::node_urls(
        &std::env::var("DISTLAB_CONFIG_URLS")
            .unwrap_or_else(|_| order::config::LOCAL_CONFIG_URLS.to_owned()),
    )
}

/// Whether something accepts a connection at `url`'s host and port.
fn reachable(url: &str) -> bool {
    let host_port = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
    host_port
        .parse::<SocketAddr>()
        .is_ok_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// Panics with a clear message unless every config node of the stack accepts a connection.
fn require_config_nodes() {
    let down: Vec<String> = config_urls()
        .into_iter()
        .filter(|url| !reachable(url))
        .collect();
    assert!(
        down.is_empty(),
        "the distlab stack's config service is not running: {} not reachable. Start the stack with \
         `cargo xtask up` (or run the whole suite with `cargo xtask test`).",
        down.join(", ")
    );
}

/// A key of this test's own.
fn unique_key() -> String {
    format!(
        "distlab/test/{}/default_mode",
        uuid::Uuid::new_v4().simple()
    )
}

/// A stand-in coordinator whose one participant is the order service at the URL set in the returned cell:
/// it prepares the order branch and decides commit when it votes yes (abort otherwise).
async fn one_participant_coordinator() -> (String, Arc<OnceLock<String>>) {
    async fn run_transaction(
        State(participant): State<Arc<OnceLock<String>>>,
        axum::Json(begin): axum::Json<BeginRequest>,
    ) -> axum::Json<TransactionView> {
        let gid = begin.gid.expect("the order service names the gid");
        let url = participant.get().expect("the order service is started");
        let vote: VoteResponse = distlab_testkit::http()
            .post(format!("{url}/2pc/prepare"))
            .json(&PrepareRequest {
                gid: gid.clone(),
                order: begin.order.clone(),
            })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let decision = match vote.vote {
            Vote::Yes => Decision::Commit,
            Vote::No => Decision::Abort,
        };
        let now = chrono::Utc::now();
        axum::Json(TransactionView {
            gid,
            state: decision.deciding_state(),
            decision: Some(decision),
            reason: vote.reason,
            order: begin.order,
            created_at: now,
            decided_at: Some(now),
            completed_at: None,
            stuck: false,
            branches: Vec::new(),
        })
    }
    let participant = Arc::new(OnceLock::new());
    let router = Router::new()
        .route("/transactions", post(run_transaction))
        .with_state(participant.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, participant)
}

struct TestApp {
    url: String,
    http: reqwest::Client,
}

/// An order service of this test's own (database, topics, group), following `key` on `config_urls`,
/// with `configured` as its DEFAULT_ORDER_MODE and a stand-in coordinator.
async fn spawn_order_service(config_urls: String, key: &str, configured: Mode) -> TestApp {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_stack(false);
    let db = TestDatabase::create(&distlab_testkit::orders_server()).await;
    let (coordinator_url, participant) = one_participant_coordinator().await;
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        database_max_connections: 4,
        kafka: unique_kafka(&distlab_testkit::kafka_brokers()),
        consumer_group: unique_group("order"),
        default_mode: configured,
        coordinator_url,
        ..Config::local()
    };
    let config_service = ConfigServiceArgs {
        config_urls,
        config_mode_key: key.to_owned(),
    };
    let app = Application::build_with(config, config_service)
        .await
        .expect("the order service builds");
    let url = format!("http://{}", app.local_addr().unwrap());
    participant.set(url.clone()).unwrap();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        url,
        http: distlab_testkit::http(),
    }
}

impl TestApp {
    /// The `config` check of `/readyz`, asserting the service is ready.
    async fn config_detail(&self) -> Value {
        let ready = get_json(&self.http, &format!("{}/readyz", self.url)).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        ready["checks"]["config"].clone()
    }

    /// Polls `/readyz` until its `config` detail satisfies `check`; returns it.
    async fn wait_for_config(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(what, FOLLOW_DEADLINE, || {
            let detail = self.config_detail();
            let check = &check;
            async move {
                let detail = detail.await;
                check(&detail).then_some(detail)
            }
        })
        .await
    }

    /// Places an order that names no mode.
    async fn place_order(&self) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/orders", self.url))
            .json(&json!({"customer_id": "alice", "items": [{"sku": "CFG-1", "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// Sets `key` in the config service (a follower forwards the write to the leader).
async fn put_key(http: &reqwest::Client, key: &str, value: Value) {
    let node = &config_urls()[0];
    let response = http
        .put(format!("{node}/v1/kv/{key}"))
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "PUT {key}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

async fn delete_key(http: &reqwest::Client, key: &str) {
    let node = &config_urls()[0];
    let response = http
        .delete(format!("{node}/v1/kv/{key}"))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "DELETE {key}: {}",
        response.status()
    );
}

#[tokio::test]
async fn the_default_mode_follows_the_config_service_without_a_restart() {
    require_config_nodes();
    let key = unique_key();
    let app = spawn_order_service(config_urls().join(","), &key, Mode::Outbox).await;
    let http = distlab_testkit::http();

    // The key is not set yet: the configured mode applies, and the service follows the config service.
    let detail = app
        .wait_for_config("the order service to follow the config service", |d| {
            d["following"] == true
        })
        .await;
    assert_eq!(detail["default_mode"], "outbox", "{detail}");
    assert_eq!(detail["source"], "configuration", "{detail}");
    assert_eq!(detail["key"], key.as_str(), "{detail}");

    // 2pc: the next order without a mode is a 2PC order, final at once.
    put_key(&http, &key, json!("2pc")).await;
    let detail = app
        .wait_for_config("the default mode to become 2pc", |d| {
            d["default_mode"] == "2pc"
        })
        .await;
    assert_eq!(detail["source"], "config_service", "{detail}");
    assert!(detail["revision"].as_u64().is_some(), "{detail}");
    let (status, order) = app.place_order().await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["mode"], "2pc", "{order}");
    assert_eq!(order["status"], "CONFIRMED", "{order}");

    // Back to outbox: 202, PENDING.
    put_key(&http, &key, json!("outbox")).await;
    app.wait_for_config("the default mode to become outbox", |d| {
        d["default_mode"] == "outbox" && d["source"] == "config_service"
    })
    .await;
    let (status, order) = app.place_order().await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    assert_eq!(order["mode"], "outbox", "{order}");

    // A value that is not a mode is ignored, and said so; the last good value stays.
    put_key(&http, &key, json!("3pc")).await;
    let detail = app
        .wait_for_config("the invalid value to be reported", |d| {
            d["invalid_value"]["value"] == "3pc"
        })
        .await;
    assert_eq!(detail["default_mode"], "outbox", "{detail}");
    assert!(
        detail["note"]
            .as_str()
            .is_some_and(|n| n.contains("invalid")),
        "{detail}"
    );
    let (status, order) = app.place_order().await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");

    // Deleted: back to the configured mode.
    put_key(&http, &key, json!("2pc")).await;
    app.wait_for_config("2pc again", |d| d["default_mode"] == "2pc")
        .await;
    delete_key(&http, &key).await;
    let detail = app
        .wait_for_config("the configured mode after the delete", |d| {
            d["source"] == "configuration"
        })
        .await;
    assert_eq!(detail["default_mode"], "outbox", "{detail}");
    assert!(detail.get("invalid_value").is_none(), "{detail}");
}

#[tokio::test]
async fn an_unreachable_config_service_leaves_the_service_ready_on_its_configured_mode() {
    let nowhere = format!("http://127.0.0.1:{}", distlab_testkit::unused_port());
    let app = spawn_order_service(nowhere.clone(), &unique_key(), Mode::TwoPhaseCommit).await;

    let detail = app
        .wait_for_config("the config service to be reported unreachable", |d| {
            d["last_error"].is_string()
        })
        .await;
    assert_eq!(detail["following"], false, "{detail}");
    assert_eq!(detail["default_mode"], "2pc", "{detail}");
    assert_eq!(detail["source"], "configuration", "{detail}");
    assert_eq!(detail["node"], nowhere.as_str(), "{detail}");
    assert!(detail["stale_since"].is_string(), "{detail}");
    assert!(
        detail["note"]
            .as_str()
            .is_some_and(|n| n.contains("unreachable")),
        "{detail}"
    );

    // Still ready (config_detail asserts it), and orders still take the configured mode.
    let (status, order) = app.place_order().await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["mode"], "2pc", "{order}");
    assert_eq!(app.config_detail().await["following"], false);
}
