//! The orders database: placing an order with its outbox message, reading orders, applying answers.

use chrono::{DateTime, Utc};
use distlab_messaging::Envelope;
use distlab_messaging::events::{OrderItem, OrderPlaced};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::orders::{Mode, Order, Status, ValidOrder};

/// An `Idempotency-Key` and the fingerprint of the request that came with it.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// What placing an order did.
#[derive(Debug)]
pub enum Placed {
    /// A new order, PENDING, with its `OrderPlaced` in the outbox.
    Created(Order),
    /// The key was used before for the same request: its first response.
    Replayed { status: u16, body: Value },
    /// The key was used before for another request.
    KeyReused,
}

#[derive(Debug, sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    customer_id: String,
    items: Json<Vec<OrderItem>>,
    status: String,
    mode: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<OrderRow> for Order {
    type Error = sqlx::Error;
    fn try_from(row: OrderRow) -> Result<Self, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        Ok(Order {
            id: row.id,
            customer_id: row.customer_id,
            items: row.items.0,
            status: row.status.parse().map_err(decode)?,
            mode: row.mode.parse().map_err(decode)?,
            reason: row.reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const ORDER_COLUMNS: &str = "id, customer_id, items, status, mode, reason, created_at, updated_at";

/// The order write path as one statement, so one local transaction: the order (PENDING) and its
/// `OrderPlaced` in the outbox (the outbox's columns are those of `distlab_messaging::outbox::enqueue_all`;
/// `traceparent` is the envelope's, the span of the request that placed the order).
const PLACE: &str = "WITH placed AS (
        INSERT INTO orders (id, customer_id, items, status, mode, created_at, updated_at, redeliver_at)
        VALUES ($1, $2, $3, 'PENDING', $4, $5, $5, $9)
        RETURNING id)
    INSERT INTO outbox (message_id, topic, message_key, envelope, traceparent)
    SELECT $6, $7, id::text, $8, $10 FROM placed";

/// The same, recording the `Idempotency-Key` first: when the key exists, nothing is written (0 rows). A
/// concurrent request with the same key waits on the key's unique index until the first one commits.
const PLACE_WITH_KEY: &str = "WITH recorded AS (
        INSERT INTO idempotency_keys (key, request_hash, order_id, response_status, response_body)
        VALUES ($10, $11, $1, 202, $12)
        ON CONFLICT DO NOTHING
        RETURNING order_id),
    placed AS (
        INSERT INTO orders (id, customer_id, items, status, mode, created_at, updated_at, redeliver_at)
        SELECT $1, $2, $3, 'PENDING', $4, $5, $5, $9 FROM recorded
        RETURNING id)
    INSERT INTO outbox (message_id, topic, message_key, envelope, traceparent)
    SELECT $6, $7, id::text, $8, $13 FROM placed";

/// Places an outbox-mode order: in ONE local transaction (one statement), the idempotency record if a key
/// came, the order (PENDING) and its `OrderPlaced` message in the outbox. Without an answer after
/// `redeliver_after`, [`crate::redelivery`] sends the message again.
pub async fn place(
    pool: &PgPool,
    order: &ValidOrder,
    key: Option<&IdempotencyKey>,
    topic: &str,
    redeliver_after: std::time::Duration,
) -> anyhow::Result<Placed> {
    let (placed, query) = place_query(order, key, topic, redeliver_after)?;
    let written = query.execute(pool).await?.rows_affected();
    match key {
        Some(key) if written == 0 => replay(pool, key).await,
        _ => Ok(Placed::Created(placed)),
    }
}

/// The new order and the one statement that writes it (see [`PLACE`]).
fn place_query<'q>(
    order: &ValidOrder,
    key: Option<&'q IdempotencyKey>,
    topic: &'q str,
    redeliver_after: std::time::Duration,
) -> anyhow::Result<(
    Order,
    sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
)> {
    let now = crate::orders::now();
    let placed = Order {
        id: Uuid::now_v7(),
        customer_id: order.customer_id.clone(),
        items: order.items.clone(),
        status: Status::Pending,
        mode: Mode::Outbox,
        reason: None,
        created_at: now,
        updated_at: now,
    };
    let event = Envelope::new(&OrderPlaced {
        order_id: placed.id,
        customer_id: placed.customer_id.clone(),
        items: placed.items.clone(),
    })?;
    let traceparent = event.traceparent.clone();
    let query = sqlx::query(if key.is_some() { PLACE_WITH_KEY } else { PLACE })
        .bind(placed.id)
        .bind(placed.customer_id.clone())
        .bind(Json(placed.items.clone()))
        .bind(placed.mode.as_str())
        .bind(now)
        .bind(event.message_id)
        .bind(topic)
        .bind(Json(event))
        .bind(now + chrono::TimeDelta::from_std(redeliver_after)?);
    let query = match key {
        Some(key) => query
            .bind(&key.key)
            .bind(&key.request_hash)
            .bind(Json(placed.clone()))
            .bind(traceparent),
        None => query.bind(traceparent),
    };
    Ok((placed, query))
}

