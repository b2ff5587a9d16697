//! `cargo xtask scenario base`: the BASE experiment of issue 13 on the running stack — the storefront
//! gateway driven past its capacity by an open-model load, with `degrade=auto`, with `degrade=off`, and
//! with `degrade=auto` while the gateway is cut from the inventory. The schedule and the judging are
//! `distlab_testkit::base` (pure); this module sends the requests and writes the report:
//! `.distlab/reports/base.md` (the table), `base.svg` (answered / degraded / failed per second, one panel
//! per run) and `base-ops.csv` (every request).
//!
//! 1. Preconditions: the gateway answers `/readyz`; the SKUs of the scenario are seeded at the inventory
//!    with enough stock for every checkout of the run.
//! 2. Capacity: `degrade=off`, closed-loop clients fetch the full catalog page `GET /` for a few seconds,
//!    in steps that double the clients while the pages/s still grow by 10 % (a page that waits on its
//!    dependencies is served faster by more clients, until the CPU is full); the capacity `C` is the most
//!    full pages completed per second of any step.
//! 3. Each run: the `degrade` switch is set through the chaos sidecar and the scenario waits until the
//!    gateway's answers carry the new `x-distlab-degrade-mode`; the partition (if any) is made; the
//!    schedule — a ramp to `factor × C`, then a hold — is played: every request launched at its time on
//!    a task of its own, never waiting for the earlier ones. Between runs the scenario waits until the
//!    catalog answers within 1 s again.
//! 4. Whatever happened, the partition is healed and the switch put back as it was.
//!
//! The load generator shares the machine with the shop: it uses one HTTP client per run with a large
//! connection pool, records into memory, prints nothing per request, and reports how late it launched
//! requests and how much CPU it used, so a reader can tell a slow shop from a slow generator.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_testkit::base::{
    self, ANSWER_WITHIN, Goal, LoadPlan, Op, Outcome, PARTITION, Request, RunSpec, Summary, Verdict,
};
use serde_json::{Value, json};

use crate::report::svg::{Band, Chart, Panel, Series, render};
use crate::stack::{Stack, block_on};

#[derive(Debug, Clone, clap::Args)]
pub struct BaseArgs {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "DISTLAB_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    gateway: String,
    /// Runs, in order: a `degrade` value (off, auto, on), optionally `+partition` (the gateway cut from
    /// the inventory for the whole run).
    #[arg(long, value_delimiter = ',', default_value = "auto,off,auto+partition")]
    runs: Vec<String>,
    /// Skip the capacity measurement and take this many full catalog pages per second.
    #[arg(long)]
    capacity: Option<f64>,
    /// Closed-loop clients of the capacity measurement's first step; each further step doubles them.
    #[arg(long, default_value_t = 8)]
    capacity_clients: usize,
    /// At most this many steps: the measurement stops at the first step that adds less than 10 % to the
    /// pages/s of the one before, and the capacity is the most any step served.
    #[arg(long, default_value_t = 4)]
    capacity_steps: usize,
    /// Seconds of each step of the capacity measurement (after one second of warm-up).
    #[arg(long, default_value_t = 4.0)]
    capacity_seconds: f64,
    /// The hold's rate, in multiples of the capacity.
    #[arg(long, default_value_t = 3.0)]
    factor: f64,
    /// Where the ramp starts, in multiples of the capacity.
    #[arg(long, default_value_t = 0.0)]
    ramp_from: f64,
    /// Seconds of the ramp.
    #[arg(long, default_value_t = 20.0)]
    ramp_seconds: f64,
    /// Seconds at `factor` × capacity (the window the table and the goal judge).
    #[arg(long, default_value_t = 30.0)]
    hold_seconds: f64,
    /// Share of the requests that are checkouts.
    #[arg(long, default_value_t = 0.2)]
    checkout_share: f64,
    /// Share of the browsing requests that are the catalog (the rest are product pages).
    #[arg(long, default_value_t = 0.5)]
    catalog_share: f64,
    /// SKUs the product pages and checkouts go round.
    #[arg(long, default_value_t = 4)]
    skus: usize,
    /// The SKUs are this followed by 0, 1, …; the gateway sells only SKUs that start with its
    /// CATALOG_PREFIX (`shop-`).
    #[arg(long, default_value = "shop-base-")]
    sku_prefix: String,
    /// Seconds after which the client gives a request up (counted as a timeout).
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// What the partition does on the wire: hold (a pulled cable: the gateway's calls hang until its own
    /// timeouts) or reset (a rejecting firewall: they fail at once).
    #[arg(long, default_value = "hold")]
    cut: String,
    /// A quick run to try the scenario out: 2 s per capacity step, 4 s ramp, 6 s hold (overrides those
    /// flags).
    #[arg(long)]
    short: bool,
}

/// Where the scenario talks to.
#[derive(Debug, Clone)]
struct Endpoints {
    gateway: String,
    inventory: String,
    chaos: String,
}

/// The capacity measurement.
#[derive(Debug, Clone, Default)]
struct Capacity {
    pages_per_second: f64,
    /// The clients of the step that served the most.
    clients: usize,
    /// Every step: clients, full pages/s.
    steps: Vec<(usize, f64)>,
    seconds: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    /// Answers that were not a full page (errors, degraded pages, timeouts).
    other: u64,
    /// Given on the command line, not measured.
    given: bool,
}

/// What one run recorded.
#[derive(Debug, Clone)]
struct RunResult {
    spec: RunSpec,
    ops: Vec<Op>,
    max_in_flight: usize,
    cpu: Option<CpuUse>,
    /// Whether the catalog answered within 1 s again before the run began.
    settled: bool,
}

