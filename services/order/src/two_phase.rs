//! Placing an order by two-phase commit (the seed's 2PC), the other way besides the outbox.
//!
//! `POST /orders {"mode":"2pc"}` asks the coordinator to run a global transaction over two participants:
//! this service (the **order branch**: the order row, CONFIRMED, and its idempotency record) and the
//! inventory (the reservation). The answer is final: 201 CONFIRMED when the coordinator decided commit; on
//! abort the order is recorded REJECTED with the reason and the answer is 409 (`insufficient_stock`,
//! `unknown_sku`, or `transaction_aborted` for a participant that voted no or did not answer).
//!
//! Before answering, this service applies the decision to its own branch itself (commit and rollback are
//! idempotent): the client then reads its order at once, even if the coordinator's phase-2 message to us is
//! still on its way.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use distlab_platform::ApiError;
use distlab_twopc::participant::{BranchError, BranchWork};
use distlab_twopc::protocol::Decision;
use distlab_twopc::wire::{BeginRequest, IdempotencyRecord, OrderPayload, TransactionView};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::AppState;
use crate::error::OrderError;
use crate::orders::{Mode, Order, Status, ValidOrder};
use crate::store::{self, IdempotencyKey, Placed};

/// How long a 2PC order may take at the coordinator before the answer is 503.
pub const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(30);

/// The order branch: the order, CONFIRMED as it will be if the transaction commits, and the key's answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderBranch;

/// The order a 2PC payload places, as it reads once committed.
fn confirmed(order: &OrderPayload) -> Order {
    Order {
        id: order.order_id,
        customer_id: order.customer_id.clone(),
        items: order.items.clone(),
        status: Status::Confirmed,
        mode: Mode::TwoPhaseCommit,
        reason: None,
        created_at: order.placed_at,
        updated_at: order.placed_at,
    }
}

impl BranchWork for OrderBranch {
    async fn execute(
        &self,
        conn: &mut PgConnection,
        order: &OrderPayload,
    ) -> Result<(), BranchError> {
        let placed = confirmed(order);
        let written = sqlx::query(
            "INSERT INTO orders (id, customer_id, items, status, mode, created_at, updated_at)
             VALUES ($1, $2, $3, 'CONFIRMED', '2pc', $4, $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(placed.id)
        .bind(&placed.customer_id)
        .bind(Json(&placed.items))
        .bind(placed.created_at)
        .execute(&mut *conn)
        .await?;
        if written.rows_affected() == 0 {
            return Err(BranchError::Refuse("duplicate_order".into()));
        }
        if let Some(record) = &order.idempotency {
            let hash = hex::decode(&record.request_hash)
                .map_err(|_| BranchError::Refuse("invalid_order".into()))?;
            let recorded = sqlx::query(
                "INSERT INTO idempotency_keys (key, request_hash, order_id, response_status, response_body)
                 VALUES ($1, $2, $3, 201, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&record.key)
            .bind(hash)
            .bind(placed.id)
            .bind(Json(&placed))
            .execute(&mut *conn)
            .await?;
            if recorded.rows_affected() == 0 {
                return Err(BranchError::Refuse("idempotency_key_in_use".into()));
            }
        }
        Ok(())
    }
}

/// Runs a 2PC order through the coordinator; see the module documentation.
pub async fn place(
    state: &AppState,
    order: ValidOrder,
    key: Option<IdempotencyKey>,
) -> Result<Response, OrderError> {
    if let Some(key) = &key
        && let Some(earlier) = store::lookup_key(&state.pool, key).await?
    {
        return earlier_answer(earlier);
    }
    let payload = OrderPayload {
        order_id: Uuid::now_v7(),
        customer_id: order.customer_id.clone(),
        items: order.items.clone(),
        placed_at: crate::orders::now(),
        idempotency: key.as_ref().map(|k| IdempotencyRecord {
            key: k.key.clone(),
            request_hash: hex::encode(&k.request_hash),
        }),
    };
    let transaction = run_at_coordinator(state, payload.clone()).await?;
    let gid = transaction.gid.clone();
    match transaction.decision {
        Some(Decision::Commit) => {
            state
                .participant
                .commit(&gid)
                .await
                .map_err(|e| OrderError::Unexpected(e.into()))?;
            metrics::counter!("orders_placed_total", "mode" => "2pc").increment(1);
            let order = store::get(&state.pool, payload.order_id)
                .await?
                .ok_or_else(|| {
                    OrderError::Unexpected(anyhow::anyhow!(
                        "committed order {} is missing",
                        payload.order_id
                    ))
                })?;
            let mut response = (StatusCode::CREATED, axum::Json(&order)).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        Some(Decision::Abort) => {
            state
                .participant
                .rollback(&gid, "aborted")
                .await
                .map_err(|e| OrderError::Unexpected(e.into()))?;
            let reason = transaction.reason.unwrap_or_else(|| "aborted".into());
            if reason == "idempotency_key_in_use"
                && let Some(key) = &key
                && let Some(earlier) = store::lookup_key(&state.pool, key).await?
            {
                return earlier_answer(earlier);
            }
            let mut rejected = confirmed(&payload);
            rejected.status = Status::Rejected;
            rejected.reason = Some(reason.clone());
            let error = OrderError::TransactionAborted {
                reason,
                gid: gid.to_string(),
                order: Box::new(rejected.clone()),
            };
            let api: ApiError = error.into();
            let body =
                serde_json::to_value(api.body()).map_err(|e| OrderError::Unexpected(e.into()))?;
            store::record_rejected(
                &state.pool,
                &rejected,
                key.as_ref().map(|k| (k, api.status().as_u16(), &body)),
            )
            .await?;
            metrics::counter!("orders_rejected_total", "mode" => "2pc").increment(1);
            Ok(api.into_response())
        }
        None => Err(OrderError::CoordinatorUnavailable(format!(
            "transaction {gid} is undecided ({})",
            transaction.state.as_str()
        ))),
    }
}

/// The answer an earlier request with the same key got, or 422 for another request.
fn earlier_answer(earlier: Placed) -> Result<Response, OrderError> {
    match earlier {
        Placed::Replayed { status, body } => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                axum::Json(body),
            )
                .into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Placed::KeyReused => Err(OrderError::IdempotencyKeyReused),
        Placed::Created(_) => Err(OrderError::Unexpected(anyhow::anyhow!(
            "a lookup does not create"
        ))),
    }
}

async fn run_at_coordinator(
    state: &AppState,
    order: OrderPayload,
) -> Result<TransactionView, OrderError> {
    let order_id = order.order_id;
    let unavailable =
        |what: String| OrderError::CoordinatorUnavailable(format!("order {order_id}: {what}"));
    let response = state
        .http
        .post(format!("{}/transactions", state.coordinator_url))
        .json(&BeginRequest { order })
        .timeout(COORDINATOR_TIMEOUT)
        .send()
        .await
        .map_err(|e| unavailable(format!("the coordinator did not answer: {e}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(unavailable(format!(
            "the coordinator answered {status}: {body}"
        )));
    }
    response
        .json()
        .await
        .map_err(|e| unavailable(format!("unreadable answer from the coordinator: {e}")))
}
