//! Reserving stock for an order: the consuming side of the seed's 本地消息表 (local message table) flow.
//!
//! For each new `OrderPlaced` (the [`IdempotentConsumer`](distlab_messaging::consumer::IdempotentConsumer)
//! has already recorded its `message_id` in the same transaction):
//!
//! 1. `order_outcomes` gets the order's row first (one statement for the batch) — if it is already there the
//!    order was decided by an earlier message and nothing else happens (one decision per order, whatever
//!    carried it);
//! 2. one statement per order reserves **all items or none**: it counts the items whose
//!    `available >= quantity` and updates only if that count is the number of items, re-checking
//!    `available >= quantity` in the `UPDATE` itself, and records what it took in `reservations`;
//! 3. `StockReserved` or `StockRejected` (`insufficient_stock` / `unknown_sku`) goes into the outbox (one
//!    statement for the batch).
//!
//! An `OrderPlaced` about an order decided before (the order service sends it again when no answer came —
//! the first answer may have been lost with a broker's data) is answered again with the decision already
//! made, read from `order_outcomes` and `reservations`: nothing is reserved twice, and the order hears back.
//!
//! Before the batch, the batch's SKUs are locked in SKU order ([`Handler::before_batch`]), so two inventory
//! replicas working on overlapping orders wait for each other instead of deadlocking.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;

use distlab_messaging::Envelope;
use distlab_messaging::consumer::Handler;
use distlab_messaging::events::{
    OrderItem, OrderPlaced, RejectReason, StockRejected, StockReserved,
};
use distlab_messaging::outbox::{self, OutboxMessage};
use distlab_twopc::participant::{BranchError, BranchWork};
use distlab_twopc::wire::OrderPayload;
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

/// An `OrderPlaced` that can be applied: at least one item, valid SKUs, and per SKU (repeated SKUs summed)
/// a quantity from 1 to `i32::MAX`, in SKU order. Anything else can never be applied and is dead-lettered
/// by [`Handler::decode`] instead of blocking its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderToReserve {
    pub order_id: Uuid,
    pub items: Vec<OrderItem>,
    /// The span that consumed the `OrderPlaced` (when traced): the answer continues its trace.
    pub traceparent: Option<String>,
}

impl TryFrom<OrderPlaced> for OrderToReserve {
    type Error = String;

    fn try_from(order: OrderPlaced) -> Result<Self, String> {
        if order.items.is_empty() {
            return Err(format!("order {} has no items", order.order_id));
        }
        let mut merged: BTreeMap<String, u64> = BTreeMap::new();
        for item in order.items {
            crate::products::validate_sku(&item.sku).map_err(|e| {
                format!("order {}: sku {:?} {}", order.order_id, item.sku, e.message)
            })?;
            if item.quantity == 0 {
                return Err(format!(
                    "order {}: quantity 0 of {}",
                    order.order_id, item.sku
                ));
            }
            *merged.entry(item.sku).or_default() += u64::from(item.quantity);
        }
        let items = merged
            .into_iter()
            .map(|(sku, quantity)| match u32::try_from(quantity) {
                Ok(quantity) if quantity <= i32::MAX as u32 => Ok(OrderItem { sku, quantity }),
                _ => Err(format!(
                    "order {}: quantity {quantity} of {sku} is out of range",
                    order.order_id
                )),
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            order_id: order.order_id,
            items,
            traceparent: None,
        })
    }
}

/// Claims the decision of each order: `order_outcomes` gets a row for each order that has none yet. Returns
/// the orders that are new; the others were decided before (by another message).
async fn claim_decisions(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
) -> sqlx::Result<HashSet<Uuid>> {
    let fresh: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO order_outcomes (order_id, outcome)
         SELECT id, 'reserved' FROM unnest($1::uuid[]) AS t(id)
         ON CONFLICT DO NOTHING
         RETURNING order_id",
    )
    .bind(order_ids)
    .fetch_all(conn)
    .await?;
    Ok(fresh.into_iter().collect())
}

