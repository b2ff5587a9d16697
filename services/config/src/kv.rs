//! The replicated key-value state machine: what every node applies, in log order, once Raft has committed
//! an entry (seed, 六: "the leader replicates client changes to a majority before committing").
//!
//! Plain Rust with no IO. The store has a **revision** that grows by one with every change (etcd's
//! revision): every node applies the same log in the same order, so revisions are the same on every node.
//! A key's revision is the store revision of its last write (etcd's `mod_revision`). A write with
//! `prev_revision` is compare-and-set: it applies only when the key's current revision is exactly that
//! (`0` = the key must not exist). Failed compare-and-sets and deletes of absent keys change nothing and
//! take no revision.
//!
//! One Raft log entry carries a [`Proposal`]: the commands of every client whose write arrived while earlier
//! proposals were being committed (see [`crate::raft`]), applied one after the other. So a log index is not
//! a revision; it only says how far a node has applied.
//!
//! Every applied change is also kept in a bounded, ordered **history** so that watchers can resume from any
//! revision after [`KvState::compacted`] without a gap. Older changes are compacted away: a watch from
//! before that point gets [`Compacted`], like etcd's `ErrCompacted`. After a restart the history starts at
//! the snapshot the node restored (the log after it is replayed into the history).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use distlab_config_client::wire::WatchEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The store's change counter (the wire contract's revision).
pub use distlab_config_client::wire::Revision;

/// A client command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    Put {
        key: String,
        value: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev_revision: Option<Revision>,
    },
    Delete {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev_revision: Option<Revision>,
    },
}

/// The commands of one Raft log entry, applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal(pub Vec<Command>);

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} command(s)", self.0.len())
    }
}

/// What applying one command did; returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The key now has this revision.
    Written { revision: Revision },
    /// The key was removed at this revision.
    Deleted { revision: Revision },
    /// A delete of a key that does not exist; nothing changed.
    NotFound,
    /// `prev_revision` did not match; nothing changed. `current` is 0 when the key does not exist.
    RevisionMismatch { current: Revision },
}

/// The outcome of each command of a [`Proposal`], in order (none for a blank or membership entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes(pub Vec<Outcome>);

/// A key's current value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Value,
    /// Revision of the last write.
    pub revision: Revision,
}

/// One applied change, as watchers see it: the `data` of a watch event, which the wire contract declares
/// (`value` is `None` for a delete).
pub type Change = WatchEvent;

/// The history no longer holds the changes a watcher asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("changes up to revision {compacted} are compacted")]
pub struct Compacted {
    pub compacted: Revision,
}

/// The state a snapshot carries: the keys and the store revision (the history is rebuilt from the log
/// after it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvSnapshot {
    pub entries: BTreeMap<String, Versioned>,
    pub revision: Revision,
}

/// The key space plus the bounded change history.
#[derive(Debug, Clone)]
pub struct KvState {
    entries: BTreeMap<String, Versioned>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Every change with a revision above this one is in `history`.
    compacted: Revision,
    /// The store revision: that of the last change.
    revision: Revision,
}

