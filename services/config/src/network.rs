//! Node-to-node RPC: openraft's vote, append-entries and install-snapshot messages as JSON over HTTP
//! (`POST /raft/{vote,append,snapshot}` on the peer), through one shared HTTP client with kept-alive
//! connections.
//!
//! A peer that cannot be reached becomes `RPCError::Unreachable`, which makes openraft back off instead of
//! retrying in a tight loop. The [`Partition`] switch cuts this node off from chosen peers in both
//! directions: outgoing RPCs to them fail here as unreachable, and their RPCs are refused by
//! [`crate::http`] (see the `x-distlab-raft-from` header).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::{NodeId, TypeConfig};

/// Header naming the node that sent a Raft RPC, so that a partitioned receiver can refuse it.
pub const FROM_HEADER: &str = "x-distlab-raft-from";

/// The peers this node is cut off from (a test and chaos switch; empty in normal operation).
#[derive(Debug, Default, Clone)]
pub struct Partition {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl Partition {
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer)
    }

    pub fn set(&self, peers: BTreeSet<NodeId>) {
        *self.blocked.write().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    pub fn blocked(&self) -> BTreeSet<NodeId> {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why this node refuses to talk to a peer.
#[derive(Debug, thiserror::Error)]
#[error("node {0} is partitioned away from this node")]
pub struct Partitioned(pub NodeId);

/// Makes one [`Connection`] per peer; all share one HTTP client.
#[derive(Debug, Clone)]
pub struct Network {
    me: NodeId,
    client: reqwest::Client,
    partition: Partition,
    routes: Arc<BTreeMap<NodeId, String>>,
}

impl Network {
    /// `routes` overrides the membership's address of some peers (`PEER_ROUTES`).
    pub fn new(me: NodeId, partition: Partition, routes: Arc<BTreeMap<NodeId, String>>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(200))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .expect("the HTTP client builds with static settings");
        Self {
            me,
            client,
            partition,
            routes,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            network: self.clone(),
            target,
            base: format!(
                "http://{}/raft",
                self.routes.get(&target).unwrap_or(&node.addr)
            ),
        }
    }
}

/// RPCs to one peer.
#[derive(Debug)]
pub struct Connection {
    network: Network,
    target: NodeId,
    base: String,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.network.partition.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&Partitioned(
                self.target,
            ))));
        }
        let response = self
            .network
            .client
            .post(format!("{}/{path}", self.base))
            .header(FROM_HEADER, self.network.me)
            .timeout(option.hard_ttl())
            .json(request)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            // The peer refuses us (partitioned) or is shutting down.
            let e = Partitioned(self.target);
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}
