//! The end of the outbox flow: the inventory's answer moves a PENDING order to CONFIRMED or REJECTED.
//!
//! Idempotent twice over: the consumer skips a `message_id` it has applied, and [`store::finalize`] only
//! changes an order that is still PENDING. A batch of answers is applied in one set-based `UPDATE`.

use distlab_messaging::Envelope;
use distlab_messaging::consumer::Handler;
use distlab_messaging::events::{StockRejected, StockReserved};
use sqlx::PgConnection;

use crate::orders::Status;
use crate::store::{self, Decision};

/// The inventory's answer about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockAnswer {
    Reserved(StockReserved),
    Rejected(StockRejected),
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
        self.handle_batch(conn, &[answer]).await
    }

    /// One `UPDATE` for the whole batch: answers about different orders are independent.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        answers: &[&StockAnswer],
    ) -> anyhow::Result<()> {
        let decisions: Vec<Decision> = answers.iter().map(|answer| answer.decision()).collect();
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
