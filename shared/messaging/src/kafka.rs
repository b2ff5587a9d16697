//! Kafka clients with the settings every distlab service must agree on.
//!
//! - Producers are **idempotent** with `acks=all`: a retried send after a lost acknowledgement does not
//!   duplicate the message inside the broker, and a delivery report means the record is on every in-sync
//!   replica. (Duplicates can still come from the outbox relay re-publishing — consumers deduplicate.)
//! - Consumers never auto-commit: the offset of a message is committed only after the database transaction
//!   that applied it has committed (at-least-once, never at-most-once).
//! - Topics are created at start-up through the admin API (brokers such as tansu do not auto-create them);
//!   an existing topic is left as it is.
//!
//! Nothing here depends on the broker being tansu: the same settings run against Apache Kafka.

use std::time::Duration;

use anyhow::Context;
use distlab_platform::http::ReadinessCheck;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::events::{INVENTORY_EVENTS, ORDER_EVENTS};

/// How long the broker may take to acknowledge a record before the send counts as failed (and the outbox
/// row is retried later).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Kafka settings, from flags or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    pub brokers: String,
    /// Topic that carries order events (OrderPlaced).
    #[arg(long, env = "ORDER_EVENTS_TOPIC", default_value = ORDER_EVENTS)]
    pub order_events_topic: String,
    /// Topic that carries inventory events (StockReserved, StockRejected).
    #[arg(long, env = "INVENTORY_EVENTS_TOPIC", default_value = INVENTORY_EVENTS)]
    pub inventory_events_topic: String,
    /// Partitions of the topics created at start-up (existing topics are not changed).
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 4)]
    pub topic_partitions: i32,
    /// Replication factor of the topics created at start-up.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// Longest time a consumer's fetch waits at the broker for data (`fetch.wait.max.ms`). Low, because a
    /// broker may hold a fetch this long even when data is there (tansu 0.6 does), and every hop of the
    /// order flow pays it.
    #[arg(long, env = "KAFKA_FETCH_WAIT_MAX_MS", default_value_t = 10)]
    pub fetch_wait_max_ms: u32,
}

impl KafkaArgs {
    /// The settings of the local stack (`cargo xtask up`).
    pub fn local() -> Self {
        Self {
            brokers: "127.0.0.1:19092".into(),
            order_events_topic: ORDER_EVENTS.into(),
            inventory_events_topic: INVENTORY_EVENTS.into(),
            topic_partitions: 4,
            replication_factor: 1,
            fetch_wait_max_ms: 10,
        }
    }

    /// Both topics of the order flow.
    pub fn topics(&self) -> [&str; 2] {
        [&self.order_events_topic, &self.inventory_events_topic]
    }
}

/// An idempotent, `acks=all` producer.
pub fn producer(brokers: &str, client_id: &str) -> KafkaResult<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .create()
}

/// A consumer in `group_id` that starts from the earliest offset and never auto-commits.
pub fn consumer<C: ConsumerContext + 'static>(
    brokers: &str,
    group_id: &str,
    client_id: &str,
    fetch_wait_max_ms: u32,
    context: C,
) -> KafkaResult<StreamConsumer<C>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", fetch_wait_max_ms.to_string())
        .create_with_context(context)
}

/// Creates the topics that do not exist yet.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    // Ask first: creating an existing topic works, but makes some brokers log an error.
    let bootstrap = brokers.to_owned();
    let existing: Vec<String> = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        client
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|m| m.topics().iter().map(|t| t.name().to_owned()).collect())
    })
    .await?
    .with_context(|| format!("cannot read the topics of {brokers}"))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|name| !existing.iter().any(|e| e == *name))
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    if new_topics.is_empty() {
        return Ok(());
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .with_context(|| format!("cannot create topics at {brokers}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Asks the broker for its metadata: the readiness probe of anything that talks to Kafka.
pub async fn probe(producer: &FutureProducer, timeout: Duration) -> Result<(), String> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `/readyz` check named `kafka`.
pub fn readiness_check(producer: FutureProducer) -> ReadinessCheck {
    ReadinessCheck::new("kafka", move || {
        let producer = producer.clone();
        async move { probe(&producer, Duration::from_millis(1500)).await }
    })
}
