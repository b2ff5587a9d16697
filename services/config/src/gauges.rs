//! The node's Raft state as Prometheus gauges, for the dashboards (`docs/observability.md`).
//!
//! openraft keeps its state in a watch of `RaftMetrics`; [`Node::status`] reads it (and the commit index
//! from the log store, which `RaftMetrics` of openraft 0.9 does not carry). Once a second [`export`] copies
//! that status into gauges labelled `node` (the Raft id), so that several nodes in one process stay apart:
//!
//! | gauge | value |
//! | --- | --- |
//! | `raft_term` | the current term |
//! | `raft_leader_id` | the leader this node knows of, 0 when it knows none (ids are > 0) |
//! | `raft_is_leader` | 1 on the leader, else 0 |
//! | `raft_last_log_index` | the last index appended to this node's log |
//! | `raft_commit_index` | the last index this node knows to be committed |
//! | `raft_applied_index` | the last index applied to this node's state machine |

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::raft::{ClusterStatus, Node};

/// How often the gauges are refreshed (Prometheus scrapes every 5 s).
pub const EVERY: Duration = Duration::from_secs(1);

/// The gauges' names and values for one status.
pub fn gauges(status: &ClusterStatus) -> [(&'static str, f64); 6] {
    [
        ("raft_term", status.term as f64),
        ("raft_leader_id", status.leader.unwrap_or(0) as f64),
        (
            "raft_is_leader",
            if status.state == "leader" { 1.0 } else { 0.0 },
        ),
        ("raft_last_log_index", status.last_log_index as f64),
        ("raft_commit_index", status.commit_index as f64),
        ("raft_applied_index", status.applied_index as f64),
    ]
}

/// Sets the gauges now and then every [`EVERY`] until `stop` is cancelled.
pub async fn export(node: Node, stop: CancellationToken) {
    let label = node.id.to_string();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for (name, value) in gauges(&node.status()) {
            metrics::gauge!(name, "node" => label.clone()).set(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn status(state: &str, leader: Option<u64>) -> ClusterStatus {
        ClusterStatus {
            node_id: 2,
            state: state.to_owned(),
            leader,
            term: 7,
            members: BTreeMap::new(),
            learners: BTreeMap::new(),
            last_log_index: 42,
            commit_index: 41,
            applied_index: 40,
            revision: 30,
            snapshot_index: 0,
            partitioned_from: BTreeSet::new(),
        }
    }

    fn value(gauges: &[(&str, f64)], name: &str) -> f64 {
        gauges
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no gauge {name}"))
    }

    #[test]
    fn a_follower_reports_its_term_indexes_and_leader() {
        let gauges = gauges(&status("follower", Some(1)));
        assert_eq!(value(&gauges, "raft_term"), 7.0);
        assert_eq!(value(&gauges, "raft_leader_id"), 1.0);
        assert_eq!(value(&gauges, "raft_is_leader"), 0.0);
        assert_eq!(value(&gauges, "raft_last_log_index"), 42.0);
        assert_eq!(value(&gauges, "raft_commit_index"), 41.0);
        assert_eq!(value(&gauges, "raft_applied_index"), 40.0);
    }

    #[test]
    fn the_leader_says_so_and_no_known_leader_is_zero() {
        assert_eq!(
            value(&gauges(&status("leader", Some(2))), "raft_is_leader"),
            1.0
        );
        let candidate = gauges(&status("candidate", None));
        assert_eq!(value(&candidate, "raft_leader_id"), 0.0);
        assert_eq!(value(&candidate, "raft_is_leader"), 0.0);
    }
}
