//! Configuration from flags or environment variables; defaults are the local stack (`cargo xtask up`).
//!
//! [`Settings`] is everything the binary reads: the service's [`Config`] and, apart from it,
//! [`ConfigServiceArgs`] — where the runtime switches live (the Raft config service) and which key holds
//! the default order mode (see [`crate::runtime_config`]).

use std::net::SocketAddr;

use distlab_messaging::kafka::KafkaArgs;
use distlab_twopc::faults::AdminArgs;

use crate::cap::CapMode;
use crate::orders::Mode;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "distlab-order", version, about = "distlab order service")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the orders database (migrations are applied at start-up).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/orders"
    )]
    pub database_url: String,
    /// Size of the database connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub database_max_connections: u32,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of the inventory-events consumer; replicas share it.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "order")]
    pub consumer_group: String,
    /// Mode of an order whose request names none, until (and unless) the config service says otherwise
    /// (CONFIG_URLS, CONFIG_MODE_KEY).
    #[arg(long, env = "DEFAULT_ORDER_MODE", value_enum, default_value_t = Mode::Outbox)]
    pub default_mode: Mode,
    /// Base URL of the 2PC coordinator (for `"mode": "2pc"` orders).
    #[arg(long, env = "COORDINATOR_URL", default_value = "http://127.0.0.1:8083")]
    pub coordinator_url: String,
    /// Milliseconds an outbox order may wait for the inventory's answer before its OrderPlaced is sent
    /// again (in case the broker lost it); the wait doubles after each redelivery, up to 5 minutes.
    #[arg(long, env = "REDELIVER_AFTER_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub redeliver_after_ms: u64,
    /// Base URL of the inventory service: in CP mode a stock read is read through to it (`GET /stock`).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8082")]
    pub inventory_url: String,
    /// The CAP mode while the `cap_mode` switch is not set in the config service (or it is not followed).
    #[arg(long, env = "CAP_MODE", value_enum, default_value_t = CapMode::Cp)]
    pub cap_mode: CapMode,
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl Config {
    /// The local stack's settings, as if no flag or variable were given.
    pub fn local() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database_url: "postgres://postgres@127.0.0.1:15432/orders".into(),
            database_max_connections: 32,
            kafka: KafkaArgs::local(),
            consumer_group: "order".into(),
            default_mode: Mode::Outbox,
            coordinator_url: "http://127.0.0.1:8083".into(),
            redeliver_after_ms: 15_000,
            inventory_url: "http://127.0.0.1:8082".into(),
            cap_mode: CapMode::Cp,
            admin: AdminArgs::off(),
        }
    }

    /// How long an outbox order waits for its answer before its `OrderPlaced` is sent again.
    pub fn redeliver_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.redeliver_after_ms)
    }
}

/// Everything the `distlab-order` binary reads from its flags and environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "distlab-order", version, about = "distlab order service")]
pub struct Settings {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub config_service: ConfigServiceArgs,
}

/// Key of the default order mode in the config service.
pub const DEFAULT_MODE_KEY: &str = "distlab/order/default_mode";

/// The config service nodes of the local stack.
pub const LOCAL_CONFIG_URLS: &str =
    "http://127.0.0.1:8091,http://127.0.0.1:8092,http://127.0.0.1:8093";

/// Where the default order mode is followed at run time: the config service (Raft, `services/config`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ConfigServiceArgs {
    /// Base URLs of the config service nodes, comma-separated, tried in turn. The default order mode is read
    /// from the first that answers and followed through its watch; while none answers, the last known value
    /// stays in force. Empty: do not follow the config service (DEFAULT_ORDER_MODE alone decides).
    #[arg(long, env = "CONFIG_URLS", default_value = LOCAL_CONFIG_URLS)]
    pub config_urls: String,
    /// Key of the default order mode in the config service; its value is the JSON string "outbox" or "2pc".
    /// A missing key means DEFAULT_ORDER_MODE.
    #[arg(long, env = "CONFIG_MODE_KEY", default_value = DEFAULT_MODE_KEY)]
    pub config_mode_key: String,
}

impl ConfigServiceArgs {
    /// The local stack's config nodes and the shared key.
    pub fn local() -> Self {
        Self {
            config_urls: LOCAL_CONFIG_URLS.into(),
            config_mode_key: DEFAULT_MODE_KEY.into(),
        }
    }

    /// Not following the config service: the default mode is the configured one, for good.
    pub fn off() -> Self {
        Self {
            config_urls: String::new(),
            config_mode_key: DEFAULT_MODE_KEY.into(),
        }
    }

    /// The nodes' base URLs (blanks dropped, no trailing `/`); none means "do not follow".
    pub fn urls(&self) -> Vec<String> {
        distlab_config_client::node_urls(&self.config_urls)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn config_urls_are_split_trimmed_and_may_be_empty() {
        let args = ConfigServiceArgs {
            config_urls: " http://a:1/ ,, http://b:2".into(),
            ..ConfigServiceArgs::local()
        };
        assert_eq!(args.urls(), ["http://a:1", "http://b:2"]);
        assert!(ConfigServiceArgs::off().urls().is_empty());
        assert_eq!(ConfigServiceArgs::local().urls().len(), 3);
    }

    #[test]
    fn flags_default_to_the_local_stack() {
        let settings = Settings::try_parse_from(["distlab-order"]).expect("no flag is required");
        assert_eq!(settings.config_service.config_urls, LOCAL_CONFIG_URLS);
        assert_eq!(settings.config_service.config_mode_key, DEFAULT_MODE_KEY);
        let off = Settings::try_parse_from(["distlab-order", "--config-urls", ""])
            .expect("an empty list is allowed");
        assert!(off.config_service.urls().is_empty());
    }
}
