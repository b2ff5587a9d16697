//! `cargo xtask bench outbox`: the outbox order flow against the running stack, and its baseline — pgbench
//! running the same write path SQL on the same PostgreSQL cluster — in the same run.
//!
//! Per round:
//! 1. **baseline**: pgbench, `clients` connections for `seconds`, each transaction the order write path of
//!    `POST /orders` (order row + outbox row in one statement, one transaction) on a scratch database of
//!    orders-db with the orders schema — same server, same durability (`synchronous_commit=on`, fsync on);
//! 2. **distlab at full load**: `clients` closed-loop HTTP clients place one-item orders for `seconds`;
//!    accepted/s is counted at the client, then every order is waited for; confirmed/s is the number of
//!    orders divided by the time from the first acceptance to the last confirmation (so a backlog that drains
//!    slowly lowers it), and the confirm latency is `updated_at − created_at` of each order;
//! 3. **distlab at half rate**: an open-loop load at half the confirmed rate of step 2 for `seconds`, for the
//!    confirm latency when the system is not saturated.
//!
//! Medians over the rounds are printed with the ratio to the baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::stack::{Stack, block_on};

#[derive(Debug, Subcommand)]
pub enum Which {
    /// The outbox order flow (order + inventory + Kafka) against pgbench on the same write path.
    Outbox {
        #[command(flatten)]
        load: LoadArgs,
        /// Rate (orders/s) of the latency phase; default: half the confirmed rate of the full-load phase.
        #[arg(long)]
        latency_rate: Option<f64>,
    },
    /// 2PC orders against outbox orders, same clients, same run; and how long 2PC keeps rows locked.
    #[command(name = "2pc")]
    TwoPc {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// The four lock backends through the lock service against each backend's raw primitive.
    Locks {
        #[command(flatten)]
        args: crate::locks::LockBenchArgs,
    },
    /// The config service's Raft cluster against a 3-member etcd cluster, both started by the bench.
    Config {
        #[command(flatten)]
        args: crate::config_bench::ConfigBenchArgs,
    },
    /// The chaos sidecar with no fault active against no sidecar: pgbench, HTTP requests/s and latency,
    /// connections held.
    Chaos {
        #[command(flatten)]
        args: crate::chaos_bench::ChaosBenchArgs,
    },
}

/// The load every benchmark applies.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Seconds of load per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients (closed-loop HTTP clients; connections for pgbench).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Rounds; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct SKUs the orders spread over.
    #[arg(long, default_value_t = 50)]
    skus: usize,
}

impl LoadArgs {
    fn settings(&self, latency_rate: Option<f64>) -> Settings {
        Settings {
            seconds: Duration::from_secs(self.seconds),
            clients: self.clients,
            rounds: self.rounds.max(1),
            skus: self.skus.max(1),
            latency_rate,
        }
    }
}

const ORDER_URL: &str = "http://127.0.0.1:8081";
const INVENTORY_URL: &str = "http://127.0.0.1:8082";
const ORDERS_SERVER: &str = "postgres://postgres@127.0.0.1:15432";

pub fn run(stack: &Stack, which: Which) -> anyhow::Result<()> {
    // The config bench starts its own clusters; the chaos bench checks the parts it uses; the others run
    // against the whole stack.
    if !matches!(which, Which::Config { .. } | Which::Chaos { .. }) {
        anyhow::ensure!(
            stack.is_fully_healthy(),
            "the stack is not fully up: run `cargo xtask up` (release services) first"
        );
    }
    match which {
        Which::Outbox { load, latency_rate } => {
            block_on(outbox(stack, load.settings(latency_rate)))
        }
        Which::TwoPc { load } => block_on(two_phase(load.settings(None))),
        Which::Locks { args } => crate::locks::bench(args),
        Which::Config { args } => crate::config_bench::bench(stack, args),
        Which::Chaos { args } => crate::chaos_bench::bench(stack, args),
    }
}