/// Why the replica refused an order in AP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortage {
    /// The replica has never heard of the SKU.
    UnknownSku(String),
    /// The replica shows `available` (after the holds of undecided AP orders), fewer than `wanted`.
    Insufficient {
        sku: String,
        available: i64,
        wanted: i64,
    },
}

/// What placing an order on the replica's word did.
#[derive(Debug)]
pub enum Admitted {
    Placed(Placed),
    Refused(Shortage),
}

/// Places an outbox-mode order in AP mode: in one transaction, the replica rows of its SKUs are locked,
/// the order is admitted only if the replica (minus the holds of undecided AP orders) covers every item,
/// and then it is written as [`place`] writes it, with a hold per item and `admitted_on_replica` set.
pub async fn place_on_replica(
    pool: &PgPool,
    order: &ValidOrder,
    key: Option<&IdempotencyKey>,
    topic: &str,
    redeliver_after: std::time::Duration,
) -> anyhow::Result<Admitted> {
    if let Some(key) = key
        && let Some(earlier) = lookup_key(pool, key).await?
    {
        return Ok(Admitted::Placed(earlier));
    }
    let mut wanted: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for item in &order.items {
        *wanted.entry(item.sku.as_str()).or_default() += i64::from(item.quantity);
    }
    let skus: Vec<&str> = wanted.keys().copied().collect();
    let mut tx = pool.begin().await?;
    // Lock the replica rows (in SKU order: admissions of overlapping orders queue, never deadlock), then
    // subtract what undecided AP orders hold.
    let replica: Vec<(String, i64)> = sqlx::query_as(
        "SELECT sku, available::bigint FROM stock_replica WHERE sku = ANY($1)
         ORDER BY sku COLLATE \"C\" FOR UPDATE",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;
    let held: Vec<(String, i64)> = sqlx::query_as(
        "SELECT sku, sum(quantity)::bigint FROM stock_holds WHERE sku = ANY($1) GROUP BY sku",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;
    let shown: Vec<(String, i64)> = replica
        .into_iter()
        .map(|(sku, available)| {
            let holds = held
                .iter()
                .find(|(s, _)| *s == sku)
                .map_or(0, |(_, quantity)| *quantity);
            (sku, available - holds)
        })
        .collect();
    for (sku, quantity) in &wanted {
        let refused = match shown.iter().find(|(s, _)| s == sku) {
            None => Some(Shortage::UnknownSku((*sku).to_owned())),
            Some((_, available)) if available < quantity => Some(Shortage::Insufficient {
                sku: (*sku).to_owned(),
                available: *available,
                wanted: *quantity,
            }),
            Some(_) => None,
        };
        if let Some(shortage) = refused {
            return Ok(Admitted::Refused(shortage));
        }
    }
    let (placed, query) = place_query(order, key, topic, redeliver_after)?;
    let written = query.execute(&mut *tx).await?.rows_affected();
    if written == 0 {
        // The key was taken by a request that committed meanwhile.
        tx.rollback().await?;
        if let Some(key) = key {
            return Ok(Admitted::Placed(replay(pool, key).await?));
        }
        anyhow::bail!("the order {} was not written", placed.id);
    }
    let quantities: Vec<i32> = wanted
        .values()
        .map(|q| i32::try_from(*q))
        .collect::<Result<_, _>>()?;
    sqlx::query(
        "INSERT INTO stock_holds (order_id, sku, quantity) SELECT $1, * FROM unnest($2::text[], $3::int[])",
    )
    .bind(placed.id)
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE orders SET admitted_on_replica = true WHERE id = $1")
        .bind(placed.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Admitted::Placed(Placed::Created(placed)))
}

/// What an `Idempotency-Key` already stands for, if it was used (and its first request committed).
pub async fn lookup_key(pool: &PgPool, key: &IdempotencyKey) -> sqlx::Result<Option<Placed>> {
    let row: Option<(Vec<u8>, i16, Json<Value>)> = sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE key = $1",
    )
    .bind(&key.key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(hash, status, body)| {
        if hash == key.request_hash {
            Placed::Replayed {
                status: status as u16,
                body: body.0,
            }
        } else {
            Placed::KeyReused
        }
    }))
}

