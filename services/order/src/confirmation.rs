//! The end of the outbox flow: the inventory's answer moves a PENDING order to CONFIRMED or REJECTED.
//!
//! Idempotent twice over: the consumer skips a `message_id` it has applied, and [`store::finalize`] only
//! changes an order that is still PENDING.

use distlab_messaging::Envelope;
use distlab_messaging::consumer::Handler;
use distlab_messaging::events::{StockRejected, StockReserved};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::orders::Status;
use crate::store;

/// The inventory's answer about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockAnswer {
    Reserved(StockReserved),
    Rejected(StockRejected),
}

impl StockAnswer {
    fn order_id(&self) -> Uuid {
        match self {
            Self::Reserved(e) => e.order_id,
            Self::Rejected(e) => e.order_id,
        }
    }
}

/// The `inventory-events` consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct Confirmations;

impl Handler for Confirmations {
    type Message = StockAnswer;

    fn decode(&self, envelope: &Envelope) -> Result<Option<StockAnswer>, String> {
        if envelope.is::<StockReserved>() {
            envelope
                .payload_as()
                .map(|e| Some(StockAnswer::Reserved(e)))
                .map_err(|e| e.to_string())
        } else if envelope.is::<StockRejected>() {
            envelope
                .payload_as()
                .map(|e| Some(StockAnswer::Rejected(e)))
                .map_err(|e| e.to_string())
        } else {
            Ok(None)
        }
    }

    async fn handle(&self, conn: &mut PgConnection, answer: &StockAnswer) -> anyhow::Result<()> {
        let (status, reason) = match answer {
            StockAnswer::Reserved(_) => (Status::Confirmed, None),
            StockAnswer::Rejected(e) => (Status::Rejected, Some(e.reason.as_str())),
        };
        match store::finalize(conn, answer.order_id(), status, reason).await? {
            Some(created_at) => {
                let latency = (chrono::Utc::now() - created_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::counter!("orders_finalized_total", "status" => status.as_str())
                    .increment(1);
                metrics::histogram!("order_decision_latency_seconds", "status" => status.as_str())
                    .record(latency.as_secs_f64());
            }
            None => {
                tracing::info!(order_id = %answer.order_id(), "answer for an order that is not PENDING; ignored")
            }
        }
        Ok(())
    }
}
