//! `cargo xtask bench locks` and `cargo xtask scenario flash-sale`, against the running stack.
//!
//! The benchmark, per backend and per round, in one run:
//! 1. **raw**: the backend's own primitive from a plain client loop — `SET NX PX` + `DEL` on one Redis
//!    (redis), the same on all three at once (redlock), `INSERT` + `DELETE` under the unique index of the
//!    seed's naive table (pg), create-ephemeral-sequential + delete (zookeeper, one session per client);
//! 2. **distlab**: `POST /locks/{name}/acquire` + `/release` through the lock service, same clients;
//! 3. **contended**: 50 clients on one lock name (`wait_ms` 25 s), acquire + release.
//!
//! Every client uses its own lock name in 1 and 2 (uncontended). Pairs/s and the p50/p99 of one pair are
//! measured at the client; medians over the rounds are printed with distlab/raw. For scale, the run also
//! measures the HTTP ceiling: two `GET /healthz` per "pair" from the same clients — what any lock behind
//! HTTP on this machine could at best do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::PgPool;
use zookeeper_client as zk;

use crate::bench::{median, quantile_ms};
use crate::stack::block_on;

const LOCK_URL: &str = "http://127.0.0.1:8084";
const INVENTORY_URL: &str = "http://127.0.0.1:8082";
const LOCKS_DB: &str = "postgres://postgres@127.0.0.1:15432/locks";
const REDIS: [&str; 3] = [
    "redis://127.0.0.1:16379",
    "redis://127.0.0.1:16380",
    "redis://127.0.0.1:16381",
];
const ZOOKEEPER: &str = "127.0.0.1:12181";
const BACKENDS: [&str; 4] = ["redis", "redlock", "pg", "zookeeper"];
const CONTENDERS: usize = 50;

#[derive(Debug, Clone, clap::Args)]
pub struct LockBenchArgs {
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients of the uncontended phases, each on its own lock.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Rounds; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these backends (comma-separated).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
}

/// One phase's numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    pairs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

type PairFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// Runs `clients` closed loops of `pair(client)` for `duration`.
async fn measure<F>(clients: usize, duration: Duration, pair: F) -> anyhow::Result<Measured>
where
    F: Fn(usize) -> PairFuture + Send + Sync + 'static,
{
    let pair = Arc::new(pair);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let pair = pair.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    pair(client).await?;
                    latencies.push(t.elapsed().as_micros() as u64);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Measured {
        pairs_per_s: latencies.len() as f64 / elapsed,
        p50_ms: quantile_ms(&mut latencies, 0.5),
        p99_ms: quantile_ms(&mut latencies, 0.99),
    })
}

fn median_of(rounds: &[Measured]) -> Measured {
    let of = |f: fn(&Measured) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    Measured {
        pairs_per_s: of(|m| m.pairs_per_s),
        p50_ms: of(|m| m.p50_ms),
        p99_ms: of(|m| m.p99_ms),
    }
}

pub fn bench(args: LockBenchArgs) -> anyhow::Result<()> {
    block_on(bench_async(args))
}

