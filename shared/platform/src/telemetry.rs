//! `tracing` set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` for one JSON object per line.
//!
//! Tests call [`init_for_tests`], which prints only when `TEST_LOG` is set, so a green run stays quiet and a
//! red one can be re-run with logs.

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str =
    "info,sqlx=warn,rdkafka=warn,tower_http=warn,zookeeper_client=warn,openraft=warn";

/// Sets the global subscriber for a service process.
pub fn init(service: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
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