pub fn scenario(args: BaseArgs) -> anyhow::Result<crate::verdict::Verdict> {
    let stack = Stack::discover()?;
    let reports_dir = stack.root().join(".distlab").join("reports");
    std::fs::create_dir_all(&reports_dir)?;
    let args = if args.short {
        BaseArgs {
            capacity_seconds: 2.0,
            ramp_seconds: 4.0,
            hold_seconds: 6.0,
            ..args
        }
    } else {
        args
    };
    let runs: Vec<RunSpec> = args
        .runs
        .iter()
        .map(|r| RunSpec::parse(r).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!runs.is_empty(), "no runs (--runs)");
    anyhow::ensure!(
        args.factor > 0.0 && args.ramp_from >= 0.0,
        "--factor must be positive and --ramp-from not negative"
    );
    anyhow::ensure!(
        args.ramp_seconds >= 0.0 && args.hold_seconds > 0.0 && args.capacity_seconds > 0.0,
        "--ramp-seconds, --hold-seconds and --capacity-seconds: seconds, the last two more than 0"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.checkout_share) && (0.0..=1.0).contains(&args.catalog_share),
        "--checkout-share and --catalog-share are shares between 0 and 1"
    );
    anyhow::ensure!(
        args.timeout > ANSWER_WITHIN,
        "--timeout must be longer than {ANSWER_WITHIN} s, or a late answer could not be told from a timeout"
    );
    anyhow::ensure!(
        args.cut == "hold" || args.cut == "reset",
        "--cut is hold or reset"
    );
    anyhow::ensure!(
        args.skus > 0 && args.capacity_clients > 0 && (1..=8).contains(&args.capacity_steps),
        "--skus and --capacity-clients: at least 1; --capacity-steps: 1 to 8"
    );
    if let Some(capacity) = args.capacity {
        anyhow::ensure!(capacity > 0.0, "--capacity must be positive");
    }
    let ep = Endpoints {
        gateway: args.gateway.trim_end_matches('/').to_owned(),
        inventory: distlab_testkit::inventory_url(),
        chaos: distlab_testkit::chaos_url(),
    };

    block_on(async {
        let control = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        preconditions(&control, &ep, runs.iter().any(|r| r.partitioned)).await?;
        let previous = switch_value(&control, &ep.chaos, "degrade").await?;
        // What the gateway follows while the switch is unset (its DEGRADE), to wait for when unsetting it.
        let initial_mode = gateway_mode(&control, &ep).await;
        let cap_mode = switch_value(&control, &ep.chaos, "cap_mode").await?;
        // A partition left behind by an interrupted run would falsify every number.
        heal(&control, &ep).await?;

        // Ctrl-C ends the experiment, not the clean-up.
        let skus: Vec<String> = (0..args.skus)
            .map(|i| format!("{}{i}", args.sku_prefix))
            .collect();
        let outcome = tokio::select! {
            outcome = experiment(&args, &runs, &ep, &control, &skus) => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };

        // Whatever happened: healed, and the switch as it was.
        let healed = heal(&control, &ep).await;
        let restored = restore_degrade(
            &control,
            &ep,
            previous.as_deref(),
            initial_mode.as_deref().unwrap_or("auto"),
        )
        .await;
        eprintln!(
            "  degrade restored to {}{}",
            previous.as_deref().unwrap_or("unset"),
            if restored.is_ok() { "" } else { " — FAILED" }
        );
        // The runs' report is written even when the clean-up failed; the failure is the exit status.
        let (capacity, plan, results) = outcome?;

        let report = markdown(&args, &capacity, &plan, &results, cap_mode.as_deref());
        println!("{report}");
        std::fs::write(reports_dir.join("base.md"), &report)?;
        std::fs::write(
            reports_dir.join("base.svg"),
            render(&chart(&plan, &results)),
        )?;
        std::fs::write(reports_dir.join("base-ops.csv"), ops_csv(&results, &skus))?;
        println!(
            "table: {}  chart: {}  every request: {}",
            reports_dir.join("base.md").display(),
            reports_dir.join("base.svg").display(),
            reports_dir.join("base-ops.csv").display()
        );
        healed?;
        restored?;
        let (from, to) = plan.hold_window();
        let judged = results
            .iter()
            .find(|r| r.spec.degrade == "auto" && !r.spec.partitioned)
            .map(|auto| {
                base::check_goal(&base::summarize(&auto.ops, from, to), &plan, Goal::ISSUE_13)
            });
        Ok(crate::verdict::Verdict {
            section: "四 BASE",
            claim: "basically available: past its capacity the shop degrades its pages and keeps selling",
            measured: match &judged {
                Some(v) => format!(
                    "degrade=auto at {}× capacity: {} answered within 1 s, checkout goodput {} of the reference",
                    plan.factor,
                    percent(v.answered_share),
                    percent(v.checkout_goodput)
                ),
                None => "not judged: no degrade=auto run without a partition".into(),
            },
            passed: judged.is_some_and(|v| v.met()),
        })
    })
}

/// The gateway ready, the sidecar answering, and (for a partition) the gateway's link to the inventory
/// known to the sidecar.
async fn preconditions(
    http: &reqwest::Client,
    ep: &Endpoints,
    partitions: bool,
) -> anyhow::Result<()> {
    let ready = http
        .get(format!("{}/readyz", ep.gateway))
        .send()
        .await
        .with_context(|| {
            format!(
                "the gateway does not answer at {}/readyz: start the stack (cargo xtask up)",
                ep.gateway
            )
        })?;
    if !ready.status().is_success() {
        anyhow::bail!(
            "the gateway is not ready ({}): {}",
            ready.status(),
            ready.text().await.unwrap_or_default()
        );
    }
    if partitions {
        let link = http
            .get(format!("{}/proxies/gateway->inventory", ep.chaos))
            .send()
            .await
            .with_context(|| format!("the chaos sidecar does not answer at {}", ep.chaos))?;
        anyhow::ensure!(
            link.status().is_success(),
            "the chaos sidecar has no link gateway->inventory ({}), so the partitioned run cannot cut it; \
             leave it out with --runs auto,off",
            link.status()
        );
    }
    Ok(())
}

