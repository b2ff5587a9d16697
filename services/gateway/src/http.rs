//! The storefront's routes: HTML pages for people, two JSON routes for the pages' script and for API
//! callers, and the degradation rules of [`crate::degrade`] applied to each.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use distlab_platform::{ApiError, ErrorBody, Path};
use maud::Markup;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::catalog::{self, Bestseller, Catalog, Product, Snapshot};
use crate::checkout::{self, FORM_LIMIT};
use crate::degrade::{self, DegradeMode, DegradeSwitch};
use crate::deps::{DepError, Dependency, Guard};
use crate::pages::{self, OrderView, PageKind, Reason, Served};
use crate::shed::{SLOW_PAGE, Shedder};

/// The header that says whether a page is full or degraded.
pub const PAGE_HEADER: &str = "x-distlab-page";

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub switch: DegradeSwitch,
    pub catalog: Catalog,
    pub orders: Dependency,
    /// The order service again, for the bestsellers panel alone: a breaker and a short time-out of its
    /// own, so that the non-core panel can never pause ordering.
    pub bestsellers: Dependency,
    pub shedder: Shedder,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(catalog_page))
        .route("/products/{sku}", get(product_page))
        .route("/checkout", post(place_order))
        .route("/orders/{id}", get(order_page))
        .route("/api/catalog", get(api_catalog))
        .route("/api/orders/{id}", get(api_order))
        .route("/static/app.js", get(script))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(Arc::new(state))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distlab gateway",
        description = "The storefront (HTML pages at /, /products/{sku}, /checkout, /orders/{id}) and its JSON routes. Pages degrade instead of failing (BASE): see the degrade switch. The live console is the page /console, its event stream /console/events (Server-Sent Events, not described here) and the JSON routes /console/*."
    ),
    paths(api_catalog, api_order),
    components(schemas(CatalogAnswer, Product, ErrorBody))
)]
struct ApiDoc;

pub fn openapi() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(<crate::console::ApiDoc as OpenApi>::openapi());
    serde_json::to_value(doc).expect("the OpenAPI document serialises")
}

/// Middleware (around every route, `/healthz` and the 404 included): names the degrade mode in force on
/// every response and keeps its gauge current.
pub async fn mark_mode(
    State(switch): State<DegradeSwitch>,
    request: Request,
    next: Next,
) -> Response {
    // The mode as the request began: the one its handler read.
    let mode = switch.current();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(degrade::HEADER, HeaderValue::from_static(mode.as_str()));
    for candidate in DegradeMode::ALL {
        metrics::gauge!("gateway_degrade_mode", "mode" => candidate.as_str())
            .set(if candidate == mode { 1.0 } else { 0.0 });
    }
    response
}

