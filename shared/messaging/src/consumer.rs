//! The idempotent consumer: at-least-once delivery, exactly-once effect (the seed's 本地消息表, step 3).
//!
//! Kafka may deliver a message more than once — the outbox relay republishes after a crash, a consumer
//! re-reads after a rebalance. [`IdempotentConsumer`] makes that harmless. It reads a batch of messages and
//! applies them in **one local transaction** that, for every message:
//!
//! 1. inserts `(consumer, message_id)` into `processed_messages` (`ON CONFLICT DO NOTHING`); a message whose
//!    id is already there is a duplicate and is skipped;
//! 2. calls the [`Handler`], which makes the business change — and usually writes its answer into the
//!    outbox, in the same transaction.
//!
//! Only after that transaction commits are the batch's offsets committed to Kafka. A crash before the
//! database commit redelivers the batch and changes nothing twice; a crash between the two commits
//! redelivers it and step 1 skips it.
//!
//! A message that can never be applied (not an envelope, a payload that does not parse) is written to
//! `dead_letters` in the same transaction, so it neither blocks its partition nor disappears. Any other error
//! rolls the whole batch back; it is retried with backoff, never skipped.
//!
//! **When the broker fails**, librdkafka reconnects and the consumer rejoins its group by itself; a failed
//! offset commit only means a redelivery, which step 1 skips. A broker that came back without its data has
//! lost the topics and the group's offsets, and the consumer's own positions now point into partitions that
//! start again at 0:
//! - a failed receive makes the consumer create its topics again ([`kafka::TopicRepair`]), and the metadata
//!   refresh (every 5 s) finds them;
//! - every few seconds, and after a failed receive before it commits again, the consumer looks at the broker
//!   ([`crate::offsets`]): another cluster id, or a position or commit above a partition's high watermark,
//!   means the broker lost its data; the consumer goes back to the beginning of those partitions and reads
//!   them again, and step 1 skips what it had already applied;
//! - messages the old broker held and nobody had consumed are gone with it — the order service sends an
//!   order's `OrderPlaced` again when no answer came, and the handlers are idempotent per order, not only
//!   per message, for that reason.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use distlab_platform::trace::{self, SpanKind};
use futures::FutureExt;
use rdkafka::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::kafka;
use crate::offsets::{self, BrokerWatch};

