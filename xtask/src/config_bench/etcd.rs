//! A three-member etcd cluster on loopback ports, started and stopped by the bench.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use distlab_testkit::unused_port;
use serde_json::{Value, json};

use super::*;

/// One etcd member: its ports and process.
#[derive(Debug)]
pub(super) struct EtcdMember {
    pub(super) name: String,
    pub(super) client_port: u16,
    pub(super) peer_port: u16,
    pub(super) child: Option<Child>,
}

/// An etcd cluster of the bench's own, in a temporary folder; stopped and removed when dropped.
#[derive(Debug)]
pub(super) struct EtcdCluster {
    pub(super) dir: PathBuf,
    pub(super) token: String,
    pub(super) members: BTreeMap<u64, EtcdMember>,
    pub(super) http: reqwest::Client,
}

impl EtcdCluster {
    /// Starts members `1..=size` and waits until all are healthy and agree on a leader.
    pub(super) async fn start(size: u64) -> anyhow::Result<Self> {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let dir = std::env::temp_dir().join(format!("distlab-bench-etcd-{run}"));
        fs::create_dir_all(&dir)?;
        let members = (1..=size)
            .map(|id| {
                let member = EtcdMember {
                    name: format!("m{id}"),
                    client_port: unused_port(),
                    peer_port: unused_port(),
                    child: None,
                };
                (id, member)
            })
            .collect();
        let mut cluster = Self {
            dir,
            token: format!("bench-{run}"),
            members,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        cluster.wait_healthy().await?;
        cluster.find_leader().await?;
        Ok(cluster)
    }

    /// Starts member `id` with the same flags every time (with its data folder in place, etcd ignores
    /// `--initial-cluster-state` and rejoins).
    pub(super) fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let initial_cluster = self
            .members
            .values()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = self.members.get(&id).context("no such etcd member")?;
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let mut command = Command::new(ETCD);
        command
            .args(["--name", &member.name, "--data-dir"])
            .arg(self.dir.join(&member.name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &ETCD_HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ETCD_ELECTION_MS.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(arch) = unsupported_arch() {
            command.env("ETCD_UNSUPPORTED_ARCH", arch);
        }
        // Waited for in `kill_member` (also on drop).
        #[allow(clippy::zombie_processes)]
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {ETCD} (Debian package etcd-server)"))?;
        if let Some(member) = self.members.get_mut(&id) {
            member.child = Some(child);
        }
        Ok(())
    }

    pub(super) fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("m{id}.log"))
    }

    pub(super) fn url(&self, id: u64) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.members.get(&id).map_or(0, |m| m.client_port)
        )
    }

    pub(super) fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits until every running member answers `GET /health` with `{"health":"true"}`.
    pub(super) async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + ETCD_START_LIMIT;
        for id in self.running() {
            while !self.is_healthy(id).await {
                if Instant::now() > deadline {
                    bail!(
                        "etcd member m{id} is not healthy after {ETCD_START_LIMIT:?}; the end of its log:\n{}",
                        self.log_tail(id)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    pub(super) async fn is_healthy(&self, id: u64) -> bool {
        let Ok(response) = self
            .http
            .get(format!("{}/health", self.url(id)))
            .send()
            .await
        else {
            return false;
        };
        response
            .json::<Value>()
            .await
            .is_ok_and(|health| health["health"] == "true")
    }

    /// `POST /v3/maintenance/status` of member `id`.
    pub(super) async fn status(&self, id: u64) -> Option<Value> {
        let response = self
            .http
            .post(format!("{}/v3/maintenance/status", self.url(id)))
            .json(&json!({}))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    pub(super) async fn version(&self) -> Option<String> {
        let status = self.status(*self.running().first()?).await?;
        status["version"].as_str().map(str::to_owned)
    }

    /// The leader, if every running member answers and names the same running member.
    pub(super) async fn agreed_leader(&self) -> Option<u64> {
        let mut by_member_id = BTreeMap::new();
        let mut leaders = BTreeSet::new();
        for id in self.running() {
            let status = self.status(id).await?;
            by_member_id.insert(decimal(&status["header"]["member_id"])?, id);
            leaders.insert(decimal(&status["leader"])?);
        }
        match leaders.into_iter().collect::<Vec<_>>()[..] {
            [leader] => by_member_id.get(&leader).copied(),
            _ => None,
        }
    }

    pub(super) fn log_tail(&self, id: u64) -> String {
        let log = fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Cluster for EtcdCluster {
    async fn find_leader(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + ETCD_START_LIMIT;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("the etcd members do not agree on a leader after {ETCD_START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill_member(&mut self, id: u64) {
        if let Some(mut child) = self.members.get_mut(&id).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)?;
        self.wait_healthy().await?;
        self.find_leader().await?;
        Ok(())
    }

    fn survivors(&self) -> Vec<String> {
        self.running().into_iter().map(|id| self.url(id)).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for id in self.running() {
            self.kill_member(id);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A uint64 of etcd's JSON gateway: a decimal string (or a number).
pub(super) fn decimal(value: &Value) -> Option<u64> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_u64())
}

/// `ETCD_UNSUPPORTED_ARCH` for etcd 3.4 off amd64 (not needed on x86_64).
pub(super) fn unsupported_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => None,
        "aarch64" => Some("arm64"),
        other => Some(other),
    }
}
