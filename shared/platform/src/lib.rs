//! What every distlab service shares, whatever pattern of the seed it implements.
//!
//! A distlab service is an axum `Router` over a PostgreSQL pool plus a few background tasks (an outbox relay,
//! a Kafka consumer…). This crate gives all of them the same edges, so a user who learned one service knows
//! the others:
//!
//! - [`error`]: the JSON error body of docs/contracts.md (`{"error":{"code","message","details"?}}`) and extractors
//!   whose rejections use it — bad input always gets a clear 4xx, never axum's plain-text default;
//! - [`http`]: the middleware stack (request ids, tracing, timeouts, panics, per-route metrics), health and
//!   readiness endpoints, serving with graceful shutdown on SIGTERM;
//! - [`metrics`]: one Prometheus recorder per process, rendered at `/metrics`;
//! - [`openapi`]: the errors every OpenAPI document lists on every operation they can come from;
//! - [`telemetry`]: `tracing` set-up, human or JSON logs, OpenTelemetry traces when asked for;
//! - [`trace`]: W3C `traceparent` propagation over HTTP and in messages;
//! - [`db`]: the PostgreSQL pool with the settings every service uses;
//! - [`backoff`]: capped exponential backoff as a function of the attempt number (relays, consumers, the
//!   config follower).

pub mod backoff;
pub mod db;
pub mod error;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod telemetry;
pub mod trace;

pub use error::{ApiError, ErrorBody, FieldError, Json, Path, Query};
