//! Noticing, from a consumer's side, a broker that lost its data, and going back to read what it would skip.
//!
//! A consumer's fetch positions and its group's committed offsets are numbers into a partition's log. They
//! stay true as long as the broker keeps that log. A broker that comes back without its data (replaced, or
//! its storage wiped) starts every partition again at offset 0, and the numbers lie: the consumer goes on
//! fetching from its old positions, and skips whatever the new log holds below them. Apache Kafka answers a
//! fetch above the high watermark with `OFFSET_OUT_OF_RANGE`, and the client starts over; tansu 0.6 answers
//! it with nothing, so the consumer waits until the new log grows past its old position. Worse, a commit the
//! client had queued before the crash reaches the new broker once it answers (tansu stores commits without
//! checking the group member), and becomes the position of whoever gets the partition at the next rebalance.
//!
//! Every few seconds the consumer takes a [`Look`] at the broker ([`inspect`]) and [`rewinds`] decides:
//!
//! - **the cluster id changed**: this is another broker (a new data directory gets a new id — `cargo xtask
//!   up` and the test brokers see to it, as Apache Kafka does when it formats its storage). Every assigned
//!   partition goes back to its beginning;
//! - **a position or a committed offset above the partition's high watermark** cannot happen on a broker
//!   that kept its log: that partition goes back to its beginning.
//!
//! Going back is a seek plus a commit of the new start, so that a rebalance cannot bring the stale offset
//! back; a consumer that fails to go back, or holds no partition when it first sees the new broker, keeps
//! the old cluster id and goes back at a later look. And while the broker is away the consumer does not
//! fetch at all: at the first receive that fails because the broker is gone it pauses its partitions, and it resumes them only once a look has reached the broker, its topics exist
//! (created again if need be) and the stale positions are gone. That also keeps it from fetching a topic
//! the broker does not have — tansu 0.6 answers such a fetch with a zero topic id and a leader hint, which
//! makes librdkafka 2.12 dereference a topic name it does not have and crash the process (`docs/kafka.md`). What the consumer had applied already is skipped by the idempotent consumer (`processed_messages`).
//! Messages the old broker held that nobody had read are not there to read again: the order service's
//! redelivery covers those.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// A topic and partition.
pub type Partition = (String, i32);

/// What a consumer remembers between two looks at the broker.
#[derive(Debug, Default)]
pub struct BrokerWatch {
    /// The cluster id the broker reported last.
    cluster_id: Option<String>,
    /// A receive failed since the last look: the broker may have been replaced, look again soon.
    suspect: bool,
    /// The consumer stopped fetching its partitions until the broker is known to be sound again.
    paused: bool,
    /// The partitions it paused: librdkafka keeps a partition paused across a rebalance, so these are the
    /// ones to resume, whatever the assignment is by then.
    paused_partitions: Vec<Partition>,
}

impl BrokerWatch {
    /// A receive failed: look again soon. Returns whether the consumer must pause its partitions now (it
    /// had not yet).
    pub fn receive_failed(&mut self) -> bool {
        self.suspect = true;
        !std::mem::replace(&mut self.paused, true)
    }

    /// Whether a receive failed since the last look that reached the broker.
    pub fn suspect(&self) -> bool {
        self.suspect
    }

    /// Whether the consumer's partitions are paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The consumer paused these partitions.
    pub fn paused_these(&mut self, partitions: Vec<Partition>) {
        self.paused_partitions = partitions;
    }

    /// The partitions to resume: those paused and those assigned now.
    pub fn to_resume(&self, assigned: &[Partition]) -> Vec<Partition> {
        let mut all: Vec<Partition> = self
            .paused_partitions
            .iter()
            .chain(assigned)
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The consumer resumed fetching.
    pub fn resumed(&mut self) {
        self.paused = false;
        self.paused_partitions.clear();
    }

    /// Something failed half-way (a seek): look again soon, without pausing.
    pub fn look_again(&mut self) {
        self.suspect = true;
    }

    /// The consumer went back to the beginning of every partition of the broker with this cluster id (or
    /// never saw another): it is the broker from now on.
    pub fn adopt(&mut self, cluster_id: Option<String>) {
        if cluster_id.is_some() {
            self.cluster_id = cluster_id;
        }
    }
}

/// One assigned partition as the broker and the consumer see it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: Partition,
    /// The offset after the last message the consumer handed out, if it handed out any since it was
    /// assigned the partition.
    pub position: Option<i64>,
    /// The group's committed offset at the broker, if it holds one.
    pub committed: Option<i64>,
    /// The partition's low and high watermarks (first offset, and the offset the next record will get).
    pub low: i64,
    pub high: i64,
}

/// The broker as one consumer saw it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    pub cluster_id: Option<String>,
    pub partitions: Vec<PartitionState>,
}

/// Why a consumer goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The broker reports another cluster id than before.
    BrokerReplaced,
    /// The position or the group's committed offset is above the high watermark.
    LogLost,
}

