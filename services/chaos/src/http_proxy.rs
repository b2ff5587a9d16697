//! The HTTP/1.1 relay of a proxy with `"protocol": "http"`: Toxiproxy's issue #50 (faults that understand
//! HTTP). One client connection gets one upstream connection, as with a byte proxy; hyper parses the
//! requests on both, so keep-alive and pipelined requests are handled one request at a time, in order.
//! Before a request is forwarded the link's HTTP toxics are matched against its method and path:
//! `http_latency` delays it, `http_error` answers it from the proxy (the upstream never sees it). Every
//! response touched by a toxic carries `x-distlab-chaos-fault: <link>/<toxic>`, and every hit is logged
//! with the request's `x-request-id` — which fault hit which request (Toxiproxy #414). When traces are
//! exported, each relayed request is a `chaos.proxy` span in the caller's trace, and each hit (the "fault
//! hit" log line) is an event of that span.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use distlab_platform::trace::{self, SpanKind};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::DuplexStream;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use crate::faults::{ActiveToxic, LinkFaults, jittered};
use crate::toxic::Kind;

/// The header that names the fault on a response a toxic touched.
pub const FAULT_HEADER: &str = "x-distlab-chaos-fault";

type Body = BoxBody<Bytes, hyper::Error>;

/// Serves the client side (`client`, the far end of the pumps' pipe) against `upstream`.
pub async fn serve(
    client: DuplexStream,
    upstream: TcpStream,
    link: String,
    faults: watch::Receiver<Arc<LinkFaults>>,
    connection: u64,
) {
    let (sender, upstream_connection) =
        match hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(upstream)).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::info!(%link, connection, %error, "upstream HTTP handshake failed");
                return;
            }
        };
    let mut upstream_connection = tokio::spawn(upstream_connection);
    let relay = Arc::new(Relay {
        link,
        faults,
        connection,
        sender: Mutex::new(sender),
    });
    let service = hyper::service::service_fn(move |request| {
        let relay = relay.clone();
        async move { relay.handle(request).await }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .pipeline_flush(true)
        .serve_connection(TokioIo::new(client), service);
    tokio::pin!(served);
    let ended = tokio::select! {
        ended = served.as_mut() => ended,
        // The server closed its side (an idle time-out, a restart): close the client's after the request
        // in flight, as a byte proxy would pass the close on.
        _ = &mut upstream_connection => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(connection, %error, "HTTP relay ended");
    }
    upstream_connection.abort();
}

#[derive(Debug)]
struct Relay {
    link: String,
    faults: watch::Receiver<Arc<LinkFaults>>,
    connection: u64,
    sender: Mutex<hyper::client::conn::http1::SendRequest<Incoming>>,
}

impl Relay {
    /// Relays one request in a span of its own when tracing is on: a child of the caller's `traceparent`,
    /// passed on to the upstream as this span's, with an event for each toxic that acts on the request.
    async fn handle(&self, mut request: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
        if !trace::enabled() {
            return self.forward(request).await;
        }
        let span = tracing::info_span!("chaos.proxy", link = %self.link, connection = self.connection,
            method = %request.method(), path = %request.uri().path(),
            otel.name = tracing::field::Empty, otel.kind = tracing::field::Empty);
        trace::name_span(
            &span,
            format_args!("chaos {} {}", self.link, request.method()),
            SpanKind::Server,
        );
        trace::set_parent_from_headers(&span, request.headers());
        span.in_scope(|| trace::inject_headers(request.headers_mut()));
        self.forward(request).instrument(span).await
    }

    async fn forward(&self, request: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let toxics: Vec<Arc<ActiveToxic>> = self
            .faults
            .borrow()
            .toxics
            .iter()
            .filter(|t| t.toxic.kind.is_http())
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for active in toxics {
            let toxic = &active.toxic;
            let matching = match &toxic.kind {
                Kind::HttpError { matching, .. } | Kind::HttpLatency { matching, .. } => matching,
                _ => continue,
            };
            if !matching.matches(&method, &path)
                || (toxic.toxicity < 1.0 && rand::random::<f64>() >= toxic.toxicity)
            {
                continue;
            }
            active
                .event
                .hit_request(self.connection, &method, &path, &request_id);
            touched.push(format!("{}/{}", self.link, toxic.name));
            match &toxic.kind {
                Kind::HttpLatency {
                    latency, jitter, ..
                } => tokio::time::sleep(jittered(*latency, *jitter, rand::random())).await,
                Kind::HttpError { status, body, .. } => {
                    return Ok(self.injected(*status, body.as_deref(), &toxic.name, &touched));
                }
                _ => {}
            }
        }
        let mut sender = self.sender.lock().await;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        drop(sender);
        let (mut parts, body) = response.into_parts();
        if let Ok(value) = touched.join(", ").parse()
            && !touched.is_empty()
        {
            parts.headers.insert(FAULT_HEADER, value);
        }
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// The answer of an `http_error` toxic: its body, or the shared error body naming the fault.
    fn injected(
        &self,
        status: u16,
        body: Option<&str>,
        toxic: &str,
        touched: &[String],
    ) -> Response<Body> {
        let (content_type, body) = match body {
            Some(body) => ("text/plain; charset=utf-8", body.to_owned()),
            None => (
                "application/json",
                json!({"error": {
                    "code": "chaos_http_error",
                    "message": format!("answered by the chaos sidecar: toxic {toxic} on link {}", self.link),
                }})
                .to_string(),
            ),
        };
        let mut response = Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header(FAULT_HEADER, touched.join(", "))
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never: Infallible| match never {})
                    .boxed(),
            )
            .unwrap_or_else(|_| Response::new(BoxBody::default()));
        if status == 503 {
            response
                .headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
        }
        response
    }
}