/// The business side of a consumer.
pub trait Handler: Send + Sync + 'static {
    /// What the handler acts on, decoded from an envelope.
    type Message: Send + Sync;

    /// Decodes an envelope: `Ok(None)` for a type this handler ignores, `Err` for a message that can never
    /// be applied (it goes to `dead_letters`). Pure: no IO. Runs in the message's `kafka.consume` span (when
    /// tracing is on): a handler that answers keeps the current `traceparent` here, for its answer's
    /// [`Envelope::produced_by`].
    fn decode(&self, envelope: &Envelope) -> Result<Option<Self::Message>, String>;

    /// Called once per batch, before [`Handler::handle`], with the batch's new messages — e.g. to lock rows
    /// in a fixed order so that concurrent consumers cannot deadlock.
    fn before_batch(
        &self,
        _conn: &mut PgConnection,
        _messages: &[&Self::Message],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Applies one new message inside the batch's transaction. Business outcomes (a rejection) are `Ok`; an
    /// `Err` rolls back the batch, which is retried.
    fn handle(
        &self,
        conn: &mut PgConnection,
        message: &Self::Message,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Applies the batch's new messages, in order. By default [`Handler::handle`] one by one; a handler
    /// whose messages are independent can apply them in one set-based statement instead.
    fn handle_batch(
        &self,
        conn: &mut PgConnection,
        messages: &[&Self::Message],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            for message in messages {
                self.handle(conn, message).await?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Name of the consumer: the deduplication namespace in `processed_messages` and the metrics label.
    pub name: String,
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// `fetch.wait.max.ms` of the Kafka consumer.
    pub fetch_wait_max_ms: u32,
    /// Most messages applied in one transaction.
    pub batch_max: usize,
    /// Schedule of retries of a batch that failed.
    pub retry: Backoff,
    /// Partitions and replication factor of a subscribed topic the consumer must create again (a broker
    /// that lost it).
    pub topic_partitions: i32,
    pub replication_factor: i32,
}

impl ConsumerConfig {
    pub fn new(
        name: impl Into<String>,
        brokers: impl Into<String>,
        group_id: impl Into<String>,
        topics: Vec<String>,
    ) -> Self {
        Self {
            name: name.into(),
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics,
            fetch_wait_max_ms: 10,
            batch_max: 256,
            retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            topic_partitions: 4,
            replication_factor: 1,
        }
    }
}

/// What one consumer instance is doing, readable while it runs (tests, admin endpoints).
#[derive(Debug, Clone, Default)]
pub struct ConsumerStats {
    assigned: Arc<AtomicUsize>,
    applied: Arc<AtomicU64>,
    /// Times the consumer found the broker had lost its data and went back.
    rewinds: Arc<AtomicU64>,
    /// Whether fetching is paused until the broker is back and sound.
    paused: Arc<std::sync::atomic::AtomicBool>,
    /// Why the last look at the broker failed, if it did.
    look_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl ConsumerStats {
    /// Partitions assigned to this instance by the group right now.
    pub fn assigned_partitions(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Messages this instance applied (duplicates and dead letters not counted).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Times this instance found that the broker had lost its data, and went back to read again.
    pub fn rewinds(&self) -> u64 {
        self.rewinds.load(Ordering::Relaxed)
    }

    /// Whether this instance has paused fetching until the broker is back and sound.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Why this instance's last look at the broker failed, if it did.
    pub fn look_error(&self) -> Option<String> {
        self.look_error.lock().ok().and_then(|e| e.clone())
    }

    fn look_failed(&self, error: Option<String>) {
        if let Ok(mut last) = self.look_error.lock() {
            *last = error;
        }
    }
}

/// Logs the group's rebalances and keeps [`ConsumerStats::assigned_partitions`] current.
struct RebalanceContext {
    name: String,
    stats: ConsumerStats,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.stats
                    .assigned
                    .store(partitions.count(), Ordering::Relaxed);
                let list: Vec<String> = partitions
                    .elements()
                    .iter()
                    .map(|p| format!("{}[{}]", p.topic(), p.partition()))
                    .collect();
                tracing::info!(consumer = %self.name, partitions = ?list, "partitions assigned");
            }
            Rebalance::Revoke(_) => {
                self.stats.assigned.store(0, Ordering::Relaxed);
                tracing::info!(consumer = %self.name, "partitions revoked");
            }
            Rebalance::Error(error) => {
                tracing::warn!(consumer = %self.name, %error, "rebalance failed")
            }
        }
    }
}

/// A message as received, detached from the consumer.
#[derive(Debug)]
struct Received {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    pub ignored: usize,
    pub dead_letters: usize,
}

/// How often a consumer looks at the broker for lost logs ([`crate::offsets`]): one position and one
/// watermark request per assigned partition.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// The same, after a failed receive, until the broker has answered the look.
const LOOK_EVERY_WHEN_SUSPECT: Duration = Duration::from_secs(1);
/// How long one look may wait for the broker.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping consumer waits to leave its group.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The consumer's handle, closed on a thread of its own.
///
/// Closing a group consumer (revoke the assignment, leave the group) waits for the broker without a bound:
/// rdkafka's `Drop` polls until librdkafka says it is closed (rust-rdkafka #509, #611). Done on a runtime
/// thread, a broker that never answers wedges that thread — when a test ends, the runtime's shutdown drops the
/// consumer's task, and a test that had passed never ended. So the last handle is always dropped on a thread
/// of its own: [`IdempotentConsumer::run`] waits for it at most [`CLOSE_WAIT`], a dropped consumer not at all.
struct ClosingConsumer(Option<Arc<StreamConsumer<RebalanceContext>>>);

impl ClosingConsumer {
    /// Starts closing the consumer on a thread of its own; the receiver hears when it is closed.
    fn close(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let consumer = self.0.take()?;
        let (done, closed) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || {
                // A look at the broker may still hold a clone on the blocking pool: wait until this is
                // the last handle, so that the close happens here and never on a runtime's thread.
                let mut consumer = consumer;
                loop {
                    match Arc::try_unwrap(consumer) {
                        Ok(last) => break drop(last),
                        Err(shared) => {
                            consumer = shared;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                // Nobody listens when the consumer was dropped rather than stopped.
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => Some(closed),
            Err(error) => {
                tracing::warn!(%error, "cannot start a thread to close the consumer; closing it on this one");
                None
            }
        }
    }
}

impl std::ops::Deref for ClosingConsumer {
    type Target = Arc<StreamConsumer<RebalanceContext>>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the consumer is used only before it is closed")
    }
}

impl Drop for ClosingConsumer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Consumes `topics` in a consumer group and applies each message once. See the module documentation.
pub struct IdempotentConsumer<H: Handler> {
    pool: PgPool,
    consumer: ClosingConsumer,
    stats: ConsumerStats,
    handler: H,
    config: ConsumerConfig,
}

impl<H: Handler> std::fmt::Debug for IdempotentConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentConsumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> IdempotentConsumer<H> {
    /// Joins the group and subscribes; messages flow once [`IdempotentConsumer::run`] is polled.
    pub fn new(pool: PgPool, config: ConsumerConfig, handler: H) -> anyhow::Result<Self> {
        let stats = ConsumerStats::default();
        let context = RebalanceContext {
            name: config.name.clone(),
            stats: stats.clone(),
        };
        let consumer = kafka::consumer(
            &config.brokers,
            &config.group_id,
            &config.name,
            config.fetch_wait_max_ms,
            context,
        )?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self {
            pool,
            consumer: ClosingConsumer(Some(Arc::new(consumer))),
            stats,
            handler,
            config,
        })
    }

    /// A live view of this consumer's assignment and work.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.clone()
    }

    /// Consumes until `shutdown` is cancelled. Errors are logged and retried, never returned.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(consumer = %self.config.name, topics = ?self.config.topics, "consumer started");
        let mut topics = kafka::TopicRepair::new(
            &self.config.brokers,
            self.config.topics.clone(),
            self.config.topic_partitions,
            self.config.replication_factor,
        );
        let mut batch: Vec<Received> = Vec::with_capacity(self.config.batch_max);
        let mut watch = BrokerWatch::default();
        // The first look learns the broker's cluster id.
        let mut next_look = tokio::time::Instant::now();
        'consume: loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.consumer.recv() => received,
                () = tokio::time::sleep_until(next_look) => {
                    // A look can wait on the broker for seconds: it must not hold up a shutdown.
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = self.look_at_the_broker(&mut watch, &mut topics) => {}
                    }
                    let every = if watch.suspect() || watch.paused() {
                        LOOK_EVERY_WHEN_SUSPECT
                    } else {
                        LOOK_EVERY
                    };
                    next_look = tokio::time::Instant::now() + every;
                    continue;
                }
            };
            match first {
                Ok(message) => batch.push(detach(&message)),
                Err(error) => {
                    self.receive_failed(&error, &mut watch);
                    next_look =
                        next_look.min(tokio::time::Instant::now() + LOOK_EVERY_WHEN_SUSPECT);
                    topics.after_failure(&self.config.name).await;
                    continue;
                }
            }
            while batch.len() < self.config.batch_max {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(detach(&message)),
                    Some(Err(error)) => self.receive_failed(&error, &mut watch),
                    None => break,
                }
            }

            let mut attempt = 0;
            loop {
                match self.apply(&batch).await {
                    Ok(_) => break,
                    Err(error) => {
                        attempt += 1;
                        metrics::counter!("consumer_batch_retries_total", "consumer" => self.config.name.clone())
                            .increment(1);
                        tracing::warn!(consumer = %self.config.name, attempt, error = format!("{error:#}"), "batch failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => break 'consume,
                            () = tokio::time::sleep(self.config.retry.delay(attempt)) => {}
                        }
                    }
                }
            }
            // After a failed receive, look before committing: a commit from positions that went stale would
            // tell the broker to skip what it now holds below them.
            let went_back = watch.suspect()
                && tokio::select! {
                    () = shutdown.cancelled() => break,
                    went_back = self.look_at_the_broker(&mut watch, &mut topics) => went_back,
                };
            if went_back {
                // Positions moved back: this batch's offsets must not be committed over what is re-read.
                batch.clear();
                continue;
            }
            if let Err(error) = self.commit_offsets(&batch) {
                // The effects are committed; a redelivery after this is deduplicated.
                tracing::warn!(consumer = %self.config.name, %error, "offset commit failed");
            }
            batch.clear();
        }
        tracing::info!(consumer = %self.config.name, "consumer stopped");
        // Leave the group, so that the partitions go to another member at once — but not for longer than
        // CLOSE_WAIT: a broker that does not answer must not hold up the service's shutdown.
        if let Some(closed) = self.consumer.close()
            && tokio::time::timeout(CLOSE_WAIT, closed).await.is_err()
        {
            tracing::warn!(consumer = %self.config.name, wait = ?CLOSE_WAIT,
                "the consumer did not leave its group in time; it goes on closing in the background");
        }
    }

    /// Applies a batch in one transaction.
    async fn apply(&self, batch: &[Received]) -> anyhow::Result<BatchOutcome> {
        let started = Instant::now();
        let mut outcome = BatchOutcome::default();
        let mut dead: Vec<(&Received, String)> = Vec::new();
        let mut decoded: Vec<(Uuid, H::Message)> = Vec::with_capacity(batch.len());
        // The messages' spans end when the batch is applied (they are dropped with this vector).
        let mut spans: Vec<tracing::Span> = Vec::new();
        for received in batch {
            let envelope = match Envelope::from_bytes(&received.payload) {
                Ok(envelope) => envelope,
                Err(error) => {
                    dead.push((received, error.to_string()));
                    continue;
                }
            };
            let span = self.consume_span(received, &envelope);
            match span.in_scope(|| self.handler.decode(&envelope)) {
                Ok(Some(message)) => {
                    decoded.push((envelope.message_id, message));
                    spans.push(span);
                }
                Ok(None) => outcome.ignored += 1,
                Err(error) => dead.push((received, error)),
            }
        }

        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = decoded.iter().map(|(id, _)| *id).collect();
        let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO processed_messages (consumer, message_id)
             SELECT $1, id FROM unnest($2::uuid[]) AS t(id)
             ON CONFLICT DO NOTHING
             RETURNING message_id",
        )
        .bind(&self.config.name)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();

        // `remove` is true once per id, so a message that appears twice in one batch is applied once.
        let new_messages: Vec<&H::Message> = decoded
            .iter()
            .filter(|(id, _)| fresh.remove(id))
            .map(|(_, message)| message)
            .collect();
        outcome.duplicates = decoded.len() - new_messages.len();
        if !new_messages.is_empty() {
            self.handler.before_batch(&mut tx, &new_messages).await?;
            self.handler.handle_batch(&mut tx, &new_messages).await?;
        }
        outcome.applied = new_messages.len();

        for (received, error) in &dead {
            tracing::error!(consumer = %self.config.name, topic = %received.topic, partition = received.partition,
                offset = received.offset, %error, "message cannot be applied; kept in dead_letters");
            sqlx::query(
                "INSERT INTO dead_letters (consumer, topic, kafka_partition, kafka_offset, payload, error)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.config.name)
            .bind(&received.topic)
            .bind(received.partition)
            .bind(received.offset)
            .bind(&received.payload)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        outcome.dead_letters = dead.len();
        tx.commit().await?;
        drop(spans);

        self.stats
            .applied
            .fetch_add(outcome.applied as u64, Ordering::Relaxed);
        let name = self.config.name.clone();
        for (outcome_label, count) in [
            ("applied", outcome.applied),
            ("duplicate", outcome.duplicates),
            ("ignored", outcome.ignored),
            ("dead_letter", outcome.dead_letters),
        ] {
            metrics::counter!("consumer_messages_total", "consumer" => name.clone(), "outcome" => outcome_label)
                .increment(count as u64);
        }
        metrics::histogram!("consumer_batch_seconds", "consumer" => name)
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// The span of one consumed message, a child of the span that produced it (the envelope's
    /// `traceparent`); none when tracing is off. [`Handler::decode`] runs in it, so a handler that answers
    /// the message can keep [`distlab_platform::trace::current_traceparent`] for its answer.
    fn consume_span(&self, received: &Received, envelope: &Envelope) -> tracing::Span {
        if !trace::enabled() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!("kafka.consume", consumer = %self.config.name, topic = %received.topic,
            partition = received.partition, offset = received.offset, message_id = %envelope.message_id,
            otel.name = tracing::field::Empty, otel.kind = tracing::field::Empty);
        trace::name_span(
            &span,
            format_args!("consume {}", envelope.kind),
            SpanKind::Consumer,
        );
        trace::set_parent(&span, envelope.traceparent.as_deref());
        span
    }

    /// A receive failed: the broker may be gone. At the first failure of an outage, the consumer stops
    /// fetching its partitions until a look finds the broker sound again (see [`crate::offsets`]).
    fn receive_failed(&self, error: &rdkafka::error::KafkaError, watch: &mut BrokerWatch) {
        tracing::warn!(consumer = %self.config.name, %error, "Kafka receive failed");
        if !broker_gone(error) || !watch.receive_failed() {
            return;
        }
        let paused = self.consumer.assignment().and_then(|assignment| {
            self.consumer.pause(&assignment)?;
            Ok(partitions_of(&assignment))
        });
        match paused {
            Ok(partitions) => {
                tracing::info!(consumer = %self.config.name, "fetching paused until the broker is back and sound");
                watch.paused_these(partitions);
                self.stats.paused.store(true, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(consumer = %self.config.name, %error, "cannot pause fetching")
            }
        }
    }

    /// Looks at the broker (see [`crate::offsets`]), goes back where it lost its data and, when fetching is
    /// paused, resumes it once the broker answered and every topic exists. Returns whether it went back. A
    /// broker that does not answer is looked at again soon.
    async fn look_at_the_broker(
        &self,
        watch: &mut BrokerWatch,
        topics: &mut kafka::TopicRepair,
    ) -> bool {
        // Never fetch a topic the broker does not have (see the module documentation of `offsets`); this
        // also lets the look below read every partition's watermarks.
        if watch.paused() && !topics.ensure(&self.config.name).await {
            self.stats
                .look_failed(Some("cannot make sure the topics exist".into()));
            return false;
        }
        let consumer = Arc::clone(&self.consumer);
        let look =
            tokio::task::spawn_blocking(move || offsets::inspect(&consumer, LOOK_TIMEOUT)).await;
        let look = match look {
            Ok(Ok(look)) => look,
            Ok(Err(error)) => {
                tracing::debug!(consumer = %self.config.name, %error, "cannot look at the broker yet");
                self.stats.look_failed(Some(error.to_string()));
                return false;
            }
            Err(error) => {
                tracing::warn!(consumer = %self.config.name, %error, "looking at the broker failed");
                self.stats.look_failed(Some(error.to_string()));
                return false;
            }
        };
        self.stats.look_failed(None);
        metrics::gauge!("consumer_lag_messages", "consumer" => self.config.name.clone())
            .set(offsets::lag(&look) as f64);
        let rewinds = offsets::rewinds(watch, &look);
        let went_back = !rewinds.is_empty() && self.go_back(rewinds, watch).await;
        if went_back {
            watch.adopt(look.cluster_id);
        }
        if watch.paused() && !watch.suspect() {
            let resumed = self.consumer.assignment().and_then(|assignment| {
                let mut list = TopicPartitionList::new();
                for (topic, partition) in watch.to_resume(&partitions_of(&assignment)) {
                    list.add_partition(&topic, partition);
                }
                self.consumer.resume(&list)
            });
            match resumed {
                Ok(()) => {
                    watch.resumed();
                    self.stats.paused.store(false, Ordering::Relaxed);
                    tracing::info!(consumer = %self.config.name, "the broker is back; fetching resumed");
                }
                Err(error) => {
                    tracing::warn!(consumer = %self.config.name, %error, "cannot resume fetching; trying again")
                }
            }
        }
        went_back
    }

    /// Seeks the partitions back and commits their new start; returns whether it did.
    async fn go_back(&self, rewinds: Vec<offsets::Rewind>, watch: &mut BrokerWatch) -> bool {
        tracing::warn!(consumer = %self.config.name, ?rewinds,
            "the broker lost its data (another broker, or offsets beyond its log); reading those partitions again from their beginning");
        let consumer = Arc::clone(&self.consumer);
        let gone_back = tokio::task::spawn_blocking(move || {
            offsets::go_back(&consumer, &rewinds, LOOK_TIMEOUT)
        })
        .await;
        let error = match gone_back {
            Ok(Ok(())) => {
                self.stats.rewinds.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("consumer_rewinds_total", "consumer" => self.config.name.clone())
                    .increment(1);
                return true;
            }
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(consumer = %self.config.name, %error, "cannot go back; trying again");
        watch.look_again();
        false
    }

    /// Commits, per partition, the offset after the batch's last message.
    fn commit_offsets(&self, batch: &[Received]) -> anyhow::Result<()> {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for received in batch {
            let entry = next
                .entry((&received.topic, received.partition))
                .or_insert(0);
            *entry = (*entry).max(received.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        self.consumer.commit(&list, CommitMode::Async)?;
        Ok(())
    }
}

/// Whether a receive failed because the broker is gone or lost a topic (the failures after which the
/// consumer pauses until it has looked at the broker), rather than for a reason of its own.
fn broker_gone(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::UnknownTopicOrPartition
                | Code::UnknownPartition
                | Code::UnknownTopic
        )
    )
}

fn partitions_of(list: &TopicPartitionList) -> Vec<offsets::Partition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn detach(message: &impl Message) -> Received {
    Received {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        payload: message.payload().unwrap_or_default().to_vec(),
    }
}
