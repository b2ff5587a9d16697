//! HTTP resources of the inventory service (contracts: docs/contracts.md, "Inventory service").

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use distlab_platform::{ApiError, ErrorBody, Json, Path};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::adjust::{self, AdjustError, AdjustInput, LockToken};
use crate::products::{self, Product, ProductInput};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .route("/products/{sku}", get(get_product).put(put_product))
        .route("/products/{sku}/adjust", post(adjust_stock))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distlab inventory",
        description = "Products and stock; reservations come from OrderPlaced events."
    ),
    paths(put_product, get_product, list_products, adjust_stock),
    components(schemas(Product, ProductInput, ProductList, AdjustInput, LockToken, ErrorBody))
)]
struct ApiDoc;

pub fn openapi() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(distlab_twopc::participant::openapi());
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    // What utoipa cannot say: an adjustment of 0 units is refused.
    doc["components"]["schemas"]["AdjustInput"]["properties"]["delta"]["not"] =
        serde_json::json!({"const": 0});
    doc
}

#[derive(Debug, Serialize, ToSchema)]
struct ProductList {
    products: Vec<Product>,
}

fn database_error(error: sqlx::Error) -> ApiError {
    if distlab_platform::db::is_unavailable(&error) {
        ApiError::unavailable("the inventory database is not answering")
    } else {
        ApiError::internal(&error)
    }
}

fn parse_sku(sku: &str) -> Result<(), ApiError> {
    products::validate_sku(sku)
        .map_err(|e| ApiError::bad_request("invalid_sku", format!("sku {}", e.message)))
}

/// Creates a product or resets its stock (admin seeding).
#[utoipa::path(put, path = "/products/{sku}", request_body = ProductInput,
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "1–64 characters of A-Z a-z 0-9 . _ -")),
    responses((status = 200, body = Product), (status = 400, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn put_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    Json(input): Json<ProductInput>,
) -> Result<Json<Product>, ApiError> {
    parse_sku(&sku)?;
    let errors = products::validate_input(&input);
    if !errors.is_empty() {
        return Err(ApiError::validation("the product is not valid", &errors));
    }
    let product = products::upsert(&state.pool, &sku, &input)
        .await
        .map_err(database_error)?;
    Ok(Json(product))
}

/// One product.
#[utoipa::path(get, path = "/products/{sku}",
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = Product), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<Product>, ApiError> {
    parse_sku(&sku)?;
    products::get(&state.pool, &sku)
        .await
        .map_err(database_error)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no product with sku {sku}")))
}

/// Every product, by SKU.
#[utoipa::path(get, path = "/products", responses((status = 200, body = ProductList)))]
async fn list_products(State(state): State<AppState>) -> Result<Json<ProductList>, ApiError> {
    let products = products::list(&state.pool).await.map_err(database_error)?;
    Ok(Json(ProductList { products }))
}

/// Adds `delta` units (negative: takes them), refusing a stale lock fencing token.
#[utoipa::path(post, path = "/products/{sku}/adjust", request_body = AdjustInput,
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = Product), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "stale_fencing_token: a later lock holder already wrote; \
            insufficient_stock: a conditional adjustment would go below its floor"),
        (status = 422, body = ErrorBody)))]
async fn adjust_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    Json(input): Json<AdjustInput>,
) -> Result<Json<Product>, ApiError> {
    parse_sku(&sku)?;
    let adjustment = adjust::validate(&input)
        .map_err(|errors| ApiError::validation("the adjustment is not valid", &errors))?;
    match adjust::apply(&state.pool, &sku, &adjustment).await {
        Ok(product) => Ok(Json(product)),
        Err(AdjustError::StaleToken {
            lock,
            token,
            highest,
        }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_fencing_token",
            format!(
                "fencing token {token} of lock {lock} is older than {highest}, which has already written; \
                 nothing was changed"
            ),
        )
        .with_details(serde_json::json!({"lock": lock, "token": token, "highest_token": highest}))),
        Err(error @ AdjustError::OutOfRange(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stock_out_of_range",
            error.to_string(),
        )),
        Err(error @ AdjustError::BelowFloor { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "insufficient_stock",
            format!("{error}; nothing was changed"),
        )),
        Err(AdjustError::UnknownSku(sku)) => Err(ApiError::not_found(format!("no product with sku {sku}"))),
        Err(AdjustError::Database(error)) => Err(database_error(error)),
    }
}
