//! One Raft node (seed, 六): openraft drives the protocol — followers, candidates and a leader, randomised
//! election timeouts (150–300 ms by default), heartbeats every 50 ms, a change committed once a majority has
//! it — over the storage of [`crate::store`] and the RPC of [`crate::network`].
//!
//! [`Node`] is what the HTTP layer calls: [`Node::write`] proposes a [`Command`] and waits for it to be
//! committed and applied; [`Node::read_barrier`] makes a read linearizable with Raft's ReadIndex (the leader
//! confirms with a majority that it still leads, then waits until it has applied everything committed up to
//! then).
//!
//! Both are batched, because openraft 0.9 appends (and fsyncs) each proposal on its own:
//! - **writes**: a proposer task packs every write that is waiting into one [`Proposal`] — one log entry,
//!   one fsync per node — with at most [`PROPOSALS_IN_FLIGHT`] proposals under way at once, so that writes
//!   arriving meanwhile form the next batch (group commit);
//! - **linearizable reads**: a read joins the next confirmation round that starts after it arrived, never
//!   one already under way, so sharing a round costs no correctness.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::kv::{Command, Outcome, Outcomes, Proposal};
use crate::network::{Network, Partition};
use crate::settings::Settings;
use crate::store::{LogStore, SharedState, StateMachine};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The config service's Raft types: key-value commands in, outcomes out.
    pub TypeConfig:
        D = Proposal,
        R = Outcomes,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// How many proposals may be on their way through Raft at once; writes arriving meanwhile wait and form
/// the next batch. One is fastest on the 2-core bench machine (write throughput 1, 2, 4 in flight: about
/// 5,600, 4,800 and 4,000/s with 16 clients): openraft already overlaps the leader's fsync with
/// replication, and fewer, larger entries cost less JSON, HTTP and fsync per write.
pub const PROPOSALS_IN_FLIGHT: usize = 1;
/// The most commands in one proposal.
pub const MAX_BATCH: usize = 256;

/// Why a write or a linearizable read could not be served here and now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This node does not lead; `leader` is the one it knows of, if any.
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The leader could not reach a majority in time (it may be on the minority side of a partition).
    #[error("no majority answered within {0:?}")]
    NoQuorum(Duration),
    /// A write was proposed but not known to be committed in time; it may still commit later.
    #[error("the write was not committed within {0:?}; it may still be applied")]
    CommitTimeout(Duration),
    /// The Raft node stopped (shutting down, or a storage failure) before anything was proposed.
    #[error("the Raft node has stopped: {0}")]
    Stopped(String),
    /// The Raft node stopped while a write was under way: it may still be committed by the next leader.
    #[error("the Raft node stopped while the write was under way; it may still be applied: {0}")]
    CommitUnknown(String),
    /// openraft refused a membership change (one is already in progress, an unknown node, …).
    #[error("membership change refused: {0}")]
    MembershipRefused(String),
}

impl<E> From<RaftError<NodeId, E>> for NodeError
where
    E: Into<NodeError> + std::error::Error,
{
    fn from(e: RaftError<NodeId, E>) -> Self {
        match e {
            RaftError::APIError(e) => e.into(),
            RaftError::Fatal(fatal) => NodeError::Stopped(fatal.to_string()),
        }
    }
}

impl From<ForwardToLeader<NodeId, BasicNode>> for NodeError {
    fn from(f: ForwardToLeader<NodeId, BasicNode>) -> Self {
        NodeError::NotLeader {
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        }
    }
}

impl From<CheckIsLeaderError<NodeId, BasicNode>> for NodeError {
    fn from(e: CheckIsLeaderError<NodeId, BasicNode>) -> Self {
        match e {
            CheckIsLeaderError::ForwardToLeader(f) => f.into(),
            CheckIsLeaderError::QuorumNotEnough(_) => NodeError::NoQuorum(Duration::ZERO),
        }
    }
}

impl From<ClientWriteError<NodeId, BasicNode>> for NodeError {
    fn from(e: ClientWriteError<NodeId, BasicNode>) -> Self {
        match e {
            ClientWriteError::ForwardToLeader(f) => f.into(),
            ClientWriteError::ChangeMembershipError(e) => {
                NodeError::MembershipRefused(e.to_string())
            }
        }
    }
}

