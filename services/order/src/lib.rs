//! The order service: where an order is placed and where it learns its fate.
//!
//! Its half of the seed's 本地消息表 flow (section 二):
//!
//! 1. `POST /orders` writes the order (PENDING) and an `OrderPlaced` message into the orders database's
//!    outbox in **one local transaction** ([`store::place`]) and answers 202;
//! 2. the outbox relay publishes `OrderPlaced` to `order-events` (at least once);
//! 3. the inventory service reserves stock and answers on `inventory-events`;
//! 4. [`confirmation`] applies the answer: CONFIRMED, or REJECTED with the reason.
//!
//! HTTP (see [`http`]): `POST /orders` (with `Idempotency-Key`), `GET /orders/{id}`, `GET /orders`.
//!
//! The mode of an order whose request names none is followed live from the config service
//! ([`runtime_config`]); `/readyz` shows it, and whether it is fresh, under `config`.

pub mod cap;
pub mod config;
pub mod confirmation;
pub mod error;
pub mod http;
pub mod orders;
pub mod redelivery;
pub mod replica;
pub mod runtime_config;
pub mod stock;
pub mod store;
pub mod two_phase;

#[cfg(test)]
mod router_tests;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use distlab_messaging::consumer::ConsumerStats;
use distlab_messaging::outbox::RelayFaults;
use distlab_messaging::service::{self, Database, Parts};
use distlab_platform::http::Service;
use distlab_twopc::faults::Faults;
use distlab_twopc::participant::Participant;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigServiceArgs, Settings};
use distlab_config_client::Follower;
use runtime_config::DefaultMode;

/// The orders database's own schema (the messaging tables come from `distlab_messaging::service`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/orders");

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub order_events_topic: String,
    /// The mode of an order whose request names none (followed from the config service).
    pub default_mode: DefaultMode,
    /// This service's 2PC participant (the order branch).
    pub participant: Arc<Participant<two_phase::OrderBranch>>,
    pub coordinator_url: String,
    pub http: reqwest::Client,
    /// How long an outbox order waits for its answer before its `OrderPlaced` is sent again.
    pub redeliver_after: std::time::Duration,
    /// The CAP mode in force (followed from the `cap_mode` switch).
    pub cap: cap::CapSwitch,
    /// Base URL of the inventory (CP stock reads).
    pub inventory_url: String,
}

/// A built order service, ready to run. See [`distlab_platform::http::Service`].
#[derive(Debug)]
pub struct Application {
    service: Service,
    pool: PgPool,
    relay_faults: RelayFaults,
    consumer_stats: ConsumerStats,
    faults: Faults,
    default_mode: DefaultMode,
}

impl Application {
    /// Connects, migrates, creates the topics, binds the listener and prepares the relay and consumer.
    /// The default order mode is `config.default_mode`, for good: the config service is not followed
    /// (see [`Application::build_with`]).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, ConfigServiceArgs::off()).await
    }

    /// As [`Application::build`], and, unless `config_service` names no node, follows the default order
    /// mode in the config service (a background task; see [`runtime_config`]).
    pub async fn build_with(
        config: Config,
        config_service: ConfigServiceArgs,
    ) -> anyhow::Result<Self> {
        let database = Database {
            name: "orders-db",
            url: &config.database_url,
            max_connections: config.database_max_connections,
            migrator: &MIGRATOR,
        };
        let pool = service::connect(&database, &config.kafka).await?;
        let shutdown = CancellationToken::new();
        let nodes = config_service.urls();
        let (cap, cap_follower) = if nodes.is_empty() {
            (cap::CapSwitch::fixed(config.cap_mode), None)
        } else {
            let followed = cap::followed_switch();
            let follower = Follower::new(followed.clone(), nodes.clone())
                .context("cannot build the config service client")?;
            (
                cap::CapSwitch::following(config.cap_mode, followed),
                Some(follower),
            )
        };
        let (default_mode, follower) = if nodes.is_empty() {
            (DefaultMode::fixed(config.default_mode), None)
        } else {
            let followed = runtime_config::mode_key(&config_service.config_mode_key);
            let follower = Follower::new(followed.clone(), nodes)
                .context("cannot build the config service client")?;
            (
                DefaultMode::following(config.default_mode, followed),
                Some(follower),
            )
        };
        let twopc = distlab_twopc::participant::setup(
            pool.clone(),
            two_phase::OrderBranch,
            &config.admin,
            &shutdown,
        )
        .await?;
        let state = AppState {
            pool: pool.clone(),
            order_events_topic: config.kafka.order_events_topic.clone(),
            default_mode: default_mode.clone(),
            participant: twopc.participant.clone(),
            coordinator_url: config.coordinator_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            redeliver_after: config.redeliver_after(),
            cap: cap.clone(),
            inventory_url: config.inventory_url.trim_end_matches('/').to_owned(),
        };
        let parts = Parts {
            name: "order",
            database_name: database.name,
            listen: config.listen,
            routes: http::router(state).merge(twopc.routes).layer(
                axum::middleware::from_fn_with_state(cap.clone(), cap::mark_responses),
            ),
            openapi: http::openapi(),
            consumer_group: config.consumer_group.clone(),
            consumes: config.kafka.inventory_events_topic.clone(),
            handler: confirmation::Confirmations,
            shutdown: shutdown.clone(),
            readiness: vec![
                twopc.readiness,
                runtime_config::readiness_check(default_mode.clone()),
                cap.readiness_check(),
            ],
        };
        let assembled = service::assemble(pool.clone(), &config.kafka, parts).await?;
        let redelivery = redelivery::Redelivery::new(
            pool.clone(),
            config.kafka.order_events_topic.clone(),
            config.redeliver_after(),
        );
        let assembled_service = assembled
            .service
            .with_task(redelivery.run(shutdown.clone()));
        let service = match (follower, cap_follower) {
            (Some(follower), Some(cap_follower)) => assembled_service
                .with_task(follower.run(shutdown.clone()))
                .with_task(cap_follower.run(shutdown)),
            _ => assembled_service,
        };
        Ok(Self {
            service,
            pool,
            relay_faults: assembled.relay_faults,
            consumer_stats: assembled.consumer_stats,
            faults: twopc.faults,
            default_mode,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Faults of this instance's outbox relay (tests, chaos).
    pub fn relay_faults(&self) -> RelayFaults {
        self.relay_faults.clone()
    }

    /// This instance's fault switches (its 2PC participant's), as on `/admin/faults`.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The mode of an order whose request names none, and where it comes from.
    pub fn default_mode(&self) -> DefaultMode {
        self.default_mode.clone()
    }

    /// This instance's consumer: its partitions and the messages it applied (tests, chaos).
    pub fn consumer_stats(&self) -> ConsumerStats {
        self.consumer_stats.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.service
            .run_until_stopped()
            .await
            .context("order service failed")
    }
}
