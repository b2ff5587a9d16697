//! The order service's HTTP API against a real database and broker: every kind of bad input gets a clear
//! 4xx with the JSON error body of docs/contracts.md and writes nothing; good requests page and replay as documented.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::{
    TestDatabase, eventually, expect_error, get_json, topic_message_count, unique_group,
    unique_kafka,
};
use order::{Application, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

struct TestApp {
    url: String,
    db: PgPool,
    http: reqwest::Client,
    kafka: distlab_messaging::kafka::KafkaArgs,
}

async fn spawn_order_service() -> TestApp {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_stack(false);
    let db = TestDatabase::create(&distlab_testkit::orders_server()).await;
    let kafka = unique_kafka(&distlab_testkit::kafka_brokers());
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        database_max_connections: 4,
        kafka: kafka.clone(),
        consumer_group: unique_group("order"),
        // No coordinator listens here: a 2PC order cannot even begin.
        coordinator_url: format!("http://127.0.0.1:{}", distlab_testkit::unused_port()),
        ..Config::local()
    };
    let app = Application::build(config)
        .await
        .expect("the order service builds");
    let url = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        url,
        db: db.pool().await,
        http: distlab_testkit::http(),
        kafka,
    }
}

impl TestApp {
    async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/orders", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_json(&self, body: &Value) -> reqwest::Response {
        self.post_raw("application/json", body.to_string()).await
    }

    /// Rows in the tables a placed order writes.
    async fn rows_written(&self) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox), (SELECT count(*) FROM idempotency_keys)",
        )
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// `OrderPlaced` messages written: those the relay has published and those still in the outbox (waits
    /// until the outbox is empty, so that nothing is counted twice).
    async fn messages_sent(&self) -> i64 {
        eventually(
            "the outbox to be relayed",
            Duration::from_secs(30),
            || async {
                let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                    .fetch_one(&self.db)
                    .await
                    .unwrap();
                (left == 0).then_some(())
            },
        )
        .await;
        topic_message_count(&self.kafka.brokers, &self.kafka.order_events_topic).await
    }
}

fn order(items: Value) -> Value {
    json!({"customer_id": "alice", "items": items})
}

