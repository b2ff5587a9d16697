//! A Jepsen-style test: several clients run concurrent reads, writes and compare-and-sets against a
//! three-node cluster through all of its nodes while a nemesis kills leaders and partitions nodes; the
//! recorded history is then checked for linearizability ([`distlab_testkit::linearizability`]).
//!
//! An operation that certainly failed — the connection was refused, or the node answered that it is not
//! the leader, cannot reach it, or has no quorum for a read, all before proposing anything — is left out of
//! the history (Jepsen's `:fail`). One whose answer never came or that may have been proposed (a timeout,
//! `commit_timeout`, a lost forward) is *indeterminate*: it may or may not have taken effect, and the
//! checker considers both. Its client then retires and continues under a new id, as Jepsen's processes
//! do, since a client cannot have two operations open at once.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use distlab_testkit::eventually;
use distlab_testkit::linearizability::{CheckResult, Input, Output, Recorder, check};
use distlab_testkit::raft_cluster::RaftCluster;
use reqwest::StatusCode;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_distlab-config");
const CLIENTS: u64 = 6;
const KEYS: u64 = 4;
const MIN_OPERATIONS: usize = 1_200;
const NEMESIS_ROUNDS: usize = 6;
/// Operations the clients complete between two faults, and while a fault lasts (so a fault ends only once
/// the cluster has recovered from it and served work).
const OPERATIONS_PER_PHASE: usize = 150;

/// A small deterministic PRNG (xorshift), seeded per client: the workload is reproducible in shape.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Workload {
    urls: Vec<String>,
    recorder: Recorder,
    next_value: AtomicU64,
    next_client: AtomicU64,
    stop: AtomicBool,
    http: reqwest::Client,
}

