//! The 2PC coordinator (协调者) of the seed's section 二.
//!
//! `POST /transactions` runs a global transaction over the configured participants ([`driver`]): it logs
//! the transaction, collects the votes (准备阶段), logs the decision **before** anyone hears it, then tells
//! every participant (提交阶段). [`recovery`] finishes whatever a crash or a lost message left undone and
//! reconciles the participants' prepared transactions with the [`log`]. Fault switches on
//! `/admin/faults` reproduce the seed's four problems: blocking, the single point of failure,
//! inconsistency, and over-conservatism.

pub mod config;
pub mod driver;
pub mod http;
pub mod log;
pub mod machine;
pub mod recovery;

use std::net::SocketAddr;

use anyhow::Context;
use distlab_platform::http::{ReadinessCheck, Service, ServiceInfo, service_router};
use distlab_twopc::faults::Faults;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use driver::Coordinator;

/// The decision log's schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/coordinator");

/// A built coordinator, ready to run.
#[derive(Debug)]
pub struct Application {
    service: Service,
    coordinator: Coordinator,
}

impl Application {
    /// Connects and migrates the log, binds the listener and prepares recovery.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        distlab_platform::metrics::install();
        let pool =
            distlab_platform::db::connect(&config.database_url, config.database_max_connections)
                .await?;
        MIGRATOR
            .run(&pool)
            .await
            .context("cannot migrate the coordinator's log")?;
        let endpoints = config.endpoints()?;
        let shutdown = CancellationToken::new();
        let faults = config
            .admin
            .faults(driver::fault_points(&endpoints), &shutdown);
        let coordinator =
            Coordinator::new(pool.clone(), endpoints, config.timeouts(), faults.clone());
        let router = service_router(
            http::router(coordinator.clone()).merge(config.admin.router(faults)),
            ServiceInfo {
                openapi: http::openapi(),
                readiness: vec![ReadinessCheck::postgres("coordinator-db", pool)],
            },
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let service = Service::new(listener, router, shutdown.clone())
            .with_task(recovery::run(coordinator.clone(), shutdown));
        Ok(Self {
            service,
            coordinator,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    /// This coordinator's fault switches (tests, chaos).
    pub fn faults(&self) -> Faults {
        self.coordinator.faults.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.service
            .run_until_stopped()
            .await
            .context("coordinator failed")
    }
}
