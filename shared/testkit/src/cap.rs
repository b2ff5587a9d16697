//! The CAP experiment (seed section 三) on the running stack: the same load, the same partition, once with
//! the `cap_mode` switch at CP and once at AP, every operation recorded and the history checked afterwards.
//!
//! The load is an open model (arrivals on a fixed schedule, each request on its own task, so a slow answer
//! does not slow the arrivals): stock reads and one-unit orders at the order service, and — on the
//! inventory side — a shop counter that sells one unit at a time directly at the inventory
//! (`POST /products/{sku}/adjust {"delta": -1, "floor": 0}`). The counter is what makes the partition
//! matter: while the order side is cut off, the inventory's stock keeps changing, so a replica that keeps
//! answering (AP) answers with old numbers and promises units that are gone.
//!
//! Phases: healthy, then a partition between the order side and the inventory side made through the chaos
//! sidecar, then healed with the load still running, then drained (load stopped; every order decided,
//! no prepared transaction left, the replica equal to the inventory).
//!
//! [`check`] judges the recorded [`History`] without IO:
//! - **availability**: the share of requests answered within 1 s with a definite answer — 2xx, or a 404/409
//!   that states a fact about the stock ("no such SKU", "not enough") — per phase; a 503 or no answer
//!   within 1 s is unavailable;
//! - **stale reads**: a read is stale when the inventory had already recorded a newer version of the SKU
//!   before the read started (the inventory's own version history, `stock_versions`, not the replica's);
//! - **oversold**: units of orders the order service accepted (2xx) that ended REJECTED — promised and then
//!   taken back; and, after reconciliation, units CONFIRMED beyond the real stock (must be 0);
//! - **convergence**: time from the heal until the replica held the inventory's version of every SKU;
//! - **conservation** per SKU: `available + reserved + sold at the counter = initial stock`, `available ≥ 0`,
//!   and `reserved` = the units of CONFIRMED orders (the two databases agree).
//!
//! Shared by `cargo xtask scenario cap` (prints the table, writes the chart) and the CAP system test
//! (asserts).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// A request answered later than this counts as unavailable.
pub const ANSWER_WITHIN: f64 = 1.0;

/// Name of the scenario's partition in the chaos sidecar.
pub const PARTITION: &str = "cap-scenario";

/// The shape of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub skus: usize,
    /// Units of each SKU at the start.
    pub stock: i32,
    pub healthy: Duration,
    pub partition: Duration,
    /// Load after the heal, before draining.
    pub after_heal: Duration,
    pub read_every: Duration,
    pub order_every: Duration,
    pub sale_every: Duration,
    /// How long to wait for the drain.
    pub drain_timeout: Duration,
    /// The partition's sides (part names of the chaos sidecar).
    pub sides: Vec<Vec<String>>,
    /// `hold` (a pulled cable) or `reset`.
    pub cut: String,
}

/// The order side and the inventory side of the local stack. The coordinator stands with the order side
/// (it writes to orders-db), Kafka with the inventory side.
pub fn default_sides() -> Vec<Vec<String>> {
    vec![
        vec!["order".into(), "orders-db".into(), "coordinator".into()],
        vec!["inventory".into(), "inventory-db".into(), "kafka".into()],
    ]
}

impl Plan {
    /// The experiment as `cargo xtask scenario cap` runs it: 10 s healthy, 20 s partition, 5 s healed.
    pub fn full() -> Self {
        Self {
            skus: 3,
            stock: 40,
            healthy: Duration::from_secs(10),
            partition: Duration::from_secs(20),
            after_heal: Duration::from_secs(5),
            read_every: Duration::from_millis(50),
            order_every: Duration::from_millis(200),
            sale_every: Duration::from_millis(333),
            drain_timeout: Duration::from_secs(90),
            sides: default_sides(),
            // `reset`, not `hold`: a hold longer than the consumer session timeout (10 s) delivers a consumer's
            // held group requests after the heal, and tansu 0.6's group coordinator then keeps an evicted
            // member as the group's leader for good — the order service's consumer never gets its
            // partitions again (docs/chaos.md, "Partitions by part name").
            cut: "reset".into(),
        }
    }