/// A page with its status and the headers that say how it was served; counted in `gateway_pages_total`.
/// Only a 2xx page counts as a full or degraded page (metric label and header); any other is an `error` page.
fn page(status: StatusCode, served: &Served, markup: Markup) -> Response {
    let kind = if status.is_success() {
        served.page.as_str()
    } else {
        "error"
    };
    metrics::counter!("gateway_pages_total",
        "page" => kind,
        "reason" => served.reason.map_or("none", Reason::as_str))
    .increment(1);
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(PAGE_HEADER, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(reason) = served.reason {
        headers.insert(
            "x-distlab-degraded-because",
            HeaderValue::from_static(reason.as_str()),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    response
}

fn guard(mode: DegradeMode) -> Guard {
    match mode {
        DegradeMode::Off => Guard::Unguarded,
        DegradeMode::Auto | DegradeMode::On => Guard::Guarded,
    }
}

/// What a browsing request shows.
struct Browse {
    snapshot: Option<Arc<Snapshot>>,
    bestsellers: Option<Vec<Bestseller>>,
    served: Served,
}

/// A browsing request that cannot be answered with a page of the catalog (only with `degrade=off`, or
/// before the inventory ever answered).
struct NoCatalog {
    status: StatusCode,
    message: String,
    served: Served,
}

/// The catalog (and the bestsellers, when `with_bestsellers`) as the degrade mode and the shop's state allow.
async fn browse(state: &AppState, with_bestsellers: bool) -> Result<Browse, NoCatalog> {
    let mode = state.switch.current();
    let from_cache = |reason: Reason| {
        let snapshot = state.catalog.last_known();
        let mut served = Served::degraded(mode, reason);
        served.stock_as_of = snapshot.as_ref().map(|s| s.as_of);
        match snapshot {
            Some(snapshot) => Ok(Browse {
                snapshot: Some(snapshot),
                bestsellers: None,
                served,
            }),
            None => Err(NoCatalog {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "The catalog is not available yet. Please try again in a moment.".into(),
                served,
            }),
        }
    };
    match mode {
        DegradeMode::On => from_cache(Reason::Promotion),
        DegradeMode::Off => {
            let (live, bestsellers) = tokio::join!(
                state.catalog.live(Guard::Unguarded),
                optional_bestsellers(state, with_bestsellers, Guard::Unguarded)
            );
            let failed = |error: DepError| NoCatalog {
                status: failure_status(&error),
                message: format!("The shop cannot answer: {error}."),
                served: Served::full(mode),
            };
            Ok(Browse {
                snapshot: Some(live.map_err(failed)?),
                bestsellers: bestsellers.map_err(failed)?,
                served: Served::full(mode),
            })
        }
        DegradeMode::Auto => {
            let Some(slot) = state.shedder.browse().await else {
                return from_cache(Reason::HighDemand);
            };
            let started = Instant::now();
            // Both at once; but once the catalog has failed the page is the degraded one, and it does not
            // wait for a panel it would not show.
            let live = state.catalog.live(Guard::Guarded);
            let panel = optional_bestsellers(state, with_bestsellers, Guard::Guarded);
            tokio::pin!(live, panel);
            let mut early_panel = None;
            let live = loop {
                tokio::select! {
                    live = &mut live => break live,
                    panel = &mut panel, if early_panel.is_none() => early_panel = Some(panel),
                }
            };
            let bestsellers = match (&live, early_panel) {
                (Err(_), _) => Ok(None),
                (Ok(_), Some(panel)) => panel,
                (Ok(_), None) => panel.await,
            };
            let refused =
                |result: Option<&DepError>| matches!(result, Some(DepError::BreakerOpen { .. }));
            if refused(live.as_ref().err()) {
                // Nothing was asked: no latency sample (a refusal's few microseconds would teach the
                // limit a "best latency" no real page has).
                slot.forget();
            } else {
                let timed_out = live.as_ref().err().is_some_and(DepError::is_timeout)
                    || bestsellers.as_ref().err().is_some_and(DepError::is_timeout);
                slot.done(timed_out || started.elapsed() > SLOW_PAGE).await;
            }
            match (live, bestsellers) {
                (Err(_), _) => from_cache(Reason::InventoryUnavailable),
                (Ok(snapshot), Err(_)) => Ok(Browse {
                    snapshot: Some(snapshot),
                    bestsellers: None,
                    served: Served::degraded(mode, Reason::PanelUnavailable),
                }),
                (Ok(snapshot), Ok(bestsellers)) => Ok(Browse {
                    snapshot: Some(snapshot),
                    bestsellers,
                    served: Served::full(mode),
                }),
            }
        }
    }
}

async fn optional_bestsellers(
    state: &AppState,
    wanted: bool,
    guard: Guard,
) -> Result<Option<Vec<Bestseller>>, DepError> {
    if wanted {
        catalog::bestsellers(&state.bestsellers, state.catalog.prefix(), guard)
            .await
            .map(Some)
    } else {
        Ok(None)
    }
}

/// 504 when the dependency did not answer in time, 503 when it could not be reached, 502 for a bad answer.
fn failure_status(error: &DepError) -> StatusCode {
    match error {
        DepError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        DepError::Unreachable { .. } | DepError::BreakerOpen { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        DepError::Status { .. } => StatusCode::BAD_GATEWAY,
    }
}

/// `GET /`: the catalog.
async fn catalog_page(State(state): State<Arc<AppState>>) -> Response {
    match browse(&state, true).await {
        Ok(browse) => page(
            StatusCode::OK,
            &browse.served,
            pages::catalog(
                browse.snapshot.as_deref(),
                browse.bestsellers.as_deref(),
                &browse.served,
            ),
        ),
        Err(none) => page(
            none.status,
            &none.served,
            pages::error("Catalog unavailable", &none.message, &none.served),
        ),
    }
}

fn is_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `GET /products/{sku}`: one product and the checkout form.
async fn product_page(State(state): State<Arc<AppState>>, Path(sku): Path<String>) -> Response {
    let mode = state.switch.current();
    if !is_sku(&sku) {
        let served = Served::full(mode);
        return page(
            StatusCode::BAD_REQUEST,
            &served,
            pages::error(
                "Not a product",
                "A product code is 1 to 64 characters of A-Z a-z 0-9 . _ -",
                &served,
            ),
        );
    }
    let browse = match browse(&state, false).await {
        Ok(browse) => browse,
        Err(none) => {
            return page(
                none.status,
                &none.served,
                pages::error("Product unavailable", &none.message, &none.served),
            );
        }
    };
    let mut served = browse.served;
    let ordering_paused = mode != DegradeMode::Off && state.orders.refuses_now();
    if ordering_paused && served.page == PageKind::Full {
        served = Served::degraded(mode, Reason::OrdersUnavailable);
    }
    match browse.snapshot.as_deref().and_then(|s| s.find(&sku)) {
        Some(product) => {
            let key = uuid::Uuid::new_v4().to_string();
            page(
                StatusCode::OK,
                &served,
                pages::product(product, &key, ordering_paused, &served),
            )
        }
        None => page(
            StatusCode::NOT_FOUND,
            &served,
            pages::error(
                "No such product",
                &format!("The shop has no product {sku}."),
                &served,
            ),
        ),
    }
}

/// `POST /checkout`: places the order through the order service and shows its page.
async fn place_order(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mode = state.switch.current();
    let plain = Served::full(mode);
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &plain,
            pages::error(
                "Not a checkout form",
                "Checkout takes the product page's form (application/x-www-form-urlencoded).",
                &plain,
            ),
        );
    }
    let mut checkout = match checkout::parse(&body) {
        Ok(checkout) => checkout,
        Err(errors) => {
            let message = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &plain,
                pages::error("The order is not valid", &message, &plain),
            );
        }
    };
    // Every checkout is sent with a key: a retry of one whose outcome is unknown must not order twice.
    checkout
        .idempotency_key
        .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
    // A product the shop does not sell is refused here, before anything is placed (only a catalog that
    // cannot be read at all lets the order service decide).
    let sold = match state.catalog.last_known() {
        Some(snapshot) if snapshot.find(&checkout.sku).is_some() => Some(true),
        // Not in the last known catalog: it may have been added since; ask once.
        _ => match state.catalog.live(guard(mode)).await {
            Ok(snapshot) => Some(snapshot.find(&checkout.sku).is_some()),
            Err(_) => None,
        },
    };
    if sold.is_none() {
        let busy = Served::degraded(mode, Reason::InventoryUnavailable);
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            &busy,
            pages::error(
                "Cannot check the product",
                "The catalog cannot be read right now, so the product cannot be checked. Nothing was ordered: please try again in a moment.",
                &busy,
            ),
        );
    }
    if sold == Some(false) {
        return page(
            StatusCode::NOT_FOUND,
            &plain,
            pages::error(
                "No such product",
                &format!(
                    "The shop has no product {}: nothing was ordered.",
                    checkout.sku
                ),
                &plain,
            ),
        );
    }
    let paused = Served::degraded(mode, Reason::OrdersUnavailable);
    let slot = match mode {
        DegradeMode::Off => None,
        DegradeMode::Auto | DegradeMode::On => match state.shedder.checkout().await {
            Some(slot) => Some(slot),
            None => {
                let busy = Served::degraded(mode, Reason::HighDemand);
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &busy,
                    pages::error(
                        "High demand",
                        "So many orders are arriving that yours could not be placed. Nothing was ordered: please try again in a moment.",
                        &busy,
                    ),
                );
            }
        },
    };
    let body = json!({
        "customer_id": checkout.customer_id,
        "items": [{"sku": checkout.sku, "quantity": checkout.quantity}],
    });
    let key_header: Vec<(&str, &str)> = checkout
        .idempotency_key
        .as_deref()
        .map(|key| ("idempotency-key", key))
        .into_iter()
        .collect();
    let answer: Result<Value, DepError> = state
        .orders
        .post("/orders", &body, &key_header, guard(mode))
        .await;
    if let Some(slot) = slot {
        slot.done(answer.as_ref().err().is_some_and(DepError::is_timeout))
            .await;
    }
    let order_id = |order: &Value| order["id"].as_str().map(str::to_owned);
    match answer {
        Ok(order) => match order_id(&order) {
            Some(id) => see_order(&id),
            None => page(
                StatusCode::BAD_GATEWAY,
                &paused,
                pages::error(
                    "Ordering failed",
                    "The order service gave no order id.",
                    &paused,
                ),
            ),
        },
        // A 2PC order the inventory refused is recorded REJECTED: its page says why.
        Err(DepError::Status { status, body, .. })
            if status == StatusCode::CONFLICT && order_id(&body["details"]["order"]).is_some() =>
        {
            see_order(&order_id(&body["details"]["order"]).unwrap_or_default())
        }
        Err(DepError::Status { status, body, .. }) if status.is_client_error() => {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("the order service refused the order")
                .to_owned();
            let status = match status {
                StatusCode::NOT_FOUND | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                    status
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            page(
                status,
                &plain,
                pages::error("The order was not placed", &message, &plain),
            )
        }
        // Not sent at all: nothing was ordered.
        Err(error @ (DepError::BreakerOpen { .. } | DepError::Unreachable { .. })) => {
            tracing::warn!(%error, "checkout not placed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                &paused,
                pages::error(
                    "Ordering is paused",
                    "Ordering is paused: the order service cannot be reached right now. Nothing was ordered; you can keep browsing and try again shortly.",
                    &paused,
                ),
            )
        }
        // Sent, but no answer in time or a server error: the order may exist. The retry form carries the
        // same idempotency key, so trying again can never place a second order.
        Err(error) => {
            tracing::warn!(%error, "checkout outcome unknown");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                &paused,
                pages::unconfirmed(&checkout, &paused),
            )
        }
    }
}

