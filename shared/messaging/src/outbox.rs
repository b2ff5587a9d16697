//! The transactional outbox (the seed's 本地消息表, "local message table") and its relay.
//!
//! **Writing.** A service that changes business data calls [`enqueue_all`] inside the *same* local transaction,
//! so the message exists if and only if the change committed (seed, step 1). The `outbox` table (see the
//! migrations of each database) holds the whole [envelope](crate::Envelope), the topic and the key, and the
//! `traceparent` of the span that wrote it (NULL when it was not traced).
//!
//! **Relaying** (seed, step 2). [`Relay`] is a background task of the service that owns the table:
//!
//! 1. it wakes on `LISTEN outbox` (a trigger on the table sends `NOTIFY outbox` when rows commit), or after
//!    [`RelayConfig::poll_interval`] when no notification comes (a lost connection, a missed notify);
//! 2. it claims a batch of due rows with `SELECT … FOR UPDATE SKIP LOCKED`, so several replicas relay in
//!    parallel without taking the same row;
//! 3. it publishes the batch with the idempotent `acks=all` producer and **waits for every delivery report**
//!    (when tracing is on, each row is published in a `publish` span, a child of the row's `traceparent`,
//!    and the envelope sent carries that span's `traceparent`, so the consumer continues the trace);
//! 4. in the same transaction that holds the claim, delivered rows are deleted (forwarded → removed, as the
//!    seed says; Kafka keeps the message) and failed rows get `attempts + 1`, the error and a
//!    `next_attempt_at` from a capped exponential [`Backoff`] (not forwarded → retried). The table thus only
//!    ever holds what is still to be delivered, which keeps the claim and the gauges cheap.
//!
//! A row is never dropped: after [`RelayConfig::stuck_after_attempts`] failures it is logged once and counted
//! in the `outbox_stuck_messages` gauge, and retried on, until it is delivered or an operator acts.
//!
//! **When the broker fails** (it crashed, it restarts, it came back without its data) the relay heals itself,
//! with no restart of the service:
//! - rows that failed wait out their backoff, so a dead broker costs one batch per backoff step, not a busy
//!   loop; the first round that delivers again makes every waiting row due at once, so the backlog drains
//!   as soon as the broker answers instead of trickling out as each row's backoff ends;
//! - after a failed round the relay checks that the topics of its rows exist and creates them if the broker
//!   lost them ([`kafka::TopicRepair`]);
//! - a producer that fails fatally, or fails every send for [`RelayConfig::rebuild_after_failed_rounds`]
//!   rounds in a row, is replaced by a new one, so no client-side state can keep it stuck.
//!
//! If the relay dies between 3 and 4, its claim is rolled back and the rows are published again: delivery is
//! **at least once**, which is why every consumer deduplicates by `message_id`
//! ([`crate::consumer::IdempotentConsumer`]). [`RelayFaults`] can inject exactly that death, for tests and
//! the chaos admin API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use distlab_platform::trace::{self, SpanKind};
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::kafka;

/// The channel the outbox trigger notifies.
pub const NOTIFY_CHANNEL: &str = "outbox";

/// A message to write into the outbox.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub topic: String,
    pub key: String,
    pub envelope: Envelope,
}

/// Writes every message into the outbox, in one statement, as part of the caller's transaction; a row's
/// `traceparent` is its envelope's.
pub async fn enqueue_all(conn: &mut PgConnection, messages: &[OutboxMessage]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = messages.iter().map(|m| m.envelope.message_id).collect();
    let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.key.as_str()).collect();
    let envelopes: Vec<sqlx::types::Json<&Envelope>> = messages
        .iter()
        .map(|m| sqlx::types::Json(&m.envelope))
        .collect();
    let traceparents: Vec<Option<&str>> = messages
        .iter()
        .map(|m| m.envelope.traceparent.as_deref())
        .collect();
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, message_key, envelope, traceparent)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[])",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&keys)
    .bind(&envelopes)
    .bind(&traceparents)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts of the outbox table, for tests and gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxCounts {
    /// Not yet delivered.
    pub pending: i64,
    /// Not yet delivered and failed at least `stuck_after_attempts` times.
    pub stuck: i64,
}

/// Counts the outbox's rows (all of them are undelivered).
pub async fn counts(pool: &PgPool, stuck_after_attempts: i32) -> sqlx::Result<OutboxCounts> {
    sqlx::query_as(
        "SELECT count(*) AS pending, count(*) FILTER (WHERE attempts >= $1) AS stuck FROM outbox",
    )
    .bind(stuck_after_attempts)
    .fetch_one(pool)
    .await
}

