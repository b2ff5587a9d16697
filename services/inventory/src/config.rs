//! Configuration from flags or environment variables; defaults are the local stack (`cargo xtask up`).

use std::net::SocketAddr;

use distlab_messaging::kafka::KafkaArgs;
use distlab_twopc::faults::AdminArgs;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "distlab-inventory",
    version,
    about = "distlab inventory service"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the inventory database (migrations are applied at start-up).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:15433/inventory"
    )]
    pub database_url: String,
    /// Size of the database connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of the OrderPlaced consumer; replicas share it.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "inventory")]
    pub consumer_group: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl Config {
    /// The local stack's settings, as if no flag or variable were given.
    pub fn local() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            database_url: "postgres://postgres@127.0.0.1:15433/inventory".into(),
            database_max_connections: 16,
            kafka: KafkaArgs::local(),
            consumer_group: "inventory".into(),
            admin: AdminArgs::off(),
        }
    }
}
