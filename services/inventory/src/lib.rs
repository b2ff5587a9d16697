//! The inventory service: products, their stock, and the reservations that orders take from it.
//!
//! Its half of the seed's 本地消息表 flow (section 二) is [`reservation`]: it consumes `OrderPlaced` from
//! `order-events` and, in one local transaction per batch, records each message id, reserves all of an
//! order's items or none, and writes `StockReserved` or `StockRejected` into its own outbox, which its relay
//! publishes to `inventory-events`.
//!
//! HTTP (see [`http`]): `PUT /products/{sku}` (admin seeding), `GET /products`, `GET /products/{sku}`, and
//! `POST /products/{sku}/adjust`, a raw stock change fenced by the lock service's tokens ([`adjust`]).

pub mod adjust;
pub mod config;
pub mod http;
pub mod products;
pub mod reservation;

#[cfg(test)]
mod router_tests;

use std::net::SocketAddr;

use anyhow::Context;
use distlab_messaging::consumer::ConsumerStats;
use distlab_messaging::outbox::RelayFaults;
use distlab_messaging::service::{self, Database, Parts};
use distlab_platform::http::Service;
use distlab_twopc::faults::Faults;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The inventory database's own schema (the messaging tables come from `distlab_messaging::service`).
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
    consumer_stats: ConsumerStats,
    faults: Faults,
}

impl Application {
    /// Connects, migrates, creates the topics, binds the listener and prepares the relay and consumer.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database = Database {
            name: "inventory-db",
            url: &config.database_url,
            max_connections: config.database_max_connections,
            migrator: &MIGRATOR,
        };
        let pool = service::connect(&database, &config.kafka).await?;
        products::publish_stock_feed_to(&pool, &config.kafka.inventory_events_topic).await?;
        let state = AppState { pool: pool.clone() };
        let shutdown = CancellationToken::new();
        let twopc = distlab_twopc::participant::setup(
            pool.clone(),
            reservation::ReserveBranch,
            &config.admin,
            &shutdown,
        )
        .await?;
        let parts = Parts {
            name: "inventory",
            database_name: database.name,
            listen: config.listen,
            routes: http::router(state).merge(twopc.routes),
            openapi: http::openapi(),
            consumer_group: config.consumer_group.clone(),
            consumes: config.kafka.order_events_topic.clone(),
            handler: reservation::Reservations::new(config.kafka.inventory_events_topic.clone()),
            shutdown,
            readiness: vec![twopc.readiness],
        };
        let assembled = service::assemble(pool.clone(), &config.kafka, parts).await?;
        Ok(Self {
            service: assembled.service,
            pool,
            relay_faults: assembled.relay_faults,
            consumer_stats: assembled.consumer_stats,
            faults: twopc.faults,
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

    /// This instance's consumer: its partitions and the messages it applied (tests, chaos).
    pub fn consumer_stats(&self) -> ConsumerStats {
        self.consumer_stats.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.service
            .run_until_stopped()
            .await
            .context("inventory service failed")
    }
}