impl KvState {
    pub fn new(history_limit: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            revision: 0,
        }
    }

    /// Applies a committed command. Returns the outcome and, when the key space changed, the change (which
    /// took the next store revision and is already in the history).
    pub fn apply(&mut self, command: Command) -> (Outcome, Option<Arc<Change>>) {
        let (key, prev_revision) = match &command {
            Command::Put {
                key, prev_revision, ..
            }
            | Command::Delete { key, prev_revision } => (key, *prev_revision),
        };
        let current = self.entries.get(key).map_or(0, |v| v.revision);
        if let Some(expected) = prev_revision
            && expected != current
        {
            return (Outcome::RevisionMismatch { current }, None);
        }
        let revision = self.revision + 1;
        let change = match command {
            Command::Put { key, value, .. } => {
                self.entries.insert(
                    key.clone(),
                    Versioned {
                        value: value.clone(),
                        revision,
                    },
                );
                Change {
                    revision,
                    key,
                    value: Some(value),
                }
            }
            Command::Delete { key, .. } => {
                if self.entries.remove(&key).is_none() {
                    return (Outcome::NotFound, None);
                }
                Change {
                    revision,
                    key,
                    value: None,
                }
            }
        };
        self.revision = revision;
        let outcome = match change.value {
            Some(_) => Outcome::Written { revision },
            None => Outcome::Deleted { revision },
        };
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.revision;
            }
        }
        (outcome, Some(change))
    }

    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.entries.get(key)
    }

    /// The keys starting with `prefix`, in order, with their revisions.
    pub fn keys(&self, prefix: &str) -> Vec<(String, Revision)> {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.revision))
            .collect()
    }

    /// The store revision (that of the last change).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Changes at or below this revision may be gone from the history.
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Every change under `prefix` with a revision above `after`, in order. Fails when some of them were
    /// compacted away (`after` < [`Self::compacted`]).
    pub fn changes_after(
        &self,
        after: Revision,
        prefix: &str,
    ) -> Result<Vec<Arc<Change>>, Compacted> {
        if after < self.compacted {
            return Err(Compacted {
                compacted: self.compacted,
            });
        }
        let start = self.history.partition_point(|c| c.revision <= after);
        Ok(self
            .history
            .range(start..)
            .filter(|c| c.key.starts_with(prefix))
            .cloned()
            .collect())
    }

    pub fn snapshot(&self) -> KvSnapshot {
        KvSnapshot {
            entries: self.entries.clone(),
            revision: self.revision,
        }
    }

    /// Replaces the state with a snapshot; the history restarts at its revision.
    pub fn restore(&mut self, snapshot: KvSnapshot) {
        self.entries = snapshot.entries;
        self.history.clear();
        self.compacted = snapshot.revision;
        self.revision = snapshot.revision;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn put(key: &str, value: Value, prev_revision: Option<Revision>) -> Command {
        Command::Put {
            key: key.to_owned(),
            value,
            prev_revision,
        }
    }

    fn delete(key: &str, prev_revision: Option<Revision>) -> Command {
        Command::Delete {
            key: key.to_owned(),
            prev_revision,
        }
    }

    fn revisions(changes: &[Arc<Change>]) -> Vec<Revision> {
        changes.iter().map(|c| c.revision).collect()
    }

    #[test]
    fn every_change_takes_the_next_store_revision() {
        let mut kv = KvState::new(10);
        assert_eq!(
            kv.apply(put("a/b", json!(1), None)).0,
            Outcome::Written { revision: 1 }
        );
        assert_eq!(
            kv.apply(put("c", json!(2), None)).0,
            Outcome::Written { revision: 2 }
        );
        assert_eq!(
            kv.get("a/b"),
            Some(&Versioned {
                value: json!(1),
                revision: 1
            })
        );
        assert_eq!(kv.revision(), 2);
    }

    #[test]
    fn compare_and_set_applies_only_on_the_current_revision() {
        let mut kv = KvState::new(10);
        assert_eq!(
            kv.apply(put("k", json!("a"), Some(0))).0,
            Outcome::Written { revision: 1 }
        );
        assert_eq!(
            kv.apply(put("k", json!("b"), Some(0))).0,
            Outcome::RevisionMismatch { current: 1 }
        );
        assert_eq!(
            kv.apply(put("k", json!("c"), Some(1))).0,
            Outcome::Written { revision: 2 }
        );
        assert_eq!(kv.get("k").map(|v| v.value.clone()), Some(json!("c")));
        assert_eq!(
            kv.apply(delete("k", Some(1))).0,
            Outcome::RevisionMismatch { current: 2 }
        );
        assert_eq!(
            kv.apply(delete("k", Some(2))).0,
            Outcome::Deleted { revision: 3 }
        );
        assert_eq!(kv.apply(delete("k", None)).0, Outcome::NotFound);
        // A failed CAS or a no-op delete is not a change and takes no revision.
        assert_eq!(revisions(&kv.changes_after(0, "").unwrap()), [1, 2, 3]);
        assert_eq!(kv.revision(), 3);
    }

    #[test]
    fn keys_lists_exactly_the_prefix_in_order() {
        let mut kv = KvState::new(10);
        for (i, key) in ["a/2", "b/1", "a/1", "a", "ab"].iter().enumerate() {
            kv.apply(put(key, json!(i), None));
        }
        let keys: Vec<_> = kv.keys("a/").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(kv.keys("").len(), 5);
    }

    #[test]
    fn the_history_resumes_after_any_revision_and_reports_compaction() {
        let mut kv = KvState::new(3);
        for i in 1..=5 {
            let key = if i % 2 == 0 { "x/even" } else { "y/odd" };
            kv.apply(put(key, json!(i), None));
        }
        // Revisions 1..=5; only the last three (3, 4, 5) are kept.
        assert_eq!(kv.compacted(), 2);
        assert_eq!(kv.changes_after(1, ""), Err(Compacted { compacted: 2 }));
        assert_eq!(revisions(&kv.changes_after(2, "").unwrap()), [3, 4, 5]);
        assert_eq!(revisions(&kv.changes_after(3, "").unwrap()), [4, 5]);
        assert_eq!(revisions(&kv.changes_after(2, "x/").unwrap()), [4]);
        assert!(kv.changes_after(5, "").unwrap().is_empty());
    }

    #[test]
    fn restoring_a_snapshot_restarts_the_history_at_its_revision() {
        let mut kv = KvState::new(10);
        kv.apply(put("k", json!(1), None));
        kv.apply(put("j", json!(2), None));
        let mut restored = KvState::new(10);
        restored.restore(kv.snapshot());
        assert_eq!(restored.get("j").map(|v| v.revision), Some(2));
        assert_eq!(restored.revision(), 2);
        assert_eq!(
            restored.changes_after(1, ""),
            Err(Compacted { compacted: 2 })
        );
        assert_eq!(
            restored.apply(put("k", json!(3), None)).0,
            Outcome::Written { revision: 3 }
        );
        assert_eq!(revisions(&restored.changes_after(2, "").unwrap()), [3]);
    }

    #[test]
    fn proposals_round_trip_through_json() {
        let proposal = Proposal(vec![
            put(
                "distlab/order/default_mode",
                json!({"mode": "2pc"}),
                Some(4),
            ),
            delete("x", None),
        ]);
        let text = serde_json::to_string(&proposal).unwrap();
        assert_eq!(serde_json::from_str::<Proposal>(&text).unwrap(), proposal);
    }
}
