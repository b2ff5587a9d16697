//! Why locks matter, on the running stack's inventory and lock services (`cargo xtask up`):
//!
//! - the flash sale (秒杀): 1,000 buyers doing read-check-write oversell 100 units without a lock, and sell
//!   exactly 100 with each of the four lock backends;
//! - the paused holder: a holder stops past its TTL (a GC pause), the next holder writes, the first wakes
//!   and writes too — refused by the fencing token, and shown corrupting the stock without one.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use distlab_testkit::flash_sale::{self, Endpoints, Outcome};
use distlab_testkit::{expect_error, get_json, http, inventory_url, lock_url};
use reqwest::StatusCode;
use serde_json::{Value, json};

const BUYERS: usize = 1000;
const STOCK: i64 = 100;

fn require_stack() {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_stack(true);
    distlab_testkit::require_lock_stores(true);
}

fn endpoints() -> Endpoints {
    Endpoints {
        inventory: inventory_url(),
        lock: lock_url(),
    }
}

async fn sale(guard: Option<&str>) -> Outcome {
    require_stack();
    let outcome = flash_sale::run(&http(), &endpoints(), guard, BUYERS, STOCK)
        .await
        .unwrap();
    tracing::info!(%outcome, "flash sale");
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_without_a_lock_oversells() {
    let outcome = sale(None).await;
    assert!(
        outcome.oversold(),
        "1,000 concurrent read-check-write buyers should oversell 100 units: {outcome}"
    );
}

async fn sells_exactly_the_stock(backend: &str) {
    let outcome = sale(Some(backend)).await;
    assert_eq!(outcome.sold, STOCK as u64, "{outcome}");
    assert_eq!(outcome.final_available, 0, "{outcome}");
    assert_eq!(
        outcome.stale_refusals, 0,
        "no holder outlived its lease: {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_with_the_pg_lock_sells_exactly_the_stock() {
    sells_exactly_the_stock("pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_with_the_redis_lock_sells_exactly_the_stock() {
    sells_exactly_the_stock("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_with_redlock_sells_exactly_the_stock() {
    sells_exactly_the_stock("redlock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_with_the_zookeeper_lock_sells_exactly_the_stock() {
    sells_exactly_the_stock("zookeeper").await;
}

/// One unit left. Holder A reads it, then pauses past its 300 ms lease. B gets the lock, reads the unit
/// and sells it. A wakes and — still believing it holds the lock — sells the unit it read. Returns A's
/// answer and the stock afterwards.
async fn paused_holder(backend: &str, fenced: bool) -> (reqwest::Response, i64) {
    require_stack();
    let http = http();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let sku = format!("pause-{backend}-{suffix}");
    let lock_name = format!("stock.{sku}");
    let product = format!("{}/products/{sku}", inventory_url());
    let put = http
        .put(&product)
        .json(&json!({"name": "Last one", "price_cents": 100, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let acquire = |owner: &'static str, ttl_ms: u64, wait_ms: u64| {
        let (http, url) = (
            http.clone(),
            format!("{}/locks/{lock_name}/acquire", lock_url()),
        );
        async move {
            let response = http
                .post(url)
                .json(&json!({"backend": backend, "owner": owner, "ttl_ms": ttl_ms, "wait_ms": wait_ms}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{backend}: acquire");
            response.json::<Value>().await.unwrap()
        }
    };
    let adjust = |lease: &Value| {
        let mut body = json!({"delta": -1});
        if fenced {
            body["lock"] = json!({"name": lock_name, "token": lease["fencing_token"]});
        }
        http.post(format!("{product}/adjust")).json(&body).send()
    };

    let a = acquire("a", 300, 0).await;
    assert_eq!(get_json(&http, &product).await["available"], 1);
    // A's "GC pause": it does nothing while its lease lapses and B takes the lock.
    let b = acquire("b", 10_000, 10_000).await;
    assert!(b["fencing_token"].as_u64() > a["fencing_token"].as_u64());
    assert_eq!(get_json(&http, &product).await["available"], 1);
    let sold = adjust(&b).await.unwrap();
    assert_eq!(sold.status(), StatusCode::OK, "{backend}: B's sale");
    // A wakes up and writes what it decided before the pause.
    let late = adjust(&a).await.unwrap();
    let release = http
        .post(format!("{}/locks/{lock_name}/release", lock_url()))
        .json(&json!({"backend": backend, "lease_id": b["lease_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(release.status(), StatusCode::OK);
    let available = get_json(&http, &product).await["available"]
        .as_i64()
        .unwrap();
    (late, available)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_refused_by_the_fencing_token_on_every_backend() {
    for backend in ["pg", "redis", "redlock", "zookeeper"] {
        let (late, available) = paused_holder(backend, true).await;
        let error = expect_error(late, StatusCode::CONFLICT, "stale_fencing_token").await;
        assert!(
            error["error"]["details"]["highest_token"]
                .as_u64()
                .is_some()
        );
        assert_eq!(available, 0, "{backend}: the stale write changed nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fencing_a_paused_holder_corrupts_the_stock() {
    for backend in ["pg", "redis", "redlock", "zookeeper"] {
        let (late, available) = paused_holder(backend, false).await;
        assert_eq!(
            late.status(),
            StatusCode::OK,
            "{backend}: nothing stops the stale write"
        );
        assert_eq!(
            available, -1,
            "{backend}: the last unit was sold twice — the lease alone did not exclude the paused holder"
        );
    }
}