/// What every benchmark run starts with: an id for its orders and SKUs, an HTTP client sized for the
/// clients, the orders database, and the run's SKUs (seeded).
struct Run {
    id: String,
    http: reqwest::Client,
    orders_db: PgPool,
    skus: Arc<Vec<String>>,
}

impl Run {
    async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(settings.clients)
            .build()?;
        let orders_db = PgPool::connect(&format!("{ORDERS_SERVER}/orders")).await?;
        let skus = seed_skus(&http, &id, settings.skus).await?;
        Ok(Self {
            id,
            http,
            orders_db,
            skus,
        })
    }
}

/// Creates `count` SKUs of this run with stock that will not run out.
async fn seed_skus(
    http: &reqwest::Client,
    run_id: &str,
    count: usize,
) -> anyhow::Result<Arc<Vec<String>>> {
    let names: Vec<String> = (0..count)
        .map(|i| format!("BENCH-{run_id}-{i:03}"))
        .collect();
    for sku in &names {
        let response = http
            .put(format!("{INVENTORY_URL}/products/{sku}"))
            .json(&json!({"name": "bench", "price_cents": 1, "stock": 1_000_000_000}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "cannot seed {sku}: {}",
            response.status()
        );
    }
    Ok(Arc::new(names))
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `cargo xtask bench 2pc`.
async fn two_phase(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        seconds,
        clients,
        rounds,
        skus,
        ..
    } = settings;
    let Run {
        id: run_id,
        http,
        orders_db,
        skus: sku_names,
    } = Run::start(&settings).await?;
    let log_db = PgPool::connect(&format!("{ORDERS_SERVER}/coordinator")).await?;
    println!(
        "2pc benchmark: {rounds} round(s) of {seconds:?} per phase, {clients} clients, {skus} SKUs"
    );

    let mut columns: [Vec<f64>; 8] = Default::default();
    for round in 1..=rounds {
        let customer = format!("bench-{run_id}-r{round}-2pc");
        let mut two_pc = load(
            &http,
            &sku_names,
            &customer,
            "2pc",
            seconds,
            Load::Closed { clients },
        )
        .await?;
        let rate = two_pc.accepted as f64 / seconds.as_secs_f64();
        let (p50, p99) = (
            quantile_ms(&mut two_pc.latencies_us, 0.5),
            quantile_ms(&mut two_pc.latencies_us, 0.99),
        );
        // How long the inventory branch stayed prepared (its row locks held): from its vote to its commit.
        let (lock_p50, lock_p99): (f64, f64) = sqlx::query_as(
            "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM b.acked_at - b.voted_at)), 0)::float8 * 1000,
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM b.acked_at - b.voted_at)), 0)::float8 * 1000
             FROM branches b JOIN transactions t USING (gid)
             WHERE t.payload->>'customer_id' = $1 AND t.state = 'COMMITTED' AND b.participant = 'inventory'",
        )
        .bind(&customer)
        .fetch_one(&log_db)
        .await?;

        let customer = format!("bench-{run_id}-r{round}-outbox");
        let placed = load(
            &http,
            &sku_names,
            &customer,
            "outbox",
            seconds,
            Load::Closed { clients },
        )
        .await?
        .accepted;
        let outbox = settle(&orders_db, &customer, placed).await?;
        println!(
            "  round {round}: 2pc {rate:.0} orders/s, p50 {p50:.1} ms p99 {p99:.1} ms, rows locked p50 {lock_p50:.1} ms p99 {lock_p99:.1} ms \
             | outbox {:.0} confirmed/s, confirm p50 {:.1} ms p99 {:.1} ms",
            outbox.throughput, outbox.p50_ms, outbox.p99_ms
        );
        for (column, value) in columns.iter_mut().zip([
            rate,
            p50,
            p99,
            lock_p50,
            lock_p99,
            outbox.throughput,
            outbox.p50_ms,
            outbox.p99_ms,
        ]) {
            column.push(value);
        }
    }
    let [
        rate,
        p50,
        p99,
        lock_p50,
        lock_p99,
        outbox_rate,
        outbox_p50,
        outbox_p99,
    ] = columns.map(|c| median(&c));
    println!();
    println!(
        "medians of {rounds} round(s)        2pc                    outbox (baseline)        ratio 2pc/outbox"
    );
    println!(
        "  orders/s, decided end to end   {rate:>9.0}              {outbox_rate:>9.0}                {:.2}",
        rate / outbox_rate
    );
    println!(
        "  latency to the final status    p50 {p50:.1} ms, p99 {p99:.1} ms   p50 {outbox_p50:.1} ms, p99 {outbox_p99:.1} ms"
    );
    println!(
        "  rows locked per 2pc order      p50 {lock_p50:.1} ms, p99 {lock_p99:.1} ms (inventory branch, vote → commit)"
    );
    println!(
        "  (both at {clients} closed-loop clients: the outbox latency includes its backlog at that load)"
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, Default)]
struct Round {
    pgbench_tps: f64,
    accepted_per_s: f64,
    confirmed_per_s: f64,
    full_p50_ms: f64,
    full_p99_ms: f64,
    half_rate: f64,
    half_p50_ms: f64,
    half_p99_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    seconds: Duration,
    clients: usize,
    rounds: usize,
    skus: usize,
    latency_rate: Option<f64>,
}

