//! Configuration from flags or environment variables; defaults are the local stack (`cargo xtask up`).

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "distlab-lock", version, about = "distlab lock service")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8084")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the pg backend (migrations are applied at start-up).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/locks"
    )]
    pub database_url: String,
    /// Size of the database connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// The redis backend's instance.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:16379")]
    pub redis_url: String,
    /// RedLock's independent instances, comma-separated (3 or 5 is usual).
    #[arg(
        long,
        env = "REDLOCK_URLS",
        default_value = "redis://127.0.0.1:16379,redis://127.0.0.1:16380,redis://127.0.0.1:16381"
    )]
    pub redlock_urls: String,
    /// How long RedLock waits for one instance before counting it as down.
    #[arg(long, env = "REDLOCK_INSTANCE_TIMEOUT_MS", default_value_t = 100)]
    pub redlock_instance_timeout_ms: u64,
    /// ZooKeeper connection string.
    #[arg(long, env = "ZOOKEEPER", default_value = "127.0.0.1:12181")]
    pub zookeeper: String,
    /// The ZooKeeper directory under which each lock is a directory of lease nodes.
    #[arg(long, env = "ZOOKEEPER_ROOT", default_value = "/distlab/locks")]
    pub zookeeper_root: String,
}

impl Config {
    /// The local stack's settings, as if no flag or variable were given.
    pub fn local() -> Self {
        <Self as clap::Parser>::parse_from(["distlab-lock"])
    }

    pub fn redlock_urls(&self) -> Vec<String> {
        self.redlock_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn redlock_instance_timeout(&self) -> Duration {
        Duration::from_millis(self.redlock_instance_timeout_ms)
    }
}
