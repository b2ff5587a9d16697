//! Toxiproxy's REST API: the routes, JSON shapes and status codes of Toxiproxy 2.x.
//!
//! | route | answer |
//! |---|---|
//! | `GET /proxies` | 200, an object name → proxy |
//! | `POST /proxies` | 201 proxy; 409 exists; 400 missing name/upstream; 409 listen address in use |
//! | `POST /populate` (array of proxies) | 201 `{"proxies": [...]}` |
//! | `GET /proxies/{name}` | 200 proxy; 404 |
//! | `POST`/`PATCH /proxies/{name}` | 200 proxy (`enabled: false` closes the listener and every connection) |
//! | `DELETE /proxies/{name}` | 204 |
//! | `GET /proxies/{name}/toxics` | 200, array of toxics |
//! | `POST /proxies/{name}/toxics` | 200 toxic; 409 exists; 400 invalid toxic (type, stream, attributes) |
//! | `GET`, `POST`/`PATCH`, `DELETE /proxies/{name}/toxics/{toxic}` | 200, 200, 204; 404 |
//! | `POST /reset` | 204: proxies enabled, toxics removed (and, distlab, partitions healed) |
//! | `GET /version` | 200 `{"version": …}` |

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use distlab_platform::{ApiError, ErrorBody, Path};
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::{AppState, json_body};
use crate::state::{ChaosError, ProxyInput, ProxyView};
use crate::toxic::Problem;

/// The Toxiproxy version whose API this one follows.
pub const TOXIPROXY_API_VERSION: &str = "2.12.0";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/proxies", get(list_proxies).post(create_proxy))
        .route("/populate", post(populate))
        .route("/reset", post(reset))
        .route("/version", get(version))
        .route(
            "/proxies/{proxy}",
            get(show_proxy)
                .post(update_proxy)
                .patch(update_proxy)
                .delete(delete_proxy),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(list_toxics).post(create_toxic),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(show_toxic)
                .post(update_toxic)
                .patch(update_toxic)
                .delete(delete_toxic),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list_proxies,
        create_proxy,
        populate,
        reset,
        version,
        show_proxy,
        update_proxy,
        delete_proxy,
        list_toxics,
        create_toxic,
        show_toxic,
        update_toxic,
        delete_toxic
    ),
    components(schemas(
        ProxyView,
        crate::proxy::Protocol,
        ProxyRequest,
        ProxyUpdate,
        ToxicRequest,
        ToxicUpdate,
        ToxicType,
        crate::toxic::Stream
    ))
)]
pub(super) struct Doc;

// The request bodies, for the OpenAPI document only: bodies are parsed by `ProxyInput::parse` and
// `ToxicSpec::parse`, which report every problem at once and accept Toxiproxy's loose JSON.

/// A proxy to create (Toxiproxy's proxy object).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ProxyRequest {
    /// `client->server` for a link of the stack (its two parts can then be partitioned).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^/]+$",
        example = "order->orders-db"
    )]
    name: String,
    /// `host:port`; absent or empty: `127.0.0.1:0` (a free port, shown in the answer).
    #[schema(pattern = "^(.+:[0-9]{1,5})?$", example = "127.0.0.1:17000")]
    listen: Option<String>,
    #[schema(pattern = "^.+:[0-9]{1,5}$", example = "127.0.0.1:15432")]
    upstream: String,
    /// Default true.
    enabled: Option<bool>,
    /// Default `tcp`.
    protocol: Option<crate::proxy::Protocol>,
    /// `kafka` only: the broker address (as the broker advertises it) to replace by this proxy's in the
    /// broker's Metadata, FindCoordinator and DescribeCluster answers; absent or empty: `upstream`.
    #[schema(pattern = "^(.+:[0-9]{1,5})?$", example = "127.0.0.1:17090")]
    advertised: Option<String>,
}

/// Fields of a proxy to change; absent ones stay.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ProxyUpdate {
    /// Empty: a free port of 127.0.0.1.
    #[schema(pattern = "^(.+:[0-9]{1,5})?$")]
    listen: Option<String>,
    #[schema(pattern = "^.+:[0-9]{1,5}$")]
    upstream: Option<String>,
    enabled: Option<bool>,
    /// Changing it away from `kafka` drops `advertised`.
    protocol: Option<crate::proxy::Protocol>,
    /// `kafka` only; empty: `upstream`.
    #[schema(pattern = "^(.+:[0-9]{1,5})?$")]
    advertised: Option<String>,
}

/// The toxic types.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
enum ToxicType {
    Latency,
    Bandwidth,
    SlowClose,
    Timeout,
    ResetPeer,
    Slicer,
    LimitData,
    HttpError,
    HttpLatency,
}

/// A toxic to add (Toxiproxy's toxic object); `attributes` depend on the type (docs/chaos.md).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ToxicRequest {
    /// Default `<type>_<stream>`.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^/]+$")]
    name: Option<String>,
    #[schema(rename = "type")]
    toxic_type: ToxicType,
    /// Default `downstream`.
    stream: Option<crate::toxic::Stream>,
    /// Default 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    toxicity: Option<f64>,
    /// Non-negative integers (durations in ms, at most a day); strings for `body`, `path_prefix`, `method`.
    #[schema(value_type = Object)]
    attributes: Option<serde_json::Value>,
}

