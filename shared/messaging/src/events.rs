//! The events of the order flow and the topics that carry them.
//!
//! `order-events` carries what the order service decides ([`OrderPlaced`]); `inventory-events` carries the
//! inventory's answer ([`StockReserved`] or [`StockRejected`]). The key of every message is the order id, so
//! all events of one order stay in one partition, in order.
//!
//! `inventory-events` also carries the stock feed: a [`StockChanged`] for every change of a product's stock,
//! keyed by SKU, written into the inventory's outbox by the database itself in the changing transaction
//! (migrations/inventory/0003_stock_feed.sql). The order service keeps its stock replica from it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Event;

/// Default name of the topic the order service publishes to.
pub const ORDER_EVENTS: &str = "order-events";
/// Default name of the topic the inventory service publishes to.
pub const INVENTORY_EVENTS: &str = "inventory-events";

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    #[schema(pattern = "^[^\\x00]*$")]
    pub sku: String,
    #[schema(value_type = u64, maximum = 4294967295_u64)]
    pub quantity: u32,
}

/// An order was accepted and waits for stock (written with the order, in the order's transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub items: Vec<OrderItem>,
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "OrderPlaced";
}

/// Every item of the order was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: Uuid,
    pub items: Vec<OrderItem>,
}

impl Event for StockReserved {
    const TYPE: &'static str = "StockReserved";
}

/// Nothing was reserved, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRejected {
    pub order_id: Uuid,
    pub reason: RejectReason,
    /// The first SKU that could not be reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
}

impl Event for StockRejected {
    const TYPE: &'static str = "StockRejected";
}

/// A product's stock changed (the stock feed: one per SKU per transaction, with the version it left).
/// `version` only grows per SKU, so a replica
/// applies an event only when it is newer than what it holds: in any order, any number of times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    pub sku: String,
    /// Units that can still be reserved (an unfenced adjustment may have driven it below zero).
    pub available: i32,
    pub reserved: i32,
    pub version: i64,
    /// When the inventory's transaction made the change.
    pub changed_at: chrono::DateTime<chrono::Utc>,
}

impl Event for StockChanged {
    const TYPE: &'static str = "StockChanged";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    InsufficientStock,
    UnknownSku,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientStock => "insufficient_stock",
            Self::UnknownSku => "unknown_sku",
        }
    }

    /// The reason [`RejectReason::as_str`] names.
    pub fn parse(reason: &str) -> Option<Self> {
        [Self::InsufficientStock, Self::UnknownSku]
            .into_iter()
            .find(|r| r.as_str() == reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_reasons_parse_back_from_their_names_and_serde_agrees() {
        for reason in [RejectReason::InsufficientStock, RejectReason::UnknownSku] {
            assert_eq!(RejectReason::parse(reason.as_str()), Some(reason));
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::Value::String(reason.as_str().into())
            );
        }
        assert_eq!(RejectReason::parse("vote_no"), None);
    }
}