impl Workload {
    async fn run_client(self: Arc<Self>, seed: u64) -> usize {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut client = self.next_client.fetch_add(1, Ordering::Relaxed);
        // The last revision this client saw per key: what its CAS expects.
        let mut seen = [0u64; KEYS as usize];
        let mut done = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let k = rng.below(KEYS) as usize;
            let key = format!("lin/{k}");
            let url = format!(
                "{}/v1/kv/{key}",
                self.urls[rng.below(self.urls.len() as u64) as usize]
            );
            let dice = rng.below(10);
            let input = if dice < 4 {
                Input::Read
            } else if dice < 7 {
                Input::Write {
                    value: self.next_value.fetch_add(1, Ordering::Relaxed),
                }
            } else {
                Input::Cas {
                    expected_revision: seen[k],
                    value: self.next_value.fetch_add(1, Ordering::Relaxed),
                }
            };
            let invocation = self.recorder.invoke(client, key, input.clone());
            let answer = match &input {
                Input::Read => read(&self.http, &url).await,
                Input::Write { value } => write(&self.http, &url, json!({"value": value})).await,
                Input::Cas {
                    expected_revision,
                    value,
                } => {
                    let body = json!({"value": value, "prev_revision": expected_revision});
                    match write(&self.http, &url, body).await {
                        Some(Output::Written { revision }) => Some(Output::CasApplied { revision }),
                        other => other,
                    }
                }
            };
            let Some(output) = answer else {
                // Certainly not applied: not part of the history. Pace the retry a little.
                drop(invocation);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match &output {
                Output::Read(Some((_, revision)))
                | Output::Written { revision }
                | Output::CasApplied { revision } => {
                    seen[k] = *revision;
                }
                Output::Read(None) => seen[k] = 0,
                Output::CasMismatch | Output::Indeterminate => {}
            }
            let indeterminate = output == Output::Indeterminate;
            self.recorder.complete(invocation, output);
            done += 1;
            if indeterminate {
                client = self.next_client.fetch_add(1, Ordering::Relaxed);
                // The cluster is in trouble: give it a moment rather than pile up open operations.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        done
    }
}

/// Error codes that mean the request was refused before anything was proposed to Raft.
const CERTAIN_FAILURES: [&str; 6] = [
    "not_leader",
    "leader_unreachable",
    "partitioned",
    "no_quorum",
    "shutting_down",
    "node_stopped",
];

/// `Some(output)` (maybe indeterminate), or `None` when the operation certainly did not happen.
async fn answer(
    sent: reqwest::Result<reqwest::Response>,
    ok: impl FnOnce(Value) -> Output,
) -> Option<Output> {
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() => return None,
        Err(e) if e.is_timeout() => return Some(Output::Indeterminate),
        Err(_) => return Some(Output::Indeterminate),
    };
    let status = response.status();
    let Ok(body) = response.json::<Value>().await else {
        return Some(Output::Indeterminate);
    };
    match status {
        StatusCode::OK => Some(ok(body)),
        StatusCode::NOT_FOUND => Some(Output::Read(None)),
        StatusCode::CONFLICT => Some(Output::CasMismatch),
        _ if CERTAIN_FAILURES.iter().any(|c| body["error"]["code"] == *c) => None,
        _ => Some(Output::Indeterminate),
    }
}

async fn read(http: &reqwest::Client, url: &str) -> Option<Output> {
    answer(http.get(url).send().await, |body| {
        Output::Read(Some((
            body["value"].as_u64().unwrap(),
            body["revision"].as_u64().unwrap(),
        )))
    })
    .await
}

async fn write(http: &reqwest::Client, url: &str, body: Value) -> Option<Output> {
    answer(http.put(url).json(&body).send().await, |body| {
        Output::Written {
            revision: body["revision"].as_u64().unwrap(),
        }
    })
    .await
}

/// Waits until the clients have recorded `count` more operations.
async fn operations(recorder: &Recorder, count: usize, during: &str) {
    let target = recorder.len() + count;
    eventually(
        &format!("{count} more operations {during}"),
        Duration::from_secs(20),
        || async { (recorder.len() >= target).then_some(()) },
    )
    .await;
}

/// Kills the leader (restarting it once the others have served a while without it) and partitions a node
/// away from the others, in turn.
async fn nemesis(cluster: &mut RaftCluster, recorder: &Recorder) -> Vec<String> {
    let mut log = Vec::new();
    for round in 0..NEMESIS_ROUNDS {
        operations(recorder, OPERATIONS_PER_PHASE, "between faults").await;
        let leader = cluster.leader().await;
        if round % 2 == 0 {
            cluster.kill(leader);
            log.push(format!("killed leader {leader}"));
            operations(recorder, OPERATIONS_PER_PHASE, "with the leader dead").await;
            cluster.spawn(leader).await;
        } else {
            let victim = if round % 4 == 1 {
                leader
            } else {
                cluster.ids().into_iter().find(|id| *id != leader).unwrap()
            };
            let rest: Vec<u64> = cluster
                .ids()
                .into_iter()
                .filter(|id| *id != victim)
                .collect();
            cluster.partition(victim, &rest).await;
            log.push(format!("partitioned node {victim} (leader was {leader})"));
            operations(recorder, OPERATIONS_PER_PHASE, "with a node partitioned").await;
            cluster.heal().await;
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_recorded_under_leader_kills_and_partitions_is_linearizable() {
    let mut cluster = RaftCluster::start(BINARY, 3, &[]).await;
    let workload = Arc::new(Workload {
        urls: cluster
            .ids()
            .into_iter()
            .map(|id| cluster.url(id))
            .collect(),
        recorder: Recorder::new(),
        next_value: AtomicU64::new(1),
        next_client: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(4))
            .build()
            .unwrap(),
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(workload.clone().run_client(c + 1)))
        .collect();
    let faults = nemesis(&mut cluster, &workload.recorder).await;
    // Keep going (healed) until the history is long enough.
    let missing = MIN_OPERATIONS.saturating_sub(workload.recorder.len());
    operations(&workload.recorder, missing, "after the faults").await;
    workload.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let history = Arc::try_unwrap(workload)
        .ok()
        .unwrap()
        .recorder
        .into_history();
    let ops = history.operations();
    let indeterminate = ops
        .iter()
        .filter(|o| o.output == Output::Indeterminate)
        .count();
    let count = |f: fn(&Output) -> bool| ops.iter().filter(|o| f(&o.output)).count();
    eprintln!(
        "history: {} operations in {:?} ({} reads, {} writes, {} CAS applied, {} CAS mismatched, {indeterminate} indeterminate); faults: {faults:?}",
        ops.len(),
        started.elapsed(),
        count(|o| matches!(o, Output::Read(_))),
        count(|o| matches!(o, Output::Written { .. })),
        count(|o| matches!(o, Output::CasApplied { .. })),
        count(|o| matches!(o, Output::CasMismatch)),
    );
    assert!(
        ops.len() >= MIN_OPERATIONS,
        "only {} operations recorded",
        ops.len()
    );
    assert!(
        indeterminate < ops.len() / 2,
        "the cluster mostly answered: {indeterminate} indeterminate"
    );
    let checking = Instant::now();
    let verdict = check(&history, Duration::from_secs(60));
    eprintln!("checked in {:?}: {verdict}", checking.elapsed());
    assert!(
        matches!(verdict, CheckResult::Linearizable { .. }),
        "not linearizable: {verdict}"
    );
}
