//! What the shop shows: the catalog (from the inventory) and the bestsellers (from the order service),
//! and the last known catalog kept for degraded pages (soft state: it may be behind, and says by how much).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::deps::{DepError, Dependency, Guard};

/// A product as the shop shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
}

/// The catalog at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub products: Vec<Product>,
    /// When the inventory gave it.
    pub as_of: DateTime<Utc>,
}

impl Snapshot {
    pub fn find(&self, sku: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.sku == sku)
    }
}

#[derive(Deserialize)]
struct ProductList {
    products: Vec<Product>,
}

/// The catalog: live from the inventory, with the last good answer kept.
#[derive(Debug, Clone)]
pub struct Catalog {
    inventory: Dependency,
    prefix: String,
    last: Arc<RwLock<Option<Arc<Snapshot>>>>,
}

impl Catalog {
    /// The products whose SKU starts with `prefix` (the shop's own, not every product a test created).
    pub fn new(inventory: Dependency, prefix: &str) -> Self {
        Self {
            inventory,
            prefix: prefix.to_owned(),
            last: Arc::default(),
        }
    }

    /// The SKU prefix of the shop's products.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn inventory(&self) -> &Dependency {
        &self.inventory
    }

    /// Asks the inventory now; a good answer becomes the last known catalog.
    pub async fn live(&self, guard: Guard) -> Result<Arc<Snapshot>, DepError> {
        let list: ProductList = self.inventory.get("/products", guard).await?;
        let mut products: Vec<Product> = list
            .products
            .into_iter()
            .filter(|p| p.sku.starts_with(&self.prefix))
            .collect();
        products.sort_by(|a, b| a.sku.cmp(&b.sku));
        let snapshot = Arc::new(Snapshot {
            products,
            as_of: Utc::now(),
        });
        *self
            .last
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The last known catalog, if the inventory ever answered.
    pub fn last_known(&self) -> Option<Arc<Snapshot>> {
        self.last
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// One line of the bestsellers panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bestseller {
    pub sku: String,
    pub units: i64,
}

#[derive(Deserialize)]
struct OrderList {
    orders: Vec<OrderLines>,
}

#[derive(Deserialize)]
struct OrderLines {
    items: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    sku: String,
    quantity: i64,
}

/// How many of the latest confirmed orders the bestsellers panel counts.
pub const BESTSELLER_WINDOW: u32 = 200;

/// The non-core panel: the shop's most sold SKUs (those starting with `prefix`) among the latest confirmed
/// orders (asked on every full page — this is what makes a full page dear, and what goes first under
/// pressure).
pub async fn bestsellers(
    orders: &Dependency,
    prefix: &str,
    guard: Guard,
) -> Result<Vec<Bestseller>, DepError> {
    let list: OrderList = orders
        .get(
            &format!("/orders?status=CONFIRMED&limit={BESTSELLER_WINDOW}"),
            guard,
        )
        .await?;
    let lines = list
        .orders
        .iter()
        .flat_map(|o| &o.items)
        .filter(|l| l.sku.starts_with(prefix))
        .map(|l| (l.sku.as_str(), l.quantity));
    Ok(rank(lines, 5))
}

/// The `top` SKUs by units sold (ties by SKU).
fn rank<'a>(lines: impl Iterator<Item = (&'a str, i64)>, top: usize) -> Vec<Bestseller> {
    let mut units: HashMap<&str, i64> = HashMap::new();
    for (sku, quantity) in lines {
        *units.entry(sku).or_default() += quantity;
    }
    let mut ranked: Vec<Bestseller> = units
        .into_iter()
        .map(|(sku, units)| Bestseller {
            sku: sku.to_owned(),
            units,
        })
        .collect();
    ranked.sort_by(|a, b| b.units.cmp(&a.units).then_with(|| a.sku.cmp(&b.sku)));
    ranked.truncate(top);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bestsellers_are_ranked_by_units_then_sku() {
        let lines = [("b", 2), ("a", 1), ("c", 5), ("a", 1), ("d", 1)];
        let ranked = rank(lines.into_iter(), 3);
        let skus: Vec<(&str, i64)> = ranked.iter().map(|b| (b.sku.as_str(), b.units)).collect();
        assert_eq!(skus, [("c", 5), ("a", 2), ("b", 2)]);
    }
}
