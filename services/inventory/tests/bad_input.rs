//! Bad input to the inventory service gets a clear 4xx with the JSON error body of docs/contracts.md and writes
//! nothing; good input creates and resets products.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use distlab_testkit::{TestDatabase, expect_error, get_json, unique_group, unique_kafka};
use inventory::{Application, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

struct TestApp {
    url: String,
    db: PgPool,
    http: reqwest::Client,
}

async fn spawn_inventory_service() -> TestApp {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_stack(false);
    let db = TestDatabase::create(&distlab_testkit::inventory_server()).await;
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        database_max_connections: 4,
        kafka: unique_kafka(&distlab_testkit::kafka_brokers()),
        consumer_group: unique_group("inventory"),
        ..Config::local()
    };
    let app = Application::build(config)
        .await
        .expect("the inventory service builds");
    let url = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        url,
        db: db.pool().await,
        http: distlab_testkit::http(),
    }
}

impl TestApp {
    async fn put(
        &self,
        sku: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .put(format!("{}/products/{sku}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn products(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM products")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn bad_products_are_refused_and_write_nothing() {
    let app = spawn_inventory_service().await;
    let good = json!({"name": "Widget", "price_cents": 100, "stock": 5}).to_string();

    expect_error(
        app.put("W-1", "application/json", "{").await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    let missing = app
        .put("W-1", "application/json", r#"{"name":"Widget"}"#)
        .await;
    expect_error(missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let negative = app
        .put(
            "W-1",
            "application/json",
            r#"{"name":"Widget","price_cents":-1,"stock":-5}"#,
        )
        .await;
    let body = expect_error(
        negative,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        body["error"]["details"]["errors"].as_array().unwrap().len(),
        2
    );
    let bad_sku = app.put("bad%20sku", "application/json", good.clone()).await;
    expect_error(bad_sku, StatusCode::BAD_REQUEST, "invalid_sku").await;
    let text = app.put("W-1", "text/plain", good.clone()).await;
    expect_error(
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let huge = format!(
        r#"{{"name":"{}","price_cents":1,"stock":1}}"#,
        "x".repeat(70 * 1024)
    );
    let response = app.put("W-1", "application/json", huge).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(app.products().await, 0, "bad input wrote rows");

    let unknown = app
        .http
        .get(format!("{}/products/NOPE", app.url))
        .send()
        .await
        .unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn put_creates_then_resets_a_product() {
    let app = spawn_inventory_service().await;
    let created = app
        .put(
            "W-1",
            "application/json",
            json!({"name": "Widget", "price_cents": 250, "stock": 7}).to_string(),
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created,
        json!({"sku": "W-1", "name": "Widget", "price_cents": 250, "available": 7, "reserved": 0,
               "version": 1})
    );
    sqlx::query("UPDATE products SET available = 4, reserved = 3 WHERE sku = 'W-1'")
        .execute(&app.db)
        .await
        .unwrap();
    let reset = app
        .put(
            "W-1",
            "application/json",
            json!({"name": "Widget 2", "price_cents": 300, "stock": 10}).to_string(),
        )
        .await;
    let reset: Value = reset.json().await.unwrap();
    assert_eq!(reset["available"], 10);
    assert_eq!(reset["reserved"], 0);
    // Every change of the stock is a new version, whoever made it (here a raw UPDATE, then the PUT).
    assert_eq!(reset["version"], 3);

    let list: Value = get_json(&app.http, &format!("{}/products", app.url)).await;
    assert_eq!(list["products"].as_array().unwrap().len(), 1);
    assert_eq!(list["products"][0]["name"], "Widget 2");
}

/// `POST /products/{sku}/adjust`: bad input is a 422, an unknown SKU a 404, a fencing token lower than one
/// already seen for the lock a 409 — and none of them writes anything.
#[tokio::test]
async fn adjustments_check_their_input_and_their_fencing_token() {
    let app = spawn_inventory_service().await;
    let put = app
        .put(
            "FENCED-1",
            "application/json",
            r#"{"name":"Fenced","price_cents":1,"stock":5}"#,
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    let adjust = |sku: &'static str, body: Value| {
        app.http
            .post(format!("{}/products/{sku}/adjust", app.url))
            .json(&body)
            .send()
    };
    let adjustments = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM stock_adjustments")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    for body in [
        json!({"delta": 0}),
        json!({"delta": i64::MIN}),
        json!({"delta": 1, "lock": {"name": "", "token": 1}}),
        json!({"delta": 1, "lock": {"name": "stock", "token": u64::MAX}}),
    ] {
        let response = adjust("FENCED-1", body.clone()).await.unwrap();
        expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    for body in [
        json!({}),
        json!({"delta": "1"}),
        json!({"delta": 1, "lock": {"name": "x"}}),
    ] {
        let response = adjust("FENCED-1", body).await.unwrap();
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    }
    let unknown = adjust(
        "NO-SUCH-SKU",
        json!({"delta": -1, "lock": {"name": "stock", "token": 99}}),
    )
    .await
    .unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let overflow = adjust("FENCED-1", json!({"delta": 2_147_483_647}))
        .await
        .unwrap();
    expect_error(overflow, StatusCode::CONFLICT, "stock_out_of_range").await;
    assert_eq!(adjustments().await, 0, "nothing refused was written");

    // Token 7 writes; 7 again (the same holder) writes; 6 is refused and changes nothing.
    for token in [7, 7] {
        let ok = adjust(
            "FENCED-1",
            json!({"delta": -1, "lock": {"name": "stock", "token": token}}),
        )
        .await
        .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }
    let stale = adjust(
        "FENCED-1",
        json!({"delta": -1, "lock": {"name": "stock", "token": 6}}),
    )
    .await
    .unwrap();
    let body = expect_error(stale, StatusCode::CONFLICT, "stale_fencing_token").await;
    assert_eq!(body["error"]["details"]["highest_token"], 7);
    let product = get_json(&app.http, &format!("{}/products/FENCED-1", app.url)).await;
    assert_eq!(product["available"], 3);
    assert_eq!(adjustments().await, 2);
    // The unknown SKU's token did not raise the fence either: 8 is the next accepted one, not 100.
    let next = adjust(
        "FENCED-1",
        json!({"delta": 1, "lock": {"name": "stock", "token": 8}}),
    )
    .await
    .unwrap();
    assert_eq!(next.status(), StatusCode::OK);
}
