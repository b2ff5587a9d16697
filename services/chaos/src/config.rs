//! Configuration from flags or environment variables; defaults are the local stack (`cargo xtask up`).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "distlab-chaos",
    version,
    about = "distlab chaos sidecar: Toxiproxy-compatible fault proxies, partitions, and the CAP/BASE switchboard"
)]
pub struct Config {
    /// Address of the admin API (loopback by default: whoever reaches it can break the stack).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8474")]
    pub listen: SocketAddr,
    /// When set, every admin route but /healthz, /readyz and /metrics wants `Authorization: Bearer <token>`.
    #[arg(long, env = "CHAOS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Proxies to create at start-up: a JSON array as for `POST /populate` (Toxiproxy's `-config`).
    #[arg(long, env = "CHAOS_PROXIES_FILE")]
    pub proxies_file: Option<PathBuf>,
    /// The config service's nodes, where switches are stored (comma-separated base URLs).
    #[arg(
        long,
        env = "CONFIG_URLS",
        default_value = "http://127.0.0.1:8091,http://127.0.0.1:8092,http://127.0.0.1:8093"
    )]
    pub config_urls: String,
}

impl Config {
    /// The local stack's settings, as if no flag or variable were given.
    pub fn local() -> Self {
        <Self as clap::Parser>::parse_from(["distlab-chaos"])
    }

    pub fn config_urls(&self) -> Vec<String> {
        distlab_config_client::node_urls(&self.config_urls)
    }
}
