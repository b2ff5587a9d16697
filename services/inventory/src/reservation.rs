//! Reserving stock for an order: the consuming side of the seed's 本地消息表 (local message table) flow.
//!
//! For each new `OrderPlaced` (the [`IdempotentConsumer`](distlab_messaging::consumer::IdempotentConsumer)
//! has already recorded its `message_id` in the same transaction):
//!
//! 1. `order_outcomes` gets the order's row first — if it is already there the order was decided by an
//!    earlier message and nothing else happens (one decision per order, whatever carried it);
//! 2. one statement reserves **all items or none**: it counts the items whose `available >= quantity` and
//!    updates only if that count is the number of items, re-checking `available >= quantity` in the `UPDATE`
//!    itself, and records what it took in `reservations`;
//! 3. `StockReserved` or `StockRejected` (`insufficient_stock` / `unknown_sku`) goes into the outbox.
//!
//! Before the batch, the batch's SKUs are locked in SKU order ([`Handler::before_batch`]), so two inventory
//! replicas working on overlapping orders wait for each other instead of deadlocking.

use std::collections::BTreeMap;

use distlab_messaging::Envelope;
use distlab_messaging::consumer::Handler;
use distlab_messaging::events::{
    OrderItem, OrderPlaced, RejectReason, StockRejected, StockReserved,
};
use distlab_messaging::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

/// What the inventory decided for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every item was reserved; the quantities are summed per SKU.
    Reserved(Vec<OrderItem>),
    /// Nothing was reserved.
    Rejected { reason: RejectReason, sku: String },
    /// The order was decided before (by another message); nothing changed.
    AlreadyDecided,
}

/// Sums the quantities of each SKU, in SKU order.
pub fn merge_items(items: &[OrderItem]) -> Vec<OrderItem> {
    let mut merged: BTreeMap<&str, u32> = BTreeMap::new();
    for item in items {
        *merged.entry(&item.sku).or_default() += item.quantity;
    }
    merged
        .into_iter()
        .map(|(sku, quantity)| OrderItem {
            sku: sku.to_owned(),
            quantity,
        })
        .collect()
}

