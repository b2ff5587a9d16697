//! `GET /stock/{sku}`: the stock of a SKU as the order side may tell it, by the CAP mode in force
//! ([`crate::cap`]): in CP read through to the inventory (current, or 503 `cp_unavailable` within
//! [`CP_DEADLINE`]); in AP from the replica, with its version and age.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use distlab_platform::trace::PropagateTrace;
use distlab_platform::{ErrorBody, Path};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::cap::{CP_DEADLINE, CapMode};
use crate::error::OrderError;

/// The header with the age of the value, in milliseconds (0 when read through in CP mode).
pub const STALENESS_HEADER: &str = "x-distlab-staleness-ms";

/// A SKU's stock as the order side answers it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StockView {
    pub sku: String,
    pub available: i32,
    pub reserved: i32,
    /// The inventory's version of this SKU's stock (it only grows).
    pub version: i64,
    /// The value is known to be true as of this instant: now when read through (CP), the time the
    /// inventory made this version when read from the replica (AP).
    pub as_of: DateTime<Utc>,
    /// Milliseconds between `as_of` and the answer.
    pub staleness_ms: i64,
    /// `inventory` (read through) or `replica`.
    pub source: String,
    pub cap_mode: CapMode,
}

/// The inventory's product, as far as a stock read needs it.
#[derive(Debug, Deserialize)]
struct InventoryProduct {
    sku: String,
    available: i32,
    reserved: i32,
    version: i64,
}

/// The stock of one SKU: read through to the inventory (CP) or from the replica (AP).
#[utoipa::path(get, path = "/stock/{sku}",
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = StockView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Response, OrderError> {
    if !crate::orders::valid_id(&sku) {
        return Err(OrderError::InvalidSku);
    }
    let (mode, _) = state.cap.current();
    let view = match mode {
        CapMode::Cp => read_through(&state, &sku).await?,
        CapMode::Ap => {
            let row = crate::replica::get(&state.pool, &sku)
                .await?
                .ok_or_else(|| OrderError::UnknownSku(sku.clone()))?;
            let now = Utc::now();
            StockView {
                sku: row.sku,
                available: row.available,
                reserved: row.reserved,
                version: row.version,
                as_of: row.changed_at,
                staleness_ms: (now - row.changed_at).num_milliseconds().max(0),
                source: "replica".into(),
                cap_mode: mode,
            }
        }
    };
    metrics::counter!("stock_reads_total", "source" => view.source.clone()).increment(1);
    let mut response = (StatusCode::OK, axum::Json(&view)).into_response();
    response.headers_mut().insert(
        STALENESS_HEADER,
        HeaderValue::from(view.staleness_ms.max(0) as u64),
    );
    Ok(response)
}

/// CP: the inventory's current answer within the deadline, or `cp_unavailable`.
async fn read_through(state: &AppState, sku: &str) -> Result<StockView, OrderError> {
    let unavailable = |why: String| {
        metrics::counter!("stock_reads_refused_total").increment(1);
        OrderError::CpUnavailable(why)
    };
    let answer = state
        .http
        .get(format!("{}/products/{sku}", state.inventory_url))
        .with_trace()
        .timeout(CP_DEADLINE)
        .send()
        .await
        .map_err(|error| unavailable(format!("the inventory did not answer: {error}")))?;
    match answer.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(OrderError::UnknownSku(sku.to_owned())),
        other => return Err(unavailable(format!("the inventory answered {other}"))),
    }
    let product: InventoryProduct = answer
        .json()
        .await
        .map_err(|error| unavailable(format!("unreadable answer from the inventory: {error}")))?;
    Ok(StockView {
        sku: product.sku,
        available: product.available,
        reserved: product.reserved,
        version: product.version,
        as_of: Utc::now(),
        staleness_ms: 0,
        source: "inventory".into(),
        cap_mode: CapMode::Cp,
    })
}
