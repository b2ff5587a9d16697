//! HTTP resources of the coordinator.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use distlab_platform::{ApiError, ErrorBody, Json, Path, Query};
use distlab_twopc::Gid;
use distlab_twopc::protocol::TxState;
use distlab_twopc::wire::{BeginRequest, TransactionView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::driver::{Coordinator, CoordinatorError};
use crate::log;

pub fn router(coordinator: Coordinator) -> Router {
    Router::new()
        .route("/transactions", post(begin).get(list))
        .route("/transactions/{gid}", get(transaction))
        .with_state(coordinator)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distlab coordinator",
        description = "Two-phase commit over the order and inventory participants."
    ),
    paths(begin, transaction, list),
    components(schemas(BeginRequest, TransactionView, TransactionList, TxState, ErrorBody))
)]
struct ApiDoc;

pub fn openapi() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises")
}

impl From<CoordinatorError> for ApiError {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::Crashed(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "crashed",
                "the coordinator crashed (injected fault)",
            ),
            CoordinatorError::Database(db) if distlab_platform::db::is_unavailable(&db) => {
                ApiError::unavailable("the decision log is not answering")
            }
            CoordinatorError::Database(db) => ApiError::internal(&db),
        }
    }
}

/// Runs a global transaction that places the order: phase 1, the logged decision, phase 2.
#[utoipa::path(post, path = "/transactions", request_body = BeginRequest,
    responses((status = 200, body = TransactionView), (status = 503, body = ErrorBody)))]
async fn begin(
    State(coordinator): State<Coordinator>,
    Json(request): Json<BeginRequest>,
) -> Result<axum::Json<TransactionView>, ApiError> {
    if !request.order.is_storable() {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "the order's texts must not contain the NUL character",
        ));
    }
    Ok(axum::Json(
        coordinator.run(request.order, request.gid).await?,
    ))
}

/// One transaction: state, decision and reason, each branch's vote and acknowledgement.
#[utoipa::path(get, path = "/transactions/{gid}",
    params(("gid" = String, Path, pattern = "^distlab_[0-9a-f]{32}$")),
    responses((status = 200, body = TransactionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn transaction(
    State(coordinator): State<Coordinator>,
    Path(gid): Path<String>,
) -> Result<axum::Json<TransactionView>, ApiError> {
    let gid = Gid::parse(&gid).map_err(|e| ApiError::bad_request("invalid_gid", e.to_string()))?;
    log::get(&coordinator.pool, &gid)
        .await
        .map_err(CoordinatorError::from)?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no transaction {gid}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// PREPARING, COMMITTING, ABORTING, COMMITTED or ABORTED.
    #[param(value_type = Option<TxState>)]
    state: Option<String>,
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct TransactionList {
    transactions: Vec<TransactionView>,
}

/// Transactions, newest first.
#[utoipa::path(get, path = "/transactions", params(ListQuery),
    responses((status = 200, body = TransactionList), (status = 422, body = ErrorBody)))]
async fn list(
    State(coordinator): State<Coordinator>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<TransactionList>, ApiError> {
    let state = match query.state.as_deref() {
        None => None,
        Some(text) => Some(TxState::parse(text).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_query",
                "state is PREPARING, COMMITTING, ABORTING, COMMITTED or ABORTED",
            )
        })?),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            "limit must be between 1 and 500",
        ));
    }
    let transactions = log::list(&coordinator.pool, state, limit)
        .await
        .map_err(CoordinatorError::from)?;
    Ok(axum::Json(TransactionList { transactions }))
}