/// What `GET /v1/cluster` reports.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Voters, by id, with their address (JSON object keys are strings: `{"1": "127.0.0.1:8091"}`).
    #[schema(value_type = BTreeMap<String, String>)]
    pub members: BTreeMap<NodeId, String>,
    /// Non-voting members that receive the log, keyed like `members`.
    #[schema(value_type = BTreeMap<String, String>)]
    pub learners: BTreeMap<NodeId, String>,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The store revision here (that of the last change applied).
    pub revision: u64,
    /// Index of the last snapshot (the log before it is compacted).
    pub snapshot_index: u64,
    /// Peers this node is partitioned away from (admin switch).
    pub partitioned_from: BTreeSet<NodeId>,
}

type ReadWaiter = oneshot::Sender<Result<(), NodeError>>;
type WriteWaiter = (Command, oneshot::Sender<Result<Outcome, NodeError>>);

/// A running node.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    pub partition: Partition,
    log: LogStore,
    reads: mpsc::UnboundedSender<ReadWaiter>,
    writes: mpsc::UnboundedSender<WriteWaiter>,
    quorum_timeout: Duration,
    /// `PEER_ROUTES`: how this node reaches some peers (RPCs and forwarded requests).
    routes: Arc<BTreeMap<NodeId, String>>,
    /// A leader that has not heard from a majority for this long refuses writes at once (see
    /// [`Node::write`]).
    lease: Duration,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the node's storage in `settings.data_dir` and starts Raft. Does not initialise a cluster.
    pub async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let config = Config {
            cluster_name: "distlab-config".to_owned(),
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            heartbeat_interval: settings.heartbeat_interval_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: settings.snapshot_keep_logs,
            install_snapshot_timeout: 1_000,
            // openraft gives each append-entries RPC one heartbeat interval to answer: keep batches small
            // enough for a follower to fsync and answer within it.
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()?;
        let log = LogStore::open(&settings.data_dir)?;
        let machine = StateMachine::open(&settings.data_dir, settings.watch_history)?;
        let state = machine.shared();
        let partition = Partition::default();
        let routes = Arc::new(settings.peer_routes().context("PEER_ROUTES")?);
        let network = Network::new(settings.node_id, partition.clone(), routes.clone());
        let raft = Raft::new(
            settings.node_id,
            Arc::new(config),
            network,
            log.clone(),
            machine,
        )
        .await?;
        let (reads, queue) = mpsc::unbounded_channel();
        tokio::spawn(confirm_reads(
            raft.clone(),
            queue,
            settings.quorum_timeout(),
        ));
        let (writes, proposals) = mpsc::unbounded_channel();
        tokio::spawn(propose_writes(
            raft.clone(),
            proposals,
            settings.quorum_timeout(),
        ));
        Ok(Self {
            id: settings.node_id,
            raft,
            state,
            partition,
            log,
            reads,
            writes,
            quorum_timeout: settings.quorum_timeout(),
            routes,
            lease: Duration::from_millis(settings.election_timeout_max_ms),
        })
    }

    /// Proposes `command` (batched with other writes) and waits until it is committed and applied here.
    ///
    /// openraft 0.9 has no check-quorum: a leader cut off from the majority keeps believing it leads, and
    /// its proposals would only time out. So a leader that has not heard from a majority for a whole
    /// (longest) election timeout — by then the others may well have elected someone else — refuses the
    /// write at once with [`NodeError::NoQuorum`]; nothing is proposed.
    pub async fn write(&self, command: Command) -> Result<Outcome, NodeError> {
        if self.lost_majority() {
            return Err(NodeError::NoQuorum(self.lease));
        }
        let (tx, rx) = oneshot::channel();
        self.writes
            .send((command, tx))
            .map_err(|_| NodeError::Stopped("the proposer stopped".to_owned()))?;
        match tokio::time::timeout(self.quorum_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NodeError::CommitUnknown("the proposer stopped".to_owned())),
            Err(_) => Err(NodeError::CommitTimeout(self.quorum_timeout)),
        }
    }

    /// Returns once a read of the local state machine is linearizable (ReadIndex; see the module docs).
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        if let Some(leader) = self.leader_elsewhere() {
            return Err(NodeError::NotLeader {
                leader: Some(leader),
            });
        }
        let (tx, rx) = oneshot::channel();
        self.reads
            .send(tx)
            .map_err(|_| NodeError::Stopped("the read confirmer stopped".to_owned()))?;
        match tokio::time::timeout(self.quorum_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NodeError::Stopped("the read confirmer stopped".to_owned())),
            Err(_) => Err(NodeError::NoQuorum(self.quorum_timeout)),
        }
    }

    /// Whether this node leads but has not heard from a majority within the lease.
    fn lost_majority(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) > self.lease)
    }

    /// The leader this node knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        // Borrowed, not cloned: this runs on every client request.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    /// Where this node sends a request for node `id` whose membership address is `addr`: its route
    /// (`PEER_ROUTES`), if it has one.
    pub fn route_to(&self, id: NodeId, addr: &str) -> String {
        self.routes
            .get(&id)
            .cloned()
            .unwrap_or_else(|| addr.to_owned())
    }

    /// The leader, when it is another node.
    pub fn leader_elsewhere(&self) -> Option<(NodeId, String)> {
        self.leader().filter(|(id, _)| *id != self.id)
    }

    pub fn status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voters.contains(id) {
                members.insert(*id, node.addr.clone());
            } else {
                learners.insert(*id, node.addr.clone());
            }
        }
        ClusterStatus {
            node_id: self.id,
            state: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .to_owned(),
            leader: metrics.current_leader,
            term: metrics.current_term,
            members,
            learners,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            commit_index: self.log.committed_index(),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            revision: self.state.read(|a| a.kv.revision()),
            snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
            partitioned_from: self.partition.blocked(),
        }
    }
}

