//! Products and their stock: validation of admin input ("parse, don't validate") and the queries.

use distlab_platform::FieldError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

/// Longest SKU accepted.
pub const MAX_SKU_LEN: usize = 64;
/// Largest stock a product can be given (it must fit the `integer` columns).
pub const MAX_STOCK: i64 = i32::MAX as i64;

/// A product as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    /// Units that can still be reserved.
    pub available: i32,
    /// Units held by confirmed orders.
    pub reserved: i32,
    /// The stock's version: it grows by one with every change of `available` or `reserved` (and every
    /// PUT), and is what the order service's replica and the `StockChanged` events carry.
    pub version: i64,
}

/// The columns of a [`Product`], for `SELECT` and `RETURNING`.
pub const COLUMNS: &str = "sku, name, price_cents, available, reserved, stock_version AS version";

/// Body of `PUT /products/{sku}`: creates the product, or resets it to `stock` available and none reserved.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    /// 1 to 200 characters, not all blank, none of them control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub name: String,
    #[schema(minimum = 0)]
    pub price_cents: i64,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub stock: i64,
}

/// A SKU: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_sku(sku: &str) -> Result<(), FieldError> {
    let ok = !sku.is_empty()
        && sku.len() <= MAX_SKU_LEN
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "sku",
            format!("must be 1 to {MAX_SKU_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'"),
        ))
    }
}

/// Every problem of a product input, empty when it is valid.
pub fn validate_input(input: &ProductInput) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if input.name.trim().is_empty()
        || input.name.chars().count() > 200
        || input.name.chars().any(char::is_control)
    {
        errors.push(FieldError::new(
            "name",
            "must be 1 to 200 characters, not all blank, none of them control characters",
        ));
    }
    if input.price_cents < 0 {
        errors.push(FieldError::new("price_cents", "must be 0 or more"));
    }
    if !(0..=MAX_STOCK).contains(&input.stock) {
        errors.push(FieldError::new(
            "stock",
            format!("must be between 0 and {MAX_STOCK}"),
        ));
    }
    errors
}

/// Creates or resets a product.
pub async fn upsert(pool: &PgPool, sku: &str, input: &ProductInput) -> sqlx::Result<Product> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO products (sku, name, price_cents, available, reserved)
         VALUES ($1, $2, $3, $4, 0)
         ON CONFLICT (sku) DO UPDATE
         SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents,
             available = EXCLUDED.available, reserved = 0, updated_at = now()
         RETURNING {COLUMNS}"
    )))
    .bind(sku)
    .bind(input.name.trim())
    .bind(input.price_cents)
    .bind(input.stock as i32)
    .fetch_one(pool)
    .await
}

/// The product as last committed (a plain snapshot read: it never waits for a prepared 2PC branch that
/// holds the row).
pub async fn get(pool: &PgPool, sku: &str) -> sqlx::Result<Option<Product>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products WHERE sku = $1"
    )))
    .bind(sku)
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Product>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products ORDER BY sku"
    )))
    .fetch_all(pool)
    .await
}

/// Points the stock feed (the `StockChanged` messages the database writes into the outbox with every stock
/// change, migrations/inventory/0003_stock_feed.sql) at `topic`.
pub async fn publish_stock_feed_to(pool: &PgPool, topic: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO stock_feed (topic) VALUES ($1)
         ON CONFLICT (only_row) DO UPDATE SET topic = EXCLUDED.topic",
    )
    .bind(topic)
    .execute(pool)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_rules() {
        for good in ["A", "SKU-1", "a.b_c-9", &"x".repeat(64)] {
            assert!(validate_sku(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "ü", "a/b", &"x".repeat(65)] {
            assert!(validate_sku(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_rules_report_every_bad_field() {
        let input = ProductInput {
            name: " ".into(),
            price_cents: -1,
            stock: MAX_STOCK + 1,
        };
        let fields: Vec<String> = validate_input(&input)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["name", "price_cents", "stock"]);
        let ok = ProductInput {
            name: "Widget".into(),
            price_cents: 0,
            stock: 0,
        };
        assert!(validate_input(&ok).is_empty());
    }

    #[test]
    fn a_name_with_a_control_character_is_refused_before_it_reaches_postgres() {
        // PostgreSQL's text type cannot hold NUL; the fuzzer found the 500 this used to give.
        for bad in ["nul\u{0}inside", "tab\tinside", "\u{85}"] {
            let input = ProductInput {
                name: bad.into(),
                price_cents: 1,
                stock: 1,
            };
            let fields: Vec<String> = validate_input(&input)
                .into_iter()
                .map(|e| e.field)
                .collect();
            assert_eq!(fields, ["name"], "{bad:?}");
        }
    }
}