/// Where one partition goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewind {
    pub partition: Partition,
    pub to: i64,
    pub cause: Cause,
}

/// Which partitions go back, and where (see the module documentation). Records the cluster id, unless it
/// names another broker: that one is adopted by [`BrokerWatch::adopt`] once the consumer has gone back, so a
/// consumer that holds no partition at that moment (its group is rejoining), or fails to go back, does so
/// at a later look.
pub fn rewinds(watch: &mut BrokerWatch, look: &Look) -> Vec<Rewind> {
    let replaced = matches!(
        (&watch.cluster_id, &look.cluster_id),
        (Some(before), Some(now)) if before != now
    );
    if !replaced {
        watch.adopt(look.cluster_id.clone());
    }
    watch.suspect = false;
    look.partitions
        .iter()
        .filter_map(|state| {
            let above = |offset: Option<i64>| offset.is_some_and(|o| o > state.high);
            let cause = if replaced {
                Cause::BrokerReplaced
            } else if above(state.position) || above(state.committed) {
                Cause::LogLost
            } else {
                return None;
            };
            Some(Rewind {
                partition: state.partition.clone(),
                to: state.low,
                cause,
            })
        })
        .collect()
}

/// The consumer's lag in messages, as of one look: over its assigned partitions, the messages between the
/// group's committed offset and the high watermark. A partition without a committed offset counts from the
/// consumer's position, else from its low watermark (`auto.offset.reset` is `earliest`); an offset above the
/// high watermark (a broker that lost its log, see above) counts 0. Exported as `consumer_lag_messages`.
pub fn lag(look: &Look) -> i64 {
    look.partitions
        .iter()
        .map(|p| {
            let from = p.committed.or(p.position).unwrap_or(p.low);
            (p.high - from).max(0)
        })
        .sum()
}

/// Reads the cluster id and, for every assigned partition, the consumer's position, the group's committed
/// offset and the watermarks. Blocking: one metadata, one offset-fetch and one list-offsets request per
/// partition.
pub fn inspect<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    timeout: Duration,
) -> KafkaResult<Look> {
    // librdkafka keeps the cluster id of the last metadata answer: ask the broker, then read it.
    consumer.fetch_metadata(None, timeout)?;
    let cluster_id = consumer.client().fetch_cluster_id(timeout);
    let assignment = consumer.assignment()?;
    let committed = if assignment.count() == 0 {
        TopicPartitionList::new()
    } else {
        consumer.committed_offsets(assignment, timeout)?
    };
    let positions = consumer.position()?;
    let mut partitions = Vec::new();
    for e in committed.elements() {
        let partition = (e.topic().to_owned(), e.partition());
        let position = positions
            .find_partition(&partition.0, partition.1)
            .and_then(|p| as_number(p.offset()));
        // Read after the position: on a broker that kept its log, the watermark can only have grown since.
        let (low, high) = consumer.fetch_watermarks(&partition.0, partition.1, timeout)?;
        partitions.push(PartitionState {
            committed: as_number(e.offset()),
            partition,
            position,
            low,
            high,
        });
    }
    Ok(Look {
        cluster_id,
        partitions,
    })
}

fn as_number(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(n) => Some(n),
        _ => None,
    }
}