/// Decides `order_id`: reserves all of `items` or nothing. Runs inside the caller's transaction.
pub async fn reserve(
    conn: &mut PgConnection,
    order_id: Uuid,
    items: &[OrderItem],
) -> anyhow::Result<Decision> {
    let first = sqlx::query(
        "INSERT INTO order_outcomes (order_id, outcome) VALUES ($1, 'reserved') ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?;
    if first.rows_affected() == 0 {
        return Ok(Decision::AlreadyDecided);
    }

    let items = merge_items(items);
    let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
    let quantities: Vec<i32> = items.iter().map(|i| i.quantity as i32).collect();
    let reserved: Vec<String> = sqlx::query_scalar(
        "WITH req AS (SELECT * FROM unnest($2::text[], $3::int[]) AS r(sku, qty)),
              enough AS (SELECT count(*) AS n FROM req JOIN products p ON p.sku = req.sku
                         WHERE p.available >= req.qty),
              taken AS (
                UPDATE products p
                SET available = p.available - req.qty, reserved = p.reserved + req.qty, updated_at = now()
                FROM req, enough
                WHERE enough.n = $4 AND p.sku = req.sku AND p.available >= req.qty
                RETURNING p.sku, req.qty)
         INSERT INTO reservations (order_id, sku, quantity)
         SELECT $1, sku, qty FROM taken
         RETURNING sku",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .bind(items.len() as i64)
    .fetch_all(&mut *conn)
    .await?;

    if reserved.len() == items.len() {
        return Ok(Decision::Reserved(items));
    }
    anyhow::ensure!(
        reserved.is_empty(),
        "order {order_id}: only {} of {} items reserved although their rows are locked",
        reserved.len(),
        items.len()
    );

    // Nothing was taken: say why, naming the first SKU (in SKU order) that failed.
    let (sku, unknown): (String, bool) = sqlx::query_as(
        "SELECT r.sku, p.sku IS NULL
         FROM unnest($1::text[], $2::int[]) AS r(sku, qty) LEFT JOIN products p ON p.sku = r.sku
         WHERE p.sku IS NULL OR p.available < r.qty
         ORDER BY (p.sku IS NULL) DESC, r.sku
         LIMIT 1",
    )
    .bind(&skus)
    .bind(&quantities)
    .fetch_one(&mut *conn)
    .await?;
    let reason = if unknown {
        RejectReason::UnknownSku
    } else {
        RejectReason::InsufficientStock
    };
    sqlx::query("UPDATE order_outcomes SET outcome = 'rejected', reason = $2 WHERE order_id = $1")
        .bind(order_id)
        .bind(reason.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(Decision::Rejected { reason, sku })
}

/// The `OrderPlaced` consumer's handler.
#[derive(Debug, Clone)]
pub struct Reservations {
    /// Where the answers go (`inventory-events`).
    answer_topic: String,
}

impl Reservations {
    pub fn new(answer_topic: String) -> Self {
        Self { answer_topic }
    }
}

impl Handler for Reservations {
    type Message = OrderPlaced;

    fn decode(&self, envelope: &Envelope) -> Result<Option<OrderPlaced>, String> {
        if !envelope.is::<OrderPlaced>() {
            return Ok(None);
        }
        let order: OrderPlaced = envelope.payload_as().map_err(|e| e.to_string())?;
        if order.items.is_empty()
            || order
                .items
                .iter()
                .any(|i| i.quantity == 0 || i.quantity > i32::MAX as u32)
        {
            return Err(format!(
                "order {} has no items or a quantity out of range",
                order.order_id
            ));
        }
        Ok(Some(order))
    }

    async fn before_batch(
        &self,
        conn: &mut PgConnection,
        orders: &[&OrderPlaced],
    ) -> anyhow::Result<()> {
        let mut skus: Vec<&str> = orders
            .iter()
            .flat_map(|o| o.items.iter().map(|i| i.sku.as_str()))
            .collect();
        skus.sort_unstable();
        skus.dedup();
        sqlx::query("SELECT 1 FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
            .bind(&skus)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn handle(&self, conn: &mut PgConnection, order: &OrderPlaced) -> anyhow::Result<()> {
        let answer = match reserve(&mut *conn, order.order_id, &order.items).await? {
            Decision::Reserved(items) => {
                metrics::counter!("inventory_decisions_total", "outcome" => "reserved")
                    .increment(1);
                Envelope::new(&StockReserved {
                    order_id: order.order_id,
                    items,
                })?
            }
            Decision::Rejected { reason, sku } => {
                metrics::counter!("inventory_decisions_total", "outcome" => reason.as_str())
                    .increment(1);
                Envelope::new(&StockRejected {
                    order_id: order.order_id,
                    reason,
                    sku: Some(sku),
                })?
            }
            Decision::AlreadyDecided => {
                tracing::info!(order_id = %order.order_id, "order already decided; nothing to do");
                return Ok(());
            }
        };
        outbox::enqueue(
            conn,
            &self.answer_topic,
            &order.order_id.to_string(),
            &answer,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: u32) -> OrderItem {
        OrderItem {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn merge_sums_repeated_skus_in_sku_order() {
        let merged = merge_items(&[item("b", 1), item("a", 2), item("b", 3)]);
        assert_eq!(merged, [item("a", 2), item("b", 4)]);
    }

    #[test]
    fn decode_ignores_other_types_and_rejects_bad_payloads() {
        let handler = Reservations::new("t".into());
        let reserved = Envelope::new(&StockReserved {
            order_id: Uuid::nil(),
            items: vec![],
        })
        .unwrap();
        assert_eq!(handler.decode(&reserved), Ok(None));

        let empty = Envelope::new(&OrderPlaced {
            order_id: Uuid::nil(),
            customer_id: "c".into(),
            items: vec![],
        })
        .unwrap();
        assert!(handler.decode(&empty).is_err());

        let mut garbled = empty.clone();
        garbled.payload = serde_json::json!({"order_id": 5});
        assert!(handler.decode(&garbled).is_err());
    }
}
