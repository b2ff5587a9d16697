//! Redelivery: an outbox order that hears nothing back gets its `OrderPlaced` sent again.
//!
//! The outbox (the seed's 本地消息表) guarantees that `OrderPlaced` *leaves* the orders database; once the
//! relay has a delivery report, the row is gone. If the broker then loses the message — a broker replaced
//! without its data, or one that crashed before its storage made the record durable — nothing would ever
//! answer the order and it would stay PENDING for good. Kafka's own guarantee ends where the broker's disk
//! does; the order service's ends here:
//!
//! 1. every outbox order is placed with `redeliver_at` = placement + [`Redelivery::after`];
//! 2. every [`Redelivery::interval`], the sweep claims the PENDING outbox orders whose `redeliver_at` has
//!    passed (`FOR UPDATE SKIP LOCKED`, so replicas share the work);
//! 3. an order whose `OrderPlaced` is **still in the outbox** was never delivered: the relay will deliver it;
//!    its `redeliver_at` moves one period on and nothing is sent;
//! 4. any other is sent again: a new `OrderPlaced` (a new `message_id`, the same order) goes into the outbox
//!    in the same transaction that counts the redelivery and spaces the next one by the capped exponential
//!    [`Backoff`] (`after`, `2·after`, `4·after` … at most [`MAX_SPACING`]).
//!
//! A redelivery is harmless when the first message was not lost after all: the inventory decides each order
//! once (`order_outcomes`) and answers a repeated `OrderPlaced` with the decision it already made; the
//! confirmation changes only a PENDING order. What a redelivery costs is one message per order and spacing
//! step, counted in `order_redeliveries_total`; the pending ones are in `/metrics` as well.

use std::time::Duration;

use distlab_messaging::Envelope;
use distlab_messaging::backoff::Backoff;
use distlab_messaging::events::{OrderItem, OrderPlaced};
use distlab_messaging::outbox::{self, OutboxMessage};
use sqlx::PgPool;
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest time between two redeliveries of one order.
pub const MAX_SPACING: Duration = Duration::from_secs(300);

/// Orders claimed per sweep transaction.
const BATCH: i64 = 500;

/// The redelivery task of one order service instance. See the module documentation.
#[derive(Debug, Clone)]
pub struct Redelivery {
    pool: PgPool,
    /// Topic of `OrderPlaced` (the outbox rows of this topic are what "still queued" means).
    topic: String,
    /// How long an order may wait for its answer before its `OrderPlaced` is sent again.
    pub after: Duration,
    /// How often the sweep runs.
    pub interval: Duration,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Orders whose `OrderPlaced` was sent again.
    pub redelivered: usize,
    /// Due orders whose `OrderPlaced` was still in the outbox (nothing sent).
    pub still_queued: usize,
}

#[derive(Debug, sqlx::FromRow)]
struct DueOrder {
    id: Uuid,
    customer_id: String,
    items: Json<Vec<OrderItem>>,
    redeliveries: i32,
    queued: bool,
}

/// The wait after the `n`-th redelivery of an order: `after · 2^n`, at most [`MAX_SPACING`].
pub fn spacing(after: Duration, redeliveries: u32) -> Duration {
    Backoff::new(after, MAX_SPACING.max(after)).delay(redeliveries + 1)
}

/// How often the sweep runs for a given `after`: a fifth of it, between 0.2 and 2 seconds.
pub fn sweep_interval(after: Duration) -> Duration {
    (after / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

impl Redelivery {
    pub fn new(pool: PgPool, topic: String, after: Duration) -> Self {
        Self {
            pool,
            topic,
            after,
            interval: sweep_interval(after),
        }
    }

    /// Sweeps until `shutdown` is cancelled. Errors are logged and retried, never returned.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
            loop {
                match self.sweep().await {
                    Ok(outcome) if outcome.redelivered + outcome.still_queued == BATCH as usize => {
                        continue;
                    }
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "redelivery sweep failed");
                        break;
                    }
                }
            }
        }
    }

    /// Claims one batch of due orders and redelivers those whose message is no longer queued.
    pub async fn sweep(&self) -> anyhow::Result<SweepOutcome> {
        let mut tx = self.pool.begin().await?;
        // `IN (SELECT …)` reads the outbox once (a hashed subplan), however many orders are due.
        let due: Vec<DueOrder> = sqlx::query_as(
            "SELECT o.id, o.customer_id, o.items, o.redeliveries,
                    o.id::text IN (SELECT message_key FROM outbox WHERE topic = $2) AS queued
             FROM orders o
             WHERE o.status = 'PENDING' AND o.mode = 'outbox' AND o.redeliver_at <= now()
             ORDER BY o.redeliver_at
             LIMIT $1
             FOR UPDATE OF o SKIP LOCKED",
        )
        .bind(BATCH)
        .bind(&self.topic)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            tx.commit().await?;
            return Ok(SweepOutcome::default());
        }
        let (queued, lost): (Vec<&DueOrder>, Vec<&DueOrder>) = due.iter().partition(|o| o.queued);

        if !queued.is_empty() {
            let ids: Vec<Uuid> = queued.iter().map(|o| o.id).collect();
            sqlx::query(
                "UPDATE orders SET redeliver_at = now() + make_interval(secs => $2) WHERE id = ANY($1)",
            )
            .bind(&ids)
            .bind(self.after.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        }

        if !lost.is_empty() {
            let mut messages = Vec::with_capacity(lost.len());
            for order in &lost {
                messages.push(OutboxMessage {
                    topic: self.topic.clone(),
                    key: order.id.to_string(),
                    envelope: Envelope::new(&OrderPlaced {
                        order_id: order.id,
                        customer_id: order.customer_id.clone(),
                        items: order.items.0.clone(),
                    })?,
                });
            }
            outbox::enqueue_all(&mut tx, &messages).await?;
            let ids: Vec<Uuid> = lost.iter().map(|o| o.id).collect();
            let spacings: Vec<f64> = lost
                .iter()
                .map(|o| {
                    spacing(self.after, u32::try_from(o.redeliveries).unwrap_or(0) + 1)
                        .as_secs_f64()
                })
                .collect();
            sqlx::query(
                "UPDATE orders AS o
                 SET redeliveries = o.redeliveries + 1, redeliver_at = now() + make_interval(secs => s.spacing)
                 FROM unnest($1::uuid[], $2::float8[]) AS s(id, spacing)
                 WHERE o.id = s.id",
            )
            .bind(&ids)
            .bind(&spacings)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        if !lost.is_empty() {
            metrics::counter!("order_redeliveries_total").increment(lost.len() as u64);
            tracing::warn!(
                orders = lost.len(),
                first = %lost[0].id,
                "no answer came for these orders although their OrderPlaced left the outbox; sent it again"
            );
        }
        Ok(SweepOutcome {
            redelivered: lost.len(),
            still_queued: queued.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_doubles_from_after_and_stops_at_five_minutes() {
        let after = Duration::from_secs(15);
        let spacings: Vec<u64> = (1..=7).map(|n| spacing(after, n).as_secs()).collect();
        assert_eq!(spacings, [30, 60, 120, 240, 300, 300, 300]);
        // An `after` longer than the cap is never shortened.
        assert_eq!(
            spacing(Duration::from_secs(600), 3),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn the_sweep_runs_five_times_per_period_within_bounds() {
        assert_eq!(
            sweep_interval(Duration::from_secs(15)),
            Duration::from_secs(2)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }
}
