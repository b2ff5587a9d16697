//! The order service's routes called in process, with a database and a coordinator that cannot be reached:
//! every bad request is refused with its status and error body before anything is asked of either (so it
//! writes nothing). No running stack needed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use distlab_testkit::in_process::{call, expect, get, send_json, unreachable_pool};
use distlab_twopc::faults::{CrashMode, Faults};
use distlab_twopc::participant::{self, Participant};
use serde_json::{Value, json};

use crate::orders::Mode;
use crate::runtime_config::DefaultMode;
use crate::{AppState, http, two_phase};

fn router() -> Router {
    let pool = unreachable_pool();
    let faults = Faults::new(participant::FAULT_POINTS.iter().copied(), CrashMode::Exit);
    let participant = Arc::new(Participant::new(
        pool.clone(),
        two_phase::OrderBranch,
        faults,
    ));
    let state = AppState {
        pool,
        order_events_topic: "order-events".into(),
        default_mode: DefaultMode::fixed(Mode::Outbox),
        participant: participant.clone(),
        coordinator_url: "http://127.0.0.1:1".into(),
        http: reqwest::Client::new(),
        redeliver_after: Duration::from_secs(15),
        cap: crate::cap::CapSwitch::fixed(crate::cap::CapMode::Cp),
        inventory_url: "http://127.0.0.1:1".into(),
    };
    http::router(state).merge(participant::router(participant))
}

fn order(items: Value) -> Value {
    json!({"customer_id": "alice", "items": items})
}

async fn post(router: &Router, body: &Value) -> (StatusCode, Value) {
    send_json(router, Method::POST, "/orders", body).await
}

#[tokio::test]
async fn unreadable_orders_are_400_415_or_413() {
    let router = router();
    let malformed = call(
        &router,
        Method::POST,
        "/orders",
        Some("application/json"),
        &[],
        r#"{"customer_id": "alice", "items": ["#,
    )
    .await;
    expect(malformed, StatusCode::BAD_REQUEST, "malformed_json");
    let form = call(
        &router,
        Method::POST,
        "/orders",
        Some("application/x-www-form-urlencoded"),
        &[],
        "customer_id=alice",
    )
    .await;
    expect(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = json!({"customer_id": "x".repeat(70 * 1024), "items": []});
    expect(
        post(&router, &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[tokio::test]
async fn orders_of_the_wrong_shape_are_422_invalid_body() {
    let router = router();
    let one = json!([{"sku": "A", "quantity": 1}]);
    for body in [
        json!({"items": one}),
        json!({"customer_id": "alice", "items": [{"sku": "A", "quantity": "two"}]}),
        order(json!([{"sku": "A", "quantity": 1.5}])),
        json!({"customer_id": "alice", "items": one, "colour": "red"}),
        json!({"customer_id": "alice", "items": one, "mode": "3pc"}),
    ] {
        expect(
            post(&router, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
    }
}

#[tokio::test]
async fn every_broken_rule_is_named_in_one_422() {
    let router = router();
    for (items, field) in [
        (json!([{"sku": "A", "quantity": 0}]), "items[0].quantity"),
        (json!([{"sku": "A", "quantity": -1}]), "items[0].quantity"),
        (json!([{"sku": "A", "quantity": 1001}]), "items[0].quantity"),
        (json!([{"sku": "no spaces", "quantity": 1}]), "items[0].sku"),
        (json!([{"sku": "", "quantity": 1}]), "items[0].sku"),
        (json!([]), "items"),
    ] {
        let body = expect(
            post(&router, &order(items)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(
            body["error"]["details"]["errors"][0]["field"], field,
            "{body}"
        );
    }
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"sku": format!("S{i}"), "quantity": 1}))
        .collect();
    expect(
        post(&router, &order(json!(too_many))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let all = json!({"customer_id": "", "items": [{"sku": "a b", "quantity": 0}]});
    let body = expect(
        post(&router, &all).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let fields: Vec<&str> = body["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["customer_id", "items[0].sku", "items[0].quantity"]);
}

#[tokio::test]
async fn a_bad_idempotency_key_is_a_400_in_both_modes() {
    let router = router();
    let long = "k".repeat(256);
    for mode in ["outbox", "2pc"] {
        for key in ["", long.as_str(), "tab\tinside"] {
            let body = json!({"customer_id": "alice", "items": [{"sku": "A", "quantity": 1}], "mode": mode});
            let answer = call(
                &router,
                Method::POST,
                "/orders",
                Some("application/json"),
                &[("idempotency-key", key)],
                body.to_string(),
            )
            .await;
            expect(answer, StatusCode::BAD_REQUEST, "invalid_idempotency_key");
        }
    }
}

#[tokio::test]
async fn bad_order_ids_and_list_queries_are_refused() {
    let router = router();
    expect(
        get(&router, "/orders/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "invalid_order_id",
    );
    for query in [
        "status=LOST",
        "limit=0",
        "limit=501",
        "limit=ten",
        "cursor=not-a-cursor",
    ] {
        let answer = get(&router, &format!("/orders?{query}")).await;
        expect(answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    }
}

#[tokio::test]
async fn without_its_database_a_good_outbox_order_is_a_503_naming_it() {
    let router = router();
    let (status, body) = post(&router, &order(json!([{"sku": "A", "quantity": 1}]))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "dependency_unavailable");
}

/// The order service waits up to 5 s for a decision it could not get an answer about; paused time runs
/// that wait at once.
#[tokio::test(start_paused = true)]
async fn without_the_coordinator_a_2pc_order_is_a_503_after_the_decision_wait() {
    let router = router();
    let started = tokio::time::Instant::now();
    let two_phase =
        json!({"customer_id": "alice", "items": [{"sku": "A", "quantity": 1}], "mode": "2pc"});
    let body = expect(
        post(&router, &two_phase).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "coordinator_unavailable",
    );
    assert!(
        body["error"]["details"]["gid"]
            .as_str()
            .is_some_and(|g| g.starts_with("distlab_")),
        "{body}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "it waited for a decision first"
    );
}