/// Records a 2PC order that aborted: REJECTED with its reason, and the key's answer, in one transaction.
/// Nothing happens if the order exists already.
pub async fn record_rejected(
    pool: &PgPool,
    order: &Order,
    key: Option<(&IdempotencyKey, u16, &Value)>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO orders (id, customer_id, items, status, mode, reason, created_at, updated_at)
         VALUES ($1, $2, $3, 'REJECTED', $4, $5, $6, now())
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(order.id)
    .bind(&order.customer_id)
    .bind(Json(&order.items))
    .bind(order.mode.as_str())
    .bind(&order.reason)
    .bind(order.created_at)
    .execute(&mut *tx)
    .await?;
    if let Some((key, status, body)) = key {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, request_hash, order_id, response_status, response_body)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(order.id)
        .bind(status as i16)
        .bind(Json(body))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// What the key stands for, after the write path found it taken.
async fn replay(pool: &PgPool, key: &IdempotencyKey) -> anyhow::Result<Placed> {
    lookup_key(pool, key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("idempotency key {} is taken but not readable", key.key))
}

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Order>> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let row: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(Order::try_from).transpose()
}

/// Orders newest first (ids are UUIDv7), `limit` of them, older than `before` when given.
pub async fn list(
    pool: &PgPool,
    status: Option<Status>,
    limit: i64,
    before: Option<Uuid>,
) -> sqlx::Result<Vec<Order>> {
    let before = before.unwrap_or(Uuid::max());
    let rows: Vec<OrderRow> = match status {
        Some(status) => {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE status = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(status.as_str())
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
        None => {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE id < $1 ORDER BY id DESC LIMIT $2"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
    };
    rows.into_iter().map(Order::try_from).collect()
}

/// A final status for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub order_id: Uuid,
    pub status: Status,
    pub reason: Option<String>,
}

/// Moves PENDING orders to their final status, in one statement. Returns, for each order that changed, its
/// status and when it was created; an order that is not PENDING (already final: a redelivered answer) or
/// unknown is left alone.
pub async fn finalize(
    conn: &mut PgConnection,
    decisions: &[Decision],
) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
    let ids: Vec<Uuid> = decisions.iter().map(|d| d.order_id).collect();
    let statuses: Vec<&str> = decisions.iter().map(|d| d.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = decisions.iter().map(|d| d.reason.as_deref()).collect();
    // An order admitted on the replica's word (AP) that the stock cannot cover was oversold: its reason
    // says so. Its holds on the replica end with the decision.
    let finalized = sqlx::query_as(
        "UPDATE orders AS o
         SET status = d.status,
             reason = CASE WHEN o.admitted_on_replica AND d.reason = 'insufficient_stock'
                           THEN 'oversold_during_partition' ELSE d.reason END,
             updated_at = clock_timestamp()
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(id, status, reason)
         WHERE o.id = d.id AND o.status = 'PENDING'
         RETURNING o.status, o.created_at",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&reasons)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM stock_holds WHERE order_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    Ok(finalized)
}