/// How long the oldest row of the outbox has waited, in seconds (0 when the outbox is empty): how far the
/// relay is behind, whatever the number of rows.
pub async fn oldest_pending_seconds(pool: &PgPool) -> sqlx::Result<f64> {
    sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM outbox",
    )
    .fetch_one(pool)
    .await
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Label of this relay in logs and metrics (e.g. `order`).
    pub name: String,
    /// Kafka bootstrap servers (the producer is re-created from them after a fatal error).
    pub brokers: String,
    /// Rows claimed and published per transaction.
    pub batch_size: i64,
    /// Longest sleep without a notification.
    pub poll_interval: Duration,
    /// Schedule of retries of a row that failed to publish.
    pub retry: Backoff,
    /// Failures after which a row counts as stuck (logged, counted; still retried).
    pub stuck_after_attempts: i32,
    /// Rounds in a row in which every send failed, after which the producer is replaced.
    pub rebuild_after_failed_rounds: u32,
    /// Partitions and replication factor of a topic the relay must create again (a broker that lost it).
    pub topic_partitions: i32,
    pub replication_factor: i32,
}

impl RelayConfig {
    pub fn new(name: impl Into<String>, brokers: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            brokers: brokers.into(),
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
            retry: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            stuck_after_attempts: 8,
            rebuild_after_failed_rounds: 3,
            topic_partitions: 4,
            replication_factor: 1,
        }
    }
}

/// Faults the relay can be told to suffer, for tests and the chaos admin API.
#[derive(Debug, Clone, Default)]
pub struct RelayFaults {
    crash_after_publish: Arc<AtomicU32>,
}

impl RelayFaults {
    /// The next `batches` batches are published and then abandoned before they are removed from the outbox, as if the
    /// relay process died at that moment: their rows stay pending and are published again.
    pub fn crash_after_publish(&self, batches: u32) {
        self.crash_after_publish.store(batches, Ordering::SeqCst);
    }

