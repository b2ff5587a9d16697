//! The admin API (default 127.0.0.1:8474, Toxiproxy's port).
//!
//! - [`toxiproxy`]: Toxiproxy's REST API, same paths, JSON shapes and status codes (`/proxies`,
//!   `/populate`, `/reset`, `/version`, toxics), so its client libraries work unchanged. Error bodies use
//!   distlab's shape (`{"error": {"code", "message", "details"?}}`); Toxiproxy's clients read the status.
//! - [`partitions`]: `GET/POST /partitions`, `GET/DELETE /partitions/{name}`.
//! - [`events`]: `GET /events`, the fault log.
//! - [`switches`]: `GET /switches`, `GET/PUT /switches/{name}`, stored in the Raft config service.
//!
//! Bodies are read as JSON whatever their `Content-Type` (Toxiproxy does not ask for one, and some of its
//! clients send none). When `CHAOS_ADMIN_TOKEN` is set, every route but `/healthz`, `/readyz` and
//! `/metrics` wants `Authorization: Bearer <token>`.

pub mod events;
pub mod partitions;
pub mod switches;
pub mod toxiproxy;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use distlab_platform::ApiError;
use serde_json::Value;
use utoipa::OpenApi;

use crate::state::{Chaos, ChaosError, problems_json};
use crate::switches::Switchboard;

/// Largest admin request body.
pub const BODY_LIMIT: usize = 256 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub chaos: Arc<Chaos>,
    pub switches: Arc<Switchboard>,
}

pub fn router(state: AppState, admin_token: Option<String>) -> Router {
    let routes = Router::new()
        .merge(toxiproxy::router())
        .merge(partitions::router())
        .merge(events::router())
        .merge(switches::router())
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    match admin_token {
        Some(token) => routes.route_layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        )),
        None => routes,
    }
}

async fn require_token(State(token): State<Arc<String>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        next.run(request).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this admin API wants Authorization: Bearer <CHAOS_ADMIN_TOKEN>",
        )
        .into_response();
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body as JSON, whatever the content type; an empty body is `null`.
pub(crate) fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            "bad_request_body",
            format!("bad request body: not JSON ({error})"),
        )
    })
}

impl From<ChaosError> for ApiError {
    fn from(error: ChaosError) -> Self {
        let message = error.to_string();
        match error {
            ChaosError::ProxyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "proxy_exists", message)
            }
            ChaosError::ProxyNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "proxy_not_found", message)
            }
            ChaosError::ToxicExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "toxic_exists", message)
            }
            ChaosError::ToxicNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "toxic_not_found", message)
            }
            ChaosError::PartitionExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "partition_exists", message)
            }
            ChaosError::PartitionNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "partition_not_found", message)
            }
            ChaosError::InvalidToxicType(_) => ApiError::bad_request("invalid_toxic_type", message),
            ChaosError::InvalidToxic(problems) => ApiError::bad_request("invalid_toxic", message)
                .with_details(problems_json(&problems)),
            ChaosError::InvalidProxy(problems) => ApiError::bad_request("invalid_proxy", message)
                .with_details(problems_json(&problems)),
            ChaosError::InvalidPartition(problems) => {
                ApiError::unprocessable("validation_failed", message)
                    .with_details(problems_json(&problems))
            }
            ChaosError::ListenInUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, "listen_address_in_use", message)
            }
            ChaosError::CannotListen { .. } => ApiError::bad_request("cannot_listen", message),
        }
    }
}

pub fn openapi() -> Value {
    let mut doc = toxiproxy::Doc::openapi();
    doc.merge(partitions::Doc::openapi());
    doc.merge(events::Doc::openapi());
    doc.merge(switches::Doc::openapi());
    doc.info.title = "distlab chaos".into();
    doc.info.description = Some(
        "The chaos sidecar's admin API: Toxiproxy's API (proxies, toxics, populate, reset, version), \
         partitions by part name, the fault log, and the CAP/BASE switchboard."
            .into(),
    );
    let mut components = doc.components.take().unwrap_or_default();
    components.schemas.insert(
        "ErrorBody".into(),
        <distlab_platform::ErrorBody as utoipa::PartialSchema>::schema(),
    );
    doc.components = Some(components);
    serde_json::to_value(doc).expect("the OpenAPI document serialises")
}
