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
use distlab_platform::trace::PropagateTrace;
use distlab_twopc::Gid;
use distlab_twopc::participant::{BranchError, BranchWork, ParticipantError};
use distlab_twopc::protocol::Decision;
use distlab_twopc::wire::{
    BeginRequest, BranchStatus, IdempotencyRecord, OrderPayload, TransactionView,
};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::AppState;
use crate::error::OrderError;
use crate::orders::{ItemInput, Mode, Order, PlaceOrder, Status, ValidOrder};
use crate::store::{self, IdempotencyKey, Placed};

/// How long a 2PC order may take at the coordinator (below the 30 s request timeout).
pub const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(20);

/// After a failed call, how long to keep asking the coordinator for the transaction's decision, and how
/// often.
const DECISION_WAIT: Duration = Duration::from_secs(5);
const DECISION_POLL: Duration = Duration::from_millis(200);

/// How long this service may take to apply the decision to its own branch before answering.
const OWN_BRANCH_TIMEOUT: Duration = Duration::from_secs(5);

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
        // The same rules as `POST /orders`: a coordinator is a client like any other.
        let request = PlaceOrder {
            customer_id: order.customer_id.clone(),
            items: order
                .items
                .iter()
                .map(|item| ItemInput {
                    sku: item.sku.clone(),
                    quantity: item.quantity.into(),
                })
                .collect(),
            mode: Some(Mode::TwoPhaseCommit),
        };
        let key_is_valid = order.idempotency.as_ref().is_none_or(|record| {
            (1..=crate::http::MAX_IDEMPOTENCY_KEY_LEN).contains(&record.key.len())
                && record.key.bytes().all(|b| b.is_ascii_graphic())
        });
        if request.validate(Mode::TwoPhaseCommit).is_err() || !key_is_valid {
            return Err(BranchError::Refuse("invalid_order".into()));
        }
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
    let gid = Gid::new();
    let transaction = run_at_coordinator(state, &gid, payload.clone()).await?;
    match transaction.decision {
        Some(Decision::Commit) => {
            own_branch(state.participant.commit(&gid)).await?;
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
            own_branch(state.participant.rollback(&gid, "aborted")).await?;
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
        None => Err(OrderError::CoordinatorUnavailable {
            reason: format!(
                "transaction {gid} is still undecided ({})",
                transaction.state.as_str()
            ),
            gid: gid.to_string(),
        }),
    }
}

/// The answer an earlier request with the same key got, or 422 for another request.
fn earlier_answer(earlier: Placed) -> Result<Response, OrderError> {
    match earlier {
        Placed::Replayed { status, body } => Ok(crate::http::replayed(status, body)),
        Placed::KeyReused => Err(OrderError::IdempotencyKeyReused),
        Placed::Created(_) => Err(OrderError::Unexpected(anyhow::anyhow!(
            "a lookup does not create"
        ))),
    }
}

/// Applies the decision to this service's own branch, within [`OWN_BRANCH_TIMEOUT`].
async fn own_branch(
    decision: impl std::future::Future<Output = Result<BranchStatus, ParticipantError>>,
) -> Result<(), OrderError> {
    match tokio::time::timeout(OWN_BRANCH_TIMEOUT, decision).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(OrderError::Unexpected(error.into())),
        Err(_) => Err(OrderError::Unexpected(anyhow::anyhow!(
            "applying the decision to the order branch timed out"
        ))),
    }
}

/// Runs the transaction at the coordinator. When the call fails (the coordinator crashed, a timeout), the
/// transaction may still be decided — by the coordinator's recovery — so its log is asked for a while.
async fn run_at_coordinator(
    state: &AppState,
    gid: &Gid,
    order: OrderPayload,
) -> Result<TransactionView, OrderError> {
    let unavailable = |reason: String| OrderError::CoordinatorUnavailable {
        reason,
        gid: gid.to_string(),
    };
    let request = BeginRequest {
        order,
        gid: Some(gid.clone()),
    };
    let failure = match state
        .http
        .post(format!("{}/transactions", state.coordinator_url))
        .with_trace()
        .json(&request)
        .timeout(COORDINATOR_TIMEOUT)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => {
            match response.json::<TransactionView>().await {
                Ok(view) => return Ok(view),
                Err(error) => format!("unreadable answer from the coordinator: {error}"),
            }
        }
        Ok(response) => format!("the coordinator answered {}", response.status()),
        Err(error) => format!("the coordinator did not answer: {error}"),
    };
    let deadline = tokio::time::Instant::now() + DECISION_WAIT;
    while tokio::time::Instant::now() < deadline {
        let looked = state
            .http
            .get(format!("{}/transactions/{gid}", state.coordinator_url))
            .with_trace()
            .timeout(DECISION_POLL * 5)
            .send()
            .await;
        if let Ok(response) = looked
            && response.status().is_success()
            && let Ok(view) = response.json::<TransactionView>().await
            && view.decision.is_some()
        {
            return Ok(view);
        }
        tokio::time::sleep(DECISION_POLL).await;
    }
    Err(unavailable(failure))
}