async fn bench_async(args: LockBenchArgs) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONTENDERS + args.clients)
        .build()?;
    let backends: Vec<&str> = BACKENDS
        .into_iter()
        .filter(|b| args.backends.is_empty() || args.backends.iter().any(|a| a == b))
        .collect();
    println!(
        "bench locks: {} s per phase, {} uncontended clients (each its own lock), {CONTENDERS} contenders on one lock, {} rounds",
        args.seconds, args.clients, args.rounds
    );
    let mut ceiling_rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let ceiling = http_ceiling(&http, args.clients, duration).await?;
        println!(
            "  http ceiling round {round}: {:>7.0} pairs/s (p50 {:.2} ms, p99 {:.2} ms)",
            ceiling.pairs_per_s, ceiling.p50_ms, ceiling.p99_ms
        );
        ceiling_rounds.push(ceiling);
    }
    let ceiling = median_of(&ceiling_rounds);
    let mut summary = Vec::new();
    for backend in backends {
        let mut raw_rounds = Vec::new();
        let mut distlab_rounds = Vec::new();
        let mut contended_rounds = Vec::new();
        for round in 0..args.rounds.max(1) {
            let tag = format!("{run}-{round}");
            let raw = raw_pairs(backend, args.clients, duration, &tag).await?;
            let distlab =
                service_pairs(&http, backend, args.clients, duration, &tag, false).await?;
            let contended = service_pairs(&http, backend, CONTENDERS, duration, &tag, true).await?;
            println!(
                "  {backend:<9} round {round}: raw {:>7.0}/s · distlab {:>7.0}/s (p50 {:.2} ms, p99 {:.2} ms) · contended {:>6.0}/s",
                raw.pairs_per_s,
                distlab.pairs_per_s,
                distlab.p50_ms,
                distlab.p99_ms,
                contended.pairs_per_s
            );
            raw_rounds.push(raw);
            distlab_rounds.push(distlab);
            contended_rounds.push(contended);
        }
        summary.push((
            backend,
            median_of(&raw_rounds),
            median_of(&distlab_rounds),
            median_of(&contended_rounds),
        ));
    }
    println!();
    println!(
        "medians over the rounds (acquire+release pairs/s; latency of one pair at the client)"
    );
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>12}",
        "backend",
        "raw /s",
        "raw p50",
        "raw p99",
        "distlab /s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "50 on 1 /s"
    );
    for (backend, raw, distlab, contended) in &summary {
        println!(
            "{backend:<10} {:>10.0} {:>9.2} {:>9.2} {:>10.0} {:>9.2} {:>9.2} {:>8.2} {:>12.0}",
            raw.pairs_per_s,
            raw.p50_ms,
            raw.p99_ms,
            distlab.pairs_per_s,
            distlab.p50_ms,
            distlab.p99_ms,
            distlab.pairs_per_s / raw.pairs_per_s,
            contended.pairs_per_s
        );
    }
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>10.0} {:>9.2} {:>9.2}   (two GET /healthz per pair: the HTTP ceiling)",
        "http", "", "", "", ceiling.pairs_per_s, ceiling.p50_ms, ceiling.p99_ms
    );
    if let Some((_, raw, distlab, _)) = summary.iter().find(|(b, ..)| *b == "redis") {
        let ratio = distlab.pairs_per_s / raw.pairs_per_s;
        println!(
            "goal (redis): distlab ≥ 0.5 × raw pairs/s — {:.2}, {}; p99 < 5 ms uncontended — {:.2} ms, {}",
            ratio,
            if ratio >= 0.5 { "met" } else { "MISSED" },
            distlab.p99_ms,
            if distlab.p99_ms < 5.0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    Ok(())
}

/// Two `GET /healthz` of the lock service per pair: HTTP and nothing else.
async fn http_ceiling(
    http: &reqwest::Client,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let http = http.clone();
    measure(clients, duration, move |_| {
        let http = http.clone();
        Box::pin(async move {
            for _ in 0..2 {
                let response = http.get(format!("{LOCK_URL}/healthz")).send().await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "healthz answered {}",
                    response.status()
                );
                let _ = response.bytes().await?;
            }
            Ok(())
        })
    })
    .await
}

