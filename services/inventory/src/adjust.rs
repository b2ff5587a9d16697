//! `POST /products/{sku}/adjust`: a raw stock change, fenced by the lock service's tokens.
//!
//! This is the protected resource of the seed's section 一 done right: a lock's lease alone cannot stop a
//! holder that paused past its TTL from writing after the next holder did, so the write carries the
//! lock's fencing token and this service keeps, per lock name, the highest token it has seen
//! (`lock_fences`). A lower token is refused (409 `stale_fencing_token`) and nothing is written; an equal
//! one is the same holder writing again. The fence row is locked for the rest of the transaction, so
//! writers of one lock name are applied in token order even when they race.
//!
//! The delta is applied as given — no floor at zero: the "is there stock left?" check is the caller's, made
//! under its lock. Without a lock, concurrent callers oversell; that is what the flash sale shows. A caller
//! that wants the check done here sends a `floor` (a conditional adjustment: the CAP scenario's shop
//! counter sells with `floor: 0`).

use distlab_platform::FieldError;
use serde::Deserialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::products::{MAX_STOCK, Product};

/// Body of `POST /products/{sku}/adjust`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustInput {
    /// Units to add (negative: take away); not 0.
    #[schema(minimum = -2147483647, maximum = 2147483647)]
    pub delta: i64,
    /// The lock the caller holds while writing, and its fencing token. Without it the write is unfenced.
    #[serde(default)]
    pub lock: Option<LockToken>,
    /// A conditional adjustment: refused (409 `insufficient_stock`, nothing written) when `available`
    /// would end below this. Without it the delta is applied as given.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub floor: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockToken {
    /// 1 to 128 characters, none of them control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub name: String,
    #[schema(maximum = 9223372036854775807_u64)]
    pub token: u64,
}

/// A validated adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub delta: i32,
    pub fence: Option<(String, i64)>,
    pub floor: Option<i32>,
}

/// Every problem of an adjustment, or the adjustment.
pub fn validate(input: &AdjustInput) -> Result<Adjustment, Vec<FieldError>> {
    let mut errors = Vec::new();
    if input.delta == 0 || !(-MAX_STOCK..=MAX_STOCK).contains(&input.delta) {
        errors.push(FieldError::new(
            "delta",
            format!("must be a non-zero number of units between -{MAX_STOCK} and {MAX_STOCK}"),
        ));
    }
    let mut fence = None;
    if let Some(lock) = &input.lock {
        let name_len = lock.name.chars().count();
        if name_len == 0 || name_len > 128 || lock.name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "lock.name",
                "must be 1 to 128 characters, none of them control characters",
            ));
        }
        match i64::try_from(lock.token) {
            Ok(token) => fence = Some((lock.name.clone(), token)),
            Err(_) => errors.push(FieldError::new(
                "lock.token",
                format!("must be at most {}", i64::MAX),
            )),
        }
    }
    let floor = match input.floor {
        None => None,
        Some(floor) if (0..=MAX_STOCK).contains(&floor) => Some(floor as i32),
        Some(_) => {
            errors.push(FieldError::new(
                "floor",
                format!("must be between 0 and {MAX_STOCK}"),
            ));
            None
        }
    };
    if errors.is_empty() {
        Ok(Adjustment {
            delta: input.delta as i32,
            fence,
            floor,
        })
    } else {
        Err(errors)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    #[error("fencing token {token} of lock {lock} is older than {highest}, which already wrote")]
    StaleToken {
        lock: String,
        token: i64,
        highest: i64,
    },
    #[error("no product with sku {0}")]
    UnknownSku(String),
    /// A conditional adjustment would take `available` below its floor.
    #[error("{sku} has {available} available; taking {taken} would go below the floor {floor}")]
    BelowFloor {
        sku: String,
        available: i32,
        taken: i32,
        floor: i32,
    },
    /// The stock would leave the range of the `integer` column.
    #[error("the adjustment would take the stock of {0} out of range")]
    OutOfRange(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Applies the adjustment if its token is not stale; all or nothing.
pub async fn apply(
    pool: &PgPool,
    sku: &str,
    adjustment: &Adjustment,
) -> Result<Product, AdjustError> {
    let mut tx = pool.begin().await?;
    if let Some((lock, token)) = &adjustment.fence {
        let accepted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO lock_fences AS f (lock_name, highest_token) VALUES ($1, $2)
             ON CONFLICT (lock_name) DO UPDATE
             SET highest_token = EXCLUDED.highest_token, updated_at = now()
             WHERE f.highest_token <= EXCLUDED.highest_token
             RETURNING highest_token",
        )
        .bind(lock)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        if accepted.is_none() {
            let highest: i64 =
                sqlx::query_scalar("SELECT highest_token FROM lock_fences WHERE lock_name = $1")
                    .bind(lock)
                    .fetch_one(&mut *tx)
                    .await?;
            return Err(AdjustError::StaleToken {
                lock: lock.clone(),
                token: *token,
                highest,
            });
        }
    }
    let product: Option<Product> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET available = available + $2, updated_at = now()
         WHERE sku = $1 AND ($3::int IS NULL OR available + $2 >= $3)
         RETURNING {}",
        crate::products::COLUMNS
    )))
    .bind(sku)
    .bind(adjustment.delta)
    .bind(adjustment.floor)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|error| match &error {
        // numeric_value_out_of_range: available + delta overflowed the column.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22003") => {
            AdjustError::OutOfRange(sku.to_owned())
        }
        _ => AdjustError::Database(error),
    })?;
    let Some(product) = product else {
        let available: Option<i32> =
            sqlx::query_scalar("SELECT available FROM products WHERE sku = $1")
                .bind(sku)
                .fetch_optional(&mut *tx)
                .await?;
        return Err(match (available, adjustment.floor) {
            (Some(available), Some(floor)) => AdjustError::BelowFloor {
                sku: sku.to_owned(),
                available,
                taken: -adjustment.delta,
                floor,
            },
            _ => AdjustError::UnknownSku(sku.to_owned()),
        });
    };
    sqlx::query(
        "INSERT INTO stock_adjustments (sku, delta, lock_name, fencing_token, available_after)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(sku)
    .bind(adjustment.delta)
    .bind(adjustment.fence.as_ref().map(|(l, _)| l))
    .bind(adjustment.fence.as_ref().map(|(_, t)| t))
    .bind(product.available)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(product)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(delta: i64, lock: Option<(&str, u64)>) -> AdjustInput {
        AdjustInput {
            delta,
            lock: lock.map(|(name, token)| LockToken {
                name: name.into(),
                token,
            }),
            floor: None,
        }
    }

    #[test]
    fn adjustments() {
        assert_eq!(
            validate(&input(-1, Some(("sale", 7)))),
            Ok(Adjustment {
                delta: -1,
                fence: Some(("sale".into(), 7)),
                floor: None,
            })
        );
        assert_eq!(validate(&input(5, None)).map(|a| a.fence), Ok(None));
        let fields = |r: Result<Adjustment, Vec<FieldError>>| -> Vec<String> {
            r.err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(fields(validate(&input(0, None))), ["delta"]);
        assert_eq!(fields(validate(&input(MAX_STOCK + 1, None))), ["delta"]);
        assert_eq!(fields(validate(&input(i64::MIN, None))), ["delta"]);
        assert_eq!(
            fields(validate(&input(1, Some(("", u64::MAX))))),
            ["lock.name", "lock.token"]
        );
    }
}
