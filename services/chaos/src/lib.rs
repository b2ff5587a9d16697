//! The chaos sidecar: break any link of the running stack on purpose, watch what each pattern does, heal it.
//!
//! Every cross-process link of the local stack goes through a proxy of this process, named after the link
//! (`order->orders-db`, `coordinator->inventory`, `config-1->config-2`, …): clients are configured with the
//! proxy's address, the servers keep their ports. The admin API ([`api`]) speaks Toxiproxy's REST API, so
//! its client libraries drive it unchanged, and goes past Toxiproxy where its users asked for more:
//!
//! - **HTTP-aware toxics** on proxies with `"protocol": "http"` ([`http_proxy`]): `http_error` and
//!   `http_latency` by path prefix and method, request by request on keep-alive and pipelined connections;
//! - **Kafka links** on proxies with `"protocol": "kafka"` ([`kafka`]): the broker's advertised address in
//!   its metadata answers is replaced by the proxy's, so each client stays on the link it started from;
//! - **partitions by part name** ([`partition`]): `POST /partitions` cuts every link between two sides,
//!   both directions, open and new connections, either holding the bytes (`hold`) or resetting (`reset`);
//! - **a fault log** ([`events`]): `GET /events`, Prometheus counters, and a log line per hit naming the
//!   link, the fault, the connection and, for HTTP toxics, the request id;
//! - **the switchboard** ([`switches`]): `PUT /switches/{name}` stores `cap_mode` and `degrade` in the Raft
//!   config service, which every replica follows.
//!
//! How bytes move: [`proxy`] accepts and connects, [`pump`] copies one direction through the faults that
//! [`faults`] computes from the link's toxics ([`toxic`]) and cuts; [`state`] holds it all.

pub mod api;
pub mod config;
pub mod events;
pub mod faults;
pub mod http_proxy;
pub mod kafka;
pub mod partition;
pub mod proxy;
pub mod pump;
pub mod state;
pub mod switches;
pub mod toxic;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use distlab_platform::http::{ReadinessCheck, Service, ServiceInfo, service_router};
use tokio_util::sync::CancellationToken;

pub use config::Config;
use state::{Chaos, ProxyInput};
use switches::Switchboard;

/// A built sidecar, ready to run.
#[derive(Debug)]
pub struct Application {
    service: Service,
    chaos: Arc<Chaos>,
}

impl Application {
    /// Binds the admin API and creates the proxies of `proxies_file`, if any (a proxy that cannot listen
    /// fails the start: a half-wired stack is worse than none).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        distlab_platform::metrics::install();
        let chaos = Arc::new(Chaos::default());
        if let Some(path) = &config.proxies_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let list: Vec<serde_json::Value> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON array of proxies", path.display()))?;
            let inputs = list
                .iter()
                .map(ProxyInput::parse)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("a proxy in {} is invalid", path.display()))?;
            let created = chaos
                .populate(inputs)
                .await
                .with_context(|| format!("cannot create the proxies of {}", path.display()))?;
            tracing::info!(proxies = created.len(), file = %path.display(), "proxies created");
        }
        let state = api::AppState {
            chaos: chaos.clone(),
            switches: Arc::new(
                Switchboard::new(config.config_urls()).context("cannot build the config client")?,
            ),
        };
        let router = service_router(
            api::router(state, config.admin_token.clone()),
            ServiceInfo {
                openapi: api::openapi(),
                readiness: vec![proxies_check(chaos.clone())],
            },
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Self {
            service: Service::new(listener, router, CancellationToken::new()),
            chaos,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    /// The state behind the admin API (tests).
    pub fn chaos(&self) -> Arc<Chaos> {
        self.chaos.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.service.run_until_stopped().await;
        self.chaos.stop_all().await;
        result.context("chaos sidecar failed")
    }
}

/// `/readyz` detail: how many proxies listen. The sidecar needs nothing else to do its job (the config
/// service matters only for switches, which answer 503 on their own when it is down).
fn proxies_check(chaos: Arc<Chaos>) -> ReadinessCheck {
    ReadinessCheck::with_detail("proxies", move || {
        let chaos = chaos.clone();
        async move {
            let proxies = chaos.proxies().await;
            let enabled = proxies.values().filter(|p| p.enabled).count();
            Ok(serde_json::json!(format!(
                "{} proxies, {enabled} enabled",
                proxies.len()
            )))
        }
    })
}
