//! The order side's stock replica: soft state kept from the inventory's stock feed (`StockChanged` on
//! `inventory-events`, see `distlab_messaging::events`), read by `GET /stock/{sku}` in AP mode and by the
//! AP admission of orders ([`crate::store::place_on_replica`]).
//!
//! A change is applied only when its version is newer than the row's, so the consumer may deliver changes
//! again or out of order (they are keyed by SKU, but a redelivery after a rebalance is still possible)
//! without moving the replica backwards.

use chrono::{DateTime, Utc};
use distlab_messaging::events::StockChanged;
use sqlx::{PgConnection, PgPool};

/// One SKU as the replica holds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplicaRow {
    pub sku: String,
    pub available: i32,
    pub reserved: i32,
    pub version: i64,
    /// When the inventory made this version.
    pub changed_at: DateTime<Utc>,
}

/// Applies a batch of changes; per SKU only the newest one counts, and only if it is newer than the row.
/// Returns how many rows moved.
pub async fn apply(conn: &mut PgConnection, changes: &[&StockChanged]) -> sqlx::Result<u64> {
    let mut newest: std::collections::BTreeMap<&str, &StockChanged> = Default::default();
    for change in changes {
        let slot = newest.entry(change.sku.as_str()).or_insert(change);
        if change.version > slot.version {
            *slot = change;
        }
    }
    let skus: Vec<&str> = newest.keys().copied().collect();
    let available: Vec<i32> = newest.values().map(|c| c.available).collect();
    let reserved: Vec<i32> = newest.values().map(|c| c.reserved).collect();
    let versions: Vec<i64> = newest.values().map(|c| c.version).collect();
    let changed_at: Vec<DateTime<Utc>> = newest.values().map(|c| c.changed_at).collect();
    let moved = sqlx::query(
        "INSERT INTO stock_replica AS r (sku, available, reserved, version, changed_at)
         SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::bigint[], $5::timestamptz[])
         ON CONFLICT (sku) DO UPDATE
         SET available = EXCLUDED.available, reserved = EXCLUDED.reserved, version = EXCLUDED.version,
             changed_at = EXCLUDED.changed_at, applied_at = now()
         WHERE r.version < EXCLUDED.version",
    )
    .bind(&skus)
    .bind(&available)
    .bind(&reserved)
    .bind(&versions)
    .bind(&changed_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved)
}

pub async fn get(pool: &PgPool, sku: &str) -> sqlx::Result<Option<ReplicaRow>> {
    sqlx::query_as(
        "SELECT sku, available, reserved, version, changed_at FROM stock_replica WHERE sku = $1",
    )
    .bind(sku)
    .fetch_optional(pool)
    .await
}
