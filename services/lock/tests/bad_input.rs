//! Bad input gets a 4xx with the JSON error body and takes no lock.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

mod common;

use distlab_testkit::expect_error;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn invalid_acquires_are_422_and_take_nothing() {
    let locks = common::spawn().await;
    let name = common::unique("bad");
    let acquire = format!("/locks/{name}/acquire");
    let cases = [
        (
            json!({"backend": "etcd", "owner": "a", "ttl_ms": 1000}),
            "backend",
        ),
        (
            json!({"backend": "redis", "owner": "a", "ttl_ms": 0}),
            "ttl_ms",
        ),
        (
            json!({"backend": "redis", "owner": "a", "ttl_ms": -5}),
            "ttl_ms",
        ),
        (
            json!({"backend": "pg", "owner": "a", "ttl_ms": 3_600_001}),
            "ttl_ms",
        ),
        (
            json!({"backend": "pg", "owner": "", "ttl_ms": 1000}),
            "owner",
        ),
        (
            json!({"backend": "pg", "owner": "a", "ttl_ms": 1000, "wait_ms": -1}),
            "wait_ms",
        ),
        (
            json!({"backend": "pg", "owner": "a", "ttl_ms": 1000, "wait_ms": 60_000}),
            "wait_ms",
        ),
    ];
    for (body, field) in cases {
        let response = locks.post(&acquire, body.clone()).await;
        let error = expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> = error["error"]["details"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{body}");
    }
    // Every problem at once.
    let response = locks
        .post(
            "/locks/a%20b/acquire",
            json!({"backend": "nope", "owner": "", "ttl_ms": 0, "wait_ms": -1}),
        )
        .await;
    let error = expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        error["error"]["details"]["errors"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // Absurd numbers and wrong shapes are refused by the JSON extractor, also with the error body.
    for body in [
        json!({"backend": "pg", "owner": "a", "ttl_ms": 1e30}),
        json!({"backend": "pg", "owner": "a", "ttl_ms": "1000"}),
        json!({"backend": "pg", "owner": "a"}),
        json!({"backend": "pg", "owner": "a", "ttl_ms": 1000, "extra": true}),
    ] {
        let response = locks.post(&acquire, body).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    }
    // Names: empty, too long, not URL-safe characters.
    let good = json!({"backend": "redis", "owner": "a", "ttl_ms": 1000});
    for path in [
        "/locks//acquire".to_owned(),
        format!("/locks/{}/acquire", "n".repeat(129)),
        "/locks/a%2Fb/acquire".to_owned(),
    ] {
        let response = locks.post(&path, good.clone()).await;
        expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    // Malformed JSON and the wrong content type.
    let response = locks
        .http
        .post(format!("{}{acquire}", locks.url))
        .header("content-type", "application/json")
        .body("{\"backend\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = locks
        .http
        .post(format!("{}{acquire}", locks.url))
        .body("backend=pg")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing was taken, on any backend.
    for backend in common::BACKENDS {
        assert_eq!(locks.holder(backend, &name).await, json!(null), "{backend}");
    }
}

#[tokio::test]
async fn invalid_renews_releases_and_reads_are_422() {
    let locks = common::spawn().await;
    let name = common::unique("bad");
    let lease = locks.acquire("redis", &name, "a", 10_000, 0).await;
    for (path, body) in [
        (
            "renew",
            json!({"backend": "redis", "lease_id": "not-a-uuid", "ttl_ms": 1000}),
        ),
        (
            "renew",
            json!({"backend": "redis", "lease_id": lease["lease_id"], "ttl_ms": 0}),
        ),
        (
            "release",
            json!({"backend": "zk", "lease_id": lease["lease_id"]}),
        ),
        ("release", json!({"backend": "redis", "lease_id": ""})),
    ] {
        let response = locks
            .post(&format!("/locks/{name}/{path}"), body.clone())
            .await;
        expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let holder = locks.holder("redis", &name).await;
    assert_eq!(
        holder["fencing_token"], lease["fencing_token"],
        "still held"
    );
    for query in ["", "?backend=", "?backend=mysql"] {
        let response = locks
            .http
            .get(format!("{}/locks/{name}{query}", locks.url))
            .send()
            .await
            .unwrap();
        expect_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    assert_eq!(
        locks.release("redis", &name, &lease).await.status(),
        StatusCode::OK
    );
}
