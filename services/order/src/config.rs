//! Configuration from flags or environment variables; defaults are the local stack (`cargo xtask up`).

use std::net::SocketAddr;

use distlab_messaging::kafka::KafkaArgs;
use distlab_twopc::faults::AdminArgs;

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
    /// Mode of an order whose request names none.
    #[arg(long, env = "DEFAULT_ORDER_MODE", value_enum, default_value_t = Mode::Outbox)]
    pub default_mode: Mode,
    /// Base URL of the 2PC coordinator (for `"mode": "2pc"` orders).
    #[arg(long, env = "COORDINATOR_URL", default_value = "http://127.0.0.1:8083")]
    pub coordinator_url: String,
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
            admin: AdminArgs::off(),
        }
    }
}