    /// A shorter run with the same proportions (the system test).
    pub fn short() -> Self {
        Self {
            stock: 14,
            healthy: Duration::from_secs(3),
            partition: Duration::from_secs(6),
            after_heal: Duration::from_secs(2),
            ..Self::full()
        }
    }
}

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /stock/{sku}` at the order service.
    Read,
    /// `POST /orders` (one unit) at the order service.
    Order,
    /// A sale at the inventory's counter (`adjust` −1 with floor 0).
    Sale,
}

/// One recorded operation. Times are seconds since the run's start.
#[derive(Debug, Clone)]
pub struct Op {
    pub kind: Kind,
    pub sku: String,
    pub start: f64,
    pub end: f64,
    pub started_at: DateTime<Utc>,
    /// `None`: no answer (timeout, connection error).
    pub status: Option<u16>,
    /// The version a read saw.
    pub version: Option<i64>,
    /// The order an accepted order created.
    pub order_id: Option<Uuid>,
    /// The error body's `code`, if the answer was an error.
    pub code: Option<String>,
}

impl Op {
    /// Answered within [`ANSWER_WITHIN`] with a definite answer: a 2xx, or a refusal that states a fact
    /// about the stock (409 `insufficient_stock`, 404 `unknown_sku`). A 2PC order aborted because a
    /// participant could not be reached (409 `transaction_aborted`) is a refusal to answer, like a 503.
    pub fn available(&self) -> bool {
        let fact = matches!(
            (self.status, self.code.as_deref()),
            (Some(409), Some("insufficient_stock")) | (Some(404), Some("unknown_sku"))
        );
        self.end - self.start <= ANSWER_WITHIN && (self.accepted() || fact)
    }

    pub fn accepted(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }
}

/// One row of the inventory's version history.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub sku: String,
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
}

/// An order of the run as the orders database holds it at the end.
#[derive(Debug, Clone)]
pub struct FinalOrder {
    pub id: Uuid,
    pub status: String,
    pub reason: Option<String>,
    pub items: Vec<(String, i64)>,
}

/// A product at the end.
#[derive(Debug, Clone)]
pub struct FinalStock {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
}

/// Everything one run recorded.
#[derive(Debug, Clone)]
pub struct History {
    pub mode: String,
    pub t0: DateTime<Utc>,
    /// Start and end of the partition (seconds since the start).
    pub partition: (f64, f64),
    pub initial_stock: i64,
    pub skus: Vec<String>,
    pub ops: Vec<Op>,
    pub versions: Vec<VersionRow>,
    pub orders: Vec<FinalOrder>,
    pub final_stock: Vec<FinalStock>,
    /// Seconds from the heal until the replica held the inventory's version of every SKU.
    pub converged_after_heal: Option<f64>,
    /// Whether the drain finished (every order decided, no prepared transaction, replica converged).
    pub drained: bool,
    /// Units the counter sold per SKU, from the inventory's own record (`stock_adjustments`).
    pub counter_sales: Vec<(String, i64)>,
}

/// Where an operation falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Healthy,
    Partition,
    Healed,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Healthy, Phase::Partition, Phase::Healed];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Partition => "partition",
            Phase::Healed => "healed",
        }
    }
}

/// Counts of one phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseStats {
    pub reads: u64,
    pub reads_available: u64,
    pub orders: u64,
    pub orders_available: u64,
    pub orders_accepted: u64,
    pub stale_reads: u64,
    /// The most a read was behind the inventory, in seconds.
    pub max_staleness: f64,
}

impl PhaseStats {
    pub fn availability(&self) -> f64 {
        ratio(
            self.reads_available + self.orders_available,
            self.reads + self.orders,
        )
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// One second of the run, for the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Second {
    pub t: f64,
    pub availability: f64,
    /// The most a read that started in this second was behind, in seconds (0: none was).
    pub staleness: f64,
}

/// What the history says.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: String,
    pub phases: BTreeMap<Phase, PhaseStats>,
    /// Units of accepted orders that ended REJECTED (promised, then taken back).
    pub oversold_units_promised: i64,
    /// Of those orders, how many carry the reason `oversold_during_partition`.
    pub oversold_orders_with_reason: u64,
    pub oversold_orders: u64,
    /// Units CONFIRMED beyond the real stock once everything is decided (must be 0).
    pub confirmed_beyond_stock: i64,
    /// Accepted orders missing from the database or not decided.
    pub lost_orders: u64,
    /// Orders of the run in the database beyond the orders requested (a placement applied twice).
    pub duplicated_orders: u64,
    /// Orders refused (503 or no answer) that the database holds anyway, decided (a 2PC order whose
    /// answer was cut off; its outcome is real).
    pub refused_but_recorded: u64,
    pub units_sold_at_counter: i64,
    /// Per SKU, what breaks conservation (empty when it holds).
    pub conservation_problems: Vec<String>,
    pub converged_after_heal: Option<f64>,
    pub drained: bool,
    pub timeline: Vec<Second>,
}

impl Report {
    pub fn stale_reads(&self) -> u64 {
        self.phases.values().map(|p| p.stale_reads).sum()
    }

    pub fn phase(&self, phase: Phase) -> &PhaseStats {
        static EMPTY: std::sync::OnceLock<PhaseStats> = std::sync::OnceLock::new();
        self.phases
            .get(&phase)
            .unwrap_or_else(|| EMPTY.get_or_init(PhaseStats::default))
    }
}

/// The phase of an operation that started at `start`.
pub fn phase_of(history: &History, start: f64) -> Phase {
    if start < history.partition.0 {
        Phase::Healthy
    } else if start < history.partition.1 {
        Phase::Partition
    } else {
        Phase::Healed
    }
}

/// How far behind a read was: seconds between the first newer version's record and the read's start,
/// if the inventory had recorded a newer version before the read started.
fn staleness(versions: &HashMap<&str, Vec<&VersionRow>>, op: &Op) -> Option<f64> {
    let seen = op.version?;
    versions
        .get(op.sku.as_str())?
        .iter()
        .filter(|row| row.version > seen && row.recorded_at < op.started_at)
        .map(|row| row.recorded_at)
        .min()
        .map(|first_newer| {
            (op.started_at - first_newer)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1e6
        })
}

/// Judges a run (see the module documentation).
pub fn check(history: &History) -> Report {
    let mut versions: HashMap<&str, Vec<&VersionRow>> = HashMap::new();
    for row in &history.versions {
        versions.entry(row.sku.as_str()).or_default().push(row);
    }
    let mut phases: BTreeMap<Phase, PhaseStats> = Phase::ALL
        .iter()
        .map(|p| (*p, PhaseStats::default()))
        .collect();
    let mut seconds: BTreeMap<i64, (u64, u64, f64)> = BTreeMap::new();
    // What the counter sold, as the inventory recorded it (a sale whose answer the client missed still
    // counts).
    let sold: HashMap<&str, i64> = history
        .counter_sales
        .iter()
        .map(|(sku, units)| (sku.as_str(), *units))
        .collect();
    for op in &history.ops {
        if op.kind == Kind::Sale {
            continue;
        }
        let stats = phases.entry(phase_of(history, op.start)).or_default();
        let second = seconds.entry(op.start.floor() as i64).or_default();
        second.0 += 1;
        if op.available() {
            second.1 += 1;
        }
        match op.kind {
            Kind::Read => {
                stats.reads += 1;
                stats.reads_available += u64::from(op.available());
                if op.accepted()
                    && let Some(behind) = staleness(&versions, op)
                {
                    stats.stale_reads += 1;
                    stats.max_staleness = stats.max_staleness.max(behind);
                    second.2 = second.2.max(behind);
                }
            }
            Kind::Order => {
                stats.orders += 1;
                stats.orders_available += u64::from(op.available());
                stats.orders_accepted += u64::from(op.accepted());
            }
            Kind::Sale => {}
        }
    }

    let by_id: HashMap<Uuid, &FinalOrder> = history.orders.iter().map(|o| (o.id, o)).collect();
    let mut accepted_ids: HashMap<Uuid, u64> = HashMap::new();
    for op in history.ops.iter().filter(|op| op.kind == Kind::Order) {
        if op.accepted()
            && let Some(id) = op.order_id
        {
            *accepted_ids.entry(id).or_default() += 1;
        }
    }
    let mut report = Report {
        mode: history.mode.clone(),
        phases,
        oversold_units_promised: 0,
        oversold_orders_with_reason: 0,
        oversold_orders: 0,
        confirmed_beyond_stock: 0,
        lost_orders: 0,
        duplicated_orders: (history.orders.len() as u64).saturating_sub(
            history
                .ops
                .iter()
                .filter(|op| op.kind == Kind::Order)
                .count() as u64,
        ) + accepted_ids.values().filter(|n| **n > 1).count() as u64,
        refused_but_recorded: 0,
        units_sold_at_counter: sold.values().sum(),
        conservation_problems: Vec::new(),
        converged_after_heal: history.converged_after_heal,
        drained: history.drained,
        timeline: seconds
            .into_iter()
            .map(|(t, (all, available, staleness))| Second {
                t: t as f64,
                availability: ratio(available, all),
                staleness,
            })
            .collect(),
    };
    for id in accepted_ids.keys() {
        match by_id.get(id) {
            Some(order) if order.status == "REJECTED" => {
                report.oversold_orders += 1;
                report.oversold_units_promised += order.items.iter().map(|(_, q)| q).sum::<i64>();
                if order.reason.as_deref() == Some("oversold_during_partition") {
                    report.oversold_orders_with_reason += 1;
                }
            }
            Some(order) if order.status == "CONFIRMED" => {}
            _ => report.lost_orders += 1,
        }
    }
    report.refused_but_recorded = history
        .orders
        .iter()
        .filter(|o| !accepted_ids.contains_key(&o.id) && o.status != "PENDING")
        .filter(|o| o.status == "CONFIRMED")
        .count() as u64;

    let mut confirmed: HashMap<&str, i64> = HashMap::new();
    for order in history.orders.iter().filter(|o| o.status == "CONFIRMED") {
        for (sku, quantity) in &order.items {
            *confirmed.entry(sku.as_str()).or_default() += quantity;
        }
    }
    for sku in &history.skus {
        let sold_here = sold.get(sku.as_str()).copied().unwrap_or(0);
        let confirmed_here = confirmed.get(sku.as_str()).copied().unwrap_or(0);
        report.confirmed_beyond_stock +=
            (confirmed_here + sold_here - history.initial_stock).max(0);
        let Some(stock) = history.final_stock.iter().find(|s| &s.sku == sku) else {
            report
                .conservation_problems
                .push(format!("{sku}: missing at the inventory"));
            continue;
        };
        if stock.available + stock.reserved + sold_here != history.initial_stock {
            report.conservation_problems.push(format!(
                "{sku}: available {} + reserved {} + sold at the counter {sold_here} ≠ {}",
                stock.available, stock.reserved, history.initial_stock
            ));
        }
        if stock.available < 0 {
            report
                .conservation_problems
                .push(format!("{sku}: available {} < 0", stock.available));
        }
        if stock.reserved != confirmed_here {
            report.conservation_problems.push(format!(
                "{sku}: the inventory holds {} reserved, CONFIRMED orders hold {confirmed_here}",
                stock.reserved
            ));
        }
    }
    report
}

/// The services and databases of the stack.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub order: String,
    pub inventory: String,
    pub chaos: String,
    pub orders_db: sqlx::PgPool,
    pub inventory_db: sqlx::PgPool,
}

impl Endpoints {
    /// The local stack (`cargo xtask up`), or what `DISTLAB_*` variables name.
    pub async fn local() -> anyhow::Result<Self> {
        let connect = |server: String, db: &str| {
            let url = format!("{server}/{db}");
            async move {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .with_context(|| format!("cannot connect to {url}"))
            }
        };
        Ok(Self {
            order: crate::order_url(),
            inventory: crate::inventory_url(),
            chaos: crate::chaos_url(),
            orders_db: connect(crate::orders_server(), "orders").await?,
            inventory_db: connect(crate::inventory_server(), "inventory").await?,
        })
    }
}

/// Sets the `cap_mode` switch through the chaos sidecar and waits until the order service obeys it.
pub async fn switch_to(http: &reqwest::Client, ep: &Endpoints, mode: &str) -> anyhow::Result<()> {
    let answer = http
        .put(format!("{}/switches/cap_mode", ep.chaos))
        .json(&json!({ "value": mode }))
        .send()
        .await
        .context("the chaos sidecar does not answer")?;
    anyhow::ensure!(
        answer.status().is_success(),
        "the chaos sidecar refused cap_mode={mode}: {} {}",
        answer.status(),
        answer.text().await.unwrap_or_default()
    );
    wait_for(
        Duration::from_secs(20),
        "the order service to follow cap_mode",
        || async {
            let cap = cap_readiness(http, &ep.order).await?;
            (cap["cap_mode"] == mode && cap["governs_orders"] == true).then_some(())
        },
    )
    .await
}

/// What the order service at `order_url` shows of its CAP mode in `/readyz` (`checks.cap`); `None` while
/// it does not answer.
pub async fn cap_readiness(http: &reqwest::Client, order_url: &str) -> Option<Value> {
    let ready: Value = http
        .get(format!("{order_url}/readyz"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(ready["checks"]["cap"].clone())
}

/// The config service nodes of the local stack (`DISTLAB_CONFIG_URLS`, comma-separated, overrides).
pub fn config_urls() -> Vec<String> {
    distlab_config_client::node_urls(&std::env::var("DISTLAB_CONFIG_URLS").unwrap_or_else(|_| {
        "http://127.0.0.1:8091,http://127.0.0.1:8092,http://127.0.0.1:8093".into()
    }))
}

/// The `cap_mode` switch's value as the chaos sidecar shows it (`None`: never set).
pub async fn switch_value(
    http: &reqwest::Client,
    ep: &Endpoints,
) -> anyhow::Result<Option<String>> {
    let shown: Value = http
        .get(format!("{}/switches/cap_mode", ep.chaos))
        .send()
        .await
        .context("the chaos sidecar does not answer")?
        .error_for_status()?
        .json()
        .await?;
    Ok(shown["value"].as_str().map(str::to_owned))
}

/// Puts the switch back as it was: the value, or no key at all (orders then follow their own mode again).
pub async fn restore_switch(
    http: &reqwest::Client,
    ep: &Endpoints,
    previous: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(value) = previous {
        return switch_to(http, ep, value).await;
    }
    let key = "distlab/switches/cap_mode";
    let mut last_error = String::new();
    for node in config_urls() {
        match http.delete(format!("{node}/v1/kv/{key}")).send().await {
            Ok(answer) if answer.status().is_success() || answer.status() == 404 => {
                return wait_for(
                    Duration::from_secs(20),
                    "the order service to see the switch unset",
                    || async {
                        let cap = cap_readiness(http, &ep.order).await?;
                        (cap["governs_orders"] == false).then_some(())
                    },
                )
                .await;
            }
            Ok(answer) => last_error = format!("{node} answered {}", answer.status()),
            Err(error) => last_error = format!("{node}: {error}"),
        }
    }
    anyhow::bail!("cannot remove {key}: {last_error}")
}

async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(crate::POLL_INTERVAL).await;
    }
}

/// Per SKU, whether the replica holds the inventory's version.
async fn replica_converged(ep: &Endpoints, skus: &[String]) -> anyhow::Result<bool> {
    let inventory: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, stock_version FROM products WHERE sku = ANY($1)")
            .bind(skus)
            .fetch_all(&ep.inventory_db)
            .await?;
    let replica: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, version FROM stock_replica WHERE sku = ANY($1)")
            .bind(skus)
            .fetch_all(&ep.orders_db)
            .await?;
    Ok(inventory.len() == skus.len()
        && inventory.iter().all(|row| replica.iter().any(|r| r == row)))
}

/// Heals the scenario's partition (if any).
pub async fn heal(http: &reqwest::Client, ep: &Endpoints) -> anyhow::Result<()> {
    let answer = http
        .delete(format!("{}/partitions/{PARTITION}", ep.chaos))
        .send()
        .await
        .context("the chaos sidecar does not answer")?;
    anyhow::ensure!(
        answer.status().is_success() || answer.status() == reqwest::StatusCode::NOT_FOUND,
        "healing {PARTITION} failed: {}",
        answer.status()
    );
    Ok(())
}

/// Runs the experiment once in `mode` (`CP` or `AP`) and returns its history.
pub async fn run(
    mode: &str,
    plan: &Plan,
    ep: &Endpoints,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<History> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let tracked: String = sqlx::query_scalar("SHOW track_commit_timestamp")
        .fetch_one(&ep.inventory_db)
        .await?;
    anyhow::ensure!(
        tracked == "on",
        "inventory-db runs without track_commit_timestamp, which the stale-read check needs: restart the \
         stack (cargo xtask down && cargo xtask up) to start it with the setting"
    );
    heal(&http, ep).await?;
    switch_to(&http, ep, mode).await?;
    progress(&format!("cap_mode = {mode}; the order service follows it"));

    let tag = format!(
        "cap-{}-{}",
        mode.to_lowercase(),
        Utc::now().timestamp_millis()
    );
    let skus: Vec<String> = (0..plan.skus)
        .map(|i| format!("{}-{i}", tag.to_uppercase()))
        .collect();
    for sku in &skus {
        let answer = http
            .put(format!("{}/products/{sku}", ep.inventory))
            .json(&json!({"name": format!("CAP {sku}"), "price_cents": 100, "stock": plan.stock}))
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "seeding {sku}: {}",
            answer.status()
        );
    }
    wait_for(
        Duration::from_secs(30),
        "the replica to hold the seeded products",
        || async { replica_converged(ep, &skus).await.ok()?.then_some(()) },
    )
    .await?;
    progress(&format!(
        "{} SKUs of {} units each, seen by the replica",
        skus.len(),
        plan.stock
    ));

    let result = load_and_partition(mode, plan, ep, &http, &tag, &skus, progress).await;
    // Whatever happened, the stack is left healed.
    heal(&http, ep).await?;
    result
}

async fn load_and_partition(
    mode: &str,
    plan: &Plan,
    ep: &Endpoints,
    http: &reqwest::Client,
    tag: &str,
    skus: &[String],
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<History> {
    let t0 = Utc::now();
    let start = Instant::now();
    let ops: Arc<Mutex<Vec<Op>>> = Arc::default();
    let load_for = plan.healthy + plan.partition + plan.after_heal;
    let streams = [
        (Kind::Read, plan.read_every),
        (Kind::Order, plan.order_every),
        (Kind::Sale, plan.sale_every),
    ];
    let mut loaders = Vec::new();
    for (kind, every) in streams {
        let (http, ep, ops) = (http.clone(), ep.clone(), ops.clone());
        let (skus, tag) = (skus.to_vec(), tag.to_owned());
        loaders.push(tokio::spawn(async move {
            // Half a period late, so that no arrival falls on a phase boundary.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::from_std(start) + every / 2, every);
            let mut requests = tokio::task::JoinSet::new();
            for n in 0.. {
                tick.tick().await;
                if start.elapsed() >= load_for {
                    break;
                }
                let sku = skus[n % skus.len()].clone();
                let (http, ep, ops, tag) = (http.clone(), ep.clone(), ops.clone(), tag.clone());
                requests.spawn(async move {
                    let op = one(kind, &http, &ep, &tag, sku, start).await;
                    ops.lock().expect("no panics while holding it").push(op);
                });
            }
            while requests.join_next().await.is_some() {}
        }));
    }

    tokio::time::sleep_until((start + plan.healthy).into()).await;
    // The partition phase begins when the cut is asked for (a request that starts while the sidecar is
    // making it may already be cut); it ends when the heal has been answered.
    let partition_start = start.elapsed().as_secs_f64();
    let cut = http
        .post(format!("{}/partitions", ep.chaos))
        .json(&json!({"name": PARTITION, "sides": plan.sides, "mode": plan.cut}))
        .send()
        .await?;
    anyhow::ensure!(
        cut.status().is_success(),
        "the partition was refused: {} {}",
        cut.status(),
        cut.text().await.unwrap_or_default()
    );
    progress(&format!(
        "{mode}: partition {:?} ({}) for {} s",
        plan.sides,
        plan.cut,
        plan.partition.as_secs()
    ));
    tokio::time::sleep_until((start + plan.healthy + plan.partition).into()).await;
    heal(http, ep).await?;
    let healed_at = Instant::now();
    let partition_end = start.elapsed().as_secs_f64();
    progress(&format!(
        "{mode}: healed; load goes on for {} s",
        plan.after_heal.as_secs()
    ));

    let mut converged_after_heal = None;
    while converged_after_heal.is_none() && start.elapsed() < load_for {
        if replica_converged(ep, skus).await? {
            converged_after_heal = Some(healed_at.elapsed().as_secs_f64());
        }
        tokio::time::sleep(crate::POLL_INTERVAL).await;
    }
    for loader in loaders {
        loader.await?;
    }
    progress(&format!("{mode}: load stopped; draining"));

    let drain_deadline = Instant::now() + plan.drain_timeout;
    let mut drained = false;
    while Instant::now() < drain_deadline {
        let converged = replica_converged(ep, skus).await?;
        if converged && converged_after_heal.is_none() {
            converged_after_heal = Some(healed_at.elapsed().as_secs_f64());
        }
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE customer_id = $1 AND status = 'PENDING'",
        )
        .bind(tag)
        .fetch_one(&ep.orders_db)
        .await?;
        let prepared = prepared_transactions(ep).await?;
        if converged && pending == 0 && prepared == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress(&format!(
        "{mode}: {}",
        if drained {
            "drained: every order decided, replica equal to the inventory"
        } else {
            "NOT drained within the deadline"
        }
    ));

    // When each version became visible: its commit, not when its transaction wrote it (a 2PC branch
    // writes at PREPARE and commits later).
    let versions: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT sku, version, pg_xact_commit_timestamp(xmin) FROM stock_versions
         WHERE sku = ANY($1) ORDER BY sku, version",
    )
    .bind(skus)
    .fetch_all(&ep.inventory_db)
    .await?;
    let orders: Vec<(Uuid, String, Option<String>, Value)> =
        sqlx::query_as("SELECT id, status, reason, items FROM orders WHERE customer_id = $1")
            .bind(tag)
            .fetch_all(&ep.orders_db)
            .await?;
    let counter_sales: Vec<(String, i64)> = sqlx::query_as(
        "SELECT sku, -sum(delta)::bigint FROM stock_adjustments WHERE sku = ANY($1) GROUP BY sku",
    )
    .bind(skus)
    .fetch_all(&ep.inventory_db)
    .await?;
    let final_stock: Vec<(String, i32, i32)> =
        sqlx::query_as("SELECT sku, available, reserved FROM products WHERE sku = ANY($1)")
            .bind(skus)
            .fetch_all(&ep.inventory_db)
            .await?;
    let ops = std::mem::take(&mut *ops.lock().expect("no panics while holding it"));
    Ok(History {
        mode: mode.to_owned(),
        t0,
        partition: (partition_start, partition_end),
        initial_stock: i64::from(plan.stock),
        skus: skus.to_vec(),
        ops,
        versions: versions
            .into_iter()
            .map(|(sku, version, recorded_at)| VersionRow {
                sku,
                version,
                recorded_at,
            })
            .collect(),
        orders: orders
            .into_iter()
            .map(|(id, status, reason, items)| FinalOrder {
                id,
                status,
                reason,
                items: items
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|i| {
                                (
                                    i["sku"].as_str().unwrap_or_default().to_owned(),
                                    i["quantity"].as_i64().unwrap_or(0),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        final_stock: final_stock
            .into_iter()
            .map(|(sku, available, reserved)| FinalStock {
                sku,
                available: available.into(),
                reserved: reserved.into(),
            })
            .collect(),
        converged_after_heal,
        drained,
        counter_sales,
    })
}

async fn prepared_transactions(ep: &Endpoints) -> anyhow::Result<i64> {
    let mut total = 0;
    for pool in [&ep.orders_db, &ep.inventory_db] {
        total += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_prepared_xacts
             WHERE database = current_database() AND gid LIKE 'distlab\\_%'",
        )
        .fetch_one(pool)
        .await?;
    }
    Ok(total)
}

/// Sends one operation and records it.
async fn one(
    kind: Kind,
    http: &reqwest::Client,
    ep: &Endpoints,
    tag: &str,
    sku: String,
    start: Instant,
) -> Op {
    let started_at = Utc::now();
    let began = start.elapsed().as_secs_f64();
    let request = match kind {
        Kind::Read => http.get(format!("{}/stock/{sku}", ep.order)),
        Kind::Order => http
            .post(format!("{}/orders", ep.order))
            .json(&json!({"customer_id": tag, "items": [{"sku": sku, "quantity": 1}]})),
        Kind::Sale => http
            .post(format!("{}/products/{sku}/adjust", ep.inventory))
            .json(&json!({"delta": -1, "floor": 0})),
    };
    let answer = request.send().await;
    let (status, body) = match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            (Some(status), response.json::<Value>().await.ok())
        }
        Err(_) => (None, None),
    };
    let end = start.elapsed().as_secs_f64();
    let body = body.unwrap_or(Value::Null);
    Op {
        kind,
        sku,
        start: began,
        end,
        started_at,
        status,
        version: body["version"].as_i64().filter(|_| kind == Kind::Read),
        order_id: body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .filter(|_| kind == Kind::Order),
        code: body["error"]["code"].as_str().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: DateTime<Utc>, secs: f64) -> DateTime<Utc> {
        t0 + chrono::TimeDelta::microseconds((secs * 1e6) as i64)
    }

    fn op(t0: DateTime<Utc>, kind: Kind, start: f64, status: Option<u16>) -> Op {
        Op {
            kind,
            sku: "A".into(),
            start,
            end: start + 0.01,
            started_at: at(t0, start),
            status,
            version: None,
            order_id: None,
            code: None,
        }
    }

    fn history(ops: Vec<Op>, orders: Vec<FinalOrder>, stock: FinalStock) -> History {
        let t0 = Utc::now();
        History {
            mode: "AP".into(),
            t0,
            partition: (10.0, 30.0),
            initial_stock: 5,
            skus: vec!["A".into()],
            ops,
            versions: vec![
                VersionRow {
                    sku: "A".into(),
                    version: 1,
                    recorded_at: at(t0, -1.0),
                },
                VersionRow {
                    sku: "A".into(),
                    version: 2,
                    recorded_at: at(t0, 12.0),
                },
            ],
            orders,
            final_stock: vec![stock],
            converged_after_heal: Some(0.4),
            drained: true,
            counter_sales: vec![],
        }
    }

    #[test]
    fn a_read_is_stale_only_if_a_newer_version_was_recorded_before_it_started() {
        let t0 = Utc::now();
        let read = |start: f64, version: i64| Op {
            version: Some(version),
            ..op(t0, Kind::Read, start, Some(200))
        };
        let mut h = history(
            vec![read(11.0, 1), read(15.0, 1), read(15.0, 2)],
            vec![],
            FinalStock {
                sku: "A".into(),
                available: 5,
                reserved: 0,
            },
        );
        h.t0 = t0;
        for row in &mut h.versions {
            row.recorded_at = at(t0, if row.version == 1 { -1.0 } else { 12.0 });
        }
        let report = check(&h);
        let partition = report.phase(Phase::Partition);
        assert_eq!(partition.reads, 3);
        assert_eq!(
            partition.stale_reads, 1,
            "only the read at 15 s of version 1"
        );
        assert!((partition.max_staleness - 3.0).abs() < 1e-3);
    }

    #[test]
    fn availability_counts_definite_answers_within_a_second() {
        let t0 = Utc::now();
        let slow = Op {
            end: 2.5,
            ..op(t0, Kind::Read, 1.0, Some(200))
        };
        let h = history(
            vec![
                op(t0, Kind::Read, 1.0, Some(200)),
                Op {
                    code: Some("insufficient_stock".into()),
                    ..op(t0, Kind::Order, 1.0, Some(409))
                },
                Op {
                    code: Some("transaction_aborted".into()),
                    ..op(t0, Kind::Order, 1.0, Some(409))
                },
                op(t0, Kind::Read, 1.0, None),
                slow,
                op(t0, Kind::Sale, 1.0, Some(200)),
            ],
            vec![],
            FinalStock {
                sku: "A".into(),
                available: 4,
                reserved: 0,
            },
        );
        let h = History {
            counter_sales: vec![("A".into(), 1)],
            ..h
        };
        let report = check(&h);
        let healthy = report.phase(Phase::Healthy);
        assert_eq!(
            (healthy.reads, healthy.orders),
            (3, 2),
            "sales are not counted"
        );
        // The read, and the order refused for want of stock; not the 2PC abort, the lost and the slow read.
        assert!((healthy.availability() - 2.0 / 5.0).abs() < 1e-9);
        assert_eq!(report.units_sold_at_counter, 1);
        assert!(report.conservation_problems.is_empty());
    }

    #[test]
    fn promised_orders_that_end_rejected_are_oversold_and_conservation_is_checked() {
        let t0 = Utc::now();
        let id = Uuid::now_v7();
        let lost = Uuid::now_v7();
        let accepted = |order_id| Op {
            order_id: Some(order_id),
            ..op(t0, Kind::Order, 12.0, Some(202))
        };
        let h = history(
            vec![accepted(id), accepted(lost)],
            vec![FinalOrder {
                id,
                status: "REJECTED".into(),
                reason: Some("oversold_during_partition".into()),
                items: vec![("A".into(), 1)],
            }],
            FinalStock {
                sku: "A".into(),
                available: 4,
                reserved: 0,
            },
        );
        let report = check(&h);
        assert_eq!(report.oversold_orders, 1);
        assert_eq!(report.oversold_units_promised, 1);
        assert_eq!(report.oversold_orders_with_reason, 1);
        assert_eq!(report.lost_orders, 1);
        assert_eq!(report.conservation_problems.len(), 1, "4 + 0 ≠ 5");
    }
}
