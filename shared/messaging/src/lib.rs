//! Messaging between distlab services: the seed's 本地消息表 (local message table) made reliable.
//!
//! The seed's recipe (section 二) has three steps, and this crate has one module per step:
//!
//! 1. the side that changes business data writes a message into a table of **its own database in the same
//!    local transaction** — [`outbox::enqueue_all`];
//! 2. a relay forwards the table's messages to Kafka; forwarded messages are removed, the others retried —
//!    [`outbox::Relay`];
//! 3. the other side reads the message and applies it — [`consumer::IdempotentConsumer`], which records each
//!    `message_id` in the same transaction as the effect, so at-least-once delivery has exactly-once effect.
//!
//! [`envelope`] is the wire format of docs/contracts.md ("Kafka events") and [`events`] the typed payloads; [`kafka`] builds clients
//! with the settings every service must agree on (`acks=all` producers, manual offset commits), and
//! [`offsets`] lets a consumer notice a broker that came back without its data.

pub mod consumer;
pub mod envelope;
pub mod events;
pub mod kafka;
pub mod offsets;
pub mod outbox;
pub mod service;

pub use distlab_platform::backoff;
pub use envelope::Envelope;
