//! A config-service cluster of the test's own: `distlab-config` processes on free loopback ports, each with
//! its data folder in one temporary directory, which the test may kill (SIGKILL, as a crash), restart,
//! partition and grow. Used by the config service's tests and by `cargo xtask bench config`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{eventually, unused_port};

/// The admin token the cluster's nodes accept.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A node's process and port.
#[derive(Debug)]
struct ClusterNode {
    port: u16,
    child: Option<Child>,
}

/// Running config nodes, stopped when dropped.
#[derive(Debug)]
pub struct RaftCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    nodes: BTreeMap<u64, ClusterNode>,
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

impl RaftCluster {
    /// Starts nodes `1..=size` with `env` (extra settings, e.g. `SNAPSHOT_EVERY`), initialises the cluster
    /// through node 1 and waits until a leader is elected.
    pub async fn start(binary: impl Into<PathBuf>, size: u64, env: &[(&str, &str)]) -> Self {
        let mut cluster = Self::new(binary, env);
        for id in 1..=size {
            cluster.nodes.insert(
                id,
                ClusterNode {
                    port: unused_port(),
                    child: None,
                },
            );
        }
        for id in 1..=size {
            cluster.spawn(id).await;
        }
        let members: BTreeMap<String, String> = (1..=size)
            .map(|id| (id.to_string(), cluster.addr(id)))
            .collect();
        let response = cluster
            .http
            .post(format!("{}/v1/cluster/init", cluster.url(1)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "members": members }))
            .send()
            .await
            .expect("POST /v1/cluster/init");
        assert!(
            response.status().is_success(),
            "init: {}",
            response.status()
        );
        cluster.leader().await;
        cluster
    }

    fn new(binary: impl Into<PathBuf>, env: &[(&str, &str)]) -> Self {
        let binary = binary.into();
        assert!(
            binary.exists(),
            "no config node binary at {}",
            binary.display()
        );
        Self {
            binary,
            dir: tempfile::tempdir().expect("a temporary directory"),
            nodes: BTreeMap::new(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Adds node `id` (not a member yet: see [`Self::add_learner`]) and starts it.
    pub async fn spawn_new(&mut self, id: u64) {
        self.nodes.insert(
            id,
            ClusterNode {
                port: unused_port(),
                child: None,
            },
        );
        self.spawn(id).await;
    }

    /// Starts node `id` (again) on its port and data folder, and waits until it answers.
    pub async fn spawn(&mut self, id: u64) {
        let port = self.nodes[&id].port;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("the node's log file");
        // Waited for in `kill` (also on drop).
        #[allow(clippy::zombie_processes)]
        let child = Command::new(&self.binary)
            .env_remove("RUST_LOG")
            .env("NODE_ID", id.to_string())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATA_DIR", self.data_dir(id))
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("INITIAL_MEMBERS", format!("{id}=127.0.0.1:{port}"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        if let Some(node) = self.nodes.get_mut(&id) {
            node.child = Some(child);
        }
        let url = format!("{}/healthz", self.url(id));
        let http = self.http.clone();
        eventually(
            &format!("config node {id} to listen"),
            Duration::from_secs(20),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            },
        )
        .await;
    }

    /// Kills node `id` with SIGKILL, as a crash would.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Where the nodes' logs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.nodes[&id].port)
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.addr(id))
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET /v1/cluster` of node `id`, or `None` when it does not answer.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/cluster", self.url(id)))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The leader, once one is elected and every running node that answers agrees on it.
    pub async fn leader(&self) -> u64 {
        self.leader_among(&self.running()).await
    }

    /// The leader, once one is elected among `nodes` and all of them agree on it.
    pub async fn leader_among(&self, nodes: &[u64]) -> u64 {
        eventually(
            "a leader that every running node agrees on",
            Duration::from_secs(20),
            || async {
                let mut leaders = BTreeSet::new();
                let mut leading = None;
                for id in nodes {
                    let status = self.status(*id).await?;
                    leaders.insert(status["leader"].as_u64()?);
                    if status["state"] == "leader" {
                        leading = Some(*id);
                    }
                }
                let leader = leading?;
                (leaders.len() == 1 && leaders.contains(&leader)).then_some(leader)
            },
        )
        .await
    }

    /// Cuts node `id` off from `peers` (both directions, set on every side).
    pub async fn partition(&self, id: u64, peers: &[u64]) {
        self.set_blocked(id, peers.iter().copied().collect()).await;
        for peer in peers {
            let mut blocked: BTreeSet<u64> = self.blocked(*peer).await;
            blocked.insert(id);
            self.set_blocked(*peer, blocked).await;
        }
    }

    /// Removes every partition.
    pub async fn heal(&self) {
        for id in self.running() {
            self.set_blocked(id, BTreeSet::new()).await;
        }
    }

    async fn blocked(&self, id: u64) -> BTreeSet<u64> {
        let response = self
            .http
            .get(format!("{}/admin/partition", self.url(id)))
            .send()
            .await
            .expect("GET /admin/partition");
        let body: Value = response.json().await.expect("a JSON body");
        body["blocked"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }

    async fn set_blocked(&self, id: u64, blocked: BTreeSet<u64>) {
        let response = self
            .http
            .put(format!("{}/admin/partition", self.url(id)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "blocked": blocked }))
            .send()
            .await
            .expect("PUT /admin/partition");
        assert!(
            response.status().is_success(),
            "partition node {id}: {}",
            response.status()
        );
    }

    /// `POST /v1/cluster/learners` through node `via` (forwarded to the leader).
    pub async fn add_learner(&self, via: u64, id: u64) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/cluster/learners", self.url(via)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "node_id": id, "addr": self.addr(id) }))
            .send()
            .await
            .expect("POST /v1/cluster/learners")
    }

    /// `POST /v1/cluster/membership` through node `via`.
    pub async fn change_membership(&self, via: u64, voters: &[u64]) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/cluster/membership", self.url(via)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "voters": voters }))
            .send()
            .await
            .expect("POST /v1/cluster/membership")
    }

    /// `PUT /v1/kv/{key}` on node `id`.
    pub async fn put(
        &self,
        id: u64,
        key: &str,
        value: Value,
        prev_revision: Option<u64>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut body = json!({ "value": value });
        if let Some(prev) = prev_revision {
            body["prev_revision"] = json!(prev);
        }
        self.http
            .put(format!("{}/v1/kv/{key}", self.url(id)))
            .json(&body)
            .send()
            .await
    }

    /// `GET /v1/kv/{key}?consistency=…` on node `id`.
    pub async fn get(
        &self,
        id: u64,
        key: &str,
        consistency: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(format!(
                "{}/v1/kv/{key}?consistency={consistency}",
                self.url(id)
            ))
            .send()
            .await
    }
}

impl Drop for RaftCluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}
