//! W3C trace context (`traceparent`) across distlab's hops: HTTP calls between services and Kafka messages.
//!
//! Tracing is on in a process only when [`crate::telemetry::init`] installed an OTLP exporter
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`); [`enabled`] says so. Off, every helper here does nothing and returns
//! `None`, so a service without an exporter sends no header, writes no `traceparent`, and names no span for
//! OpenTelemetry.
//!
//! - HTTP, client side: [`PropagateTrace::with_trace`] on a `reqwest::RequestBuilder` adds the current span's
//!   `traceparent` header; [`inject_headers`] does the same on any `HeaderMap`.
//! - HTTP, server side: [`set_parent_from_headers`] makes a request's span a child of the caller's span (the
//!   shared router layers of [`crate::http`] do it for every request).
//! - Messages: [`current_traceparent`] is the string that goes into an envelope and an outbox row, and
//!   [`set_parent`] continues the trace from it on the other side.
//!
//! Spans get their OpenTelemetry name and kind from [`name_span`], which records the `otel.name` and
//! `otel.kind` fields (declared [`tracing::field::Empty`] on the span) only when tracing is on, so that logs
//! stay as they were when it is off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and envelope field, and outbox column) that carries the parent span.
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces (an OTLP exporter is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Marks tracing as on; [`crate::telemetry::init`] calls it once the exporter is installed.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// What a span is to OpenTelemetry (`otel.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Handles an incoming request.
    Server,
    /// Makes an outgoing request.
    Client,
    /// Sends a message (the outbox relay).
    Producer,
    /// Handles a message (a Kafka consumer).
    Consumer,
    /// Work inside the process.
    Internal,
}

impl SpanKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Internal => "internal",
        }
    }
}

/// Gives `span` its OpenTelemetry name and kind, when tracing is on. The span must declare the fields
/// `otel.name` and `otel.kind` (as [`tracing::field::Empty`]); call it before the span is entered.
pub fn name_span(span: &Span, name: impl std::fmt::Display, kind: SpanKind) {
    if enabled() {
        span.record("otel.name", tracing::field::display(name));
        span.record("otel.kind", kind.as_str());
    }
}

/// The `traceparent` of an OpenTelemetry context, if it holds a valid span.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Whether `traceparent` has the shape of W3C trace context version 00: `00-` 32, then 16, then 2 lowercase
/// hex digits, separated by `-` (the SDK's parser is laxer about the lengths).
fn well_formed(traceparent: &str) -> bool {
    let parts: Vec<&str> = traceparent.split('-').collect();
    parts.len() == 4
        && parts.iter().zip([2, 32, 16, 2]).all(|(part, len)| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// The context a `traceparent` names (a remote parent), if it is a valid one.
pub fn context_from(traceparent: &str) -> Option<Context> {
    let traceparent = traceparent.trim();
    if !well_formed(traceparent) {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` of the current span: what an envelope, an outbox row or a request carries on.
/// `None` when tracing is off or no span is current.
pub fn current_traceparent() -> Option<String> {
    traceparent_of_span(&Span::current())
}

/// The `traceparent` of `span` (e.g. a span about to send a message it was made for). `None` when tracing
/// is off.
pub fn traceparent_of_span(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&span.context())
}

/// Makes `span` a child of the span `traceparent` names (no-op when it is `None`, invalid, or tracing is
/// off). Call it before the span is entered: a started span keeps its parent.
pub fn set_parent(span: &Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(cx) = traceparent.and_then(context_from) {
        // Fails only for a span the OpenTelemetry layer does not see (filtered out): nothing to link.
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the caller's span named by the `traceparent` header of `headers`, if any.
pub fn set_parent_from_headers(span: &Span, headers: &HeaderMap) {
    set_parent(span, headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()));
}

/// Puts the current span's `traceparent` into `headers` (when tracing is on and a span is current).
pub fn inject_headers(headers: &mut HeaderMap) {
    if let Some(value) = current_traceparent().and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert(TRACEPARENT, value);
    }
}

/// Propagates the current span to the service a request goes to.
pub trait PropagateTrace {
    /// Adds the current span's `traceparent` header (nothing when tracing is off).
    fn with_trace(self) -> Self;
}

impl PropagateTrace for reqwest::RequestBuilder {
    fn with_trace(self) -> Self {
        match current_traceparent() {
            Some(traceparent) => self.header(TRACEPARENT, traceparent),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips_through_a_context() {
        let cx = context_from(SAMPLED).expect("a valid traceparent");
        let span = cx.span();
        let span_context = span.span_context();
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span_context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span_context.is_sampled());
        assert!(span_context.is_remote());
        assert_eq!(traceparent_of(&cx).as_deref(), Some(SAMPLED));

        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let cx = context_from(unsampled).expect("an unsampled parent is still a parent");
        assert_eq!(traceparent_of(&cx).as_deref(), Some(unsampled));
    }

    #[test]
    fn invalid_traceparents_name_no_parent() {
        for bad in [
            "",
            "garbage",
            // all-zero trace id and span id are invalid (W3C trace context, 3.2.2.3 and 3.2.2.4)
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff is forbidden
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // too short, upper case, a field too many
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
        ] {
            assert!(context_from(bad).is_none(), "{bad:?} must not parse");
        }
        assert_eq!(traceparent_of(&Context::new()), None);
    }

    #[test]
    fn without_an_exporter_nothing_is_propagated() {
        // No test enables tracing: the helpers must then be inert.
        assert!(!enabled());
        assert_eq!(current_traceparent(), None);
        let mut headers = HeaderMap::new();
        inject_headers(&mut headers);
        assert!(headers.is_empty());
        let request = reqwest::Client::new()
            .get("http://127.0.0.1:9/")
            .with_trace()
            .build()
            .expect("a request");
        assert!(request.headers().get(TRACEPARENT).is_none());
    }
}
