//! The end of the outbox flow: the inventory's answer moves a PENDING order to CONFIRMED or REJECTED.
//!
//! Idempotent twice over: the consumer skips a `message_id` it has applied, and [`store::finalize`] only
//! changes an order that is still PENDING. A batch of answers is applied in one set-based `UPDATE`.
//!
//! The same topic carries the inventory's stock feed (`StockChanged`), which this consumer applies to the
//! stock replica ([`crate::replica`]) in the same batch transaction.

use distlab_messaging::Envelope;
use distlab_messaging::consumer::Handler;
use distlab_messaging::events::{StockChanged, StockRejected, StockReserved};
use sqlx::PgConnection;

use crate::orders::Status;
use crate::store::{self, Decision};

/// The inventory's answer about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockAnswer {
    Reserved(StockReserved),
    Rejected(StockRejected),
}

/// What this consumer applies from `inventory-events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryEvent {
    Answer(StockAnswer),
    Stock(StockChanged),
}

impl StockAnswer {
    /// The order's final status.
    pub fn decision(&self) -> Decision {
        match self {
            Self::Reserved(e) => Decision {
                order_id: e.order_id,
                status: Status::Confirmed,
                reason: None,
            },
            Self::Rejected(e) => Decision {
                order_id: e.order_id,
                status: Status::Rejected,
                reason: Some(e.reason.as_str().to_owned()),
            },
        }
    }
}

/// The `inventory-events` consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct Confirmations;

impl Handler for Confirmations {
    type Message = InventoryEvent;

    fn decode(&self, envelope: &Envelope) -> Result<Option<InventoryEvent>, String> {
        let event = if envelope.is::<StockReserved>() {
            envelope
                .payload_as()
                .map(|e| InventoryEvent::Answer(StockAnswer::Reserved(e)))
        } else if envelope.is::<StockRejected>() {
            envelope
                .payload_as()
                .map(|e| InventoryEvent::Answer(StockAnswer::Rejected(e)))
        } else if envelope.is::<StockChanged>() {
            envelope.payload_as().map(InventoryEvent::Stock)
        } else {
            return Ok(None);
        };
        event.map(Some).map_err(|e| e.to_string())
    }

    async fn handle(&self, conn: &mut PgConnection, event: &InventoryEvent) -> anyhow::Result<()> {
        self.handle_batch(conn, &[event]).await
    }

    /// One `UPDATE` for the answers of the batch (answers about different orders are independent) and one
    /// upsert for its stock changes.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[&InventoryEvent],
    ) -> anyhow::Result<()> {
        let changes: Vec<&StockChanged> = events
            .iter()
            .filter_map(|event| match event {
                InventoryEvent::Stock(change) => Some(change),
                InventoryEvent::Answer(_) => None,
            })
            .collect();
        if !changes.is_empty() {
            let moved = crate::replica::apply(conn, &changes).await?;
            metrics::counter!("stock_replica_changes_applied_total").increment(moved);
        }
        let decisions: Vec<Decision> = events
            .iter()
            .filter_map(|event| match event {
                InventoryEvent::Answer(answer) => Some(answer.decision()),
                InventoryEvent::Stock(_) => None,
            })
            .collect();
        if decisions.is_empty() {
            return Ok(());
        }
        let changed = store::finalize(conn, &decisions).await?;
        let now = chrono::Utc::now();
        for (status, created_at) in &changed {
            let latency = (now - *created_at).to_std().unwrap_or_default();
            metrics::counter!("orders_finalized_total", "status" => status.clone()).increment(1);
            metrics::histogram!("order_decision_latency_seconds", "status" => status.clone())
                .record(latency.as_secs_f64());
        }
        if changed.len() < decisions.len() {
            tracing::info!(
                ignored = decisions.len() - changed.len(),
                "answers for orders that are not PENDING; ignored"
            );
        }
        Ok(())
    }
}