#[tokio::test]
async fn every_bad_order_is_refused_with_the_error_body_and_writes_nothing() {
    let app = spawn_order_service().await;
    let one = json!([{"sku": "A", "quantity": 1}]);

    let malformed = app
        .post_raw("application/json", r#"{"customer_id": "alice", "items": ["#)
        .await;
    expect_error(malformed, StatusCode::BAD_REQUEST, "malformed_json").await;

    let missing = app.post_json(&json!({"items": one})).await;
    expect_error(missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    let mistyped = app
        .post_json(&json!({"customer_id": "alice", "items": [{"sku": "A", "quantity": "two"}]}))
        .await;
    expect_error(mistyped, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    let fractional = app
        .post_json(&order(json!([{"sku": "A", "quantity": 1.5}])))
        .await;
    expect_error(fractional, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    let unknown_field = app
        .post_json(&json!({"customer_id": "alice", "items": one, "colour": "red"}))
        .await;
    expect_error(
        unknown_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;

    for quantity in [0, -1, 1001] {
        let response = app
            .post_json(&order(json!([{"sku": "A", "quantity": quantity}])))
            .await;
        let body = expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(
            body["error"]["details"]["errors"][0]["field"],
            "items[0].quantity"
        );
    }

    let none = app.post_json(&order(json!([]))).await;
    let body = expect_error(none, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["error"]["details"]["errors"][0]["field"], "items");

    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"sku": format!("S{i}"), "quantity": 1}))
        .collect();
    let response = app.post_json(&order(json!(too_many))).await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let bad_sku = app
        .post_json(&order(json!([{"sku": "no spaces", "quantity": 1}])))
        .await;
    expect_error(
        bad_sku,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let huge = format!(
        r#"{{"customer_id": "{}", "items": []}}"#,
        "x".repeat(70 * 1024)
    );
    let response = app.post_raw("application/json", huge).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let form = app
        .post_raw("application/x-www-form-urlencoded", "customer_id=alice")
        .await;
    expect_error(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let text = app
        .post_raw("text/plain", order(one.clone()).to_string())
        .await;
    expect_error(
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let bad_key = app
        .http
        .post(format!("{}/orders", app.url))
        .header("idempotency-key", "k".repeat(256))
        .json(&order(one.clone()))
        .send()
        .await
        .unwrap();
    expect_error(bad_key, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;

    let two_phase = app
        .post_json(&json!({"customer_id": "alice", "items": one, "mode": "2pc"}))
        .await;
    expect_error(
        two_phase,
        StatusCode::SERVICE_UNAVAILABLE,
        "coordinator_unavailable",
    )
    .await;

    let bad_mode = app
        .post_json(&json!({"customer_id": "alice", "items": one, "mode": "3pc"}))
        .await;
    expect_error(bad_mode, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    assert_eq!(app.rows_written().await, (0, 0, 0), "bad input wrote rows");
}

#[tokio::test]
async fn order_ids_and_list_queries_are_checked() {
    let app = spawn_order_service().await;
    let get = |path: String| {
        let http = app.http.clone();
        let url = format!("{}{path}", app.url);
        async move { http.get(url).send().await.unwrap() }
    };
    expect_error(
        get("/orders/not-a-uuid".into()).await,
        StatusCode::BAD_REQUEST,
        "invalid_order_id",
    )
    .await;
    let unknown = uuid::Uuid::now_v7();
    expect_error(
        get(format!("/orders/{unknown}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        get("/orders?status=LOST".into()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    )
    .await;
    for limit in ["0", "501", "ten"] {
        let response = get(format!("/orders?limit={limit}")).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query").await;
    }
    expect_error(
        get("/orders?cursor=zzz".into()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    )
    .await;
    expect_error(
        get("/no/such/route".into()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let delete = app
        .http
        .delete(format!("{}/orders", app.url))
        .send()
        .await
        .unwrap();
    expect_error(delete, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert_eq!(app.rows_written().await, (0, 0, 0));
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let app = spawn_order_service().await;
    let first_body = order(json!([{"sku": "A", "quantity": 2}]));
    let send = |body: Value| {
        let http = app.http.clone();
        let url = format!("{}/orders", app.url);
        async move {
            http.post(url)
                .header("idempotency-key", "checkout-42")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    let first = send(first_body.clone()).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        location,
        format!("/orders/{}", first["id"].as_str().unwrap())
    );

    // The same request again — even with other whitespace — gets the same response, and no second order.
    let spaced = serde_json::to_string_pretty(&first_body).unwrap();
    let again = app
        .http
        .post(format!("{}/orders", app.url))
        .header("idempotency-key", "checkout-42")
        .header("content-type", "application/json")
        .body(spaced)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);

    // Naming the default mode does not make it another request.
    let explicit = send(
        json!({"customer_id": "alice", "items": [{"sku": "A", "quantity": 2}], "mode": "outbox"}),
    )
    .await;
    assert_eq!(explicit.status(), StatusCode::ACCEPTED);
    assert_eq!(explicit.json::<Value>().await.unwrap(), first);

    let other = send(order(json!([{"sku": "A", "quantity": 3}]))).await;
    expect_error(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    // Concurrent first attempts with a new key make one order: the others wait for it and replay it.
    let body = order(json!([{"sku": "B", "quantity": 1}]));
    let attempts = (0..8).map(|_| {
        app.http
            .post(format!("{}/orders", app.url))
            .header("idempotency-key", "checkout-43")
            .json(&body)
            .send()
    });
    let mut ids = Vec::new();
    for response in futures::future::join_all(attempts).await {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "all attempts answer with the same order");
    let (orders, _, keys) = app.rows_written().await;
    assert_eq!((orders, keys), (2, 2), "one order and one key per request");
    // The relay may have published some already: count what it sent and what waits, once.
    assert_eq!(app.messages_sent().await, 2, "one message per order");
}

#[tokio::test]
async fn orders_list_newest_first_a_page_at_a_time_and_filter_by_status() {
    let app = spawn_order_service().await;
    let mut placed = Vec::new();
    for i in 0..5 {
        let response = app
            .post_json(&order(json!([{"sku": format!("P{i}"), "quantity": 1}])))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        placed.push(body["id"].as_str().unwrap().to_owned());
    }
    sqlx::query(
        "UPDATE orders SET status = 'REJECTED', reason = 'insufficient_stock' WHERE id = $1::uuid",
    )
    .bind(&placed[1])
    .execute(&app.db)
    .await
    .unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/orders?limit=2&cursor={c}"),
            None => "/orders?limit=2".to_owned(),
        };
        let page: Value = get_json(&app.http, &format!("{}{query}", app.url)).await;
        let orders = page["orders"].as_array().unwrap();
        assert!(orders.len() <= 2);
        seen.extend(orders.iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = placed.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "every order once, newest first");

    let rejected: Value = get_json(&app.http, &format!("{}/orders?status=REJECTED", app.url)).await;
    let rejected = rejected["orders"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["id"], placed[1].as_str());
    assert_eq!(rejected[0]["reason"], "insufficient_stock");

    let one: Value = get_json(&app.http, &format!("{}/orders/{}", app.url, placed[0])).await;
    assert_eq!(one["status"], "PENDING");
    assert_eq!(one["mode"], "outbox");
    assert_eq!(one["items"], json!([{"sku": "P0", "quantity": 1}]));
}
