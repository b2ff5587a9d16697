//! Orders: the request a client sends, its validation, and the order as the API shows it. No IO here.

use chrono::{DateTime, Utc};
use distlab_messaging::events::OrderItem;
use distlab_platform::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Most items in one order.
pub const MAX_ITEMS: usize = 20;
/// Largest quantity of one item.
pub const MAX_QUANTITY: i64 = 1000;
/// Longest SKU or customer id accepted.
pub const MAX_ID_LEN: usize = 64;

/// Now, to the microsecond: what PostgreSQL keeps of a timestamp, so that an answer built from this value
/// and one read back from the database are the same.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// How an order's stock is reserved.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, clap::ValueEnum,
)]
pub enum Mode {
    /// Local message table + Kafka: 202 now, CONFIRMED or REJECTED later.
    #[serde(rename = "outbox")]
    #[value(name = "outbox")]
    Outbox,
    /// Two-phase commit through the coordinator: the answer is final.
    #[serde(rename = "2pc")]
    #[value(name = "2pc")]
    TwoPhaseCommit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbox => "outbox",
            Self::TwoPhaseCommit => "2pc",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "outbox" => Ok(Self::Outbox),
            "2pc" => Ok(Self::TwoPhaseCommit),
            other => Err(format!("unknown mode {other}")),
        }
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Confirmed,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "PENDING" => Ok(Self::Pending),
            "CONFIRMED" => Ok(Self::Confirmed),
            "REJECTED" => Ok(Self::Rejected),
            other => Err(format!(
                "unknown status {other}; expected PENDING, CONFIRMED or REJECTED"
            )),
        }
    }
}

/// Body of `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub customer_id: String,
    /// 1 to 20 items.
    #[schema(min_items = 1, max_items = 20)]
    pub items: Vec<ItemInput>,
    /// Defaults to the service's configured mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// One item of `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// An order request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    pub customer_id: String,
    pub items: Vec<OrderItem>,
    pub mode: Mode,
}

pub fn valid_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl PlaceOrder {
    /// Checks every field, reporting every problem at once.
    pub fn validate(&self, default_mode: Mode) -> Result<ValidOrder, Vec<FieldError>> {
        let mut errors = Vec::new();
        let id_rule =
            format!("must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'");
        if !valid_id(&self.customer_id) {
            errors.push(FieldError::new("customer_id", id_rule.clone()));
        }
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            errors.push(FieldError::new(
                "items",
                format!("must hold 1 to {MAX_ITEMS} items, not {}", self.items.len()),
            ));
        }
        for (i, item) in self.items.iter().enumerate() {
            if !valid_id(&item.sku) {
                errors.push(FieldError::new(format!("items[{i}].sku"), id_rule.clone()));
            }
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                errors.push(FieldError::new(
                    format!("items[{i}].quantity"),
                    format!(
                        "must be between 1 and {MAX_QUANTITY}, not {}",
                        item.quantity
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidOrder {
            customer_id: self.customer_id.clone(),
            items: self
                .items
                .iter()
                .map(|i| OrderItem {
                    sku: i.sku.clone(),
                    quantity: i.quantity as u32,
                })
                .collect(),
            mode: self.mode.unwrap_or(default_mode),
        })
    }
}

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: String,
    pub items: Vec<OrderItem>,
    pub status: Status,
    pub mode: Mode,
    /// Why a REJECTED order was rejected (`insufficient_stock`, `unknown_sku`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(items: Vec<(&str, i64)>) -> PlaceOrder {
        PlaceOrder {
            customer_id: "alice".into(),
            items: items
                .into_iter()
                .map(|(sku, quantity)| ItemInput {
                    sku: sku.into(),
                    quantity,
                })
                .collect(),
            mode: None,
        }
    }

    fn fields(result: Result<ValidOrder, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_order_takes_the_default_mode() {
        let order = request(vec![("SKU-1", 1), ("SKU-2", 1000)])
            .validate(Mode::Outbox)
            .unwrap();
        assert_eq!(order.mode, Mode::Outbox);
        assert_eq!(order.items.len(), 2);
        assert_eq!(order.items[1].quantity, 1000);
    }

    #[test]
    fn quantity_bounds_are_1_to_1000() {
        let result =
            request(vec![("A", 0), ("B", -3), ("C", 1001), ("D", 1)]).validate(Mode::Outbox);
        assert_eq!(
            fields(result),
            [
                "items[0].quantity",
                "items[1].quantity",
                "items[2].quantity"
            ]
        );
    }

    #[test]
    fn item_count_bounds_are_1_to_20() {
        assert_eq!(fields(request(vec![]).validate(Mode::Outbox)), ["items"]);
        let many = vec![("A", 1); 21];
        assert_eq!(fields(request(many).validate(Mode::Outbox)), ["items"]);
        assert!(request(vec![("A", 1); 20]).validate(Mode::Outbox).is_ok());
    }

    #[test]
    fn ids_must_be_safe_and_short() {
        let mut req = request(vec![("bad sku", 1)]);
        req.customer_id = String::new();
        assert_eq!(
            fields(req.validate(Mode::Outbox)),
            ["customer_id", "items[0].sku"]
        );
    }

    #[test]
    fn wire_names_of_mode_and_status() {
        assert_eq!(
            serde_json::to_string(&Mode::TwoPhaseCommit).unwrap(),
            "\"2pc\""
        );
        assert_eq!(
            serde_json::to_string(&Status::Confirmed).unwrap(),
            "\"CONFIRMED\""
        );
        let parsed: PlaceOrder = serde_json::from_str(
            r#"{"customer_id":"c","items":[{"sku":"A","quantity":1}],"mode":"2pc"}"#,
        )
        .unwrap();
        assert_eq!(parsed.mode, Some(Mode::TwoPhaseCommit));
        assert!(
            serde_json::from_str::<PlaceOrder>(r#"{"customer_id":"c","items":[],"colour":"red"}"#)
                .is_err()
        );
    }
}
