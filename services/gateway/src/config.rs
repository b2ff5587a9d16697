//! Configuration from flags or environment variables; defaults are the local stack (`cargo xtask up`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::degrade::DegradeMode;

/// The config service nodes of the local stack.
pub const LOCAL_CONFIG_URLS: &str =
    "http://127.0.0.1:8091,http://127.0.0.1:8092,http://127.0.0.1:8093";

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "distlab-gateway",
    version,
    about = "distlab storefront gateway"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base URL of the inventory service (the catalog and its stock).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8082")]
    pub inventory_url: String,
    /// Base URL of the order service (checkout, order pages, bestsellers).
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8081")]
    pub order_url: String,
    /// Base URLs of the config service nodes, comma-separated: the `degrade` switch is followed there.
    /// Empty: DEGRADE alone decides.
    #[arg(long, env = "CONFIG_URLS", default_value = LOCAL_CONFIG_URLS)]
    pub config_urls: String,
    /// The degrade mode until the `degrade` switch holds a valid value.
    #[arg(long, env = "DEGRADE", value_enum, default_value_t = DegradeMode::Auto)]
    pub degrade: DegradeMode,
    /// The shop shows the products whose SKU starts with this (not every product a test created).
    #[arg(long, env = "CATALOG_PREFIX", default_value = "shop-")]
    pub catalog_prefix: String,
    /// How long a guarded call to the inventory may take (`degrade=auto|on`).
    #[arg(long, env = "INVENTORY_TIMEOUT_MS", default_value_t = 400,
          value_parser = clap::value_parser!(u64).range(10..=30_000))]
    pub inventory_timeout_ms: u64,
    /// How long a guarded call to the order service may take (a 2PC checkout needs the longest).
    #[arg(long, env = "ORDER_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(10..=30_000))]
    pub order_timeout_ms: u64,
    /// How long the bestsellers panel may take (it is dropped after that: the non-core part goes first).
    #[arg(long, env = "BESTSELLERS_TIMEOUT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(10..=30_000))]
    pub bestsellers_timeout_ms: u64,
    /// How often the last known catalog is refreshed in the background (it backs degraded pages).
    #[arg(long, env = "CATALOG_REFRESH_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub catalog_refresh_ms: u64,
    /// The console: base URL of the chaos sidecar's admin API (faults, partitions, switches; its controls
    /// go there).
    #[arg(long, env = "CHAOS_URL", default_value = "http://127.0.0.1:8474")]
    pub chaos_url: String,
    /// The console: the sidecar's admin token, sent as `Authorization: Bearer` (never to the browser).
    #[arg(long, env = "CHAOS_ADMIN_TOKEN", hide_env_values = true)]
    pub chaos_admin_token: Option<String>,
    /// The console: base URL of the 2PC coordinator (in-doubt transactions).
    #[arg(long, env = "COORDINATOR_URL", default_value = "http://127.0.0.1:8083")]
    pub coordinator_url: String,
    /// The console: base URL of the lock service (held locks and their fencing tokens).
    #[arg(long, env = "LOCK_URL", default_value = "http://127.0.0.1:8084")]
    pub lock_url: String,
    /// The console: base URL of the order service, reached directly (not through `gateway->order`), so
    /// that a fault on the shop's link does not blind the console.
    #[arg(
        long,
        env = "CONSOLE_ORDER_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub console_order_url: String,
    /// The console: how long each source may take to answer before it shows as unreachable.
    #[arg(long, env = "CONSOLE_SOURCE_TIMEOUT_MS", default_value_t = 400,
          value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub console_source_timeout_ms: u64,
}

impl Config {
    /// The local stack's settings, as if no flag or variable were given.
    pub fn local() -> Self {
        <Self as clap::Parser>::parse_from(["distlab-gateway"])
    }

    pub fn config_urls(&self) -> Vec<String> {
        distlab_config_client::node_urls(&self.config_urls)
    }

    pub fn inventory_timeout(&self) -> Duration {
        Duration::from_millis(self.inventory_timeout_ms)
    }

    pub fn order_timeout(&self) -> Duration {
        Duration::from_millis(self.order_timeout_ms)
    }

    pub fn bestsellers_timeout(&self) -> Duration {
        Duration::from_millis(self.bestsellers_timeout_ms)
    }

    pub fn console_source_timeout(&self) -> Duration {
        Duration::from_millis(self.console_source_timeout_ms)
    }

    pub fn catalog_refresh(&self) -> Duration {
        Duration::from_millis(self.catalog_refresh_ms)
    }
}
