//! The replicated key-value state machine: what every node applies, in log order, once Raft has committed
//! an entry (seed, 六: "the leader replicates client changes to a majority before committing").
//!
//! Plain Rust with no IO. A key's **revision** is the Raft log index of the entry that last wrote it, so
//! revisions are the same on every node, grow with time, and a reader can compare them across nodes (etcd's
//! `mod_revision`). A write with `prev_revision` is compare-and-set: it applies only when the key's current
//! revision is exactly that (`0` = the key must not exist).
//!
//! Every applied change is also kept in a bounded, ordered **history** so that watchers can resume from any
//! revision after [`KvState::compacted`] without a gap. Older changes are compacted away: a watch from
//! before that point gets [`Compacted`], like etcd's `ErrCompacted`. After a restart the history starts at
//! the snapshot the node restored (the log after it is replayed into the history).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The Raft log index of the entry that made a change.
pub type Revision = u64;

/// A client command, replicated through the Raft log.
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

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Put { key, .. } => write!(f, "put {key}"),
            Command::Delete { key, .. } => write!(f, "delete {key}"),
        }
    }
}

/// What applying one log entry did; returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    /// A log entry that is not a client command (a leader's blank entry, a membership change).
    #[default]
    Internal,
}

/// A key's current value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Value,
    /// Revision of the last write.
    pub revision: Revision,
}

/// One applied change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub revision: Revision,
    pub key: String,
    /// `None` for a delete (then absent from the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The history no longer holds the changes a watcher asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("changes up to revision {compacted} are compacted")]
pub struct Compacted {
    pub compacted: Revision,
}

/// The state a snapshot carries: the keys, nothing else (the history is rebuilt from the log after it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvSnapshot {
    pub entries: BTreeMap<String, Versioned>,
}

/// The key space plus the bounded change history.
#[derive(Debug, Clone)]
pub struct KvState {
    entries: BTreeMap<String, Versioned>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Every change with a revision above this one is in `history`.
    compacted: Revision,
    /// The last log index applied (any entry, not only changes).
    applied: Revision,
}

impl KvState {
    pub fn new(history_limit: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            applied: 0,
        }
    }

    /// Applies a committed command at log index `revision`. Returns the outcome and, when the key space
    /// changed, the change (already appended to the history).
    pub fn apply(
        &mut self,
        revision: Revision,
        command: Command,
    ) -> (Outcome, Option<Arc<Change>>) {
        debug_assert!(revision > self.applied, "log entries are applied in order");
        self.applied = revision;
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

    /// Records that a non-command entry (blank, membership) at `index` was applied.
    pub fn skip(&mut self, index: Revision) {
        self.applied = self.applied.max(index);
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

    /// The last log index applied.
    pub fn applied(&self) -> Revision {
        self.applied
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
        }
    }

    /// Replaces the state with a snapshot taken at log index `applied`; the history restarts there.
    pub fn restore(&mut self, snapshot: KvSnapshot, applied: Revision) {
        self.entries = snapshot.entries;
        self.history.clear();
        self.compacted = applied;
        self.applied = applied;
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

    #[test]
    fn a_put_gives_the_key_the_log_index_as_its_revision() {
        let mut kv = KvState::new(10);
        assert_eq!(
            kv.apply(3, put("a/b", json!(1), None)).0,
            Outcome::Written { revision: 3 }
        );
        assert_eq!(
            kv.get("a/b"),
            Some(&Versioned {
                value: json!(1),
                revision: 3
            })
        );
        assert_eq!(kv.applied(), 3);
    }

    #[test]
    fn compare_and_set_applies_only_on_the_current_revision() {
        let mut kv = KvState::new(10);
        assert_eq!(
            kv.apply(1, put("k", json!("a"), Some(0))).0,
            Outcome::Written { revision: 1 }
        );
        assert_eq!(
            kv.apply(2, put("k", json!("b"), Some(0))).0,
            Outcome::RevisionMismatch { current: 1 }
        );
        assert_eq!(
            kv.apply(3, put("k", json!("c"), Some(1))).0,
            Outcome::Written { revision: 3 }
        );
        assert_eq!(kv.get("k").map(|v| v.value.clone()), Some(json!("c")));
        assert_eq!(
            kv.apply(4, delete("k", Some(1))).0,
            Outcome::RevisionMismatch { current: 3 }
        );
        assert_eq!(
            kv.apply(5, delete("k", Some(3))).0,
            Outcome::Deleted { revision: 5 }
        );
        assert_eq!(kv.apply(6, delete("k", None)).0, Outcome::NotFound);
        // A failed CAS or a no-op delete is not a change.
        let revisions: Vec<_> = kv
            .changes_after(0, "")
            .unwrap()
            .iter()
            .map(|c| c.revision)
            .collect();
        assert_eq!(revisions, [1, 3, 5]);
    }

    #[test]
    fn keys_lists_exactly_the_prefix_in_order() {
        let mut kv = KvState::new(10);
        for (i, key) in ["a/2", "b/1", "a/1", "a", "ab"].iter().enumerate() {
            kv.apply(i as u64 + 1, put(key, json!(i), None));
        }
        let keys: Vec<_> = kv.keys("a/").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(kv.keys("").len(), 5);
    }

    #[test]
    fn the_history_resumes_after_any_revision_and_reports_compaction() {
        let mut kv = KvState::new(3);
        for i in 1..=5 {
            kv.apply(
                i * 2,
                put(if i % 2 == 0 { "x/even" } else { "y/odd" }, json!(i), None),
            );
        }
        // Revisions 2..=10; only the last three (6, 8, 10) are kept.
        assert_eq!(kv.compacted(), 4);
        assert_eq!(kv.changes_after(3, ""), Err(Compacted { compacted: 4 }));
        let all: Vec<_> = kv
            .changes_after(4, "")
            .unwrap()
            .iter()
            .map(|c| c.revision)
            .collect();
        assert_eq!(all, [6, 8, 10]);
        let after_seven: Vec<_> = kv
            .changes_after(7, "")
            .unwrap()
            .iter()
            .map(|c| c.revision)
            .collect();
        assert_eq!(after_seven, [8, 10]);
        let evens: Vec<_> = kv
            .changes_after(4, "x/")
            .unwrap()
            .iter()
            .map(|c| c.revision)
            .collect();
        assert_eq!(evens, [8]);
        assert!(kv.changes_after(10, "").unwrap().is_empty());
    }

    #[test]
    fn restoring_a_snapshot_restarts_the_history_at_its_index() {
        let mut kv = KvState::new(10);
        kv.apply(1, put("k", json!(1), None));
        kv.apply(2, put("j", json!(2), None));
        let snapshot = kv.snapshot();
        let mut restored = KvState::new(10);
        restored.restore(snapshot, 7);
        assert_eq!(restored.get("j").map(|v| v.revision), Some(2));
        assert_eq!(restored.applied(), 7);
        assert_eq!(
            restored.changes_after(1, ""),
            Err(Compacted { compacted: 7 })
        );
        restored.apply(8, put("k", json!(3), None));
        assert_eq!(restored.changes_after(7, "").unwrap().len(), 1);
    }

    #[test]
    fn commands_round_trip_through_json() {
        let command = put(
            "distlab/order/default_mode",
            json!({"mode": "2pc"}),
            Some(4),
        );
        let text = serde_json::to_string(&command).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), command);
    }
}
