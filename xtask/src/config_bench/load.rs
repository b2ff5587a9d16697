//! Load: closed-loop clients, what they measure, and the throughput table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bench::{median, quantile_ms, verdict};

use super::*;

/// What one phase's clients saw.
#[derive(Debug, Clone, Default)]
pub(super) struct Phase {
    pub(super) per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
            self.per_s, self.p50_ms, self.p99_ms
        )?;
        if self.errors > 0 {
            write!(f, " {} ERRORS", self.errors)?;
        }
        Ok(())
    }
}

/// One round of one system.
#[derive(Debug, Clone, Default)]
pub(super) struct Measured {
    pub(super) writes: Phase,
    pub(super) reads: Phase,
}

impl Measured {
    /// Medians of the rates and latencies; errors summed over the rounds.
    pub(super) fn median_of(rounds: &[Self]) -> Self {
        let of = |phase: fn(&Self) -> &Phase| {
            let field = |f: fn(&Phase) -> f64| {
                let values: Vec<f64> = rounds.iter().map(|r| f(phase(r))).collect();
                if values.is_empty() {
                    0.0
                } else {
                    median(&values)
                }
            };
            Phase {
                per_s: field(|p| p.per_s),
                p50_ms: field(|p| p.p50_ms),
                p99_ms: field(|p| p.p99_ms),
                errors: rounds.iter().map(|r| phase(r).errors).sum(),
                first_error: rounds.iter().find_map(|r| phase(r).first_error.clone()),
            }
        };
        Self {
            writes: of(|m| &m.writes),
            reads: of(|m| &m.reads),
        }
    }
}

/// Latencies and errors of one client.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) latencies_us: Vec<u64>,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
}

/// `clients` closed loops of `op` at `base` for `duration`, client `c` on keys `c`, `c + clients`, …
pub(super) async fn closed_loop(
    target: &Target,
    base: &str,
    op: Op,
    keys: &Arc<Vec<String>>,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let (system, http) = (target.system, target.http.clone());
            let (base, keys) = (base.to_owned(), keys.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = client;
                while Instant::now() < deadline {
                    let key = &keys[next % keys.len()];
                    next += clients;
                    let sent = Instant::now();
                    match exchange(system, op, system.request(&http, &base, op, key)).await {
                        Ok(()) => tally.latencies_us.push(sent.elapsed().as_micros() as u64),
                        Err(error) => {
                            tally.errors += 1;
                            tally
                                .first_error
                                .get_or_insert_with(|| format!("{error:#}"));
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for worker in workers {
        let tally = worker.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        all.first_error = all.first_error.or(tally.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Phase {
        per_s: all.latencies_us.len() as f64 / elapsed,
        p50_ms: quantile_ms(&mut all.latencies_us, 0.5),
        p99_ms: quantile_ms(&mut all.latencies_us, 0.99),
        errors: all.errors,
        first_error: all.first_error,
    })
}

/// Writes every key once (so that the reads find them), then `WARM_UP` of writes, not measured.
pub(super) async fn warm_up(
    target: &Target,
    leader: &str,
    keys: &Arc<Vec<String>>,
    clients: usize,
) -> anyhow::Result<()> {
    for key in keys.iter() {
        let request = target.system.request(&target.http, leader, Op::Write, key);
        exchange(target.system, Op::Write, request)
            .await
            .with_context(|| format!("seeding {key}"))?;
    }
    let warm = closed_loop(target, leader, Op::Write, keys, clients, WARM_UP).await?;
    println!("  warm-up {:<7} writes {warm}", target.system.name());
    Ok(())
}

pub(super) fn print_throughput(rounds: usize, clients: usize, distlab: &Measured, etcd: &Measured) {
    println!();
    println!(
        "medians of {rounds} round(s), {clients} clients, requests to the leader in both (latency of one request at the client)"
    );
    println!(
        "{:<20} {:>10} {:>8} {:>8} {:>10} {:>8} {:>8} {:>13} {:>13}",
        "",
        "distlab/s",
        "p50 ms",
        "p99 ms",
        "etcd/s",
        "p50 ms",
        "p99 ms",
        "ratio (rate)",
        "ratio (p99)"
    );
    for (name, d, e) in [
        ("writes", &distlab.writes, &etcd.writes),
        ("linearizable reads", &distlab.reads, &etcd.reads),
    ] {
        println!(
            "{name:<20} {:>10.0} {:>8.2} {:>8.2} {:>10.0} {:>8.2} {:>8.2} {:>13.2} {:>13.2}",
            d.per_s,
            d.p50_ms,
            d.p99_ms,
            e.per_s,
            e.p50_ms,
            e.p99_ms,
            d.per_s / e.per_s,
            d.p99_ms / e.p99_ms
        );
    }
    println!("(ratios are distlab/etcd: above 1 is better for the rate, below 1 for the p99)");
    for (system, m) in [("distlab", distlab), ("etcd", etcd)] {
        for (phase, p) in [("writes", &m.writes), ("reads", &m.reads)] {
            match &p.first_error {
                Some(error) => println!(
                    "ERRORS: {system} {phase}: {} failed request(s) over the rounds; first: {error}",
                    p.errors
                ),
                None => println!("errors: {system} {phase}: none"),
            }
        }
    }
    let writes = distlab.writes.per_s / etcd.writes.per_s;
    let reads = distlab.reads.per_s / etcd.reads.per_s;
    println!(
        "goals: writes ≥ 1.0 × etcd: {writes:.2}, {} | linearizable reads ≥ 1.0 × etcd: {reads:.2}, {}",
        verdict(writes >= 1.0),
        verdict(reads >= 1.0)
    );
}