    fn take_crash_after_publish(&self) -> bool {
        self.crash_after_publish
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[derive(Debug, sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    message_id: Uuid,
    topic: String,
    message_key: String,
    envelope: String,
    attempts: i32,
    traceparent: Option<String>,
}

/// What one relay round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    pub claimed: usize,
    pub sent: usize,
    pub failed: usize,
}

/// The relay task of one outbox table. See the module documentation.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    config: RelayConfig,
    faults: RelayFaults,
    topics: kafka::TopicRepair,
    /// Rounds in a row in which every send failed (reset when the producer is replaced).
    failed_rounds: u32,
    /// Whether the last round with any send delivered none (not reset by a replacement).
    failing: bool,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(pool: PgPool, config: RelayConfig, faults: RelayFaults) -> anyhow::Result<Self> {
        let producer = kafka::producer(&config.brokers, &format!("{}-relay", config.name))?;
        let topics = kafka::TopicRepair::new(
            &config.brokers,
            Vec::new(),
            config.topic_partitions,
            config.replication_factor,
        );
        Ok(Self {
            pool,
            producer,
            config,
            faults,
            topics,
            failed_rounds: 0,
            failing: false,
        })
    }

    /// Relays until `shutdown` is cancelled. Errors are logged and retried, never returned.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut listener = self.listen().await;
        let mut last_housekeeping: Option<Instant> = None;
        let mut consecutive_errors = 0u32;
        tracing::info!(relay = %self.config.name, "outbox relay started");
        loop {
            let mut wait = self.config.poll_interval;
            let mut failing = false;
            loop {
                match self.relay_round().await {
                    Ok(round) if round.failed > 0 => {
                        // The broker is likely unavailable: let the rows' backoff run before the next round.
                        wait = self.config.retry.delay(1);
                        break;
                    }
                    Ok(round) => {
                        consecutive_errors = 0;
                        if round.claimed < self.config.batch_size as usize {
                            break;
                        }
                    }
                    Err(error) => {
                        consecutive_errors += 1;
                        wait = self.config.retry.delay(consecutive_errors);
                        failing = true;
                        tracing::warn!(relay = %self.config.name, error = %error, "outbox relay round failed");
                        break;
                    }
                }
            }
            if last_housekeeping.is_none_or(|at| at.elapsed() >= self.config.poll_interval) {
                self.housekeeping().await;
                last_housekeeping = Some(Instant::now());
            }
            if failing {
                // Back off for real: notifications must not turn a failing round into a busy loop.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                notified = recv(&mut listener) => {
                    if let Err(error) = notified {
                        tracing::warn!(relay = %self.config.name, %error, "outbox LISTEN connection lost; polling");
                        listener = None;
                    }
                }
                () = tokio::time::sleep(wait) => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                }
            }
        }
        tracing::info!(relay = %self.config.name, "outbox relay stopped");
    }

    async fn listen(&self) -> Option<PgListener> {
        let result = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match result {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(relay = %self.config.name, %error, "cannot LISTEN for outbox rows; polling");
                None
            }
        }
    }

    /// Claims one batch of due rows, publishes it and records the outcome, in one transaction.
    pub async fn relay_round(&mut self) -> anyhow::Result<RoundOutcome> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "SELECT id, message_id, topic, message_key, envelope::text AS envelope, attempts, traceparent
             FROM outbox
             WHERE next_attempt_at <= now()
             ORDER BY id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(RoundOutcome::default());
        }

        // The envelope carries the message id; no Kafka headers are sent (tansu's SQLite storage looks a
        // record's headers up with a full scan of every header it holds, which makes fetches O(n)).
        let traced: Vec<(tracing::Span, Option<Vec<u8>>)> = if distlab_platform::trace::enabled() {
            rows.iter().map(|row| self.publish_span(row)).collect()
        } else {
            Vec::new()
        };
        let deliveries = join_all(rows.iter().enumerate().map(|(i, row)| {
            let (span, payload) = match traced.get(i) {
                Some((span, payload)) => (span.clone(), payload.as_deref()),
                None => (tracing::Span::none(), None),
            };
            let record = FutureRecord::to(&row.topic)
                .key(row.message_key.as_bytes())
                .payload(payload.unwrap_or(row.envelope.as_bytes()));
            self.producer
                .send(record, Timeout::After(kafka::DELIVERY_TIMEOUT))
                .instrument(span)
        }))
        .await;
        drop(traced);

        if self.faults.take_crash_after_publish() {
            tracing::warn!(relay = %self.config.name, rows = rows.len(), "injected fault: relay dies after publishing, before removing the rows");
            drop(tx); // rolled back: the rows stay pending and will be published again
            anyhow::bail!("injected fault: crash after publish");
        }

        let mut sent = Vec::with_capacity(rows.len());
        let (mut failed_ids, mut failed_errors, mut failed_delays) =
            (Vec::new(), Vec::new(), Vec::new());
        for (row, delivery) in rows.iter().zip(deliveries) {
            match delivery {
                Ok(_) => sent.push(row.id),
                Err((error, _message)) => {
                    let attempts = row.attempts + 1;
                    if attempts == self.config.stuck_after_attempts {
                        tracing::error!(
                            relay = %self.config.name, message_id = %row.message_id, topic = %row.topic,
                            attempts, %error, "outbox message is stuck: still failing, still retried"
                        );
                    }
                    failed_ids.push(row.id);
                    failed_errors.push(error.to_string());
                    let delay = self.config.retry.delay(attempts.max(1) as u32);
                    failed_delays.push(delay.as_secs_f64());
                }
            }
        }

        if !sent.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&sent)
                .execute(&mut *tx)
                .await?;
        }
        if !failed_ids.is_empty() {
            sqlx::query(
                "UPDATE outbox AS o
                 SET attempts = o.attempts + 1, last_error = f.error,
                     next_attempt_at = now() + make_interval(secs => f.delay)
                 FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS f(id, error, delay)
                 WHERE o.id = f.id",
            )
            .bind(&failed_ids)
            .bind(&failed_errors)
            .bind(&failed_delays)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        let labels = [("relay", self.config.name.clone())];
        metrics::counter!("outbox_published_total", &labels).increment(sent.len() as u64);
        metrics::counter!("outbox_publish_failures_total", &labels)
            .increment(failed_ids.len() as u64);
        metrics::histogram!("outbox_relay_round_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        if !failed_ids.is_empty() {
            tracing::warn!(relay = %self.config.name, failed = failed_ids.len(), error = %failed_errors[0], "outbox rows not delivered; will retry");
            for row in &rows {
                self.topics.keep(&row.topic);
            }
            self.topics.after_failure(&self.config.name).await;
        }
        if sent.is_empty() {
            self.failing = true;
            self.failed_rounds += 1;
            self.replace_producer_if_stuck();
        } else {
            self.failed_rounds = 0;
            if std::mem::take(&mut self.failing) {
                self.retry_waiting_rows_now().await;
            }
        }
        Ok(RoundOutcome {
            claimed: rows.len(),
            sent: sent.len(),
            failed: failed_ids.len(),
        })
    }

    /// The span that publishes `row` (a child of the span that wrote it) and, when the envelope parses, the
    /// envelope to send instead of the stored one: the same, produced by this span.
    fn publish_span(&self, row: &ClaimedRow) -> (tracing::Span, Option<Vec<u8>>) {
        let envelope = Envelope::from_bytes(row.envelope.as_bytes()).ok();
        let kind = envelope.as_ref().map_or("message", |e| e.kind.as_str());
        let span = tracing::info_span!("outbox.publish", relay = %self.config.name, topic = %row.topic,
            message_id = %row.message_id, otel.name = tracing::field::Empty, otel.kind = tracing::field::Empty);
        trace::name_span(&span, format_args!("publish {kind}"), SpanKind::Producer);
        // Rows written before the `traceparent` column still carry their producer in the envelope.
        let parent = row
            .traceparent
            .as_deref()
            .or_else(|| envelope.as_ref().and_then(|e| e.traceparent.as_deref()));
        trace::set_parent(&span, parent);
        let payload = envelope.map(|envelope| {
            envelope
                .produced_by(trace::traceparent_of_span(&span))
                .to_bytes()
        });
        (span, payload)
    }

    /// A producer that failed fatally (an idempotent producer can), or that has not delivered anything for
    /// [`RelayConfig::rebuild_after_failed_rounds`] rounds, is replaced: whatever state it holds (connections,
    /// metadata of a broker that is gone) goes with it.
    fn replace_producer_if_stuck(&mut self) {
        let fatal = self.producer.client().fatal_error();
        let stuck = self.failed_rounds >= self.config.rebuild_after_failed_rounds;
        if fatal.is_none() && !stuck {
            return;
        }
        match &fatal {
            Some((code, reason)) => {
                tracing::error!(relay = %self.config.name, ?code, %reason, "Kafka producer failed fatally; replacing it")
            }
            None => {
                tracing::warn!(relay = %self.config.name, rounds = self.failed_rounds, "Kafka producer delivered nothing for several rounds; replacing it")
            }
        }
        match kafka::producer(&self.config.brokers, &format!("{}-relay", self.config.name)) {
            Ok(producer) => {
                let old = std::mem::replace(&mut self.producer, producer);
                // Dropping a producer flushes and joins its threads: not on the async runtime's.
                tokio::task::spawn_blocking(move || drop(old));
                self.failed_rounds = 0;
                metrics::counter!("outbox_producer_rebuilds_total", "relay" => self.config.name.clone())
                    .increment(1);
            }
            Err(error) => {
                tracing::error!(relay = %self.config.name, %error, "cannot create a Kafka producer")
            }
        }
    }

    /// The broker delivers again: rows that wait out a backoff become due now, so the backlog drains at once.
    async fn retry_waiting_rows_now(&self) {
        let result = sqlx::query(
            "UPDATE outbox SET next_attempt_at = now() WHERE next_attempt_at > now() AND attempts > 0",
        )
        .execute(&self.pool)
        .await;
        match result {
            Ok(done) => {
                tracing::info!(relay = %self.config.name, waiting = done.rows_affected(), "Kafka delivers again; retrying the waiting rows now")
            }
            Err(error) => {
                tracing::warn!(relay = %self.config.name, %error, "cannot make the waiting rows due")
            }
        }
    }

    /// Refreshes the gauges.
    async fn housekeeping(&self) {
        let labels = [("relay", self.config.name.clone())];
        match counts(&self.pool, self.config.stuck_after_attempts).await {
            Ok(counts) => {
                metrics::gauge!("outbox_pending_messages", &labels).set(counts.pending as f64);
                metrics::gauge!("outbox_stuck_messages", &labels).set(counts.stuck as f64);
            }
            Err(error) => {
                tracing::warn!(relay = %self.config.name, %error, "cannot count outbox rows")
            }
        }
        match oldest_pending_seconds(&self.pool).await {
            Ok(age) => metrics::gauge!("outbox_oldest_pending_seconds", &labels).set(age),
            Err(error) => {
                tracing::warn!(relay = %self.config.name, %error, "cannot read the outbox's oldest row")
            }
        }
    }
}

async fn recv(listener: &mut Option<PgListener>) -> sqlx::Result<()> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
