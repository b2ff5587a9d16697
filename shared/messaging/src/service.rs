//! The skeleton every service of the outbox flow shares, so that a service only adds its own routes and
//! handler: a pool on its database with the messaging tables and its own schema migrated, the topics, the
//! outbox relay, the idempotent consumer, `/readyz` on the database and Kafka, and the bound listener.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use distlab_platform::http::{ReadinessCheck, Service, ServiceInfo, service_router};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumerConfig, ConsumerStats, Handler, IdempotentConsumer};
use crate::kafka::{self, KafkaArgs};
use crate::outbox::{Relay, RelayConfig, RelayFaults};

/// Name of the migrations table of the messaging tables, apart from the service's own `_sqlx_migrations`.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations_messaging";

/// The messaging tables (`outbox`, `processed_messages`, `dead_letters`): `migrations/messaging`.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../../migrations/messaging");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// Where a service's data lives.
#[derive(Debug)]
pub struct Database<'a> {
    /// Name of the database in `/readyz` (e.g. `orders-db`).
    pub name: &'static str,
    pub url: &'a str,
    pub max_connections: u32,
    /// The service's own schema.
    pub migrator: &'a Migrator,
}

/// Connects to the service's database, applies the messaging and the service's migrations, and creates the
/// topics of the flow that do not exist yet.
pub async fn connect(database: &Database<'_>, kafka: &KafkaArgs) -> anyhow::Result<PgPool> {
    distlab_platform::metrics::install();
    let pool = distlab_platform::db::connect(database.url, database.max_connections).await?;
    migrator()
        .run(&pool)
        .await
        .with_context(|| format!("cannot migrate the messaging tables of {}", database.name))?;
    database
        .migrator
        .run(&pool)
        .await
        .with_context(|| format!("cannot migrate {}", database.name))?;
    kafka::ensure_topics(
        &kafka.brokers,
        &kafka.topics(),
        kafka.topic_partitions,
        kafka.replication_factor,
    )
    .await?;
    Ok(pool)
}

/// The parts that differ from one service to the other.
#[derive(Debug)]
pub struct Parts<H> {
    /// The service's name: label of its relay and consumer, and their Kafka client ids.
    pub name: &'static str,
    /// Name of the database in `/readyz`.
    pub database_name: &'static str,
    pub listen: SocketAddr,
    /// The service's own routes.
    pub routes: Router,
    pub openapi: serde_json::Value,
    pub consumer_group: String,
    /// The topic the consumer reads.
    pub consumes: String,
    pub handler: H,
    /// Cancelled to stop the service (SIGTERM, a test, a halting fault).
    pub shutdown: CancellationToken,
    /// Checks of `/readyz` besides the database and Kafka.
    pub readiness: Vec<ReadinessCheck>,
}

/// A service built by [`assemble`].
#[derive(Debug)]
pub struct Assembled {
    pub service: Service,
    pub relay_faults: RelayFaults,
    pub consumer_stats: ConsumerStats,
}

/// Binds the listener and wires the routes, the relay of the database's outbox and the consumer.
pub async fn assemble<H: Handler>(
    pool: PgPool,
    kafka: &KafkaArgs,
    parts: Parts<H>,
) -> anyhow::Result<Assembled> {
    let shutdown = parts.shutdown;
    let relay_faults = RelayFaults::default();
    let relay = Relay::new(
        pool.clone(),
        RelayConfig {
            topic_partitions: kafka.topic_partitions,
            replication_factor: kafka.replication_factor,
            ..RelayConfig::new(parts.name, &kafka.brokers)
        },
        relay_faults.clone(),
    )?;
    let consumer = IdempotentConsumer::new(
        pool.clone(),
        ConsumerConfig {
            fetch_wait_max_ms: kafka.fetch_wait_max_ms,
            topic_partitions: kafka.topic_partitions,
            replication_factor: kafka.replication_factor,
            ..ConsumerConfig::new(
                parts.name,
                &kafka.brokers,
                &parts.consumer_group,
                vec![parts.consumes],
            )
        },
        parts.handler,
    )?;
    let consumer_stats = consumer.stats();
    let mut readiness = vec![
        ReadinessCheck::postgres(parts.database_name, pool),
        kafka::readiness_check(kafka::producer(
            &kafka.brokers,
            &format!("{}-readiness", parts.name),
        )?),
    ];
    readiness.extend(parts.readiness);
    let router = service_router(
        parts.routes,
        ServiceInfo {
            openapi: parts.openapi,
            readiness,
        },
    );
    let listener = tokio::net::TcpListener::bind(parts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", parts.listen))?;
    let service = Service::new(listener, router, shutdown.clone())
        .with_task(relay.run(shutdown.clone()))
        .with_task(consumer.run(shutdown));
    Ok(Assembled {
        service,
        relay_faults,
        consumer_stats,
    })
}
