//! The inventory service: products, their stock, and the reservations that orders take from it.
//!
//! Its half of the seed's 本地消息表 flow (section 二) is [`reservation`]: it consumes `OrderPlaced` from
//! `order-events` and, in one local transaction per batch, records each message id, reserves all of an
//! order's items or none, and writes `StockReserved` or `StockRejected` into its own outbox, which its relay
//! publishes to `inventory-events`.
//!
//! HTTP (see [`http`]): `PUT /products/{sku}` (admin seeding), `GET /products`, `GET /products/{sku}`.

pub mod config;
pub mod http;
pub mod products;
pub mod reservation;

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

/// The inventory database's schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/inventory");

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
}

/// A built inventory service, ready to run. See [`distlab_platform::http::Service`].
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
            .context("cannot migrate the inventory database")?;
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
            RelayConfig::new("inventory", &k.brokers),
            relay_faults.clone(),
        )?;
        let consumer = IdempotentConsumer::new(
            pool.clone(),
            ConsumerConfig {
                fetch_wait_max_ms: k.fetch_wait_max_ms,
                ..ConsumerConfig::new(
                    "inventory",
                    &k.brokers,
                    &config.consumer_group,
                    vec![k.order_events_topic.clone()],
                )
            },
            reservation::Reservations::new(k.inventory_events_topic.clone()),
        )?;

        let readiness = vec![
            ReadinessCheck::postgres("inventory-db", pool.clone()),
            kafka::readiness_check(kafka::producer(&k.brokers, "inventory-readiness")?),
        ];
        let router = service_router(
            http::router(AppState { pool: pool.clone() }),
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
            .context("inventory service failed")
    }
}
