//! `GET /switches`, `GET/PUT /switches/{name}`: the CAP/BASE switchboard ([`crate::switches`]).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use distlab_platform::{ApiError, ErrorBody, Path};
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::{AppState, json_body};
use crate::switches::{SWITCHES, SwitchDef, SwitchError, SwitchState, find};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/switches", get(list))
        .route("/switches/{name}", get(show).put(set))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, show, set),
    components(schemas(SwitchState, SwitchDef, SwitchRequest))
)]
pub(super) struct Doc;

/// A switch's new value (one of its `values`; case does not matter).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SwitchRequest {
    #[schema(example = "AP")]
    value: String,
}

impl From<SwitchError> for ApiError {
    fn from(error: SwitchError) -> Self {
        match error {
            SwitchError::Unavailable(_) | SwitchError::Indeterminate(_) => {
                ApiError::unavailable(error.to_string())
            }
            SwitchError::Refused(_) => ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "config_service_error",
                error.to_string(),
            ),
        }
    }
}

fn known(name: &str) -> Result<&'static SwitchDef, ApiError> {
    find(name).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_switch",
            format!(
                "no switch {name}; switches: {}",
                SWITCHES
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// Every switch with its current value.
#[utoipa::path(get, path = "/switches",
    responses((status = 200, body = Object), (status = 503, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let mut switches = Vec::new();
    for switch in &SWITCHES {
        switches.push(state.switches.get(switch).await?);
    }
    Ok(axum::Json(json!({"switches": switches})))
}

#[utoipa::path(get, path = "/switches/{name}", params(("name" = String, Path)),
    responses((status = 200, body = SwitchState), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<SwitchState>, ApiError> {
    Ok(axum::Json(state.switches.get(known(&name)?).await?))
}

/// Sets a switch: `{"value": "AP"}`. Every replica that follows it changes within its watch's latency.
#[utoipa::path(put, path = "/switches/{name}", params(("name" = String, Path)), request_body = SwitchRequest,
    responses((status = 200, body = SwitchState), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn set(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<axum::Json<SwitchState>, ApiError> {
    let switch = known(&name)?;
    let body = json_body(&body)?;
    let value = body
        .get("value")
        .and_then(Value::as_str)
        .and_then(|v| switch.normalise(v))
        .ok_or_else(|| {
            ApiError::validation(
                format!("{name} takes one of {}", switch.values.join(", ")),
                &[distlab_platform::FieldError::new(
                    "value",
                    format!("must be one of {}", switch.values.join(", ")),
                )],
            )
        })?;
    Ok(axum::Json(state.switches.set(switch, value).await?))
}