/// Reserves all of an order's `items` or nothing, in one statement; on a rejection, finds out why.
async fn reserve_items(
    conn: &mut PgConnection,
    order_id: Uuid,
    items: &[OrderItem],
) -> anyhow::Result<Decision> {
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
        return Ok(Decision::Reserved(items.to_vec()));
    }
    anyhow::ensure!(
        reserved.is_empty(),
        "order {order_id}: only {} of {} items reserved although their rows are locked",
        reserved.len(),
        items.len()
    );

    // Nothing was taken: say why, naming the first SKU (unknown ones first, then in SKU order) that failed.
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
    Ok(Decision::Rejected { reason, sku })
}

/// Decides a batch of orders, in order, inside the caller's transaction: each order reserves all of its
/// items or nothing; an order decided before is left alone. Returns each order's decision.
pub async fn reserve(
    conn: &mut PgConnection,
    orders: &[&OrderToReserve],
) -> anyhow::Result<Vec<(Uuid, Decision)>> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
    let mut fresh = claim_decisions(conn, &ids).await?;
    let mut decisions = Vec::with_capacity(orders.len());
    let (mut rejected, mut reasons) = (Vec::new(), Vec::new());
    for order in orders {
        // `remove`: an order that appears twice in one batch is decided once.
        let decision = if fresh.remove(&order.order_id) {
            reserve_items(conn, order.order_id, &order.items).await?
        } else {
            Decision::AlreadyDecided
        };
        if let Decision::Rejected { reason, .. } = &decision {
            rejected.push(order.order_id);
            reasons.push(reason.as_str());
        }
        decisions.push((order.order_id, decision));
    }
    if !rejected.is_empty() {
        sqlx::query(
            "UPDATE order_outcomes AS o SET outcome = 'rejected', reason = r.reason
             FROM unnest($1::uuid[], $2::text[]) AS r(order_id, reason)
             WHERE o.order_id = r.order_id",
        )
        .bind(&rejected)
        .bind(&reasons)
        .execute(&mut *conn)
        .await?;
    }
    Ok(decisions)
}