/// A toxic's new toxicity and/or attributes (merged over the current ones).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ToxicUpdate {
    #[schema(minimum = 0.0, maximum = 1.0)]
    toxicity: Option<f64>,
    #[schema(value_type = Object)]
    attributes: Option<serde_json::Value>,
}

/// Every proxy, by name.
#[utoipa::path(get, path = "/proxies", responses((status = 200, body = Object)))]
async fn list_proxies(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!(state.chaos.proxies().await))
}

/// Creates a proxy: `{"name", "listen"?, "upstream", "enabled"?, "protocol"?: "tcp"|"http"|"kafka", "advertised"?}`.
#[utoipa::path(post, path = "/proxies", request_body = ProxyRequest,
    responses((status = 201, body = ProxyView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_proxy(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let input = ProxyInput::parse(&json_body(&body)?)?;
    let view = state.chaos.create_proxy(input).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Makes each proxy of the array exist as described.
#[utoipa::path(post, path = "/populate", request_body = Vec<ProxyRequest>,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn populate(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    // Toxiproxy takes an array; an object `{"proxies": [...]}` is accepted too.
    let list = match &body {
        Value::Array(list) => list.clone(),
        Value::Object(o) if o.get("proxies").is_some_and(Value::is_array) => {
            o["proxies"].as_array().cloned().unwrap_or_default()
        }
        _ => {
            return Err(ChaosError::InvalidProxy(vec![Problem {
                field: "body".into(),
                message: "must be an array of proxies".into(),
            }])
            .into());
        }
    };
    let inputs = list
        .iter()
        .map(ProxyInput::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let views = state.chaos.populate(inputs).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"proxies": views}))).into_response())
}

/// Enables every proxy, removes every toxic and heals every partition.
#[utoipa::path(post, path = "/reset", responses((status = 204), (status = 409, body = ErrorBody)))]
async fn reset(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.chaos.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The Toxiproxy API version followed, and distlab's own.
#[utoipa::path(get, path = "/version", responses((status = 200, body = Object)))]
async fn version() -> axum::Json<Value> {
    axum::Json(json!({
        "version": TOXIPROXY_API_VERSION,
        "distlab": env!("CARGO_PKG_VERSION"),
    }))
}

#[utoipa::path(get, path = "/proxies/{proxy}", params(("proxy" = String, Path)),
    responses((status = 200, body = ProxyView), (status = 404, body = ErrorBody)))]
async fn show_proxy(
    State(state): State<AppState>,
    Path(proxy): Path<String>,
) -> Result<axum::Json<ProxyView>, ApiError> {
    Ok(axum::Json(state.chaos.proxy(&proxy).await?))
}

/// Changes `listen`, `upstream`, `enabled`, `protocol` or `advertised`.
#[utoipa::path(method(post, patch), path = "/proxies/{proxy}", params(("proxy" = String, Path)), request_body = ProxyUpdate,
    responses((status = 200, body = ProxyView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_proxy(
    State(state): State<AppState>,
    Path(proxy): Path<String>,
    body: Bytes,
) -> Result<axum::Json<ProxyView>, ApiError> {
    let input = ProxyInput::parse(&json_body(&body)?)?;
    if input.name.as_deref().is_some_and(|n| n != proxy) {
        return Err(ChaosError::InvalidProxy(vec![Problem {
            field: "name".into(),
            message: "a proxy cannot be renamed".into(),
        }])
        .into());
    }
    Ok(axum::Json(state.chaos.update_proxy(&proxy, input).await?))
}

#[utoipa::path(delete, path = "/proxies/{proxy}", params(("proxy" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_proxy(
    State(state): State<AppState>,
    Path(proxy): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.chaos.delete_proxy(&proxy).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/proxies/{proxy}/toxics", params(("proxy" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)))]
async fn list_toxics(
    State(state): State<AppState>,
    Path(proxy): Path<String>,
) -> Result<axum::Json<Vec<Value>>, ApiError> {
    Ok(axum::Json(state.chaos.toxics(&proxy).await?))
}

/// Adds a toxic: `{"name"?, "type", "stream"?, "toxicity"?, "attributes"}`.
#[utoipa::path(post, path = "/proxies/{proxy}/toxics", params(("proxy" = String, Path)),
    request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_toxic(
    State(state): State<AppState>,
    Path(proxy): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let body = json_body(&body)?;
    Ok(axum::Json(state.chaos.add_toxic(&proxy, &body).await?))
}

#[utoipa::path(get, path = "/proxies/{proxy}/toxics/{toxic}",
    params(("proxy" = String, Path), ("toxic" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn show_toxic(
    State(state): State<AppState>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(state.chaos.toxic(&proxy, &toxic).await?))
}

/// Changes a toxic's `toxicity` and/or `attributes` (merged over the current ones).
#[utoipa::path(method(post, patch), path = "/proxies/{proxy}/toxics/{toxic}",
    params(("proxy" = String, Path), ("toxic" = String, Path)), request_body = ToxicUpdate,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn update_toxic(
    State(state): State<AppState>,
    Path((proxy, toxic)): Path<(String, String)>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let body = json_body(&body)?;
    Ok(axum::Json(
        state.chaos.update_toxic(&proxy, &toxic, &body).await?,
    ))
}

#[utoipa::path(delete, path = "/proxies/{proxy}/toxics/{toxic}",
    params(("proxy" = String, Path), ("toxic" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_toxic(
    State(state): State<AppState>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.chaos.delete_toxic(&proxy, &toxic).await?;
    Ok(StatusCode::NO_CONTENT)
}
