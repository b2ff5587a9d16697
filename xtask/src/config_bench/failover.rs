//! Failover: SIGKILL the leader, time until a survivor accepts a write.

use std::time::{Duration, Instant};

use distlab_testkit::raft_cluster::RaftCluster;

use crate::bench::{quantile_ms, verdict};

use super::*;

/// What the failover measurement needs of a cluster.
pub(super) trait Cluster {
    /// The leader every running member agrees on.
    async fn find_leader(&self) -> anyhow::Result<u64>;
    /// SIGKILL, as a crash.
    fn kill_member(&mut self, id: u64);
    /// Starts the member again and waits until every member agrees on a leader.
    async fn restart(&mut self, id: u64) -> anyhow::Result<()>;
    /// The client URLs of the running members.
    fn survivors(&self) -> Vec<String>;
}

impl Cluster for RaftCluster {
    async fn find_leader(&self) -> anyhow::Result<u64> {
        Ok(self.leader().await)
    }

    fn kill_member(&mut self, id: u64) {
        self.kill(id);
    }

    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id).await;
        self.leader().await;
        Ok(())
    }

    fn survivors(&self) -> Vec<String> {
        self.running().into_iter().map(|id| self.url(id)).collect()
    }
}

/// The failover times of up to `kills` kills, and the error that stopped them early, if one did.
#[derive(Debug, Default)]
pub(super) struct Failovers {
    pub(super) samples_us: Vec<u64>,
    pub(super) stopped: Option<String>,
}

pub(super) async fn failover<C: Cluster>(
    cluster: &mut C,
    target: &Target,
    kills: usize,
) -> Failovers {
    let mut failovers = Failovers::default();
    for _ in 0..kills {
        match one_failover(cluster, target).await {
            Ok(took) => failovers.samples_us.push(took.as_micros() as u64),
            Err(error) => {
                failovers.stopped = Some(format!("{error:#}"));
                break;
            }
        }
    }
    let shown: Vec<String> = failovers
        .samples_us
        .iter()
        .map(|us| format!("{}", us / 1000))
        .collect();
    println!(
        "  {:<7} kill → first write, ms: {}",
        target.system.name(),
        shown.join(" ")
    );
    failovers
}

pub(super) async fn one_failover<C: Cluster>(
    cluster: &mut C,
    target: &Target,
) -> anyhow::Result<Duration> {
    let leader = cluster.find_leader().await?;
    cluster.kill_member(leader);
    let killed_at = Instant::now();
    let took = first_write(target, &cluster.survivors(), killed_at).await?;
    cluster.restart(leader).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(took)
}

/// Time from `killed_at` to the first successful PUT at one of `survivors`: a probe every `PROBE_EVERY`,
/// to the survivors in turn, each given `PROBE_TIMEOUT`.
pub(super) async fn first_write(
    target: &Target,
    survivors: &[String],
    killed_at: Instant,
) -> anyhow::Result<Duration> {
    anyhow::ensure!(!survivors.is_empty(), "no member survived");
    let system = target.system;
    let mut probes = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(PROBE_EVERY);
    let mut sent = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                anyhow::ensure!(
                    killed_at.elapsed() < FAILOVER_LIMIT,
                    "no write succeeded within {FAILOVER_LIMIT:?} of the kill"
                );
                let base = &survivors[sent % survivors.len()];
                sent += 1;
                let request = system
                    .request(&target.http, base, Op::Write, FAILOVER_KEY)
                    .timeout(PROBE_TIMEOUT);
                probes.spawn(async move {
                    exchange(system, Op::Write, request).await.map(|()| Instant::now())
                });
            }
            Some(done) = probes.join_next() => {
                if let Ok(Ok(succeeded_at)) = done {
                    return Ok(succeeded_at - killed_at);
                }
            }
        }
    }
}

pub(super) fn print_failover(kills: usize, distlab: &Failovers, etcd: &Failovers) {
    println!();
    println!(
        "failover time, kill → first successful write (with {kills} kills the p99 is the max, or next to it)"
    );
    println!(
        "{:<8} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "", "kills", "median ms", "p99 ms", "min ms", "max ms"
    );
    for (name, f) in [("distlab", distlab), ("etcd", etcd)] {
        let mut samples = f.samples_us.clone();
        println!(
            "{name:<8} {:>6} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            samples.len(),
            quantile_ms(&mut samples, 0.5),
            quantile_ms(&mut samples, 0.99),
            quantile_ms(&mut samples, 0.0),
            quantile_ms(&mut samples, 1.0)
        );
        if let Some(error) = &f.stopped {
            println!(
                "ERROR: {name} failover stopped after {} kill(s): {error}",
                samples.len()
            );
        }
    }
    let mut samples = distlab.samples_us.clone();
    let p99 = quantile_ms(&mut samples, 0.99);
    println!(
        "goal: distlab failover p99 < 1 s: {p99:.0} ms, {}",
        verdict(!samples.is_empty() && distlab.stopped.is_none() && p99 < 1000.0)
    );
}