/// Locks the products of `orders` in SKU order, so that two transactions reserving overlapping SKUs wait for
/// each other instead of deadlocking.
pub async fn lock_products(
    conn: &mut PgConnection,
    orders: &[&OrderToReserve],
) -> sqlx::Result<()> {
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

/// The inventory's branch of a 2PC order: the same all-or-nothing reservation as the outbox flow, in a
/// transaction that is then prepared — so its row locks stay held until the coordinator's decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReserveBranch;

impl BranchWork for ReserveBranch {
    async fn execute(
        &self,
        conn: &mut PgConnection,
        order: &OrderPayload,
    ) -> Result<(), BranchError> {
        let order = OrderToReserve::try_from(OrderPlaced {
            order_id: order.order_id,
            customer_id: order.customer_id.clone(),
            items: order.items.clone(),
        })
        .map_err(|reason| {
            tracing::warn!(%reason, "2PC order refused");
            BranchError::Refuse("invalid_order".into())
        })?;
        // The reservation's `StockChanged` rows go into the outbox by trigger; a transaction that will be
        // prepared must not NOTIFY the relay (migrations/messaging/0002_quiet_outbox.sql).
        sqlx::query("SET LOCAL distlab.outbox_quiet = 'on'")
            .execute(&mut *conn)
            .await?;
        lock_products(conn, &[&order]).await?;
        match reserve(conn, &[&order])
            .await?
            .pop()
            .map(|(_, decision)| decision)
        {
            Some(Decision::Reserved(_)) => Ok(()),
            Some(Decision::Rejected { reason, .. }) => {
                Err(BranchError::Refuse(reason.as_str().into()))
            }
            Some(Decision::AlreadyDecided) | None => {
                Err(BranchError::Refuse("already_decided".into()))
            }
        }
    }
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
    type Message = OrderToReserve;

    fn decode(&self, envelope: &Envelope) -> Result<Option<OrderToReserve>, String> {
        if !envelope.is::<OrderPlaced>() {
            return Ok(None);
        }
        let order: OrderPlaced = envelope.payload_as().map_err(|e| e.to_string())?;
        let mut order = OrderToReserve::try_from(order)?;
        // `decode` runs in the message's consume span: the answer will be produced by it.
        order.traceparent = distlab_platform::trace::current_traceparent();
        Ok(Some(order))
    }

    async fn before_batch(
        &self,
        conn: &mut PgConnection,
        orders: &[&OrderToReserve],
    ) -> anyhow::Result<()> {
        lock_products(conn, orders).await?;
        Ok(())
    }

    async fn handle(&self, conn: &mut PgConnection, order: &OrderToReserve) -> anyhow::Result<()> {
        self.handle_batch(conn, &[order]).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        orders: &[&OrderToReserve],
    ) -> anyhow::Result<()> {
        let mut answers = Vec::with_capacity(orders.len());
        let mut decided_before = Vec::new();
        let traces: HashMap<Uuid, &str> = orders
            .iter()
            .filter_map(|o| Some((o.order_id, o.traceparent.as_deref()?)))
            .collect();
        let produced_by = |order_id: &Uuid| traces.get(order_id).map(|t| (*t).to_owned());
        for (order_id, decision) in reserve(&mut *conn, orders).await? {
            let answer = match decision {
                Decision::Reserved(items) => {
                    metrics::counter!("inventory_decisions_total", "outcome" => "reserved")
                        .increment(1);
                    Envelope::new(&StockReserved { order_id, items })?
                }
                Decision::Rejected { reason, sku } => {
                    metrics::counter!("inventory_decisions_total", "outcome" => reason.as_str())
                        .increment(1);
                    Envelope::new(&StockRejected {
                        order_id,
                        reason,
                        sku: Some(sku),
                    })?
                }
                Decision::AlreadyDecided => {
                    decided_before.push(order_id);
                    continue;
                }
            };
            answers.push(OutboxMessage {
                topic: self.answer_topic.clone(),
                key: order_id.to_string(),
                envelope: answer.produced_by(produced_by(&order_id)),
            });
        }
        if !decided_before.is_empty() {
            tracing::info!(
                orders = decided_before.len(),
                "OrderPlaced again for orders decided before; answering with the same decision"
            );
            metrics::counter!("inventory_decisions_repeated_total")
                .increment(decided_before.len() as u64);
            for (order_id, answer) in earlier_answers(&mut *conn, &decided_before).await? {
                answers.push(OutboxMessage {
                    topic: self.answer_topic.clone(),
                    key: order_id.to_string(),
                    envelope: answer.produced_by(produced_by(&order_id)),
                });
            }
        }
        outbox::enqueue_all(conn, &answers).await?;
        Ok(())
    }
}

/// An order's decision as `order_outcomes` and `reservations` keep it.
#[derive(Debug, sqlx::FromRow)]
struct EarlierDecision {
    order_id: Uuid,
    outcome: String,
    reason: Option<String>,
    skus: Vec<String>,
    quantities: Vec<i32>,
}

impl EarlierDecision {
    /// The answer the inventory gave for this decision.
    fn answer(self) -> anyhow::Result<Envelope> {
        let order_id = self.order_id;
        if self.outcome == "reserved" {
            let items = self
                .skus
                .into_iter()
                .zip(self.quantities)
                .map(|(sku, quantity)| OrderItem {
                    sku,
                    quantity: quantity.unsigned_abs(),
                })
                .collect();
            return Ok(Envelope::new(&StockReserved { order_id, items })?);
        }
        let reason = self
            .reason
            .as_deref()
            .and_then(RejectReason::parse)
            .with_context(|| {
                format!(
                    "order {order_id} was rejected for an unknown reason {:?}",
                    self.reason
                )
            })?;
        Ok(Envelope::new(&StockRejected {
            order_id,
            reason,
            sku: None,
        })?)
    }
}

/// The answers the inventory gave before to `order_ids`, rebuilt from `order_outcomes` and `reservations`
/// (a rejection without the SKU that failed: it is not kept).
async fn earlier_answers(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
) -> anyhow::Result<Vec<(Uuid, Envelope)>> {
    let decisions: Vec<EarlierDecision> = sqlx::query_as(
        "SELECT o.order_id, o.outcome, o.reason,
                coalesce(array_agg(r.sku ORDER BY r.sku) FILTER (WHERE r.sku IS NOT NULL), '{}') AS skus,
                coalesce(array_agg(r.quantity ORDER BY r.sku) FILTER (WHERE r.sku IS NOT NULL), '{}')
                    AS quantities
         FROM order_outcomes o LEFT JOIN reservations r ON r.order_id = o.order_id
         WHERE o.order_id = ANY($1)
         GROUP BY o.order_id, o.outcome, o.reason",
    )
    .bind(order_ids)
    .fetch_all(conn)
    .await?;
    // A decision that cannot be told again is logged and left out: it must not block the partition.
    Ok(decisions
        .into_iter()
        .filter_map(|decision| {
            let order_id = decision.order_id;
            decision
                .answer()
                .inspect_err(|error| {
                    tracing::error!(%order_id, error = format!("{error:#}"), "cannot answer a repeated OrderPlaced")
                })
                .ok()
                .map(|answer| (order_id, answer))
        })
        .collect())
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

    fn placed(items: Vec<OrderItem>) -> OrderPlaced {
        OrderPlaced {
            order_id: Uuid::nil(),
            customer_id: "c".into(),
            items,
        }
    }

    #[test]
    fn repeated_skus_are_summed_in_sku_order() {
        let order =
            OrderToReserve::try_from(placed(vec![item("b", 1), item("a", 2), item("b", 3)]))
                .unwrap();
        assert_eq!(order.items, [item("a", 2), item("b", 4)]);
    }

    #[test]
    fn orders_that_can_never_be_applied_are_refused() {
        let max = i32::MAX as u32;
        for items in [
            vec![],
            vec![item("a", 0)],
            vec![item("bad sku", 1)],
            vec![item("a\0", 1)],
            vec![item("a", max), item("a", 1)],
            vec![
                item("a", u32::MAX),
                item("a", u32::MAX),
                item("a", u32::MAX),
            ],
            vec![item("a", max + 1)],
        ] {
            assert!(
                OrderToReserve::try_from(placed(items.clone())).is_err(),
                "{items:?}"
            );
        }
        assert!(OrderToReserve::try_from(placed(vec![item("a", max)])).is_ok());
    }

    #[test]
    fn an_earlier_decision_is_answered_again_as_it_was() {
        let order_id = Uuid::now_v7();
        let reserved = EarlierDecision {
            order_id,
            outcome: "reserved".into(),
            reason: None,
            skus: vec!["a".into(), "b".into()],
            quantities: vec![2, 5],
        };
        let answer = reserved.answer().unwrap();
        assert!(answer.is::<StockReserved>());
        let payload: StockReserved = answer.payload_as().unwrap();
        assert_eq!(payload.order_id, order_id);
        assert_eq!(payload.items, [item("a", 2), item("b", 5)]);

        let rejected = EarlierDecision {
            order_id,
            outcome: "rejected".into(),
            reason: Some("unknown_sku".into()),
            skus: vec![],
            quantities: vec![],
        };
        let payload: StockRejected = rejected.answer().unwrap().payload_as().unwrap();
        assert_eq!(payload.reason, RejectReason::UnknownSku);

        let garbled = EarlierDecision {
            order_id,
            outcome: "rejected".into(),
            reason: Some("solar_flare".into()),
            skus: vec![],
            quantities: vec![],
        };
        assert!(
            garbled.answer().is_err(),
            "an unknown reason is an error, not a guess"
        );
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

        let empty = Envelope::new(&placed(vec![])).unwrap();
        assert!(handler.decode(&empty).is_err());

        let mut garbled = empty.clone();
        garbled.payload = serde_json::json!({"order_id": 5});
        assert!(handler.decode(&garbled).is_err());

        let good = Envelope::new(&placed(vec![item("a", 1)])).unwrap();
        assert_eq!(
            handler.decode(&good).unwrap().unwrap().items,
            [item("a", 1)]
        );
    }
}
