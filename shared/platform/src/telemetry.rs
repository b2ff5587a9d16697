//! `tracing` set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` for one JSON object per line,
//! and OpenTelemetry traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (docs/observability.md, "Traces").
//!
//! With an endpoint, the process's `tracing` spans (as `RUST_LOG` lets them through) are exported as OTLP
//! over HTTP (protobuf, `POST {endpoint}/v1/traces`) by the SDK's batch processor, from a thread of its own;
//! `service.name` is the service's name. The exporter's standard variables apply (`OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`…). Without one, nothing is installed:
//! no exporter, no thread, no header on outgoing calls ([`crate::trace`]).
//!
//! Tests call [`init_for_tests`], which prints only when `TEST_LOG` is set, so a green run stays quiet and a
//! red one can be re-run with logs.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const DEFAULT_FILTER: &str =
    "info,sqlx=warn,rdkafka=warn,tower_http=warn,zookeeper_client=warn,openraft=warn";

/// The variable that turns trace export on: the OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`.
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps the trace exporter of a process; dropping it flushes the spans not yet exported and stops it.
/// Hold it in `main` until the service has stopped.
#[must_use = "dropping the guard stops the trace exporter"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("cannot flush the last spans: {error}");
        }
    }
}

/// The OTLP endpoint, if trace export is asked for (set and not blank).
fn otlp_endpoint() -> Option<String> {
    std::env::var(OTLP_ENDPOINT_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The tracer provider exporting this service's spans over OTLP/HTTP.
fn tracer_provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// Sets the global subscriber for a service process and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the
/// trace exporter. Keep the returned guard until the process ends.
pub fn init(service: &str) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(ansi);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    let (provider, failure) = match otlp_endpoint().map(|_| tracer_provider(service)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service.to_owned()))
            .boxed()
    });
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if result.is_ok() {
        if provider.is_some() {
            crate::trace::enable();
        }
        tracing::info!(
            service,
            traces = provider.is_some(),
            "telemetry initialised"
        );
        if let Some(error) = failure {
            tracing::warn!(%error, "{OTLP_ENDPOINT_VAR} is set but the trace exporter cannot be built; no traces");
        }
    }
    Telemetry { provider }
}

/// Sets a subscriber that writes to the test harness's captured output, only when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}