async fn outbox(stack: &Stack, settings: Settings) -> anyhow::Result<()> {
    let Settings {
        seconds,
        clients,
        rounds,
        skus,
        latency_rate,
    } = settings;
    let Run {
        id: run_id,
        http,
        orders_db,
        skus: sku_names,
    } = Run::start(&settings).await?;

    println!(
        "outbox benchmark: {rounds} round(s) of {seconds:?} per phase, {clients} clients, {skus} SKUs"
    );
    let mut results = Vec::new();
    for round in 1..=rounds {
        let mut r = Round {
            pgbench_tps: pgbench(stack, seconds, clients).await?,
            ..Round::default()
        };
        let customer = format!("bench-{run_id}-r{round}-full");
        let placed = load(
            &http,
            &sku_names,
            &customer,
            "outbox",
            seconds,
            Load::Closed { clients },
        )
        .await?
        .accepted;
        r.accepted_per_s = placed as f64 / seconds.as_secs_f64();
        let full = settle(&orders_db, &customer, placed).await?;
        r.confirmed_per_s = full.throughput;
        (r.full_p50_ms, r.full_p99_ms) = (full.p50_ms, full.p99_ms);

        r.half_rate = latency_rate.unwrap_or(r.confirmed_per_s / 2.0).max(1.0);
        let customer = format!("bench-{run_id}-r{round}-half");
        let placed = load(
            &http,
            &sku_names,
            &customer,
            "outbox",
            seconds,
            Load::Open {
                per_second: r.half_rate,
            },
        )
        .await?
        .accepted;
        let half = settle(&orders_db, &customer, placed).await?;
        (r.half_p50_ms, r.half_p99_ms) = (half.p50_ms, half.p99_ms);
        println!(
            "  round {round}: pgbench {:.0} tps | accepted {:.0}/s, confirmed {:.0}/s, confirm p50 {:.1} ms p99 {:.1} ms \
             | at {:.0}/s: p50 {:.1} ms p99 {:.1} ms",
            r.pgbench_tps,
            r.accepted_per_s,
            r.confirmed_per_s,
            r.full_p50_ms,
            r.full_p99_ms,
            r.half_rate,
            r.half_p50_ms,
            r.half_p99_ms
        );
        results.push(r);
    }

    let median = |f: fn(&Round) -> f64| {
        let mut values: Vec<f64> = results.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let baseline = median(|r| r.pgbench_tps);
    let accepted = median(|r| r.accepted_per_s);
    let confirmed = median(|r| r.confirmed_per_s);
    println!();
    println!(
        "medians of {rounds} round(s)            distlab     baseline (pgbench, same SQL)   ratio"
    );
    println!(
        "  write path, orders/s             {accepted:>9.0}     {baseline:>9.0}                      {:.2}",
        accepted / baseline
    );
    println!(
        "  confirmed end to end, orders/s   {confirmed:>9.0}     {baseline:>9.0}                      {:.2}",
        confirmed / baseline
    );
    println!(
        "  confirm latency at full load     p50 {:.1} ms, p99 {:.1} ms",
        median(|r| r.full_p50_ms),
        median(|r| r.full_p99_ms)
    );
    println!(
        "  confirm latency at half rate     p50 {:.1} ms, p99 {:.1} ms (at {:.0} orders/s)",
        median(|r| r.half_p50_ms),
        median(|r| r.half_p99_ms),
        median(|r| r.half_rate)
    );
    println!(
        "goals: confirmed ≥ 1000/s: {} | confirmed ≥ 0.5 × pgbench: {} | p99 < 100 ms at half rate: {}",
        verdict(confirmed >= 1000.0),
        verdict(confirmed >= 0.5 * baseline),
        verdict(median(|r| r.half_p99_ms) < 100.0)
    );
    Ok(())
}

/// How a goal reads in a benchmark's table.
pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[derive(Debug, Clone, Copy)]
enum Load {
    /// `clients` clients, each sending its next order when the last one is answered.
    Closed { clients: usize },
    /// Orders sent at a fixed rate, whatever the answers.
    Open { per_second: f64 },
}

/// Places one-item orders for `duration`; returns how many were accepted (202).
/// What a load phase saw at the client.
#[derive(Debug, Default)]
struct Loaded {
    /// Orders answered with the mode's success status (202 outbox, 201 2PC).
    accepted: u64,
    /// Every answered request's round trip, in microseconds.
    latencies_us: Vec<u64>,
}

/// Places one-item orders in `mode` for `duration`.
async fn load(
    http: &reqwest::Client,
    skus: &Arc<Vec<String>>,
    customer: &str,
    mode: &'static str,
    duration: Duration,
    load: Load,
) -> anyhow::Result<Loaded> {
    let success = if mode == "2pc" { 201 } else { 202 };
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sequence = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let place = {
        let (http, skus, customer) = (http.clone(), skus.clone(), customer.to_owned());
        let (accepted, failed, sequence) = (accepted.clone(), failed.clone(), sequence.clone());
        let latencies = latencies.clone();
        move || {
            let (http, skus, customer) = (http.clone(), skus.clone(), customer.clone());
            let (accepted, failed, latencies) =
                (accepted.clone(), failed.clone(), latencies.clone());
            let n = sequence.fetch_add(1, Ordering::Relaxed);
            async move {
                let sku = &skus[(n as usize) % skus.len()];
                let body = json!({"customer_id": customer, "items": [{"sku": sku, "quantity": 1}], "mode": mode});
                let started = Instant::now();
                let sent = http
                    .post(format!("{ORDER_URL}/orders"))
                    .json(&body)
                    .send()
                    .await;
                let took = started.elapsed().as_micros() as u64;
                match sent {
                    Ok(response) if response.status() == success => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        latencies.lock().expect("latencies lock").push(took);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    match load {
        Load::Closed { clients } => {
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    let place = place.clone();
                    tokio::spawn(async move {
                        while Instant::now() < deadline {
                            place().await;
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await?;
            }
        }
        Load::Open { per_second } => {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut in_flight = tokio::task::JoinSet::new();
            while Instant::now() < deadline {
                ticks.tick().await;
                in_flight.spawn(place());
            }
            while in_flight.join_next().await.is_some() {}
        }
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} orders were not accepted; see `cargo xtask logs order`");
    }
    let latencies_us = std::mem::take(&mut *latencies.lock().expect("latencies lock"));
    Ok(Loaded {
        accepted: accepted.load(Ordering::Relaxed),
        latencies_us,
    })
}

/// The `q` quantile of `values` (sorted in place), in milliseconds.
pub(crate) fn quantile_ms(values: &mut [u64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index] as f64 / 1000.0
}

#[derive(Debug, Clone, Copy)]
struct Settled {
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Waits until the customer's `expected` orders are decided; their throughput and confirm latencies.
async fn settle(db: &PgPool, customer: &str, expected: u64) -> anyhow::Result<Settled> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (decided, pending): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status <> 'PENDING'), count(*) FILTER (WHERE status = 'PENDING')
             FROM orders WHERE customer_id = $1",
        )
        .bind(customer)
        .fetch_one(db)
        .await?;
        if pending == 0 && decided as u64 >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("{pending} of {expected} orders still PENDING after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (count, span, p50, p99, rejected): (i64, f64, f64, f64, i64) = sqlx::query_as(
        "SELECT count(*),
                extract(epoch FROM max(updated_at) - min(created_at))::float8,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at))::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at))::float8,
                count(*) FILTER (WHERE status = 'REJECTED')
         FROM orders WHERE customer_id = $1",
    )
    .bind(customer)
    .fetch_one(db)
    .await?;
    anyhow::ensure!(
        rejected == 0,
        "{rejected} bench orders were REJECTED; the bench SKUs ran out of stock?"
    );
    Ok(Settled {
        throughput: count as f64 / span.max(f64::EPSILON),
        p50_ms: p50 * 1000.0,
        p99_ms: p99 * 1000.0,
    })
}

