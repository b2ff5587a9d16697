//! Calling a service's router in process, without a listener or a running stack: the fast tier's way to
//! check status codes, error bodies and input rules.
//!
//! A router whose state holds a pool that cannot connect ([`unreachable_pool`]) shows what a route does
//! before it touches its database: bad input must be refused there, so a refusal through such a router
//! also proves that nothing was written.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

/// A pool whose every connection attempt fails at once (nothing listens on port 1): for state that must
/// hold a pool in tests that must not reach a database.
pub fn unreachable_pool() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_lazy("postgres://postgres@127.0.0.1:1/unreachable")
        .expect("a static URL parses")
}

/// One request to `router`: `body` is sent as is, with `content_type` when given.
pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(body.into()).expect("a valid request"))
        .await
        .expect("routers are infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body is read");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// `POST`/`PUT` a JSON body.
pub async fn send_json(
    router: &Router,
    method: Method,
    uri: &str,
    body: &Value,
) -> (StatusCode, Value) {
    call(
        router,
        method,
        uri,
        Some("application/json"),
        &[],
        body.to_string(),
    )
    .await
}

/// `GET` a path.
pub async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, Method::GET, uri, None, &[], Body::empty()).await
}

/// Asserts the answer is `status` with the error body naming `code` and a message; returns the body.
#[track_caller]
pub fn expect(answer: (StatusCode, Value), status: StatusCode, code: &str) -> Value {
    let (got, body) = answer;
    assert_eq!(got, status, "body: {body}");
    crate::assert_error_body(&body, code);
    body
}
