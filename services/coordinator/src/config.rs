//! Configuration from flags or environment variables; defaults are the local stack (`cargo xtask up`).

use std::net::SocketAddr;
use std::time::Duration;

use distlab_twopc::faults::AdminArgs;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "distlab-coordinator",
    version,
    about = "distlab 2PC coordinator"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the decision log (migrations are applied at start-up).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/coordinator"
    )]
    pub database_url: String,
    /// Size of the database connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// The participants, `name=url` comma-separated, in the order phase 2 visits them.
    #[arg(
        long,
        env = "PARTICIPANTS",
        default_value = "order=http://127.0.0.1:8081,inventory=http://127.0.0.1:8082"
    )]
    pub participants: String,
    /// How long a participant may take to vote; a missing vote is a no.
    #[arg(long, env = "PREPARE_TIMEOUT_MS", default_value_t = 5000)]
    pub prepare_timeout_ms: u64,
    /// How long one phase-2 message may take before it is retried.
    #[arg(long, env = "PHASE2_TIMEOUT_MS", default_value_t = 2000)]
    pub phase2_timeout_ms: u64,
    /// A transaction still undecided this long after it began is aborted by recovery (presumed abort).
    #[arg(long, env = "TRANSACTION_TIMEOUT_MS", default_value_t = 15000)]
    pub transaction_timeout_ms: u64,
    /// How often recovery and the reconciler run.
    #[arg(long, env = "RECOVERY_INTERVAL_MS", default_value_t = 1000)]
    pub recovery_interval_ms: u64,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// A participant of every global transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
}

impl Config {
    /// The local stack's settings, as if no flag or variable were given.
    pub fn local() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            database_url: "postgres://postgres@127.0.0.1:15432/coordinator".into(),
            database_max_connections: 16,
            participants: "order=http://127.0.0.1:8081,inventory=http://127.0.0.1:8082".into(),
            prepare_timeout_ms: 5000,
            phase2_timeout_ms: 2000,
            transaction_timeout_ms: 15000,
            recovery_interval_ms: 1000,
            admin: AdminArgs::off(),
        }
    }

    /// The parsed `participants`.
    pub fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        let endpoints: Vec<Endpoint> = self
            .participants
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let (name, url) = entry
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("participant {entry:?} is not name=url"))?;
                Ok(Endpoint {
                    name: name.trim().to_owned(),
                    url: url.trim().trim_end_matches('/').to_owned(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(!endpoints.is_empty(), "no participants configured");
        Ok(endpoints)
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            prepare: Duration::from_millis(self.prepare_timeout_ms),
            phase2: Duration::from_millis(self.phase2_timeout_ms),
            transaction: Duration::from_millis(self.transaction_timeout_ms),
            recovery_interval: Duration::from_millis(self.recovery_interval_ms),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub prepare: Duration,
    pub phase2: Duration,
    pub transaction: Duration,
    pub recovery_interval: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_parse_as_name_url_pairs() {
        let mut config = Config::local();
        config.participants = "order=http://a:1/, inventory = http://b:2".into();
        let endpoints = config.endpoints().unwrap();
        assert_eq!(
            endpoints[0],
            Endpoint {
                name: "order".into(),
                url: "http://a:1".into()
            }
        );
        assert_eq!(
            endpoints[1],
            Endpoint {
                name: "inventory".into(),
                url: "http://b:2".into()
            }
        );
        config.participants = "nonsense".into();
        assert!(config.endpoints().is_err());
    }
}
