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

pub mod config;
pub mod confirmation;
pub mod error;
pub mod http;
pub mod orders;
pub mod store;

use std::net::SocketAddr;

use anyhow::Context;
use distlab_messaging::consumer::{ConsumerConfig, IdempotentConsumer};
use distlab_messaging::kafka;
use distlab_messaging::outbox::{Relay, RelayConfig, RelayFaults};
use distlab_platform::http::{ReadinessCheck, Service, ServiceInfo, service_router};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use orders::Mode;

/// The orders database's schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/orders");

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub order_events_topic: String,
    pub default_mode: Mode,
}

/// A built order service, ready to run. See [`distlab_platform::http::Service`].
#[derive(Debug)]
pub struct Application {
    service: Service,
    pool: PgPool,
    relay_faults: RelayFaults,
}

impl Application {
    /// Connects, migrates, creates the topics, binds the listener and prepares the relay and consumer.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        distlab_platform::metrics::install();
        let pool =
            distlab_platform::db::connect(&config.database_url, config.database_max_connections)
                .await?;
        MIGRATOR
            .run(&pool)
            .await
            .context("cannot migrate the orders database")?;
        let k = &config.kafka;
        kafka::ensure_topics(
            &k.brokers,
            &k.topics(),
            k.topic_partitions,
            k.replication_factor,
        )
        .await?;

        let shutdown = CancellationToken::new();
        let relay_faults = RelayFaults::default();
        let relay = Relay::new(
            pool.clone(),
            RelayConfig::new("order", &k.brokers),
            relay_faults.clone(),
        )?;
        let consumer = IdempotentConsumer::new(
            pool.clone(),
            ConsumerConfig {
                fetch_wait_max_ms: k.fetch_wait_max_ms,
                ..ConsumerConfig::new(
                    "order",
                    &k.brokers,
                    &config.consumer_group,
                    vec![k.inventory_events_topic.clone()],
                )
            },
            confirmation::Confirmations,
        )?;

        let readiness = vec![
            ReadinessCheck::postgres("orders-db", pool.clone()),
            kafka::readiness_check(kafka::producer(&k.brokers, "order-readiness")?),
        ];
        let state = AppState {
            pool: pool.clone(),
            order_events_topic: k.order_events_topic.clone(),
            default_mode: config.default_mode,
        };
        let router = service_router(
            http::router(state),
            ServiceInfo {
                openapi: http::openapi(),
                readiness,
            },
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let service = Service::new(listener, router, shutdown.clone())
            .with_task(relay.run(shutdown.clone()))
            .with_task(consumer.run(shutdown));
        Ok(Self {
            service,
            pool,
            relay_faults,
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

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.service
            .run_until_stopped()
            .await
            .context("order service failed")
    }
}