/// Acquire + release through the lock service: each client on its own lock, or all on one (`contended`).
async fn service_pairs(
    http: &reqwest::Client,
    backend: &'static str,
    clients: usize,
    duration: Duration,
    tag: &str,
    contended: bool,
) -> anyhow::Result<Measured> {
    let (http, tag) = (http.clone(), tag.to_owned());
    measure(clients, duration, move |client| {
        let http = http.clone();
        let name = if contended {
            format!("bench-{backend}-{tag}-hot")
        } else {
            format!("bench-{backend}-{tag}-{client}")
        };
        Box::pin(async move {
            let response = http
                .post(format!("{LOCK_URL}/locks/{name}/acquire"))
                .json(&json!({"backend": backend, "owner": format!("bench-{client}"), "ttl_ms": 10_000, "wait_ms": 25_000}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{backend} acquire answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
            let lease: Value = response.json().await?;
            let released = http
                .post(format!("{LOCK_URL}/locks/{name}/release"))
                .json(&json!({"backend": backend, "lease_id": lease["lease_id"]}))
                .send()
                .await?;
            anyhow::ensure!(
                released.status().is_success(),
                "{backend} release answered {}",
                released.status()
            );
            Ok(())
        })
    })
    .await
}

/// The backend's primitive from a plain client loop.
async fn raw_pairs(
    backend: &'static str,
    clients: usize,
    duration: Duration,
    tag: &str,
) -> anyhow::Result<Measured> {
    let tag = tag.to_owned();
    match backend {
        "redis" | "redlock" => {
            let urls: &[&str] = if backend == "redis" {
                &REDIS[..1]
            } else {
                &REDIS
            };
            let mut connections = Vec::new();
            for url in urls {
                let client = redis::Client::open(*url)?;
                connections.push(client.get_multiplexed_async_connection().await?);
            }
            let connections = Arc::new(connections);
            measure(clients, duration, move |client| {
                let connections = connections.clone();
                let key = format!("bench:raw:{tag}:{client}");
                Box::pin(async move {
                    futures::future::try_join_all(connections.iter().map(|c| {
                        let (mut c, key) = (c.clone(), key.clone());
                        async move {
                            let set: Option<String> = redis::cmd("SET")
                                .arg(&key)
                                .arg("v")
                                .arg("NX")
                                .arg("PX")
                                .arg(10_000)
                                .query_async(&mut c)
                                .await?;
                            anyhow::ensure!(set.is_some(), "SET NX refused");
                            let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut c).await?;
                            anyhow::Ok(())
                        }
                    }))
                    .await?;
                    Ok(())
                })
            })
            .await
        }
        "pg" => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(clients as u32)
                .connect(LOCKS_DB)
                .await
                .context("the locks database (is the lock service up?)")?;
            let pool: Arc<PgPool> = Arc::new(pool);
            measure(clients, duration, move |client| {
                let pool = pool.clone();
                let name = format!("bench-raw-{tag}-{client}");
                Box::pin(async move {
                    sqlx::query("INSERT INTO naive_locks (name, owner) VALUES ($1, 'bench')")
                        .bind(&name)
                        .execute(&*pool)
                        .await?;
                    sqlx::query("DELETE FROM naive_locks WHERE name = $1")
                        .bind(&name)
                        .execute(&*pool)
                        .await?;
                    Ok(())
                })
            })
            .await
        }
        "zookeeper" => {
            let dir = format!("/distlab/bench/{tag}");
            let admin = zk::Client::connect(ZOOKEEPER).await?;
            let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            match admin.mkdir(&dir, &persistent).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(error) => return Err(error.into()),
            }
            let mut sessions = Vec::new();
            for _ in 0..clients {
                sessions.push(zk::Client::connect(ZOOKEEPER).await?);
            }
            let sessions = Arc::new(sessions);
            measure(clients, duration, move |client| {
                let sessions = sessions.clone();
                let prefix = format!("{dir}/lease-");
                Box::pin(async move {
                    let session = &sessions[client];
                    let options =
                        zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
                    let (_, sequence) = session.create(&prefix, b"bench", &options).await?;
                    session.delete(&format!("{prefix}{sequence}"), None).await?;
                    Ok(())
                })
            })
            .await
        }
        other => anyhow::bail!("unknown backend {other}"),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct FlashSaleArgs {
    /// Concurrent buyers.
    #[arg(long, default_value_t = 1000)]
    buyers: usize,
    /// Units on sale.
    #[arg(long, default_value_t = 100)]
    stock: i64,
}

/// `cargo xtask scenario flash-sale`: the sale without a lock, then with each backend.
pub fn flash_sale(args: FlashSaleArgs) -> anyhow::Result<crate::verdict::Verdict> {
    block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let endpoints = distlab_testkit::flash_sale::Endpoints {
            inventory: INVENTORY_URL.into(),
            lock: LOCK_URL.into(),
        };
        println!(
            "flash sale: {} buyers, {} units, each buyer reads the stock and takes one unit if any is left",
            args.buyers, args.stock
        );
        let mut outcomes = Vec::new();
        for guard in [
            None,
            Some("pg"),
            Some("redis"),
            Some("redlock"),
            Some("zookeeper"),
        ] {
            let outcome =
                distlab_testkit::flash_sale::run(&http, &endpoints, guard, args.buyers, args.stock)
                    .await
                    .map_err(anyhow::Error::msg)?;
            println!("  {outcome}");
            outcomes.push(outcome);
        }
        // The claim is the locks': with any of them nothing is oversold (without one it usually is).
        let (unlocked, locked) = outcomes.split_at(1);
        let passed = locked
            .iter()
            .all(|o| !o.oversold() && o.sold == o.stock as u64);
        let measured = format!(
            "no lock: {} sold of {}{}; pg, redis, redlock, zookeeper: {}",
            unlocked[0].sold,
            unlocked[0].stock,
            if unlocked[0].oversold() {
                " (oversold)"
            } else {
                ""
            },
            locked
                .iter()
                .map(|o| format!("{} of {}", o.sold, o.stock))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(crate::verdict::Verdict {
            section: "一 分布式锁 locks",
            claim: "a lock across processes stops a flash sale from selling more than the stock",
            measured,
            passed,
        })
    })
}