/// Serves linearizable reads in rounds: every read queued when a round starts shares its leadership
/// confirmation; reads that arrive during a round wait for the next one. An empty error string means "not
/// the leader", any other "no majority".
async fn confirm_reads(
    raft: Raft,
    mut queue: mpsc::UnboundedReceiver<ReadWaiter>,
    limit: Duration,
) {
    while let Some(first) = queue.recv().await {
        let mut round = vec![first];
        while let Ok(more) = queue.try_recv() {
            round.push(more);
        }
        let result = match tokio::time::timeout(limit, raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                Err(NodeError::NoQuorum(limit))
            }
            Ok(Err(e)) => Err(e.into()),
        };
        for waiter in round {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Packs waiting writes into proposals (see the module docs). A proposal is handed to openraft in arrival
/// order; its outcomes go back to each writer in the order of its commands.
///
/// A proposal holds its slot until its outcome arrives or `limit` passes (its writers have given up by
/// then; a proposal stuck on a leader that lost its majority must not stop the next ones for ever).
async fn propose_writes(
    raft: Raft,
    mut queue: mpsc::UnboundedReceiver<WriteWaiter>,
    limit: Duration,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT));
    loop {
        // Wait for a free slot first: writes pile up meanwhile and make the next batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (commands, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
        let submitted = raft.client_write_ff(Proposal(commands)).await;
        tokio::spawn(async move {
            let result = match submitted {
                Ok(response) => match tokio::time::timeout(limit, response).await {
                    Ok(Ok(Ok(written))) => Ok(written.data.0),
                    Ok(Ok(Err(e))) => Err(NodeError::from(e)),
                    // openraft dropped the responder: it stopped with the proposal under way.
                    Ok(Err(_)) => Err(NodeError::CommitUnknown("the Raft node stopped".to_owned())),
                    Err(_) => Err(NodeError::CommitTimeout(limit)),
                },
                // Not even submitted.
                Err(fatal) => Err(NodeError::Stopped(fatal.to_string())),
            };
            drop(permit);
            match result {
                Ok(outcomes) if outcomes.len() == waiters.len() => {
                    for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                        let _ = waiter.send(Ok(outcome));
                    }
                }
                Ok(outcomes) => {
                    let e = NodeError::Stopped(format!(
                        "{} outcomes for {} commands",
                        outcomes.len(),
                        waiters.len()
                    ));
                    for waiter in waiters {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
