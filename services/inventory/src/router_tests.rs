//! The inventory's routes called in process, with a database that cannot be reached: every bad request is
//! refused with its status and error body before the database is asked anything (so it writes nothing),
//! and a good one that needs the database is a 503 naming it. No running stack needed.

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode};
use distlab_testkit::in_process::{call, expect, get, send_json, unreachable_pool};
use distlab_twopc::faults::{CrashMode, Faults};
use distlab_twopc::participant::{self, Participant};
use serde_json::json;

use crate::{AppState, http, reservation};

fn router() -> Router {
    let pool = unreachable_pool();
    let faults = Faults::new(participant::FAULT_POINTS.iter().copied(), CrashMode::Exit);
    let participant = Arc::new(Participant::new(
        pool.clone(),
        reservation::ReserveBranch,
        faults,
    ));
    http::router(AppState { pool }).merge(participant::router(participant))
}

#[tokio::test]
async fn bad_products_are_refused_before_the_database_is_asked() {
    let router = router();
    let good = json!({"name": "Widget", "price_cents": 100, "stock": 5});
    let put = |sku: &str| format!("/products/{sku}");

    let malformed = call(
        &router,
        Method::PUT,
        &put("W-1"),
        Some("application/json"),
        &[],
        "{",
    )
    .await;
    expect(malformed, StatusCode::BAD_REQUEST, "malformed_json");
    let missing = send_json(
        &router,
        Method::PUT,
        &put("W-1"),
        &json!({"name": "Widget"}),
    )
    .await;
    expect(missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let unknown = send_json(
        &router,
        Method::PUT,
        &put("W-1"),
        &json!({"name": "Widget", "price_cents": 1, "stock": 1, "colour": "red"}),
    )
    .await;
    expect(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");

    let body = expect(
        send_json(
            &router,
            Method::PUT,
            &put("W-1"),
            &json!({"name": " ", "price_cents": -1, "stock": 2_147_483_648_i64}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let fields: Vec<&str> = body["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["name", "price_cents", "stock"],
        "every bad field is named"
    );

    for sku in ["no%20spaces", "semi;colon", &"x".repeat(65)] {
        let answer = send_json(&router, Method::PUT, &put(sku), &good).await;
        expect(answer, StatusCode::BAD_REQUEST, "invalid_sku");
        expect(
            get(&router, &put(sku)).await,
            StatusCode::BAD_REQUEST,
            "invalid_sku",
        );
    }

    let form = call(
        &router,
        Method::PUT,
        &put("W-1"),
        Some("text/plain"),
        &[],
        good.to_string(),
    )
    .await;
    expect(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = json!({"name": "x".repeat(70 * 1024), "price_cents": 1, "stock": 1});
    let answer = send_json(&router, Method::PUT, &put("W-1"), &huge).await;
    expect(answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn bad_adjustments_are_refused_before_the_database_is_asked() {
    let router = router();
    let adjust = "/products/W-1/adjust";
    let answer = send_json(&router, Method::POST, adjust, &json!({"delta": "one"})).await;
    expect(answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let answer = send_json(
        &router,
        Method::POST,
        adjust,
        &json!({"delta": -1, "lock": {"name": "", "token": 1}}),
    )
    .await;
    expect(
        answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
}

#[tokio::test]
async fn hostile_gids_never_reach_sql() {
    let router = router();
    for path in ["/2pc/commit", "/2pc/rollback"] {
        let answer = send_json(
            &router,
            Method::POST,
            path,
            &json!({"gid": "distlab_x'; DROP TABLE products; --"}),
        )
        .await;
        expect(answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    let prepare = json!({"gid": "DISTLAB_00000000000000000000000000000001", "order": {
        "order_id": "01a21771-b9f9-70c0-9fa4-000000000001", "customer_id": "c",
        "items": [{"sku": "A", "quantity": 1}], "placed_at": "2026-01-01T00:00:00Z"}});
    let answer = send_json(&router, Method::POST, "/2pc/prepare", &prepare).await;
    expect(answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
}

#[tokio::test]
async fn a_good_request_without_its_database_is_a_503_naming_it() {
    let router = router();
    let (status, body) = get(&router, "/products/W-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "dependency_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inventory database"),
        "{body}"
    );
}
