//! The HTTP edge every distlab service shares: middleware, health and readiness, serving and shutdown.
//!
//! A service builds its own resource routers, then calls [`service_router`] to add `/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`, a JSON 404/405, and the middleware stack: request ids (`x-request-id`, made
//! when missing and echoed back), a tracing span per request (a child of the caller's span when the request
//! carries a `traceparent`, see [`crate::trace`]), a per-request timeout (so graceful shutdown cannot hang
//! on a stuck request), panics turned into a logged 500, and Prometheus metrics labelled by the *matched*
//! route (never by raw path, which would explode cardinality).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Router};
use futures::future::join_all;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::trace::SpanKind;

/// How long one request may take before it is answered with 503 `timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one readiness probe may take before its dependency counts as down.
pub const READINESS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

type ProbeFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

/// One dependency that `/readyz` asks: a name and an async probe.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    probe: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ReadinessCheck {
    /// A check whose success shows as `"ok"`.
    pub fn new<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self::with_detail(name, move || {
            let probe = probe();
            async move { probe.await.map(|()| json!("ok")) }
        })
    }

    /// A check whose success carries details (e.g. how old the oldest prepared transaction is).
    pub fn with_detail<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        Self {
            name,
            probe: Arc::new(move || Box::pin(probe())),
        }
    }

    /// `SELECT 1` on the pool.
    pub fn postgres(name: &'static str, pool: sqlx::PgPool) -> Self {
        Self::new(name, move || {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
    }

    async fn run(&self) -> Result<Value, String> {
        match tokio::time::timeout(READINESS_PROBE_TIMEOUT, (self.probe)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {READINESS_PROBE_TIMEOUT:?}")),
        }
    }
}

/// What a service hands to [`service_router`] besides its own routes.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// The OpenAPI document served at `/openapi.json`.
    pub openapi: Value,
    /// The dependencies `/readyz` checks.
    pub readiness: Vec<ReadinessCheck>,
}

/// axum answers a method a route does not serve with 405 and the `Allow` header HTTP requires; this gives
/// that answer the shared error body and keeps the header.
async fn method_not_allowed_as_error_body(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let mut answer = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
    .into_response();
    if let Some(allow) = allow {
        answer
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    answer
}

/// Adds the shared endpoints and middleware around a service's own routes.
pub fn service_router(routes: Router, info: ServiceInfo) -> Router {
    let mut openapi = info.openapi;
    crate::openapi::document_shared_errors(&mut openapi);
    let openapi = Arc::new(openapi);
    let checks = Arc::new(info.readiness);
    let request_id = HeaderName::from_static("x-request-id");

    routes
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz).with_state(checks))
        .route("/metrics", get(|| async { crate::metrics::render() }))
        .route(
            "/openapi.json",
            get(move || async move { axum::Json((*openapi).clone()) }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::map_response(method_not_allowed_as_error_body))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(
                    |_panic: Box<dyn std::any::Any + Send>| {
                        tracing::error!("request handler panicked");
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal_error",
                            "the server failed to handle the request",
                        )
                        .into_response()
                    },
                ))
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |error: BoxError| async move {
                        if error.is::<tower::timeout::error::Elapsed>() {
                            ApiError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "timeout",
                                "the request took too long",
                            )
                        } else {
                            ApiError::new(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "internal_error",
                                "the server failed to handle the request",
                            )
                        }
                    },
                ))
                .timeout(REQUEST_TIMEOUT)
                .layer(middleware::from_fn(record_metrics)),
        )
}

/// The span of one request: a child of the caller's span when the request carries a `traceparent`, named
/// for OpenTelemetry by its method and matched route (`POST /orders`).
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!("http", method = %request.method(), uri = %request.uri(), request_id = %id,
        otel.name = tracing::field::Empty, otel.kind = tracing::field::Empty);
    if crate::trace::enabled() {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        crate::trace::name_span(
            &span,
            format_args!("{} {route}", request.method()),
            SpanKind::Server,
        );
        crate::trace::set_parent_from_headers(&span, request.headers());
    }
    span
}

async fn readyz(State(checks): State<Arc<Vec<ReadinessCheck>>>) -> Response {
    let results = join_all(
        checks
            .iter()
            .map(|check| async move { (check.name, check.run().await) }),
    )
    .await;
    let mut report = Map::new();
    let mut down = Vec::new();
    for (name, result) in results {
        match result {
            Ok(detail) => {
                report.insert(name.to_owned(), detail);
            }
            Err(reason) => {
                down.push(name);
                report.insert(name.to_owned(), json!(reason));
            }
        }
    }
    if down.is_empty() {
        axum::Json(json!({"status": "ready", "checks": report})).into_response()
    } else {
        ApiError::unavailable(format!("not ready: {} unavailable", down.join(", ")))
            .with_details(json!({"checks": report}))
            .into_response()
    }
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::warn!(%error, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = terminate => {},
            () = token.cancelled() => return,
        }
        tracing::info!("shutdown signal received; draining");
        token.cancel();
    });
}

