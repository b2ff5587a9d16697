//! The order service's errors and their HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use distlab_platform::{ApiError, FieldError};
use uuid::Uuid;

use crate::orders::Order;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("the order is not valid")]
    Validation(Vec<FieldError>),
    #[error("the Idempotency-Key header {0}")]
    InvalidIdempotencyKey(&'static str),
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("the order was not placed: the 2PC transaction aborted ({reason})")]
    TransactionAborted {
        reason: String,
        gid: String,
        order: Box<Order>,
    },
    #[error("the 2PC coordinator is unavailable, the order's fate is not known yet: {reason}")]
    CoordinatorUnavailable { reason: String, gid: String },
    #[error("an order id is a UUID")]
    InvalidOrderId,
    #[error("no order with id {0}")]
    NotFound(Uuid),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("the orders database is not answering")]
    DatabaseUnavailable,
    /// CP mode: the order side cannot prove its answer current (the inventory or the coordinator did not
    /// answer in time), so it does not answer.
    #[error("CP mode: {0}; refusing rather than answering from state that may be stale")]
    CpUnavailable(String),
    /// AP mode: the stock replica does not cover the order.
    #[error(
        "the stock replica shows {available} of {sku} available, fewer than the {wanted} ordered"
    )]
    ReplicaShortage {
        sku: String,
        available: i64,
        wanted: i64,
    },
    /// The SKU is not known (to the replica in AP mode, to the inventory in CP mode).
    #[error("no product with SKU {0} is known")]
    UnknownSku(String),
    #[error("a SKU is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
    InvalidSku,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for OrderError {
    fn from(error: sqlx::Error) -> Self {
        if distlab_platform::db::is_unavailable(&error) {
            Self::DatabaseUnavailable
        } else {
            Self::Unexpected(error.into())
        }
    }
}

impl OrderError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::IdempotencyKeyReused | Self::InvalidQuery(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::InvalidIdempotencyKey(_) | Self::InvalidOrderId => StatusCode::BAD_REQUEST,
            Self::TransactionAborted { .. } => StatusCode::CONFLICT,
            Self::CoordinatorUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::DatabaseUnavailable | Self::CpUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ReplicaShortage { .. } => StatusCode::CONFLICT,
            Self::UnknownSku(_) => StatusCode::NOT_FOUND,
            Self::InvalidSku => StatusCode::BAD_REQUEST,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation_failed",
            Self::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::TransactionAborted { reason, .. } => match reason.as_str() {
                "insufficient_stock" => "insufficient_stock",
                "unknown_sku" => "unknown_sku",
                _ => "transaction_aborted",
            },
            Self::CoordinatorUnavailable { .. } => "coordinator_unavailable",
            Self::InvalidOrderId => "invalid_order_id",
            Self::NotFound(_) => "not_found",
            Self::InvalidQuery(_) => "invalid_query",
            Self::DatabaseUnavailable => "dependency_unavailable",
            Self::CpUnavailable(_) => "cp_unavailable",
            Self::ReplicaShortage { .. } => "insufficient_stock",
            Self::UnknownSku(_) => "unknown_sku",
            Self::InvalidSku => "invalid_sku",
            Self::Unexpected(_) => "internal_error",
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        match &error {
            OrderError::Validation(errors) => ApiError::validation(error.to_string(), errors),
            OrderError::DatabaseUnavailable => ApiError::unavailable(error.to_string()),
            OrderError::TransactionAborted { reason, gid, order } => {
                ApiError::new(error.status_code(), error.code(), error.to_string())
                    .with_details(serde_json::json!({"reason": reason, "gid": gid, "order": order}))
            }
            OrderError::CoordinatorUnavailable { gid, .. } => {
                ApiError::new(error.status_code(), error.code(), error.to_string())
                    .with_details(serde_json::json!({ "gid": gid }))
                    .with_retry_after(1)
            }
            OrderError::CpUnavailable(_) => {
                ApiError::new(error.status_code(), error.code(), error.to_string())
                    .with_retry_after(1)
            }
            OrderError::ReplicaShortage {
                sku,
                available,
                wanted,
            } => ApiError::new(error.status_code(), error.code(), error.to_string()).with_details(
                serde_json::json!({"sku": sku, "available": available, "wanted": wanted, "source": "replica"}),
            ),
            OrderError::Unexpected(cause) => ApiError::internal(cause.as_ref()),
            _ => ApiError::new(error.status_code(), error.code(), error.to_string()),
        }
    }
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
