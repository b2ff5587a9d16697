//! The HTTP bodies between the coordinator and the participants.

use chrono::{DateTime, Utc};
use distlab_messaging::events::OrderItem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::gid::Gid;

/// The order a global transaction places: each participant does its part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPayload {
    pub order_id: Uuid,
    /// Any text without the NUL character (which PostgreSQL cannot store).
    #[schema(pattern = "^[^\\x00]*$")]
    pub customer_id: String,
    pub items: Vec<OrderItem>,
    /// When the order was accepted: its `created_at`.
    pub placed_at: DateTime<Utc>,
    /// The client's `Idempotency-Key`, recorded with the order by the order branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyRecord>,
}

impl OrderPayload {
    /// Whether PostgreSQL can store every text of the order: it refuses the NUL character in `text` and
    /// `jsonb`, so an order carrying one is bad input, not a database failure.
    pub fn is_storable(&self) -> bool {
        let texts = std::iter::once(self.customer_id.as_str())
            .chain(self.items.iter().map(|i| i.sku.as_str()))
            .chain(
                self.idempotency
                    .iter()
                    .flat_map(|k| [k.key.as_str(), k.request_hash.as_str()]),
            );
        texts.into_iter().all(|text| !text.contains('\0'))
    }
}

/// An `Idempotency-Key` and the SHA-256 of its request, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdempotencyRecord {
    #[schema(pattern = "^[^\\x00]*$")]
    pub key: String,
    #[schema(pattern = "^[^\\x00]*$")]
    pub request_hash: String,
}

/// `POST /2pc/prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrepareRequest {
    #[schema(value_type = String, pattern = "^distlab_[0-9a-f]{32}$")]
    pub gid: Gid,
    pub order: OrderPayload,
}

/// A participant's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Vote {
    /// The branch is prepared: durable, locks held, waiting for the decision.
    Yes,
    /// The branch refused (and is rolled back); `reason` says why.
    No,
}

/// Answer to `POST /2pc/prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VoteResponse {
    #[schema(value_type = String, pattern = "^distlab_[0-9a-f]{32}$")]
    pub gid: Gid,
    pub vote: Vote,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /2pc/commit` and `POST /2pc/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GidRequest {
    #[schema(value_type = String, pattern = "^distlab_[0-9a-f]{32}$")]
    pub gid: Gid,
}

/// Where a branch is, as its participant's database says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BranchState {
    /// In `pg_prepared_xacts`: voted yes, waiting for the decision, holding its locks.
    Prepared,
    Committed,
    /// Voted no or rolled back; it will never commit.
    Aborted,
    /// Never seen.
    Unknown,
}

/// Answer to `GET /2pc/{gid}`, `POST /2pc/commit` and `POST /2pc/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BranchStatus {
    #[schema(value_type = String, pattern = "^distlab_[0-9a-f]{32}$")]
    pub gid: Gid,
    pub state: BranchState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the branch was prepared (while it is prepared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_at: Option<DateTime<Utc>>,
}

/// Answer to `GET /2pc`: the participant's prepared distlab transactions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreparedList {
    pub prepared: Vec<BranchStatus>,
}

/// `POST /transactions` on the coordinator: run a global transaction that places this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BeginRequest {
    pub order: OrderPayload,
    /// The gid to use, chosen by the caller so that it can look the transaction up even when this request
    /// fails; a gid the log already has is not run again (its current state is returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^distlab_[0-9a-f]{32}$")]
    pub gid: Option<Gid>,
}

/// A global transaction as the coordinator's log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransactionView {
    #[schema(value_type = String, pattern = "^distlab_[0-9a-f]{32}$")]
    pub gid: Gid,
    pub state: crate::protocol::TxState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::protocol::Decision>,
    /// Why it aborted (`insufficient_stock`, `inventory_unavailable`, `timeout`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub order: OrderPayload,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Decided, but phase 2 keeps failing: shown, and still retried.
    pub stuck: bool,
    pub branches: Vec<BranchView>,
}

/// One participant's part of a global transaction, as the coordinator's log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BranchView {
    pub participant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<Vote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voted_at: Option<DateTime<Utc>>,
    /// When the participant acknowledged the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<DateTime<Utc>>,
    /// Phase-2 messages sent to it.
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
