//! Kafka clients with the settings every distlab service must agree on.
//!
//! - Producers use `acks=all` (a delivery report means the record is on every in-sync replica) and are
//!   **not** idempotent. Kafka's idempotent producer keeps per-producer state on the broker (a producer id,
//!   an epoch, a sequence number per partition) that must survive every broker crash; librdkafka bumps the
//!   epoch on its own when messages time out (a broker down for longer than [`DELIVERY_TIMEOUT`]), and tansu
//!   0.6 panics on a produce that carries an epoch it did not issue — after which the broker answers every
//!   request with an error until it is restarted, and panics again as soon as that producer reconnects
//!   (`docs/kafka.md` has the whole story). distlab does not need that state: the outbox already delivers at
//!   least once, a retried send may duplicate a record, and every consumer deduplicates by `message_id`.
//!   Nor does it need the order between two records of one partition: each carries a whole fact (an order
//!   placed, an order's answer) that its consumer applies at most once per order.
//! - Consumers never auto-commit: the offset of a message is committed only after the database transaction
//!   that applied it has committed (at-least-once, never at-most-once).
//! - Topics are created at start-up through the admin API (brokers such as tansu do not auto-create them);
//!   an existing topic is left as it is. A broker that comes back without its data (a replaced broker) has
//!   no topics: relays and consumers call [`TopicRepair`] when they keep failing, which creates them again.
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

/// An `acks=all` producer without broker-side producer state (see the module documentation).
pub fn producer(brokers: &str, client_id: &str) -> KafkaResult<FutureProducer> {
    producer_with_timeout(brokers, client_id, DELIVERY_TIMEOUT)
}

fn producer_with_timeout(
    brokers: &str,
    client_id: &str,
    delivery_timeout: Duration,
) -> KafkaResult<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
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
        // A subscribed topic that disappears (a broker replaced without its data) and is created again is
        // noticed at the next metadata refresh: every few seconds, not every five minutes (the default).
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create_with_context(context)
}

/// Creates the topics that do not exist yet; returns those it created.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> anyhow::Result<Vec<String>> {
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
        return Ok(Vec::new());
    }
    // Both bounds: the broker's time to create, and the client's wait for any answer at all.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .with_context(|| format!("cannot create topics at {brokers}"))?;
    // Dropping a client joins its threads: not on the async runtime's.
    tokio::task::spawn_blocking(move || drop(admin));
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(created)
}

/// How to create a client's topics again on a broker that lost them, and how often to try.
///
/// A relay or consumer calls [`TopicRepair::after_failure`] whenever a send or a receive fails; at most once
/// per [`TopicRepair::INTERVAL`] it asks the broker for its topics and creates the missing ones. On a healthy
/// broker that is one metadata request; on a broker that came back empty it makes the flow work again
/// without restarting anything.
#[derive(Debug)]
pub struct TopicRepair {
    brokers: String,
    topics: Vec<String>,
    partitions: i32,
    replication: i32,
    last_check: Option<std::time::Instant>,
}

impl TopicRepair {
    /// Fewest time between two checks.
    pub const INTERVAL: Duration = Duration::from_secs(2);

    pub fn new(brokers: &str, topics: Vec<String>, partitions: i32, replication: i32) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topics,
            partitions,
            replication,
            last_check: None,
        }
    }

    /// Adds a topic to those kept (a relay learns its topics from the rows it sends).
    pub fn keep(&mut self, topic: &str) {
        if !self.topics.iter().any(|t| t == topic) {
            self.topics.push(topic.to_owned());
        }
    }

    /// Creates the missing topics, unless that was tried less than [`TopicRepair::INTERVAL`] ago. Errors are
    /// logged: the caller retries anyway.
    pub async fn after_failure(&mut self, client: &str) {
        if self
            .last_check
            .is_none_or(|at| at.elapsed() >= Self::INTERVAL)
        {
            self.ensure(client).await;
        }
    }

    /// Creates the missing topics now; returns whether every topic exists.
    pub async fn ensure(&mut self, client: &str) -> bool {
        self.last_check = Some(std::time::Instant::now());
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if topics.is_empty() {
            return true;
        }
        match ensure_topics(&self.brokers, &topics, self.partitions, self.replication).await {
            Ok(created) => {
                if !created.is_empty() {
                    tracing::warn!(client, topics = ?created, "the broker had lost these topics; created them again");
                }
                true
            }
            Err(error) => {
                tracing::debug!(
                    client,
                    error = format!("{error:#}"),
                    "cannot check the topics"
                );
                false
            }
        }
    }
}

/// Topic of the broker's round-trip probe ([`round_trip`]): one partition of tiny records.
pub const HEALTH_TOPIC: &str = "distlab-health";

/// Produces one record to [`HEALTH_TOPIC`] (creating it if needed) and fetches it back by its offset: the
/// proof that a broker stores and serves records, which a metadata answer is not (a broker whose storage
/// has failed can still answer metadata). Returns how long the round trip took.
pub async fn round_trip(brokers: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    ensure_topics(brokers, &[HEALTH_TOPIC], 1, 1).await?;
    let producer = producer_with_timeout(brokers, "distlab-health", timeout)
        .context("cannot create a Kafka producer")?;
    let token = uuid::Uuid::new_v4().to_string();
    let delivered = producer
        .send(
            rdkafka::producer::FutureRecord::to(HEALTH_TOPIC)
                .key("probe")
                .payload(&token),
            rdkafka::util::Timeout::After(timeout),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("produce failed: {error}"))?;
    let (partition, offset) = (delivered.partition, delivered.offset);
    let brokers = brokers.to_owned();
    let remaining = timeout.saturating_sub(started.elapsed());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use rdkafka::Message;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "distlab-health")
            .set("enable.auto.commit", "false")
            .create()
            .context("cannot create a Kafka consumer")?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(
            HEALTH_TOPIC,
            partition,
            rdkafka::Offset::Offset(offset),
        )?;
        consumer.assign(&assignment)?;
        let deadline = std::time::Instant::now() + remaining;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            anyhow::ensure!(!left.is_zero(), "fetch of offset {offset} timed out");
            match consumer.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(message)) if message.offset() == offset => {
                    anyhow::ensure!(
                        message.payload() == Some(token.as_bytes()),
                        "fetched offset {offset} but it holds another record"
                    );
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => anyhow::bail!("fetch failed: {error}"),
                None => {}
            }
        }
    })
    .await??;
    Ok(started.elapsed())
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