/// A background task of a service: started by [`Service::run_until_stopped`], stopped by the shutdown token.
pub type BackgroundTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A built service: a bound listener, its router and its background tasks, all stopped by one token.
///
/// `build` binds the listener (port 0 in tests) so the caller knows the address before serving;
/// [`Service::run_until_stopped`] serves until the token is cancelled (SIGTERM, or a test), lets in-flight
/// requests finish, then waits for the background tasks to stop.
pub struct Service {
    listener: TcpListener,
    router: Router,
    tasks: Vec<BackgroundTask>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("listener", &self.listener)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Once `shutdown` is cancelled, requests already running finish, and any new one — even on a
    /// connection that was open before — is answered 503 `shutting_down` instead of being served by a
    /// service that is stopping (or, in tests, has crashed).
    pub fn new(listener: TcpListener, router: Router, shutdown: CancellationToken) -> Self {
        let stopping = shutdown.clone();
        let router = router.layer(middleware::from_fn(move |request: Request, next: Next| {
            let stopping = stopping.clone();
            async move {
                if stopping.is_cancelled() {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting_down",
                        "the service is shutting down",
                    )
                    .with_retry_after(1)
                    .into_response()
                } else {
                    next.run(request).await
                }
            }
        }));
        Self {
            listener,
            router,
            tasks: Vec::new(),
            shutdown,
        }
    }

    /// Adds a background task; it must return once the shutdown token is cancelled.
    pub fn with_task(mut self, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.tasks.push(Box::pin(task));
        self
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains. A background task that ends on its own
    /// (it panicked, or returned early) is a failure of the whole service: it is logged, the service shuts
    /// down and an error is returned, so that a supervisor restarts it rather than leaving a process that
    /// answers `/readyz` but no longer relays or consumes.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for task in self.tasks {
            tasks.spawn(task);
        }
        let shutdown = self.shutdown.clone();
        let server = serve(self.listener, self.router, shutdown.clone());
        tokio::pin!(server);
        let mut failure = None;
        let result = tokio::select! {
            result = &mut server => result,
            ended = tasks.join_next(), if !tasks.is_empty() => {
                if !shutdown.is_cancelled() {
                    let why = match ended {
                        Some(Err(error)) => format!("a background task failed: {error}"),
                        _ => "a background task ended before shutdown".to_owned(),
                    };
                    tracing::error!(%why, "stopping the service");
                    failure = Some(why);
                }
                shutdown.cancel();
                server.await
            }
        };
        shutdown.cancel();
        while let Some(ended) = tasks.join_next().await {
            if let Err(error) = ended {
                tracing::error!(%error, "background task failed");
                failure.get_or_insert_with(|| format!("a background task failed: {error}"));
            }
        }
        match failure {
            Some(why) => Err(std::io::Error::other(why)),
            None => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn service_with(task: impl Future<Output = ()> + Send + 'static) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Service::new(listener, Router::new(), CancellationToken::new()).with_task(task)
    }

    #[tokio::test]
    async fn a_background_task_that_dies_stops_the_service_with_an_error() {
        let service = service_with(async { panic!("consumer crashed") }).await;
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), service.run_until_stopped()).await;
        let error = outcome.expect("the service stops by itself").unwrap_err();
        assert!(
            error.to_string().contains("background task failed"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn cancelling_the_token_drains_and_stops_cleanly() {
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let task_token = shutdown.clone();
        let service = Service::new(listener, Router::new(), shutdown.clone())
            .with_task(async move { task_token.cancelled().await });
        let running = tokio::spawn(service.run_until_stopped());
        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("stops");
        assert!(outcome.unwrap().is_ok());
    }

    #[tokio::test]
    async fn requests_after_the_shutdown_signal_are_refused_with_503() {
        use tower::ServiceExt;
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = Router::new().route("/work", get(|| async { "done" }));
        let service = Service::new(listener, router, shutdown.clone());
        let request = || {
            axum::http::Request::get("/work")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let before = service.router.clone().oneshot(request()).await.unwrap();
        assert_eq!(before.status(), StatusCode::OK);
        shutdown.cancel();
        let after = service.router.clone().oneshot(request()).await.unwrap();
        assert_eq!(after.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(after.into_body(), 4096).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "shutting_down");
    }
}