/// Seeks every partition of `rewinds` back and commits its new start (asynchronously: commits leave in
/// order, and the next look checks what the broker holds). Blocking for the seek.
pub fn go_back<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    rewinds: &[Rewind],
    timeout: Duration,
) -> KafkaResult<()> {
    let mut list = TopicPartitionList::new();
    for rewind in rewinds {
        list.add_partition_offset(
            &rewind.partition.0,
            rewind.partition.1,
            Offset::Offset(rewind.to),
        )?;
    }
    // The call succeeds as a whole even when a partition fails: look at each.
    for e in consumer.seek_partitions(list.clone(), timeout)?.elements() {
        e.error()?;
    }
    consumer.commit(&list, CommitMode::Async)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(p: i32, position: Option<i64>, committed: Option<i64>, high: i64) -> PartitionState {
        PartitionState {
            partition: ("orders".to_owned(), p),
            position,
            committed,
            low: 0,
            high,
        }
    }

    fn look(cluster_id: &str, partitions: Vec<PartitionState>) -> Look {
        Look {
            cluster_id: Some(cluster_id.to_owned()),
            partitions,
        }
    }

    fn causes(rewinds: &[Rewind]) -> Vec<(i32, Cause)> {
        rewinds.iter().map(|r| (r.partition.1, r.cause)).collect()
    }

    #[test]
    fn the_lag_counts_from_the_commit_else_the_position_else_the_start() {
        let mut from_low = state(3, None, None, 5);
        from_low.low = 2;
        let partitions = vec![
            state(0, Some(9), Some(7), 10),
            state(1, Some(4), None, 10),
            from_low,
            // Above the high watermark: the broker lost its log; no negative lag.
            state(4, Some(12), Some(12), 3),
        ];
        assert_eq!(lag(&look("a", partitions)), 3 + 6 + 3);
        assert_eq!(lag(&look("a", Vec::new())), 0, "no partition assigned");
    }

    #[test]
    fn the_first_failed_receive_pauses_and_a_resume_rearms_it() {
        let mut watch = BrokerWatch::default();
        assert!(watch.receive_failed(), "pause now");
        assert!(!watch.receive_failed(), "already paused");
        assert!(watch.paused() && watch.suspect());
        watch.resumed();
        assert!(watch.receive_failed(), "a new outage pauses again");
    }

    #[test]
    fn what_was_paused_is_resumed_even_after_a_rebalance_took_it_away() {
        let p = |n: i32| ("orders".to_owned(), n);
        let mut watch = BrokerWatch::default();
        assert!(watch.receive_failed());
        watch.paused_these(vec![p(0), p(1)]);
        // The group rebalanced while the broker was away: now partitions 1 and 2 are assigned.
        assert_eq!(watch.to_resume(&[p(1), p(2)]), [p(0), p(1), p(2)]);
        watch.resumed();
        assert_eq!(watch.to_resume(&[]), []);
    }

    #[test]
    fn offsets_within_the_log_are_left_alone() {
        let mut watch = BrokerWatch::default();
        let healthy = look(
            "a",
            vec![
                state(0, Some(10), Some(10), 10),
                state(1, None, None, 0),
                state(2, Some(3), Some(2), 40),
            ],
        );
        assert_eq!(rewinds(&mut watch, &healthy), []);
        assert_eq!(rewinds(&mut watch, &healthy), [], "the same cluster twice");
    }

    #[test]
    fn a_position_or_commit_above_the_high_watermark_means_the_log_was_lost() {
        let mut watch = BrokerWatch::default();
        let found = rewinds(
            &mut watch,
            &look(
                "a",
                vec![
                    state(0, Some(2670), Some(2670), 2432),
                    state(1, Some(10), Some(10), 10),
                    state(2, None, Some(90), 40),
                ],
            ),
        );
        assert_eq!(causes(&found), [(0, Cause::LogLost), (2, Cause::LogLost)]);
        assert!(found.iter().all(|r| r.to == 0), "back to the low watermark");
    }

    #[test]
    fn another_cluster_id_sends_every_partition_back_to_its_beginning() {
        let mut watch = BrokerWatch::default();
        watch.receive_failed();
        assert_eq!(
            rewinds(&mut watch, &look("a", vec![state(0, Some(5), Some(5), 9)])),
            []
        );
        assert!(!watch.suspect(), "the broker answered");
        // The new broker's log already grew past the old positions: no offset looks wrong, the id does.
        let replaced = look(
            "b",
            vec![state(0, Some(5), Some(5), 900), state(1, None, None, 700)],
        );
        let found = rewinds(&mut watch, &replaced);
        assert_eq!(
            causes(&found),
            [(0, Cause::BrokerReplaced), (1, Cause::BrokerReplaced)]
        );
        // Going back failed: the next look finds the new broker again.
        assert_eq!(rewinds(&mut watch, &replaced).len(), 2);
        watch.adopt(replaced.cluster_id.clone());
        assert_eq!(
            rewinds(
                &mut watch,
                &look("b", vec![state(0, Some(0), Some(0), 900)])
            ),
            []
        );
    }

    #[test]
    fn a_consumer_without_partitions_goes_back_when_it_gets_some() {
        let mut watch = BrokerWatch::default();
        assert_eq!(
            rewinds(&mut watch, &look("a", vec![state(0, Some(5), Some(5), 9)])),
            []
        );
        // The group is rejoining after the crash: nothing assigned when the new broker is first seen.
        assert_eq!(rewinds(&mut watch, &look("b", vec![])), []);
        let found = rewinds(&mut watch, &look("b", vec![state(0, None, Some(5), 900)]));
        assert_eq!(causes(&found), [(0, Cause::BrokerReplaced)]);
        watch.adopt(Some("b".into()));
        assert_eq!(
            rewinds(&mut watch, &look("b", vec![state(0, None, Some(0), 900)])),
            []
        );
    }

    #[test]
    fn a_broker_that_names_no_cluster_id_is_judged_by_its_offsets_alone() {
        let mut watch = BrokerWatch::default();
        assert_eq!(rewinds(&mut watch, &look("a", vec![])), []);
        let anonymous = Look {
            cluster_id: None,
            partitions: vec![state(0, Some(5), None, 900)],
        };
        assert_eq!(rewinds(&mut watch, &anonymous), []);
        assert_eq!(
            rewinds(&mut watch, &look("a", vec![state(0, Some(5), None, 900)])),
            [],
            "the id it had before is kept"
        );
    }
}
