//! `GET/POST /partitions`, `GET/DELETE /partitions/{name}`: network partitions by part name (see
//! [`crate::partition`] for what a cut does on the wire).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use distlab_platform::{ApiError, ErrorBody, Path};
use serde::Deserialize;
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use super::{AppState, json_body};
use crate::partition::CutMode;
use crate::state::PartitionView;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/partitions", get(list).post(create))
        .route("/partitions/{name}", get(show).delete(heal))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, show, heal),
    components(schemas(PartitionRequest, PartitionView, CutMode))
)]
pub(super) struct Doc;

/// A partition to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PartitionRequest {
    #[schema(min_length = 1, max_length = 128, pattern = "^[^/]+$")]
    name: String,
    /// Each side a list of parts (the names either side of `->` in the link names); at least two non-empty
    /// sides, no part on two.
    #[schema(min_items = 2)]
    sides: Vec<Vec<String>>,
    /// `hold` (default) or `reset`.
    #[serde(default)]
    mode: CutMode,
}

/// Partitions in force and the links each cuts.
#[utoipa::path(get, path = "/partitions", responses((status = 200, body = Object)))]
async fn list(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({"partitions": state.chaos.partitions().await}))
}

/// Cuts every link between parts on different sides, both directions, open and new connections.
#[utoipa::path(post, path = "/partitions", request_body = PartitionRequest,
    responses((status = 201, body = PartitionView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let request: PartitionRequest = serde_json::from_value(body).map_err(|error| {
        ApiError::bad_request("bad_request_body", format!("bad request body: {error}"))
    })?;
    let view = state
        .chaos
        .create_partition(&request.name, request.sides, request.mode)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

#[utoipa::path(get, path = "/partitions/{name}", params(("name" = String, Path)),
    responses((status = 200, body = PartitionView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<PartitionView>, ApiError> {
    Ok(axum::Json(state.chaos.partition(&name).await?))
}

/// Heals: held bytes flow on, new connections go through.
#[utoipa::path(delete, path = "/partitions/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn heal(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.chaos.heal(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