async fn experiment(
    args: &BaseArgs,
    runs: &[RunSpec],
    ep: &Endpoints,
    control: &reqwest::Client,
    skus: &[String],
) -> anyhow::Result<(Capacity, LoadPlan, Vec<RunResult>)> {
    let timeout = Duration::from_secs_f64(args.timeout);

    // Seeded first, so that the catalog measured is the catalog of the runs.
    const FIRST_STOCK: u64 = 1_000_000;
    seed(control, ep, skus, FIRST_STOCK).await?;
    wait_until_sold(control, ep, skus).await?;
    set_degrade(control, ep, "off").await?;
    let capacity = match args.capacity {
        Some(given) => Capacity {
            pages_per_second: given,
            given: true,
            ..Capacity::default()
        },
        None => {
            eprintln!(
                "==> capacity: degrade=off, closed-loop clients on GET /, {} s per step from {} clients, \
                 doubling while the pages/s grow by 10 %",
                args.capacity_seconds, args.capacity_clients
            );
            let most = args.capacity_clients << (args.capacity_steps.max(1) - 1);
            let client = load_client(timeout, most)?;
            let mut steps: Vec<(usize, f64)> = Vec::new();
            let mut best: Option<Capacity> = None;
            let mut clients = args.capacity_clients;
            for _ in 0..args.capacity_steps.max(1) {
                let step = measure_capacity(&client, ep, clients, args.capacity_seconds).await?;
                eprintln!(
                    "  {clients} clients: {:.0} full pages/s (p50 {}, p99 {})",
                    step.pages_per_second,
                    ms(step.p50),
                    ms(step.p99)
                );
                let grew = steps
                    .last()
                    .is_none_or(|&(_, before)| step.pages_per_second >= before * 1.1);
                steps.push((clients, step.pages_per_second));
                if best
                    .as_ref()
                    .is_none_or(|b| step.pages_per_second > b.pages_per_second)
                {
                    best = Some(step);
                }
                if !grew {
                    break;
                }
                clients *= 2;
            }
            Capacity {
                steps,
                ..best.unwrap_or_default()
            }
        }
    };
    anyhow::ensure!(
        capacity.pages_per_second > 0.0,
        "the gateway served no full catalog page within {} s ({} other answers)",
        args.capacity_seconds,
        capacity.other
    );
    eprintln!(
        "  capacity {:.0} full pages/s (p50 {}, p99 {})",
        capacity.pages_per_second,
        ms(capacity.p50),
        ms(capacity.p99)
    );
    let plan = LoadPlan {
        capacity: capacity.pages_per_second,
        factor: args.factor,
        ramp_from: args.ramp_from,
        ramp: args.ramp_seconds,
        hold: args.hold_seconds,
        checkout_share: args.checkout_share,
        catalog_share: args.catalog_share,
        skus: args.skus,
    };
    let arrivals = plan.arrivals();
    // Twice the units every checkout of every run could take, so that no checkout runs out of stock.
    let checkouts = arrivals
        .iter()
        .filter(|a| a.request.class() == base::Class::Checkout)
        .count() as u64
        * runs.len() as u64;
    let stock = 2 * checkouts / args.skus as u64;
    if stock > FIRST_STOCK {
        seed(control, ep, skus, stock.min(i32::MAX as u64 / 2)).await?;
    }
    let needed_files = (plan.peak_rate() * args.timeout * 1.2) as u64 + 1_024;
    let files = raise_open_files(needed_files);
    if files < needed_files {
        eprintln!(
            "  warning: this process may open {files} files, the load may hold {needed_files} connections: \
             past that, requests fail at the client (counted as errors)"
        );
    }

    let mut results = Vec::new();
    for (i, spec) in runs.iter().enumerate() {
        eprintln!(
            "==> run {}/{}: {} — ramp to {:.0} requests/s over {} s, then {} s there ({} requests)",
            i + 1,
            runs.len(),
            spec.label(),
            plan.peak_rate(),
            plan.ramp,
            plan.hold,
            arrivals.len()
        );
        let settled = settle(control, ep).await;
        if !settled {
            eprintln!(
                "  warning: the catalog did not answer within 1 s three times in a row within 60 s; running anyway"
            );
        }
        set_degrade(control, ep, &spec.degrade).await?;
        if spec.partitioned {
            partition(control, ep, &args.cut).await?;
            eprintln!(
                "  partition [[gateway], [inventory]] ({}) in force",
                args.cut
            );
        }
        let client = load_client(timeout, 4_096)?;
        let customer = format!("base-{}", spec.key().replace('+', "-"));
        let cpu_before = CpuSnapshot::now();
        let driven = drive(&client, ep, skus, &customer, &arrivals).await;
        let cpu = cpu_before.and_then(|before| before.until_now());
        if spec.partitioned {
            heal(control, ep).await?;
            eprintln!("  healed");
        }
        let (ops, max_in_flight) = driven?;
        let (from, to) = plan.hold_window();
        let hold = base::summarize(&ops, from, to);
        eprintln!(
            "  at {}× capacity: {} answered within 1 s, {} degraded pages, {:.1} checkouts/s, {} errors, {} timeouts",
            plan.factor,
            percent(hold.answered_share()),
            percent(hold.degraded_share()),
            hold.checkouts_per_second(),
            hold.errors,
            hold.timeouts
        );
        results.push(RunResult {
            spec: spec.clone(),
            ops,
            max_in_flight,
            cpu,
            settled,
        });
    }
    Ok((capacity, plan, results))
}

/// The client of the load: no redirects (a checkout's 303 is its answer), a pool as large as the load.
fn load_client(timeout: Duration, pool: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()?)
}

