//! A small OTLP receiver for tests: an HTTP server on `127.0.0.1:0` that accepts OTLP/HTTP protobuf
//! (`POST /v1/traces`) and keeps every span it was sent, so a test can check the traces services export.
//!
//! Point a service at it with `OTEL_EXPORTER_OTLP_ENDPOINT=`[`OtlpReceiver::endpoint`], then poll
//! [`OtlpReceiver::spans`] (with [`crate::eventually`]) until the spans a test expects have arrived;
//! [`connected`] checks that spans form one trace.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One span as the receiver got it (ids in lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The `service.name` of the resource that sent it.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a span without parent.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// The names of the span's events (a `tracing` event inside the span is one, named by its message).
    pub events: Vec<String>,
}

impl std::fmt::Display for ReceivedSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({} <- {})",
            self.service,
            self.name,
            self.span_id,
            self.parent_span_id.as_deref().unwrap_or("-")
        )
    }
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The receiver; it stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Spans,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts receiving on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the OTLP receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let spans = Spans::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            spans,
            server,
        }
    }

    /// The value of `OTEL_EXPORTER_OTLP_ENDPOINT` that sends traces here.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The spans received so far of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let received = decode(request);
    spans
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(received);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// The spans of an export request, each with its resource's `service.name`.
pub fn decode(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex::encode(&span.parent_span_id)),
                    name: span.name,
                    events: span.events.into_iter().map(|e| e.name).collect(),
                });
            }
        }
    }
    out
}

/// Checks that `spans` are ONE connected trace: one trace id, exactly one root (a span whose parent is not
/// among them — none, or a caller that is not traced here), and every span reachable from that root through
/// parent ids. Returns the root, or why not.
pub fn connected(spans: &[ReceivedSpan]) -> Result<&ReceivedSpan, String> {
    let listing = || {
        spans
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    if traces.len() != 1 {
        return Err(format!(
            "{} trace ids among the spans:\n{}",
            traces.len(),
            listing()
        ));
    }
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .collect();
    let [root] = roots[..] else {
        return Err(format!(
            "{} roots (spans whose parent is not in the trace), not one:\n{}",
            roots.len(),
            listing()
        ));
    };
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for span in spans {
        if let Some(parent) = &span.parent_span_id {
            children
                .entry(parent.as_str())
                .or_default()
                .push(&span.span_id);
        }
    }
    let mut reached = HashSet::from([root.span_id.as_str()]);
    let mut todo = vec![root.span_id.as_str()];
    while let Some(id) = todo.pop() {
        for child in children.get(id).into_iter().flatten() {
            if reached.insert(child) {
                todo.push(child);
            }
        }
    }
    if reached.len() != ids.len() {
        return Err(format!(
            "{} of {} spans are not reachable from the root {root}:\n{}",
            ids.len() - reached.len(),
            ids.len(),
            listing()
        ));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>) -> ReceivedSpan {
        ReceivedSpan {
            service: "order".into(),
            trace_id: "t1".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: id.into(),
            events: vec![],
        }
    }

    #[test]
    fn a_tree_is_connected_and_its_root_may_have_an_outside_parent() {
        let spans = [
            span("a", Some("caller")),
            span("b", Some("a")),
            span("c", Some("b")),
            span("d", Some("a")),
        ];
        assert_eq!(connected(&spans).unwrap().span_id, "a");
    }

    #[test]
    fn two_roots_or_two_traces_are_not_one_trace() {
        let spans = [span("a", None), span("b", Some("a")), span("c", Some("x"))];
        assert!(connected(&spans).unwrap_err().contains("2 roots"));
        let mut other = span("b", Some("a"));
        other.trace_id = "t2".into();
        assert!(
            connected(&[span("a", None), other])
                .unwrap_err()
                .contains("2 trace ids")
        );
    }

    #[tokio::test]
    async fn the_receiver_decodes_otlp_http_protobuf() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};

        let receiver = OtlpReceiver::start().await;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(Any {
                            value: Some(AnyValue::StringValue("inventory".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        parent_span_id: vec![],
                        name: "consume OrderPlaced".into(),
                        events: vec![Event {
                            name: "fault hit".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let response = reqwest::Client::new()
            .post(format!("{}/v1/traces", receiver.endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        assert_eq!(
            receiver.spans(),
            [ReceivedSpan {
                service: "inventory".into(),
                trace_id: "ab".repeat(16),
                span_id: "01".repeat(8),
                parent_span_id: None,
                name: "consume OrderPlaced".into(),
                events: vec!["fault hit".into()],
            }]
        );
    }
}
