//! The idempotent consumer on its own, with a handler that is NOT idempotent (it appends a row per call), so
//! that only the consumer's `message_id` deduplication stands between a redelivery and a double effect.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_messaging::Envelope;
use distlab_messaging::consumer::{ConsumerConfig, Handler, IdempotentConsumer};
use distlab_messaging::envelope::Event;
use distlab_testkit::{TestDatabase, consumer_lag, eventually, unique_group, unique_kafka};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}

impl Event for Ping {
    const TYPE: &'static str = "Ping";
}

/// Appends one row per call: a second call for the same message is a visible double effect.
struct Appending;

impl Handler for Appending {
    type Message = Uuid;

    fn decode(&self, envelope: &Envelope) -> Result<Option<Uuid>, String> {
        envelope.payload_as::<Ping>().map_err(|e| e.to_string())?;
        Ok(Some(envelope.message_id))
    }

    async fn handle(&self, conn: &mut PgConnection, message_id: &Uuid) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO applied (message_id) VALUES ($1)")
            .bind(message_id)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn applied(pool: &PgPool, message_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM applied WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_messages_are_applied_once_and_poison_is_kept_aside() {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_stack(false);
    let db = TestDatabase::create(&distlab_testkit::orders_server()).await;
    let pool = db.pool().await;
    distlab_messaging::service::migrator()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE applied (message_id uuid NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let kafka = unique_kafka(&distlab_testkit::kafka_brokers());
    let topic = kafka.order_events_topic.clone();
    distlab_messaging::kafka::ensure_topics(&kafka.brokers, &[&topic], 2, 1)
        .await
        .unwrap();
    let group = unique_group("dedup");

    let config = ConsumerConfig::new("dedup", &kafka.brokers, &group, vec![topic.clone()]);
    let consumer = IdempotentConsumer::new(pool.clone(), config, Appending).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    let producer: FutureProducer =
        distlab_messaging::kafka::producer(&kafka.brokers, "test-dedup").unwrap();
    let send = |bytes: Vec<u8>, key: &'static str| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let record = FutureRecord::to(&topic).key(key).payload(&bytes);
            producer
                .send(record, Duration::from_secs(5))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    let settled = || async {
        eventually(
            "the consumer to commit everything",
            Duration::from_secs(30),
            || async { (consumer_lag(&kafka.brokers, &group, &topic).await == 0).then_some(()) },
        )
        .await
    };

    let first = Envelope::new(&Ping { n: 1 }).unwrap();
    let second = Envelope::new(&Ping { n: 2 }).unwrap();
    // Twice back to back (most likely in one batch), plus another message and a poison pill.
    send(first.to_bytes(), "a").await;
    send(first.to_bytes(), "a").await;
    send(second.to_bytes(), "b").await;
    send(b"not an envelope".to_vec(), "c").await;
    settled().await;
    assert_eq!(
        applied(&pool, first.message_id).await,
        1,
        "a duplicate within the stream is skipped"
    );
    assert_eq!(applied(&pool, second.message_id).await, 1);

    // The same message again after its offset was committed: a redelivery, e.g. a relay that republished.
    send(first.to_bytes(), "a").await;
    settled().await;
    assert_eq!(
        applied(&pool, first.message_id).await,
        1,
        "a redelivery after commit is skipped"
    );

    let dead: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT consumer, payload FROM dead_letters")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        dead,
        [("dedup".to_owned(), b"not an envelope".to_vec())],
        "poison is kept, once"
    );

    shutdown.cancel();
    running.await.unwrap();
}
