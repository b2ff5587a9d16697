//! A node's settings, from flags or environment variables; defaults are node 1 of the local stack
//! (`cargo xtask up` runs three nodes on 8091–8093).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::raft::NodeId;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "distlab-config",
    version,
    about = "distlab config service: one node of a Raft-replicated key-value store"
)]
pub struct Settings {
    /// This node's Raft id (unique in the cluster, > 0).
    #[arg(long, env = "NODE_ID", default_value_t = 1)]
    pub node_id: NodeId,
    /// Address to listen on (client API, management and Raft RPC).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8091")]
    pub listen: SocketAddr,
    /// Address other nodes and forwarded clients use to reach this node; defaults to the listen address.
    #[arg(long, env = "ADVERTISE_ADDR")]
    pub advertise: Option<String>,
    /// Where the Raft log, vote and snapshots are kept.
    #[arg(long, env = "DATA_DIR", default_value = ".distlab/config/node-1")]
    pub data_dir: PathBuf,
    /// The initial members, `id=host:port,…`, used by `POST /v1/cluster/init` without a body.
    #[arg(
        long,
        env = "INITIAL_MEMBERS",
        default_value = "1=127.0.0.1:8091,2=127.0.0.1:8092,3=127.0.0.1:8093"
    )]
    pub initial_members: String,
    /// How this node reaches some peers, when not at the address the membership gives them: `id=host:port,…`
    /// (the local stack routes each node-to-node link through its chaos proxy, `config-1->config-2`, so a
    /// partition can cut it). Peers not listed are reached at their membership address.
    #[arg(long, env = "PEER_ROUTES", default_value = "")]
    pub peer_routes: String,
    /// Bearer token for the management and admin endpoints (init, membership, partitions).
    #[arg(long, env = "ADMIN_TOKEN", default_value = "distlab-local-admin")]
    pub admin_token: String,
    /// Shortest election timeout; each follower picks one at random between min and max (seed: 150–300 ms).
    #[arg(long, env = "ELECTION_TIMEOUT_MIN_MS", default_value_t = 150)]
    pub election_timeout_min_ms: u64,
    /// Longest election timeout.
    #[arg(long, env = "ELECTION_TIMEOUT_MAX_MS", default_value_t = 300)]
    pub election_timeout_max_ms: u64,
    /// How often the leader sends heartbeats (well below the election timeout).
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", default_value_t = 50)]
    pub heartbeat_interval_ms: u64,
    /// Build a snapshot (and compact the log) after this many log entries since the last one.
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// How many log entries before the last snapshot the leader keeps, so that a follower only a little
    /// behind catches up from the log; one further behind is sent the snapshot.
    #[arg(long, env = "SNAPSHOT_KEEP_LOGS", default_value_t = 1_000)]
    pub snapshot_keep_logs: u64,
    /// How many recent changes are kept for watchers to resume from.
    #[arg(long, env = "WATCH_HISTORY", default_value_t = 100_000)]
    pub watch_history: usize,
    /// How long a write or a linearizable read may wait for a majority before the client gets a 503.
    #[arg(long, env = "QUORUM_TIMEOUT_MS", default_value_t = 2_000)]
    pub quorum_timeout_ms: u64,
}

impl Settings {
    /// Node `id` of a local cluster whose nodes listen on consecutive ports from `base_port`.
    pub fn local(id: NodeId) -> Self {
        <Self as clap::Parser>::parse_from(["distlab-config"]).with_id(id)
    }

    fn with_id(mut self, id: NodeId) -> Self {
        self.node_id = id;
        self.listen.set_port(8090 + id as u16);
        self.data_dir = PathBuf::from(format!(".distlab/config/node-{id}"));
        self
    }

    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    pub fn quorum_timeout(&self) -> Duration {
        Duration::from_millis(self.quorum_timeout_ms)
    }

    /// Parses `PEER_ROUTES` (empty: no routes).
    pub fn peer_routes(&self) -> Result<BTreeMap<NodeId, String>, MembersError> {
        if self.peer_routes.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        parse_members(&self.peer_routes)
    }

    /// Parses `INITIAL_MEMBERS`.
    pub fn initial_members(&self) -> Result<BTreeMap<NodeId, String>, MembersError> {
        parse_members(&self.initial_members)
    }
}

/// Why a member list does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("`{0}` is not id=host:port")]
    NotIdEqualsAddr(String),
    #[error("`{0}` is not a node id")]
    BadId(String),
    #[error("node {0} is listed twice")]
    Twice(NodeId),
    #[error("no members")]
    Empty,
}

/// Parses `id=host:port,…`.
pub fn parse_members(text: &str) -> Result<BTreeMap<NodeId, String>, MembersError> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| MembersError::NotIdEqualsAddr(part.to_owned()))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| MembersError::BadId(id.to_owned()))?;
        if members.insert(id, addr.trim().to_owned()).is_some() {
            return Err(MembersError::Twice(id));
        }
    }
    if members.is_empty() {
        return Err(MembersError::Empty);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_bad_lists_are_refused() {
        let members = parse_members("1=127.0.0.1:8091, 2=127.0.0.1:8092").unwrap();
        assert_eq!(members.get(&2).map(String::as_str), Some("127.0.0.1:8092"));
        assert_eq!(parse_members("1=a,1=b"), Err(MembersError::Twice(1)));
        assert_eq!(parse_members("x=a"), Err(MembersError::BadId("x".into())));
        assert_eq!(
            parse_members("1"),
            Err(MembersError::NotIdEqualsAddr("1".into()))
        );
        assert_eq!(parse_members(""), Err(MembersError::Empty));
    }

    #[test]
    fn local_nodes_get_their_own_port_and_folder() {
        let node = Settings::local(3);
        assert_eq!(node.listen.port(), 8093);
        assert!(node.data_dir.ends_with("node-3"));
    }
}