/// Creates or resets the scenario's products with `stock` units each.
async fn seed(
    http: &reqwest::Client,
    ep: &Endpoints,
    skus: &[String],
    stock: u64,
) -> anyhow::Result<()> {
    for (i, sku) in skus.iter().enumerate() {
        let answer = http
            .put(format!("{}/products/{sku}", ep.inventory))
            .json(&json!({"name": format!("BASE load item {i}"), "price_cents": 1_000 + 100 * i, "stock": stock}))
            .send()
            .await
            .with_context(|| format!("the inventory does not answer at {}", ep.inventory))?;
        anyhow::ensure!(
            answer.status().is_success(),
            "seeding {sku} at the inventory: {} {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Waits (at most 30 s) until the gateway has every SKU on sale: its product page answers 200 (the
/// gateway reads the catalog periodically, and sells only the SKUs with its prefix).
async fn wait_until_sold(
    http: &reqwest::Client,
    ep: &Endpoints,
    skus: &[String],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for sku in skus {
        loop {
            let status = http
                .get(format!("{}/products/{sku}", ep.gateway))
                .send()
                .await
                .map(|r| r.status().as_u16());
            if status.as_ref().is_ok_and(|s| *s == 200) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway does not sell {sku} 30 s after it was seeded (GET /products/{sku}: {}); it \
                 sells the SKUs that start with its CATALOG_PREFIX (`shop-` by default): see --sku-prefix",
                match status {
                    Ok(status) => status.to_string(),
                    Err(error) => error.to_string(),
                }
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Where the requests go, parsed once.
#[derive(Debug)]
struct Targets {
    catalog: reqwest::Url,
    products: Vec<reqwest::Url>,
    checkout: reqwest::Url,
    /// One form per SKU.
    forms: Vec<String>,
}

impl Targets {
    fn new(gateway: &str, skus: &[String], customer: &str) -> anyhow::Result<Self> {
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{gateway}{path}"))
                .with_context(|| format!("bad gateway URL {gateway}"))
        };
        Ok(Self {
            catalog: url("/")?,
            products: skus
                .iter()
                .map(|sku| url(&format!("/products/{sku}")))
                .collect::<anyhow::Result<_>>()?,
            checkout: url("/checkout")?,
            // SKUs and the customer are of `A-Z a-z 0-9 -`: nothing to escape.
            forms: skus
                .iter()
                .map(|sku| format!("sku={sku}&quantity=1&customer_id={customer}"))
                .collect(),
        })
    }
}

/// Sends one request and reads the whole answer.
async fn send(http: &reqwest::Client, targets: &Targets, request: Request) -> Outcome {
    let builder = match request {
        Request::Catalog => http.get(targets.catalog.clone()),
        Request::Product(i) => http.get(targets.products[i].clone()),
        Request::Checkout(i) => http
            .post(targets.checkout.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(targets.forms[i].clone()),
    };
    let failed = |error: reqwest::Error| {
        if error.is_timeout() {
            Outcome::Timeout
        } else {
            Outcome::Error(None)
        }
    };
    let response = match builder.send().await {
        Ok(response) => response,
        Err(error) => return failed(error),
    };
    let status = response.status().as_u16();
    let declared: Option<&'static str> = response
        .headers()
        .get("x-distlab-page")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            if v.eq_ignore_ascii_case("degraded") {
                "degraded"
            } else {
                "full"
            }
        });
    // The page is not served until its last byte is.
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => return failed(error),
    };
    match request {
        Request::Checkout(_) => Outcome::of_checkout(status),
        Request::Catalog | Request::Product(_) => {
            Outcome::of_page(status, declared.or_else(|| base::page_kind_in_body(&body)))
        }
    }
}

/// Plays the schedule: every arrival launched at its time on its own task, whatever the earlier ones
/// are doing; then waits for the last answer (at most the client's timeout). Returns the operations and
/// the most requests that were in flight at once.
async fn drive(
    http: &reqwest::Client,
    ep: &Endpoints,
    skus: &[String],
    customer: &str,
    arrivals: &[base::Arrival],
) -> anyhow::Result<(Vec<Op>, usize)> {
    let targets = Arc::new(Targets::new(&ep.gateway, skus, customer)?);
    let ops: Arc<Mutex<Vec<Op>>> = Arc::new(Mutex::new(Vec::with_capacity(arrivals.len())));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for arrival in arrivals {
        let due = t0 + Duration::from_secs_f64(arrival.at);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        while tasks.try_join_next().is_some() {}
        let (http, targets, ops) = (http.clone(), targets.clone(), ops.clone());
        let (in_flight, most) = (in_flight.clone(), most.clone());
        let (request, scheduled) = (arrival.request, arrival.at);
        tasks.spawn(async move {
            let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            most.fetch_max(now, Ordering::Relaxed);
            let launched = Instant::now();
            let start = launched.saturating_duration_since(t0).as_secs_f64();
            let outcome = send(&http, &targets, request).await;
            let latency = launched.elapsed().as_secs_f64();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let op = Op {
                request,
                scheduled,
                start,
                latency,
                outcome,
            };
            ops.lock().expect("no panics while holding it").push(op);
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut ops = std::mem::take(&mut *ops.lock().expect("no panics while holding it"));
    ops.sort_by(|a, b| a.scheduled.total_cmp(&b.scheduled));
    Ok((ops, most.load(Ordering::Relaxed)))
}

/// `clients` closed-loop clients on `GET /` for one second of warm-up and `seconds` of measurement; the
/// capacity is the full pages completed within the measurement per second.
async fn measure_capacity(
    http: &reqwest::Client,
    ep: &Endpoints,
    clients: usize,
    seconds: f64,
) -> anyhow::Result<Capacity> {
    let targets = Arc::new(Targets::new(&ep.gateway, &[], "base")?);
    let measure_from = Instant::now() + Duration::from_secs(1);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, targets) = (http.clone(), targets.clone());
        tasks.spawn(async move {
            let (mut latencies, mut other) = (Vec::new(), 0u64);
            while Instant::now() < end {
                let began = Instant::now();
                let outcome = send(&http, &targets, Request::Catalog).await;
                let done = Instant::now();
                if done < measure_from || done >= end {
                    continue;
                }
                if outcome == Outcome::Full {
                    latencies.push((done - began).as_secs_f64());
                } else {
                    other += 1;
                }
            }
            (latencies, other)
        });
    }
    let (mut latencies, mut other) = (Vec::new(), 0);
    while let Some(joined) = tasks.join_next().await {
        let (l, o) = joined?;
        latencies.extend(l);
        other += o;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Capacity {
        pages_per_second: latencies.len() as f64 / seconds,
        clients,
        steps: vec![(clients, latencies.len() as f64 / seconds)],
        seconds,
        p50: base::quantile(&latencies, 0.5),
        p99: base::quantile(&latencies, 0.99),
        other,
        given: false,
    })
}

/// Waits (at most 60 s) until the catalog is answered with 200 within 1 s three times in a row: the
/// previous run's backlog has drained from the gateway.
async fn settle(http: &reqwest::Client, ep: &Endpoints) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_a_row = 0;
    while Instant::now() < deadline {
        let began = Instant::now();
        let answer = http
            .get(format!("{}/", ep.gateway))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let ok = match answer {
            Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
            _ => false,
        };
        if ok && began.elapsed().as_secs_f64() <= ANSWER_WITHIN {
            in_a_row += 1;
            if in_a_row == 3 {
                return true;
            }
        } else {
            in_a_row = 0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------------------
// The switch and the partition, through the chaos sidecar

/// A switch's value as the sidecar shows it (`None`: never set).
async fn switch_value(
    http: &reqwest::Client,
    chaos: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let answer = http
        .get(format!("{chaos}/switches/{name}"))
        .send()
        .await
        .with_context(|| format!("the chaos sidecar does not answer at {chaos}"))?;
    anyhow::ensure!(
        answer.status().is_success(),
        "the chaos sidecar cannot show switch {name}: {} {}",
        answer.status(),
        answer.text().await.unwrap_or_default()
    );
    let shown: Value = answer.json().await?;
    Ok(shown["value"].as_str().map(str::to_owned))
}

/// The `x-distlab-degrade-mode` the gateway's answers carry now (`None`: no answer, or no header). Asked
/// of `/static/app.js`: a route of the gateway's own that touches no dependency (the shared `/readyz`
/// lies outside the layer that adds the header), then of `/readyz` in case it carries it too.
async fn gateway_mode(http: &reqwest::Client, ep: &Endpoints) -> Option<String> {
    for path in ["/static/app.js", "/readyz"] {
        let Ok(answer) = http
            .get(format!("{}{path}", ep.gateway))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            continue;
        };
        let mode = answer
            .headers()
            .get("x-distlab-degrade-mode")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if mode.is_some() {
            return mode;
        }
    }
    None
}

/// Waits (at most 20 s) until the gateway's answers carry `x-distlab-degrade-mode: value`.
async fn wait_for_mode(http: &reqwest::Client, ep: &Endpoints, value: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = gateway_mode(http, ep).await;
        if shown
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(value))
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not follow degrade={value} within 20 s (its answers carry x-distlab-degrade-mode: {})",
            shown.as_deref().unwrap_or("none")
        );
        tokio::time::sleep(distlab_testkit::POLL_INTERVAL).await;
    }
}

/// Sets `degrade` through the sidecar and waits until the gateway follows.
async fn set_degrade(http: &reqwest::Client, ep: &Endpoints, value: &str) -> anyhow::Result<()> {
    let answer = http
        .put(format!("{}/switches/degrade", ep.chaos))
        .json(&json!({ "value": value }))
        .send()
        .await
        .with_context(|| format!("the chaos sidecar does not answer at {}", ep.chaos))?;
    anyhow::ensure!(
        answer.status().is_success(),
        "the chaos sidecar refused degrade={value}: {} {}",
        answer.status(),
        answer.text().await.unwrap_or_default()
    );
    wait_for_mode(http, ep, value).await
}

/// Puts `degrade` back: the value it had, or no key at all (the gateway then falls back to its own
/// DEGRADE, `unset_mode`, which it showed before the scenario began).
async fn restore_degrade(
    http: &reqwest::Client,
    ep: &Endpoints,
    previous: Option<&str>,
    unset_mode: &str,
) -> anyhow::Result<()> {
    if let Some(value) = previous {
        return set_degrade(http, ep, value).await;
    }
    let key = "distlab/switches/degrade";
    let mut last_error = String::new();
    for node in distlab_testkit::cap::config_urls() {
        match http.delete(format!("{node}/v1/kv/{key}")).send().await {
            Ok(answer) if answer.status().is_success() || answer.status() == 404 => {
                return wait_for_mode(http, ep, unset_mode).await;
            }
            Ok(answer) => last_error = format!("{node} answered {}", answer.status()),
            Err(error) => last_error = format!("{node}: {error}"),
        }
    }
    anyhow::bail!("cannot remove {key}: {last_error}")
}

/// Cuts the gateway from the inventory.
async fn partition(http: &reqwest::Client, ep: &Endpoints, cut: &str) -> anyhow::Result<()> {
    let answer = http
        .post(format!("{}/partitions", ep.chaos))
        .json(&json!({"name": PARTITION, "sides": [["gateway"], ["inventory"]], "mode": cut}))
        .send()
        .await
        .with_context(|| format!("the chaos sidecar does not answer at {}", ep.chaos))?;
    anyhow::ensure!(
        answer.status().is_success(),
        "the partition was refused: {} {}",
        answer.status(),
        answer.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Heals the scenario's partition (if any).
async fn heal(http: &reqwest::Client, ep: &Endpoints) -> anyhow::Result<()> {
    let answer = http
        .delete(format!("{}/partitions/{PARTITION}", ep.chaos))
        .send()
        .await
        .with_context(|| format!("the chaos sidecar does not answer at {}", ep.chaos))?;
    anyhow::ensure!(
        answer.status().is_success() || answer.status() == reqwest::StatusCode::NOT_FOUND,
        "healing {PARTITION} failed: {}",
        answer.status()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The load generator's own cost

/// Raises this process's soft limit of open files towards `needed` (up to the hard limit); the soft
/// limit now in force.
fn raise_open_files(needed: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return soft;
    }
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(needed);
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        },
    );
    if raised.is_ok() { wanted } else { soft }
}

/// CPU time of this process and of the machine, from `/proc`.
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    at: Instant,
    /// Seconds of CPU this process used.
    own: f64,
    /// Jiffies the machine was busy, and in all.
    busy: u64,
    total: u64,
}

/// What a stretch of time cost.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    /// Cores' worth of CPU the load generator used on average.
    generator_cores: f64,
    /// Share of all cores' time the machine was busy.
    machine_busy: f64,
}

impl CpuSnapshot {
    fn now() -> Option<Self> {
        // utime and stime, fields 14 and 15 of /proc/self/stat, in USER_HZ (100 on Linux); fields are
        // counted after the command name's closing parenthesis, which may contain spaces.
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // The first line of /proc/stat: user nice system idle iowait irq softirq steal (guest time is
        // already in user).
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let jiffies: Vec<u64> = machine
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let total: u64 = jiffies.iter().sum();
        let idle = jiffies.get(3)? + jiffies.get(4)?;
        Some(Self {
            at: Instant::now(),
            own: ticks as f64 / 100.0,
            busy: total - idle,
            total,
        })
    }

    fn until_now(self) -> Option<CpuUse> {
        let now = Self::now()?;
        let wall = now.at.duration_since(self.at).as_secs_f64();
        let total = now.total.saturating_sub(self.total);
        (wall > 0.0 && total > 0).then(|| CpuUse {
            generator_cores: (now.own - self.own) / wall,
            machine_busy: now.busy.saturating_sub(self.busy) as f64 / total as f64,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// The report

fn percent(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn ms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s >= 1.0 => format!("{s:.2} s"),
        Some(s) => format!("{:.0} ms", s * 1000.0),
        None => "–".into(),
    }
}

fn errors(summary: &Summary) -> String {
    if summary.errors == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = summary
        .errors_by_status
        .iter()
        .map(|(status, n)| match status {
            Some(status) => format!("{status} ×{n}"),
            None => format!("no answer ×{n}"),
        })
        .collect();
    format!("{} ({})", summary.errors, kinds.join(", "))
}

fn verdict_text(verdict: &Verdict) -> String {
    if verdict.met() {
        return "**met**".into();
    }
    let mut missed = Vec::new();
    if !verdict.answered_ok {
        missed.push(format!("{} within 1 s", percent(verdict.answered_share)));
    }
    if !verdict.goodput_ok {
        missed.push(format!("checkouts {}", percent(verdict.checkout_goodput)));
    }
    format!("missed: {}", missed.join(", "))
}

/// The runs side by side (Markdown), over the hold at `factor` × capacity unless a row says otherwise.
fn table(plan: &LoadPlan, results: &[RunResult], timeout: f64) -> String {
    let (from, to) = plan.hold_window();
    let holds: Vec<Summary> = results
        .iter()
        .map(|r| base::summarize(&r.ops, from, to))
        .collect();
    let wholes: Vec<Summary> = results
        .iter()
        .map(|r| base::summarize(&r.ops, 0.0, f64::INFINITY))
        .collect();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: String, value: &dyn Fn(usize) -> String| {
        rows.push((name, (0..results.len()).map(value).collect()));
    };
    row("requests/s offered (requests)".into(), &|i| {
        format!("{:.0} ({})", holds[i].offered_rate(), holds[i].requests)
    });
    row(
        "**answered within 1 s** (full or degraded page, accepted checkout)".into(),
        &|i| format!("**{}**", percent(holds[i].answered_share())),
    );
    row("pages full / degraded (degraded share)".into(), &|i| {
        let s = &holds[i];
        format!(
            "{} / {} ({})",
            s.full,
            s.degraded,
            percent(s.degraded_share())
        )
    });
    row("p50 / p99, all requests".into(), &|i| {
        format!("{} / {}", ms(holds[i].p50), ms(holds[i].p99))
    });
    row("p50 / p99, checkouts".into(), &|i| {
        format!(
            "{} / {}",
            ms(holds[i].checkout_p50),
            ms(holds[i].checkout_p99)
        )
    });
    row(
        "**checkouts completed/s** (of those offered)".into(),
        &|i| {
            let s = &holds[i];
            format!(
                "**{:.1}** ({} of {:.1}/s)",
                s.checkouts_per_second(),
                percent(s.checkouts_accepted_share()),
                s.checkouts as f64 / s.window.max(f64::MIN_POSITIVE)
            )
        },
    );
    row(
        format!(
            "checkout goodput vs capacity (÷ {:.0} % × {:.0} = {:.1}/s)",
            plan.checkout_share * 100.0,
            plan.capacity,
            plan.checkout_reference()
        ),
        &|i| {
            percent(
                holds[i].checkouts_per_second() / plan.checkout_reference().max(f64::MIN_POSITIVE),
            )
        },
    );
    row("answered, but later than 1 s".into(), &|i| {
        holds[i].late.to_string()
    });
    row("errors".into(), &|i| errors(&holds[i]));
    row(format!("timeouts (no answer within {timeout} s)"), &|i| {
        holds[i].timeouts.to_string()
    });
    row(
        "answered within 1 s, whole run (ramp included)".into(),
        &|i| percent(wholes[i].answered_share()),
    );
    row(
        format!(
            "goal: ≥ {:.0} % within 1 s, checkouts ≥ {:.0} % of capacity's",
            Goal::ISSUE_13.answered_share * 100.0,
            Goal::ISSUE_13.checkout_goodput * 100.0
        ),
        &|i| verdict_text(&base::check_goal(&holds[i], plan, Goal::ISSUE_13)),
    );
    row("load generator: launch lag p99 / max".into(), &|i| {
        format!("{} / {}", ms(holds[i].lag_p99), ms(holds[i].lag_max))
    });
    row("most requests in flight".into(), &|i| {
        results[i].max_in_flight.to_string()
    });
    row(
        "CPU: machine busy / load generator".into(),
        &|i| match results[i].cpu {
            Some(cpu) => format!(
                "{} / {:.2} cores",
                percent(cpu.machine_busy),
                cpu.generator_cores
            ),
            None => "–".into(),
        },
    );
    let columns: Vec<String> = results.iter().map(|r| r.spec.label()).collect();
    crate::report::markdown_table("at the hold", &columns, &rows)
}

/// The whole report: what was measured, the table, the goal, the definitions.
fn markdown(
    args: &BaseArgs,
    capacity: &Capacity,
    plan: &LoadPlan,
    results: &[RunResult],
    cap_mode: Option<&str>,
) -> String {
    let mut out = String::from("# BASE: the storefront past its capacity\n\n");
    if capacity.given {
        let _ = writeln!(
            out,
            "Capacity of the full catalog page: **{:.0} pages/s**, given (`--capacity`), not measured.",
            capacity.pages_per_second
        );
    } else {
        let steps: Vec<String> = capacity
            .steps
            .iter()
            .map(|(clients, pages)| format!("{clients} clients {pages:.0}/s"))
            .collect();
        let _ = writeln!(
            out,
            "Capacity of the full catalog page (`GET /`, degrade=off, closed-loop clients doubled while the \
             pages/s grew by 10 %, {} s per step: {}): **{:.0} pages/s** at {} clients (p50 {}, p99 {}; {} \
             answers that were no full page).",
            capacity.seconds,
            steps.join(", "),
            capacity.pages_per_second,
            capacity.clients,
            ms(capacity.p50),
            ms(capacity.p99),
            capacity.other
        );
    }
    let _ = writeln!(
        out,
        "\nLoad, an open model (every request launched at its time, whatever became of the earlier ones): \
         {}× → {}× capacity ({:.0} requests/s) over {} s, then {} s at {}×; {:.0} % checkouts (`POST \
         /checkout`, one unit), the rest browsing ({:.0} % `GET /`, the others `GET /products/{{sku}}`) over \
         {} SKUs; client timeout {} s.{} Checkouts place orders {}. The table judges the {} s at {}×.\n",
        plan.ramp_from,
        plan.factor,
        plan.peak_rate(),
        plan.ramp,
        plan.hold,
        plan.factor,
        plan.checkout_share * 100.0,
        plan.catalog_share * 100.0,
        plan.skus,
        args.timeout,
        if results.iter().any(|r| r.spec.partitioned) {
            format!(
                " Partitioned run: `[[\"gateway\"], [\"inventory\"]]`, cut `{}`, for the whole run.",
                args.cut
            )
        } else {
            String::new()
        },
        match cap_mode {
            Some(mode) => format!("under cap_mode={mode}"),
            None => "in the order service's default mode (cap_mode unset)".into(),
        },
        plan.hold,
        plan.factor,
    );
    out.push_str(&table(plan, results, args.timeout));
    let (from, to) = plan.hold_window();
    match results
        .iter()
        .find(|r| r.spec.degrade == "auto" && !r.spec.partitioned)
    {
        Some(auto) => {
            let verdict =
                base::check_goal(&base::summarize(&auto.ops, from, to), plan, Goal::ISSUE_13);
            let _ = writeln!(
                out,
                "\nGoal (degrade=auto at {}× capacity: ≥ {:.0} % answered within 1 s, checkouts completed ≥ \
                 {:.0} % of {:.1}/s): **{}** — {} answered within 1 s, checkout goodput {} of the reference.",
                plan.factor,
                Goal::ISSUE_13.answered_share * 100.0,
                Goal::ISSUE_13.checkout_goodput * 100.0,
                plan.checkout_reference(),
                if verdict.met() { "MET" } else { "NOT MET" },
                percent(verdict.answered_share),
                percent(verdict.checkout_goodput)
            );
        }
        None => out.push_str("\nGoal: not judged (no degrade=auto run without a partition).\n"),
    }
    let unsettled: Vec<String> = results
        .iter()
        .filter(|r| !r.settled)
        .map(|r| r.spec.label())
        .collect();
    if !unsettled.is_empty() {
        let _ = writeln!(
            out,
            "\n**Warning**: before {}, the catalog was not answered within 1 s three times in a row within \
             60 s (the run began on a shop still busy, e.g. with the previous run's backlog).",
            unsettled.join(", ")
        );
    }
    let lagging: Vec<String> = results
        .iter()
        .filter(|r| {
            base::summarize(&r.ops, from, to)
                .lag_p99
                .is_some_and(|lag| lag > 0.05)
        })
        .map(|r| r.spec.label())
        .collect();
    if !lagging.is_empty() {
        let _ = writeln!(
            out,
            "\n**Warning**: the load generator launched 1 % of the requests more than 50 ms late in {}: it \
             competed with the shop for the CPU, and the load offered was smoother than planned.",
            lagging.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nDefinitions: *answered* = a page (full or degraded) or a checkout's 303, complete within 1 s of \
         its launch, over every request scheduled in the window; *late* = such an answer after 1 s; \
         *errors* = any other status, or no complete HTTP answer; *timeouts* = nothing within {} s; p50/p99 \
         over every request, an error at its time, a timeout at {} s (a lower bound); *checkouts \
         completed/s* = 303s (any latency within the timeout) ÷ the window; *checkout goodput vs capacity* \
         = that ÷ (checkout share × the page capacity), the checkouts/s the shop completes when it serves \
         exactly its capacity with this mix. The runs go one after another on the same machine as the load \
         generator; between runs the scenario waits until the catalog answers within 1 s again, not for \
         the order pipeline's backlog.",
        args.timeout, args.timeout
    );
    out
}

/// Requests per second by what became of them, one panel per run, the hold shaded.
fn chart(plan: &LoadPlan, results: &[RunResult]) -> Chart {
    let x_max = plan.duration().max(1.0);
    let line = |name: &str, color: &str, points: Vec<(f64, f64)>, dashed: bool| Series {
        name: name.into(),
        color: color.into(),
        points,
        dashed,
    };
    let panels = results
        .iter()
        .map(|r| {
            let seconds = base::per_second(&r.ops, plan.duration());
            let series = |value: &dyn Fn(&base::Second) -> u64| -> Vec<(f64, f64)> {
                seconds
                    .iter()
                    .map(|s| (s.t + 0.5, value(s) as f64))
                    .collect()
            };
            Panel {
                title: r.spec.label(),
                y_label: "requests/s".into(),
                y_min: 0.0,
                y_max: None,
                y_unit: String::new(),
                series: vec![
                    line("offered", "#7f7f7f", series(&|s| s.arrivals), true),
                    line(
                        "full or checkout ≤ 1 s",
                        "#2ca02c",
                        series(&|s| s.full + s.checkouts),
                        false,
                    ),
                    line(
                        "degraded page ≤ 1 s",
                        "#ff7f0e",
                        series(&|s| s.degraded),
                        false,
                    ),
                    line("answered > 1 s", "#9467bd", series(&|s| s.late), false),
                    line(
                        "error or timeout",
                        "#d62728",
                        series(&|s| s.failed()),
                        false,
                    ),
                    line(
                        "capacity (full pages/s)",
                        "#222222",
                        vec![(0.0, plan.capacity), (x_max, plan.capacity)],
                        true,
                    ),
                ],
            }
        })
        .collect();
    Chart {
        title: format!(
            "BASE: the storefront driven to {}× its capacity, by when the request was due",
            plan.factor
        ),
        x_label: "seconds since the start of the run".into(),
        x_min: 0.0,
        x_max,
        bands: vec![Band {
            from: plan.ramp,
            to: plan.duration(),
            label: format!("hold at {}× capacity", plan.factor),
            color: "#999999".into(),
        }],
        panels,
    }
}

/// Every request of every run, one line each.
fn ops_csv(results: &[RunResult], skus: &[String]) -> String {
    let mut out = String::from("run,request,sku,scheduled_s,start_s,latency_s,outcome,status\n");
    for r in results {
        let run = r.spec.key();
        for op in &r.ops {
            let _ = writeln!(
                out,
                "{run},{},{},{:.4},{:.4},{:.4},{},{}",
                op.request.name(),
                op.request
                    .sku()
                    .and_then(|i| skus.get(i))
                    .map_or("", String::as_str),
                op.scheduled,
                op.start,
                op.latency,
                op.outcome.name(),
                op.outcome.status().map_or(String::new(), |s| s.to_string()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LoadPlan {
        LoadPlan {
            capacity: 100.0,
            factor: 3.0,
            ramp_from: 0.0,
            ramp: 2.0,
            hold: 2.0,
            checkout_share: 0.2,
            catalog_share: 0.5,
            skus: 2,
        }
    }

    fn result(degrade: &str, outcome: Outcome) -> RunResult {
        let ops = plan()
            .arrivals()
            .into_iter()
            .map(|a| Op {
                request: a.request,
                scheduled: a.at,
                start: a.at,
                latency: 0.05,
                outcome: match (a.request, outcome) {
                    (Request::Checkout(_), Outcome::Full) => Outcome::Accepted,
                    _ => outcome,
                },
            })
            .collect();
        RunResult {
            spec: RunSpec::parse(degrade).expect("valid"),
            ops,
            max_in_flight: 3,
            cpu: None,
            settled: true,
        }
    }

    #[test]
    fn the_table_puts_runs_side_by_side() {
        let results = [
            result("auto", Outcome::Full),
            result("off", Outcome::Error(Some(503))),
        ];
        let table = table(&plan(), &results, 5.0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "| at the hold | degrade=auto | degrade=off |");
        let columns = lines[0].matches('|').count();
        assert!(
            lines.iter().all(|l| l.matches('|').count() == columns),
            "{table}"
        );
        assert!(table.contains("| **100.0 %** | **0.0 %** |"), "{table}");
        assert!(table.contains("| **met** | missed:"), "{table}");
        // 0.2 × 300/s offered at the hold, all accepted: 60/s against a reference of 20/s.
        assert!(
            table.contains("| **60.0** (100.0 % of 60.0/s) |"),
            "{table}"
        );
        assert!(table.contains("300.0 %"), "{table}");
        assert!(table.contains("600 (503 ×600)"), "{table}");
    }

    #[test]
    fn the_chart_has_a_panel_per_run_and_the_csv_a_line_per_request() {
        let results = [
            result("auto", Outcome::Degraded),
            result("auto+partition", Outcome::Timeout),
        ];
        let chart = chart(&plan(), &results);
        assert_eq!(chart.panels.len(), 2);
        assert_eq!(chart.panels[1].title, "degrade=auto, inventory cut off");
        assert_eq!(chart.bands[0].from, 2.0);
        let svg = render(&chart);
        assert!(svg.contains("degraded page ≤ 1 s"));
        let csv = ops_csv(&results, &["shop-base-0".into(), "shop-base-1".into()]);
        assert_eq!(csv.lines().count(), 1 + 2 * results[0].ops.len());
        assert!(csv.lines().nth(1).is_some_and(|l| l.starts_with("auto,")));
        assert!(csv.contains("auto+partition,checkout,shop-base-"));
    }
}