fn see_order(id: &str) -> Response {
    Redirect::to(&format!("/orders/{id}")).into_response()
}

/// `GET /orders/{id}`: the order, kept current by the page's script until it is decided.
async fn order_page(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let mode = state.switch.current();
    let plain = Served::full(mode);
    if uuid::Uuid::parse_str(&id).is_err() {
        return page(
            StatusCode::BAD_REQUEST,
            &plain,
            pages::error("Not an order", "An order id is a UUID.", &plain),
        );
    }
    match state
        .orders
        .get::<Value>(&format!("/orders/{id}"), guard(mode))
        .await
    {
        Ok(order) => match serde_json::from_value::<OrderView>(order) {
            Ok(order) => page(StatusCode::OK, &plain, pages::order(&order, &plain)),
            Err(error) => page(
                StatusCode::BAD_GATEWAY,
                &plain,
                pages::error(
                    "Order unavailable",
                    &format!("Unexpected answer: {error}"),
                    &plain,
                ),
            ),
        },
        Err(DepError::Status { status, .. }) if status == StatusCode::NOT_FOUND => page(
            StatusCode::NOT_FOUND,
            &plain,
            pages::error("No such order", &format!("There is no order {id}."), &plain),
        ),
        Err(error) => {
            let served = Served::degraded(mode, Reason::OrdersUnavailable);
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                &served,
                pages::error(
                    "Order status unavailable",
                    &format!(
                        "Your order is kept, but its status cannot be read right now ({error}). This page will work again shortly."
                    ),
                    &served,
                ),
            )
        }
    }
}

