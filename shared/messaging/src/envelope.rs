//! The Kafka message value of every distlab event (docs/contracts.md, "Kafka events"):
//!
//! ```json
//! {"message_id": "uuid", "type": "OrderPlaced", "occurred_at": "RFC 3339", "payload": {…},
//!  "traceparent": "00-…-…-01"}
//! ```
//!
//! `traceparent` is optional (absent when the producer does not trace): the W3C trace context of the span
//! that produced the message, so that the consumer's span continues the same trace (docs/observability.md).
//!
//! The envelope keeps its payload as JSON so that a consumer can read the header of a type it does not know
//! (and skip it) without failing; [`Envelope::payload_as`] turns the payload into a typed [`Event`].

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A typed event payload and the name it carries in the envelope's `type`.
pub trait Event: Serialize + DeserializeOwned {
    const TYPE: &'static str;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message; consumers deduplicate on it.
    pub message_id: Uuid,
    /// The event's name, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
    /// W3C `traceparent` of the span that produced the message; absent when it was not traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Envelope {
    /// A new envelope with a fresh, time-ordered `message_id`, produced by the current span (its
    /// `traceparent`, when tracing is on).
    pub fn new<E: Event>(event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self {
            message_id: Uuid::now_v7(),
            kind: E::TYPE.to_owned(),
            occurred_at: Utc::now(),
            payload: serde_json::to_value(event)?,
            traceparent: distlab_platform::trace::current_traceparent(),
        })
    }

    /// The same envelope, produced by the span `traceparent` names (e.g. the span that consumed the message
    /// this one answers) rather than by the current one; `None` keeps the current one's.
    pub fn produced_by(mut self, traceparent: Option<String>) -> Self {
        if traceparent.is_some() {
            self.traceparent = traceparent;
        }
        self
    }

    pub fn is<E: Event>(&self) -> bool {
        self.kind == E::TYPE
    }

    /// The payload as `E`; an error when the type differs or the payload does not parse.
    pub fn payload_as<E: Event>(&self) -> Result<E, EnvelopeError> {
        if !self.is::<E>() {
            return Err(EnvelopeError::WrongType {
                expected: E::TYPE,
                found: self.kind.clone(),
            });
        }
        serde_json::from_value(self.payload.clone()).map_err(EnvelopeError::Payload)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope of JSON values always serialises")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        serde_json::from_slice(bytes).map_err(EnvelopeError::Envelope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a distlab envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("expected a {expected} event, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("payload does not match its type: {0}")]
    Payload(#[source] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{OrderItem, OrderPlaced, StockReserved};

    #[test]
    fn envelope_round_trips_with_the_design_field_names() {
        let event = OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_id: "c-1".into(),
            items: vec![OrderItem {
                sku: "SKU-1".into(),
                quantity: 2,
            }],
        };
        let envelope = Envelope::new(&event).unwrap();
        let json: Value = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        assert_eq!(json["type"], "OrderPlaced");
        assert!(json["message_id"].is_string());
        assert!(json["occurred_at"].is_string());
        assert_eq!(json["payload"]["items"][0]["quantity"], 2);

        let parsed = Envelope::from_bytes(&envelope.to_bytes()).unwrap();
        assert_eq!(parsed, envelope);
        assert_eq!(parsed.payload_as::<OrderPlaced>().unwrap(), event);
        assert!(matches!(
            parsed.payload_as::<StockReserved>(),
            Err(EnvelopeError::WrongType { .. })
        ));
    }

    #[test]
    fn unknown_types_still_parse_as_envelopes() {
        let raw = br#"{"message_id":"0190a8e4-3c5e-7000-8000-000000000001","type":"SomethingNew","occurred_at":"2026-01-01T00:00:00Z","payload":{"x":1}}"#;
        let envelope = Envelope::from_bytes(raw).unwrap();
        assert_eq!(envelope.kind, "SomethingNew");
        assert!(Envelope::from_bytes(b"not json").is_err());
    }

    #[test]
    fn traceparent_is_optional_on_the_wire() {
        // Written before envelopes carried a trace (or by a producer that does not trace): still an envelope.
        let without = br#"{"message_id":"0190a8e4-3c5e-7000-8000-000000000001","type":"OrderPlaced","occurred_at":"2026-01-01T00:00:00Z","payload":{}}"#;
        let envelope = Envelope::from_bytes(without).unwrap();
        assert_eq!(envelope.traceparent, None);
        let json: Value = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        assert!(
            json.get("traceparent").is_none(),
            "an untraced envelope keeps the old shape: {json}"
        );

        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let with = envelope.clone().produced_by(Some(traceparent.to_owned()));
        let json: Value = serde_json::from_slice(&with.to_bytes()).unwrap();
        assert_eq!(json["traceparent"], traceparent);
        assert_eq!(Envelope::from_bytes(&with.to_bytes()).unwrap(), with);
        assert_eq!(with.clone().produced_by(None), with);
    }

    #[test]
    fn untraced_producers_write_no_traceparent() {
        let envelope = Envelope::new(&StockReserved {
            order_id: Uuid::now_v7(),
            items: vec![],
        })
        .unwrap();
        assert_eq!(envelope.traceparent, None);
    }
}
