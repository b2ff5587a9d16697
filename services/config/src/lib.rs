//! The config service: a key-value store replicated with Raft (seed, 六 Raft) — the place the other
//! services read their runtime switches from (the order service's default mode, later CP/AP and
//! degradation switches).
//!
//! Each process is one node. [`raft`] runs openraft over [`store`] (log in redb, state machine in memory with
//! file snapshots) and [`network`] (JSON over HTTP); [`kv`] is the state machine itself, plain Rust;
//! [`http`] serves the client API, management and the Raft RPC on one port; [`gauges`] exports the node's
//! Raft state to `/metrics`.

pub mod gauges;
pub mod http;
pub mod kv;
pub mod network;
pub mod raft;
pub mod settings;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use distlab_platform::http::{ReadinessCheck, Service, ServiceInfo, service_router};
use tokio_util::sync::CancellationToken;

pub use raft::Node;
pub use settings::Settings;

/// A built node, ready to serve.
#[derive(Debug)]
pub struct Application {
    service: Service,
    node: Node,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        distlab_platform::metrics::install();
        let initial_members = settings.initial_members().context("INITIAL_MEMBERS")?;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let node = Node::start(&settings).await.with_context(|| {
            format!(
                "cannot start the Raft node in {}",
                settings.data_dir.display()
            )
        })?;
        let shutdown = CancellationToken::new();
        tokio::spawn(gauges::export(node.clone(), shutdown.clone()));
        let state = http::AppState {
            node: node.clone(),
            admin_token: Arc::from(settings.admin_token.as_str()),
            initial_members,
            shutdown: shutdown.clone(),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(500))
                // Longer than any handler may take (membership changes wait up to 10 s).
                .timeout(
                    settings.quorum_timeout().max(Duration::from_secs(10)) + Duration::from_secs(5),
                )
                .build()?,
        };
        let router = service_router(
            http::router(state),
            ServiceInfo {
                openapi: http::openapi(),
                readiness: vec![readiness(&node)],
            },
        );
        let service = Service::new(listener, router, shutdown);
        Ok(Self { service, node })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Serves until the shutdown token is cancelled; Raft stops only once in-flight requests are done, so
    /// that none of them sees its write cut off halfway.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.service.run_until_stopped().await;
        if let Err(error) = self.node.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
        served.context("config node failed")
    }
}

/// `/readyz`: ready while the node knows a leader (itself or another) that heard from a majority lately.
fn readiness(node: &Node) -> ReadinessCheck {
    let node = node.clone();
    ReadinessCheck::with_detail("raft", move || {
        let status = node.status();
        async move {
            let detail = serde_json::json!({
                "state": status.state, "leader": status.leader, "term": status.term,
            });
            if status.state == "shutdown" {
                Err("the Raft node has stopped (see the log)".to_owned())
            } else if status.members.is_empty() {
                Err("not initialised: POST /v1/cluster/init".to_owned())
            } else if status.leader.is_none() {
                Err(format!("no leader known at term {}", status.term))
            } else {
                Ok(detail)
            }
        }
    })
}
