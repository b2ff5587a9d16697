//! `GET /events[?link=…]`: the fault log ([`crate::events`]), newest first.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use distlab_platform::{ApiError, Query};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi};

use super::AppState;
use crate::events::{EventView, FaultRef};

pub fn router() -> Router<AppState> {
    Router::new().route("/events", get(list))
}

#[derive(OpenApi)]
#[openapi(paths(list), components(schemas(EventView, FaultRef)))]
pub(super) struct Doc;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct Filter {
    /// Only this link's events.
    link: Option<String>,
}

/// Which fault was active on which link, when, and how many connections or requests it touched.
#[utoipa::path(get, path = "/events", params(Filter),
    responses((status = 200, body = Object), (status = 400, body = distlab_platform::ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(
        json!({"events": state.chaos.events.list(filter.link.as_deref())}),
    ))
}