/// The SQL of `POST /orders` in outbox mode (`PLACE` in services/order/src/store.rs): one statement, so one
/// transaction, that writes the order and its outbox message; parameters replaced by literals of the same
/// size as the service sends.
pub(crate) const PGBENCH_SCRIPT: &str = r#"WITH placed AS (
    INSERT INTO orders (id, customer_id, items, status, mode, created_at, updated_at)
    VALUES (gen_random_uuid(), 'bench-pgbench', '[{"sku": "BENCH-00000000-000", "quantity": 1}]', 'PENDING', 'outbox', now(), now())
    RETURNING id)
INSERT INTO outbox (message_id, topic, message_key, envelope)
SELECT gen_random_uuid(), 'order-events', id::text, '{"message_id": "01a21771-b9f9-70c0-9fa4-af5843984b9d", "type": "OrderPlaced", "occurred_at": "2026-11-26T10:40:58.873993586Z", "payload": {"order_id": "01a21771-b9f9-70c0-9fa4-af5843984b9d", "customer_id": "bench-pgbench", "items": [{"sku": "BENCH-00000000-000", "quantity": 1}]}}' FROM placed;
"#;

/// pgbench with the write path's SQL on a scratch database with the orders schema; its tps.
async fn pgbench(stack: &Stack, duration: Duration, clients: usize) -> anyhow::Result<f64> {
    let admin = PgPool::connect(&format!("{ORDERS_SERVER}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS bench_baseline WITH (FORCE)")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE bench_baseline")
        .execute(&admin)
        .await?;
    let scratch = PgPool::connect(&format!("{ORDERS_SERVER}/bench_baseline")).await?;
    distlab_messaging::service::migrator().run(&scratch).await?;
    Migrator::new(stack.root().join("migrations/orders"))
        .await?
        .run(&scratch)
        .await?;
    scratch.close().await;

    let script = stack.root().join(".distlab/pgbench-outbox.sql");
    std::fs::write(&script, PGBENCH_SCRIPT)?;
    let bin = crate::install::postgres_bin_dir().context("PostgreSQL is not installed")?;
    let output = tokio::process::Command::new(bin.join("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "15432",
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
            "-j",
            "2",
        ])
        .args([
            "-c",
            &clients.to_string(),
            "-T",
            &duration.as_secs().to_string(),
            "-f",
        ])
        .arg(&script)
        .arg("bench_baseline")
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    sqlx::query("DROP DATABASE bench_baseline WITH (FORCE)")
        .execute(&admin)
        .await?;
    text.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{text}"))
}
