//! The two systems' client APIs: the same operations over HTTP/1.1 + JSON.

use anyhow::bail;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use distlab_testkit::raft_cluster::RaftCluster;
use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum System {
    Distlab,
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Write,
    Read,
}

impl System {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Distlab => "distlab",
            Self::Etcd => "etcd",
        }
    }

    /// The request of `op` on `key` at the member whose client URL is `base`.
    pub(super) fn request(
        self,
        http: &reqwest::Client,
        base: &str,
        op: Op,
        key: &str,
    ) -> reqwest::RequestBuilder {
        match (self, op) {
            (Self::Distlab, Op::Write) => http
                .put(format!("{base}/v1/kv/{key}"))
                .json(&json!({ "value": VALUE })),
            (Self::Distlab, Op::Read) => {
                http.get(format!("{base}/v1/kv/{key}?consistency=linearizable"))
            }
            (Self::Etcd, Op::Write) => http.post(format!("{base}/v3/kv/put")).json(&json!({
                "key": BASE64.encode(key),
                "value": BASE64.encode(format!("\"{VALUE}\"")),
            })),
            (Self::Etcd, Op::Read) => http
                .post(format!("{base}/v3/kv/range"))
                .json(&json!({ "key": BASE64.encode(key) })),
        }
    }

    /// Whether a 200 answer is a success: a read must have found its key (distlab answers 404 if not).
    pub(super) fn found(self, op: Op, body: &[u8]) -> bool {
        match (self, op) {
            (Self::Etcd, Op::Read) => body.windows(5).any(|w| w == b"\"kvs\""),
            _ => true,
        }
    }
}

/// Sends `request` and reads the whole answer; an error unless it is a success.
pub(super) async fn exchange(
    system: System,
    op: Op,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<()> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status != StatusCode::OK || !system.found(op, &body) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        bail!("{} {op:?} answered {status}: {shown}", system.name());
    }
    Ok(())
}

/// One system under load: its HTTP client (one per system, built the same way for both).
#[derive(Debug)]
pub(super) struct Target {
    pub(super) system: System,
    pub(super) http: reqwest::Client,
}

impl Target {
    pub(super) fn new(system: System, clients: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients * 2)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self { system, http })
    }

    pub(super) async fn leader_url(
        &self,
        distlab: &RaftCluster,
        etcd: &EtcdCluster,
    ) -> anyhow::Result<String> {
        Ok(match self.system {
            System::Distlab => distlab.url(distlab.leader().await),
            System::Etcd => etcd.url(etcd.find_leader().await?),
        })
    }
}
