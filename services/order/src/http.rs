//! HTTP resources of the order service (contracts: docs/contracts.md, "Order service").

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use distlab_platform::{ErrorBody, Json, Path, Query};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::cap::{CP_DEADLINE, CapMode};
use crate::error::OrderError;
use crate::orders::{ItemInput, Mode, Order, PlaceOrder, Status, ValidOrder};
use crate::store::{self, IdempotencyKey, Placed};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Page size of `GET /orders` when none is asked for, and the largest allowed.
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", get(list_orders).post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/stock/{sku}", get(crate::stock::get_stock))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distlab order",
        description = "Orders, placed by the outbox flow (and later 2PC)."
    ),
    paths(place_order, get_order, list_orders, crate::stock::get_stock),
    components(schemas(
        PlaceOrder,
        ItemInput,
        Order,
        OrderList,
        Mode,
        Status,
        ErrorBody,
        crate::stock::StockView,
        crate::cap::CapMode
    ))
)]
struct ApiDoc;

pub fn openapi() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(distlab_twopc::participant::openapi());
    serde_json::to_value(doc).expect("the OpenAPI document serialises")
}

fn idempotency_key(
    headers: &HeaderMap,
    order: &ValidOrder,
) -> Result<Option<IdempotencyKey>, OrderError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or(OrderError::InvalidIdempotencyKey(
            "must be 1 to 255 visible ASCII characters",
        ))?;
    // The fingerprint is of the validated request with its mode resolved, so whitespace, key order or an
    // omitted default mode do not make a request "different".
    let canonical = serde_json::to_vec(&(&order.customer_id, &order.items, order.mode.as_str()))
        .map_err(|e| OrderError::Unexpected(e.into()))?;
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        request_hash: Sha256::digest(&canonical).to_vec(),
    }))
}

/// Places an order. In `outbox` mode: 202 with the PENDING order, which later becomes CONFIRMED or REJECTED.
/// In `2pc` mode: 201 CONFIRMED, or 409 with the reason (the order is recorded REJECTED).
/// Once the `cap_mode` switch is set (see `crate::cap`): in CP an order naming no mode is a 2PC order and
/// a 2PC order answers within 800 ms or 503 `cp_unavailable`; in AP an order naming no mode is an outbox
/// order, and an outbox order is admitted only if the stock replica covers it (409 `insufficient_stock` or
/// 404 `unknown_sku` otherwise).
#[utoipa::path(post, path = "/orders", request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[\\x21-\\x7E]{1,255}$",
        description = "1 to 255 visible ASCII characters. Same key and body: the first response again. \
                       Same key, other body: 422.")),
    responses((status = 202, body = Order), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 201, body = Order), (status = 409, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "AP: the stock replica does not know the SKU"),
        (status = 503, body = ErrorBody)))]
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<PlaceOrder>,
) -> Result<Response, OrderError> {
    let (cap_mode, cap_set) = state.cap.current();
    let default_mode = match (cap_set, cap_mode) {
        (true, CapMode::Cp) => Mode::TwoPhaseCommit,
        (true, CapMode::Ap) => Mode::Outbox,
        (false, _) => state.default_mode.current(),
    };
    let order = request
        .validate(default_mode)
        .map_err(OrderError::Validation)?;
    let key = idempotency_key(&headers, &order)?;
    if order.mode == Mode::TwoPhaseCommit {
        if cap_set && cap_mode == CapMode::Cp {
            // The transaction runs on its own task: when the deadline answers the client, the 2PC goes on
            // to its decision (and this service records it) instead of being dropped half-way.
            let placing = {
                let state = state.clone();
                tokio::spawn(async move { crate::two_phase::place(&state, order, key).await })
            };
            return match tokio::time::timeout(CP_DEADLINE, placing).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(panicked)) => Err(OrderError::Unexpected(panicked.into())),
                Err(_) => Err(OrderError::CpUnavailable(format!(
                    "the inventory side did not reserve the order within {} ms (it may still be decided: \
                     send an Idempotency-Key to retry safely)",
                    CP_DEADLINE.as_millis()
                ))),
            };
        }
        return crate::two_phase::place(&state, order, key).await;
    }
    let placed = if cap_set && cap_mode == CapMode::Ap {
        match store::place_on_replica(
            &state.pool,
            &order,
            key.as_ref(),
            &state.order_events_topic,
            state.redeliver_after,
        )
        .await
        {
            Ok(store::Admitted::Placed(placed)) => Ok(placed),
            Ok(store::Admitted::Refused(store::Shortage::UnknownSku(sku))) => {
                return Err(OrderError::UnknownSku(sku));
            }
            Ok(store::Admitted::Refused(store::Shortage::Insufficient {
                sku,
                available,
                wanted,
            })) => {
                metrics::counter!("orders_refused_on_replica_total").increment(1);
                return Err(OrderError::ReplicaShortage {
                    sku,
                    available,
                    wanted,
                });
            }
            Err(error) => Err(error),
        }
    } else {
        store::place(
            &state.pool,
            &order,
            key.as_ref(),
            &state.order_events_topic,
            state.redeliver_after,
        )
        .await
    };
    match placed {
        Ok(Placed::Created(order)) => {
            metrics::counter!("orders_placed_total", "mode" => order.mode.as_str()).increment(1);
            Ok(accepted(&order.id, axum::Json(&order).into_response()))
        }
        Ok(Placed::Replayed { status, body }) => Ok(replayed(status, body)),
        Ok(Placed::KeyReused) => Err(OrderError::IdempotencyKeyReused),
        Err(error) => Err(match error.downcast::<sqlx::Error>() {
            Ok(sql) => sql.into(),
            Err(other) => other.into(),
        }),
    }
}

/// The first answer to a request with the same `Idempotency-Key`, again, marked `idempotent-replayed`.
pub(crate) fn replayed(status: u16, body: serde_json::Value) -> Response {
    let id: Option<Uuid> = body
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok());
    let mut response = axum::Json(body).into_response();
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(location) = id.and_then(|id| HeaderValue::from_str(&format!("/orders/{id}")).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn accepted(id: &Uuid, mut response: Response) -> Response {
    *response.status_mut() = StatusCode::ACCEPTED;
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// One order.
#[utoipa::path(get, path = "/orders/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = Order), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Order>, OrderError> {
    let id: Uuid = id.parse().map_err(|_| OrderError::InvalidOrderId)?;
    store::get(&state.pool, id)
        .await?
        .map(axum::Json)
        .ok_or(OrderError::NotFound(id))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// PENDING, CONFIRMED or REJECTED.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// 1 to 500, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderList {
    orders: Vec<Order>,
    /// Present when there are more orders: pass it as `cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<Uuid>,
}

/// Orders, newest first, a page at a time.
#[utoipa::path(get, path = "/orders", params(ListQuery),
    responses((status = 200, body = OrderList), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_orders(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<OrderList>, OrderError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()
        .map_err(OrderError::InvalidQuery)?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                OrderError::InvalidQuery(format!("limit must be between 1 and {MAX_PAGE}"))
            })?,
    };
    let cursor = query
        .cursor
        .as_deref()
        .map(str::parse::<Uuid>)
        .transpose()
        .map_err(|_| {
            OrderError::InvalidQuery("cursor must be a next_cursor from an earlier page".into())
        })?;
    let mut orders = store::list(&state.pool, status, limit + 1, cursor).await?;
    let next_cursor = if orders.len() as i64 > limit {
        orders.truncate(limit as usize);
        orders.last().map(|o| o.id)
    } else {
        None
    };
    Ok(axum::Json(OrderList {
        orders,
        next_cursor,
    }))
}