/// The catalog as JSON.
#[derive(Debug, Serialize, ToSchema)]
struct CatalogAnswer {
    products: Vec<Product>,
    /// When the stock was read from the inventory.
    as_of: Option<DateTime<Utc>>,
    /// `live`, or `cache` (the last known catalog).
    source: &'static str,
    /// `full` or `degraded`.
    page: &'static str,
    /// Why it is degraded.
    reason: Option<&'static str>,
}

/// The shop's catalog; over the concurrency limit (`degrade=auto`) a 503 with `Retry-After` (API callers
/// retry; people get the degraded page).
#[utoipa::path(get, path = "/api/catalog",
    responses((status = 200, body = CatalogAnswer), (status = 503, body = ErrorBody,
        description = "overloaded (shed: retry after Retry-After) or the catalog is unavailable")))]
async fn api_catalog(State(state): State<Arc<AppState>>) -> Response {
    let browse = match browse(&state, false).await {
        Ok(browse) => browse,
        Err(none) => {
            return ApiError::new(none.status, "dependency_unavailable", none.message)
                .with_retry_after(2)
                .into_response();
        }
    };
    if browse.served.reason == Some(Reason::HighDemand) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the shop is at its concurrency limit; retry shortly",
        )
        .with_retry_after(1)
        .into_response();
    }
    let snapshot = browse.snapshot;
    let answer = CatalogAnswer {
        products: snapshot
            .as_ref()
            .map(|s| s.products.clone())
            .unwrap_or_default(),
        as_of: snapshot.as_ref().map(|s| s.as_of),
        source: if browse.served.stock_as_of.is_some() {
            "cache"
        } else {
            "live"
        },
        page: browse.served.page.as_str(),
        reason: browse.served.reason.map(Reason::as_str),
    };
    let mut response = axum::Json(answer).into_response();
    response.headers_mut().insert(
        PAGE_HEADER,
        HeaderValue::from_static(browse.served.page.as_str()),
    );
    response
}

/// An order, as the order service has it (the order page's script polls this).
#[utoipa::path(get, path = "/api/orders/{id}",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, description = "the order service's order"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the order service cannot be reached")))]
async fn api_order(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if uuid::Uuid::parse_str(&id).is_err() {
        return ApiError::bad_request("invalid_order_id", "an order id is a UUID").into_response();
    }
    let mode = state.switch.current();
    match state
        .orders
        .get::<Value>(&format!("/orders/{id}"), guard(mode))
        .await
    {
        Ok(order) => axum::Json(order).into_response(),
        Err(DepError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
            ApiError::not_found(format!("no order {id}")).into_response()
        }
        Err(error) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
            error.to_string(),
        )
        .with_retry_after(2)
        .into_response(),
    }
}

/// The pages' script.
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../static/app.js"),
    )
        .into_response()
}
