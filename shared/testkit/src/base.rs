//! The BASE experiment (issue 13), its pure core: what an operation of the storefront's load is, the
//! open-model schedule that drives it, and how a run is judged. No IO: `cargo xtask scenario base` sends
//! the requests and writes the report.
//!
//! The experiment: measure the full catalog page's capacity `C` (closed loop, `degrade=off`), then drive
//! an **open model** — arrivals on a fixed schedule, each request launched at its time whatever became of
//! the earlier ones, so the load does not slow down when the shop does — that ramps linearly to `factor ×
//! C` and holds there. Browsing (`GET /`, `GET /products/{sku}`) and checkouts (`POST /checkout`) are
//! interleaved in fixed proportions. The same schedule runs with `degrade=auto`, with `degrade=off`, and
//! with `degrade=auto` while the gateway is cut from the inventory.
//!
//! Judging ([`summarize`], over the operations *scheduled* in a window, normally the hold at `factor ×
//! C`):
//! - **answered**: a full page, a degraded page or an accepted checkout (303), complete within
//!   [`ANSWER_WITHIN`] of its launch; the answered share counts every request of the window;
//! - **late**: one of those, later than [`ANSWER_WITHIN`]; **errors**: any other status, or no complete
//!   HTTP answer (connection refused or reset, body cut off); **timeouts**: no answer within the client's
//!   timeout;
//! - **p50/p99**: of every request's latency, errors included, a timeout at the time it was given up
//!   (so the p99 of a run with more than 1 % timeouts is the timeout: a lower bound);
//! - **checkouts/s**: checkouts accepted (303, whatever their latency within the client's timeout)
//!   divided by the window's length;
//! - **checkout goodput vs capacity** ([`check_goal`]): the page capacity says how much the shop serves;
//!   at capacity with this mix it completes `checkout_share × C` checkouts/s. That is the reference: the
//!   goal asks that at `factor × C` the shop still completes at least 90 % of it (with the issue's numbers
//!   the offered checkout rate is 3 × the reference, so 0.9 is a floor against goodput collapse, not a
//!   share of what was offered — that share is reported too).

use std::collections::BTreeMap;

/// A request answered later than this does not count as answered.
pub const ANSWER_WITHIN: f64 = 1.0;

/// Name of the scenario's partition in the chaos sidecar.
pub const PARTITION: &str = "base-inventory";

/// What the user was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Browse,
    Checkout,
}

/// One request of the load. The `usize` is the index of the SKU among the scenario's SKUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /`, the catalog.
    Catalog,
    /// `GET /products/{sku}`.
    Product(usize),
    /// `POST /checkout`, one unit.
    Checkout(usize),
}

impl Request {
    pub fn class(self) -> Class {
        match self {
            Request::Catalog | Request::Product(_) => Class::Browse,
            Request::Checkout(_) => Class::Checkout,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Request::Catalog => "catalog",
            Request::Product(_) => "product",
            Request::Checkout(_) => "checkout",
        }
    }

    pub fn sku(self) -> Option<usize> {
        match self {
            Request::Catalog => None,
            Request::Product(sku) | Request::Checkout(sku) => Some(sku),
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A page with everything on it (`x-distlab-page: full`).
    Full,
    /// A page served in degraded form (`x-distlab-page: degraded`): cached stock, no bestsellers, banner.
    Degraded,
    /// The checkout was accepted: 303 to the order's page.
    Accepted,
    /// Any other status; `None`: no complete HTTP answer (connection refused or reset, body cut off).
    Error(Option<u16>),
    /// Nothing within the client's timeout.
    Timeout,
}

impl Outcome {
    /// A browsing request's outcome from the status and the page kind the gateway declared (the
    /// `x-distlab-page` header, or the footer's `data-page`, see [`page_kind_in_body`]). A 2xx page that
    /// declares nothing counts as full.
    pub fn of_page(status: u16, page: Option<&str>) -> Self {
        match (status, page) {
            (200..=299, Some(kind)) if kind.eq_ignore_ascii_case("degraded") => Outcome::Degraded,
            (200..=299, _) => Outcome::Full,
            (status, _) => Outcome::Error(Some(status)),
        }
    }

    /// A checkout's outcome: only the 303 of an accepted order is a success (the gateway answers 422 for
    /// bad input and 503 while ordering is paused).
    pub fn of_checkout(status: u16) -> Self {
        if status == 303 {
            Outcome::Accepted
        } else {
            Outcome::Error(Some(status))
        }
    }

    /// A page, an accepted checkout: what the user came for (in any time).
    pub fn success(self) -> bool {
        matches!(self, Outcome::Full | Outcome::Degraded | Outcome::Accepted)
    }

    /// For the CSV: `full`, `degraded`, `accepted`, `error`, `timeout`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Full => "full",
            Outcome::Degraded => "degraded",
            Outcome::Accepted => "accepted",
            Outcome::Error(_) => "error",
            Outcome::Timeout => "timeout",
        }
    }

    pub fn status(self) -> Option<u16> {
        match self {
            Outcome::Full | Outcome::Degraded => Some(200),
            Outcome::Accepted => Some(303),
            Outcome::Error(status) => status,
            Outcome::Timeout => None,
        }
    }
}

/// The page kind a page declares in its footer (`<footer id="served" data-page="full|degraded" …>`), for
/// a response that lacks the header.
pub fn page_kind_in_body(body: &[u8]) -> Option<&'static str> {
    let find = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if find(br#"data-page="degraded""#) {
        Some("degraded")
    } else if find(br#"data-page="full""#) {
        Some("full")
    } else {
        None
    }
}

/// One recorded request. Times are seconds since the run's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Op {
    pub request: Request,
    /// When the schedule wanted it launched.
    pub scheduled: f64,
    /// When it was launched (later than `scheduled` when the load generator fell behind).
    pub start: f64,
    /// From launch to the last byte of the answer (or to the error, or to giving up).
    pub latency: f64,
    pub outcome: Outcome,
}

impl Op {
    pub fn class(&self) -> Class {
        self.request.class()
    }

    /// A page or an accepted checkout within [`ANSWER_WITHIN`].
    pub fn answered(&self) -> bool {
        self.outcome.success() && self.latency <= ANSWER_WITHIN
    }

    /// A success that came too late.
    pub fn late(&self) -> bool {
        self.outcome.success() && self.latency > ANSWER_WITHIN
    }

    /// How far behind the schedule the load generator launched it.
    pub fn lag(&self) -> f64 {
        (self.start - self.scheduled).max(0.0)
    }
}

// ---------------------------------------------------------------------------------------------------
// The open-model schedule

/// Arrival times (seconds from `start`) of a rate going linearly from `from_rate` to `to_rate` (per
/// second) over `duration` seconds; a constant rate when they are equal. The k-th arrival is where the
/// expected count reaches k + ½, so arrivals are evenly spread by the rate and their number is the area
/// under it, (`from_rate + to_rate`) / 2 × `duration`, rounded.
pub fn ramp(from_rate: f64, to_rate: f64, start: f64, duration: f64) -> Vec<f64> {
    let (a, d) = (from_rate.max(0.0), duration.max(0.0));
    let b = if d > 0.0 {
        (to_rate.max(0.0) - a) / d
    } else {
        0.0
    };
    let mut out = Vec::new();
    for k in 0.. {
        // Solve a·t + b·t²/2 = m for the smallest t ≥ 0, in the form that is stable for b → 0 and b < 0.
        let m = k as f64 + 0.5;
        let discriminant = a * a + 2.0 * b * m;
        if discriminant < 0.0 {
            break;
        }
        let denominator = a + discriminant.sqrt();
        if denominator <= 0.0 {
            break;
        }
        let t = 2.0 * m / denominator;
        if t >= d {
            break;
        }
        out.push(start + t);
    }
    out
}

/// Arrival times of a constant `rate` for `duration` seconds from `start`.
pub fn constant(rate: f64, start: f64, duration: f64) -> Vec<f64> {
    ramp(rate, rate, start, duration)
}

/// Whether item `i` of a sequence is one of the `share` picked, spread evenly (exactly ⌊n·share⌋ of the
/// first n, never two where one would do).
fn picked(i: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    // The slack keeps 35 × 0.2 = 7.000000000000001 and a product a hair under a whole number alike.
    let below = |n: usize| (n as f64 * share + 1e-9).floor();
    below(i + 1) > below(i)
}

/// The load of one run: a ramp to `factor × capacity`, then a hold there.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// The full page's measured capacity, pages/s.
    pub capacity: f64,
    /// The rate of the hold, in multiples of the capacity (the issue: 3).
    pub factor: f64,
    /// Where the ramp starts, in multiples of the capacity.
    pub ramp_from: f64,
    /// Seconds.
    pub ramp: f64,
    /// Seconds at `factor × capacity`.
    pub hold: f64,
    /// Share of the arrivals that are checkouts.
    pub checkout_share: f64,
    /// Share of the browsing arrivals that are the catalog (the rest are product pages).
    pub catalog_share: f64,
    /// SKUs the product pages and checkouts go round.
    pub skus: usize,
}

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Seconds since the run's start.
    pub at: f64,
    pub request: Request,
}

impl LoadPlan {
    pub fn peak_rate(&self) -> f64 {
        self.factor * self.capacity
    }

    pub fn duration(&self) -> f64 {
        self.ramp + self.hold
    }

    /// The hold at `factor × capacity`: `[ramp, ramp + hold)`.
    pub fn hold_window(&self) -> (f64, f64) {
        (self.ramp, self.ramp + self.hold)
    }

    /// Every arrival of the run in time order, the mix spread evenly over it.
    pub fn arrivals(&self) -> Vec<Arrival> {
        let mut times = ramp(
            self.ramp_from * self.capacity,
            self.peak_rate(),
            0.0,
            self.ramp,
        );
        times.extend(constant(self.peak_rate(), self.ramp, self.hold));
        let skus = self.skus.max(1);
        // Product pages and checkouts go round the SKUs each on their own, so both reach every SKU.
        let (mut browse, mut product, mut checkout) = (0, 0, 0);
        times
            .into_iter()
            .enumerate()
            .map(|(i, at)| {
                let request = if picked(i, self.checkout_share) {
                    checkout += 1;
                    Request::Checkout((checkout - 1) % skus)
                } else {
                    browse += 1;
                    if picked(browse - 1, self.catalog_share) {
                        Request::Catalog
                    } else {
                        product += 1;
                        Request::Product((product - 1) % skus)
                    }
                };
                Arrival { at, request }
            })
            .collect()
    }

    /// The checkouts/s the shop completes when it serves exactly its capacity with this mix: the
    /// reference of the goodput goal.
    pub fn checkout_reference(&self) -> f64 {
        self.checkout_share * self.capacity
    }
}

// ---------------------------------------------------------------------------------------------------
// Judging

/// One second of a run (by scheduled time), for the chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Second {
    /// The second's start.
    pub t: f64,
    /// Requests scheduled in it.
    pub arrivals: u64,
    /// Full pages within [`ANSWER_WITHIN`].
    pub full: u64,
    /// Degraded pages within [`ANSWER_WITHIN`].
    pub degraded: u64,
    /// Checkouts accepted within [`ANSWER_WITHIN`].
    pub checkouts: u64,
    /// Successes later than [`ANSWER_WITHIN`].
    pub late: u64,
    pub errors: u64,
    pub timeouts: u64,
}

impl Second {
    /// Neither answered in time nor late: an error or a timeout.
    pub fn failed(&self) -> u64 {
        self.errors + self.timeouts
    }
}

/// The run second by second from 0 to `duration` (every second present, empty ones too), each request
/// in the second it was scheduled in.
pub fn per_second(ops: &[Op], duration: f64) -> Vec<Second> {
    let seconds = duration.max(0.0).ceil() as usize;
    let mut out: Vec<Second> = (0..seconds)
        .map(|t| Second {
            t: t as f64,
            ..Second::default()
        })
        .collect();
    for op in ops {
        // Before the start, or NaN: nowhere on the chart.
        if op.scheduled.is_nan() || op.scheduled < 0.0 {
            continue;
        }
        let i = op.scheduled.floor() as usize;
        if i >= out.len() {
            out.resize_with(i + 1, Second::default);
            for (t, second) in out.iter_mut().enumerate() {
                second.t = t as f64;
            }
        }
        let second = &mut out[i];
        second.arrivals += 1;
        match op.outcome {
            _ if op.late() => second.late += 1,
            Outcome::Full => second.full += 1,
            Outcome::Degraded => second.degraded += 1,
            Outcome::Accepted => second.checkouts += 1,
            Outcome::Error(_) => second.errors += 1,
            Outcome::Timeout => second.timeouts += 1,
        }
    }
    out
}

/// The `q` quantile (0..=1) by nearest rank; `None` without values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What a run did over a window (see the module documentation for the definitions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Seconds of the window.
    pub window: f64,
    pub requests: u64,
    pub browse: u64,
    pub checkouts: u64,
    /// Page or accepted checkout within [`ANSWER_WITHIN`].
    pub answered: u64,
    /// Pages of either kind, whatever their latency.
    pub full: u64,
    pub degraded: u64,
    /// Checkouts accepted, whatever their latency.
    pub accepted: u64,
    /// Successes later than [`ANSWER_WITHIN`].
    pub late: u64,
    pub errors: u64,
    /// Errors by status (`None`: no complete HTTP answer).
    pub errors_by_status: BTreeMap<Option<u16>, u64>,
    pub timeouts: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub checkout_p50: Option<f64>,
    pub checkout_p99: Option<f64>,
    /// How far behind the schedule the load generator launched requests.
    pub lag_p99: Option<f64>,
    pub lag_max: Option<f64>,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Summary {
    /// Share of the requests answered within [`ANSWER_WITHIN`] (0 without requests).
    pub fn answered_share(&self) -> f64 {
        ratio(self.answered, self.requests)
    }

    /// Share of the pages served that were degraded.
    pub fn degraded_share(&self) -> f64 {
        ratio(self.degraded, self.full + self.degraded)
    }

    /// Checkouts accepted per second of the window.
    pub fn checkouts_per_second(&self) -> f64 {
        if self.window > 0.0 {
            self.accepted as f64 / self.window
        } else {
            0.0
        }
    }

    /// Share of the checkouts offered that were accepted.
    pub fn checkouts_accepted_share(&self) -> f64 {
        ratio(self.accepted, self.checkouts)
    }

    /// Requests scheduled per second of the window.
    pub fn offered_rate(&self) -> f64 {
        if self.window > 0.0 {
            self.requests as f64 / self.window
        } else {
            0.0
        }
    }
}

/// Summarizes the operations scheduled in `[from, to)`.
pub fn summarize(ops: &[Op], from: f64, to: f64) -> Summary {
    let mut summary = Summary {
        window: (to - from).max(0.0),
        ..Summary::default()
    };
    let (mut latencies, mut checkout_latencies, mut lags) = (Vec::new(), Vec::new(), Vec::new());
    for op in ops
        .iter()
        .filter(|op| op.scheduled >= from && op.scheduled < to)
    {
        summary.requests += 1;
        match op.class() {
            Class::Browse => summary.browse += 1,
            Class::Checkout => {
                summary.checkouts += 1;
                checkout_latencies.push(op.latency);
            }
        }
        latencies.push(op.latency);
        lags.push(op.lag());
        summary.answered += u64::from(op.answered());
        summary.late += u64::from(op.late());
        match op.outcome {
            Outcome::Full => summary.full += 1,
            Outcome::Degraded => summary.degraded += 1,
            Outcome::Accepted => summary.accepted += 1,
            Outcome::Error(status) => {
                summary.errors += 1;
                *summary.errors_by_status.entry(status).or_default() += 1;
            }
            Outcome::Timeout => summary.timeouts += 1,
        }
    }
    for values in [&mut latencies, &mut checkout_latencies, &mut lags] {
        values.sort_by(f64::total_cmp);
    }
    summary.p50 = quantile(&latencies, 0.50);
    summary.p99 = quantile(&latencies, 0.99);
    summary.checkout_p50 = quantile(&checkout_latencies, 0.50);
    summary.checkout_p99 = quantile(&checkout_latencies, 0.99);
    summary.lag_p99 = quantile(&lags, 0.99);
    summary.lag_max = lags.last().copied();
    summary
}

/// The issue's goal for `degrade=auto` at `factor × capacity`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// Least share of requests answered within [`ANSWER_WITHIN`].
    pub answered_share: f64,
    /// Least checkouts/s, as a share of [`LoadPlan::checkout_reference`].
    pub checkout_goodput: f64,
}

impl Goal {
    /// ≥ 99 % answered within 1 s, checkout goodput ≥ 90 % of the capacity's.
    pub const ISSUE_13: Goal = Goal {
        answered_share: 0.99,
        checkout_goodput: 0.90,
    };
}

/// How a run measured up to the [`Goal`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub answered_share: f64,
    pub answered_ok: bool,
    /// Checkouts/s the goal compares with ([`LoadPlan::checkout_reference`]).
    pub checkout_reference: f64,
    /// Checkouts/s completed over the reference.
    pub checkout_goodput: f64,
    pub goodput_ok: bool,
}

impl Verdict {
    pub fn met(&self) -> bool {
        self.answered_ok && self.goodput_ok
    }
}

/// Judges a window's summary (normally the hold) against the goal.
pub fn check_goal(summary: &Summary, plan: &LoadPlan, goal: Goal) -> Verdict {
    let reference = plan.checkout_reference();
    let goodput = if reference > 0.0 {
        summary.checkouts_per_second() / reference
    } else {
        0.0
    };
    Verdict {
        answered_share: summary.answered_share(),
        answered_ok: summary.requests > 0 && summary.answered_share() >= goal.answered_share,
        checkout_reference: reference,
        checkout_goodput: goodput,
        goodput_ok: reference > 0.0 && goodput >= goal.checkout_goodput,
    }
}

// ---------------------------------------------------------------------------------------------------
// Runs

/// One run of the scenario: the `degrade` value, and whether the gateway is cut from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// `off`, `auto` or `on`.
    pub degrade: String,
    pub partitioned: bool,
}

impl RunSpec {
    /// `auto`, `off`, `on`, each optionally followed by `+partition` (case does not matter).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let (degrade, partitioned) = match text.split_once('+') {
            Some((mode, rest)) if rest.trim() == "partition" => (mode.trim().to_owned(), true),
            Some((_, other)) => {
                return Err(format!(
                    "a run is off|auto|on, optionally +partition, not +{other}"
                ));
            }
            None => (text.clone(), false),
        };
        if !["off", "auto", "on"].contains(&degrade.as_str()) {
            return Err(format!(
                "degrade is off, auto or on, not {degrade:?} (in {text:?})"
            ));
        }
        Ok(Self {
            degrade,
            partitioned,
        })
    }

    /// `degrade=auto`, `degrade=auto, inventory partitioned`.
    pub fn label(&self) -> String {
        if self.partitioned {
            format!("degrade={}, inventory cut off", self.degrade)
        } else {
            format!("degrade={}", self.degrade)
        }
    }

    /// For file names and the CSV: `auto`, `auto+partition`.
    pub fn key(&self) -> String {
        if self.partitioned {
            format!("{}+partition", self.degrade)
        } else {
            self.degrade.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(request: Request, scheduled: f64, latency: f64, outcome: Outcome) -> Op {
        Op {
            request,
            scheduled,
            start: scheduled,
            latency,
            outcome,
        }
    }

    fn plan() -> LoadPlan {
        LoadPlan {
            capacity: 100.0,
            factor: 3.0,
            ramp_from: 0.0,
            ramp: 10.0,
            hold: 20.0,
            checkout_share: 0.2,
            catalog_share: 0.5,
            skus: 4,
        }
    }

    #[test]
    fn a_constant_rate_is_evenly_spaced() {
        let times = constant(4.0, 10.0, 2.0);
        assert_eq!(
            times,
            [
                10.125, 10.375, 10.625, 10.875, 11.125, 11.375, 11.625, 11.875
            ]
        );
        assert!(constant(0.0, 0.0, 10.0).is_empty());
        assert!(constant(5.0, 0.0, 0.0).is_empty());
    }

    #[test]
    fn a_ramp_has_the_area_under_its_rate_and_speeds_up() {
        let times = ramp(0.0, 300.0, 0.0, 10.0);
        // (0 + 300) / 2 × 10 s
        assert_eq!(times.len(), 1500);
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert!(times.iter().all(|t| (0.0..10.0).contains(t)));
        // The rate near t is t × 30/s: a second of arrivals around 5 s is about 150, around 9 s about 270.
        let within = |from: f64, to: f64| times.iter().filter(|t| **t >= from && **t < to).count();
        assert!(
            (within(4.5, 5.5) as i64 - 150).abs() <= 1,
            "{}",
            within(4.5, 5.5)
        );
        assert!(
            (within(8.5, 9.5) as i64 - 270).abs() <= 1,
            "{}",
            within(8.5, 9.5)
        );
        // Down, and from a start rate.
        assert_eq!(ramp(100.0, 0.0, 0.0, 4.0).len(), 200);
        assert_eq!(ramp(50.0, 150.0, 2.0, 2.0).len(), 200);
        assert!(ramp(50.0, 150.0, 2.0, 2.0)[0] >= 2.0);
    }

    #[test]
    fn the_plan_ramps_holds_and_mixes_evenly() {
        let plan = plan();
        let arrivals = plan.arrivals();
        // 10 s ramp 0 → 300/s (1,500) + 20 s at 300/s (6,000).
        assert_eq!(arrivals.len(), 7_500);
        assert!(arrivals.windows(2).all(|w| w[0].at <= w[1].at));
        let (from, to) = plan.hold_window();
        assert_eq!((from, to), (10.0, 30.0));
        let held = arrivals
            .iter()
            .filter(|a| a.at >= from && a.at < to)
            .count();
        assert_eq!(held, 6_000);
        let count = |f: &dyn Fn(Request) -> bool| arrivals.iter().filter(|a| f(a.request)).count();
        assert_eq!(count(&|r| r.class() == Class::Checkout), 1_500);
        assert_eq!(count(&|r| r == Request::Catalog), 3_000);
        assert_eq!(count(&|r| matches!(r, Request::Product(_))), 3_000);
        // Any 10 consecutive arrivals hold 2 checkouts: the mix is spread, not bunched.
        for window in arrivals.windows(10) {
            let checkouts = window
                .iter()
                .filter(|a| a.request.class() == Class::Checkout)
                .count();
            assert_eq!(checkouts, 2);
        }
        // Every SKU gets its share of checkouts.
        for sku in 0..4 {
            let n = count(&|r| r == Request::Checkout(sku));
            assert!((370..=380).contains(&n), "sku {sku}: {n}");
        }
        assert!((plan.checkout_reference() - 20.0).abs() < 1e-9);
        assert!((plan.peak_rate() - 300.0).abs() < 1e-9);
    }

    #[test]
    fn outcomes_from_status_and_page_kind() {
        assert_eq!(Outcome::of_page(200, Some("full")), Outcome::Full);
        assert_eq!(Outcome::of_page(200, Some("Degraded")), Outcome::Degraded);
        assert_eq!(Outcome::of_page(200, None), Outcome::Full);
        assert_eq!(
            Outcome::of_page(503, Some("degraded")),
            Outcome::Error(Some(503))
        );
        assert_eq!(Outcome::of_checkout(303), Outcome::Accepted);
        assert_eq!(Outcome::of_checkout(200), Outcome::Error(Some(200)));
        assert_eq!(Outcome::of_checkout(503), Outcome::Error(Some(503)));
        let page =
            br#"<main>x</main><footer id="served" data-page="degraded" data-mode="auto"></footer>"#;
        assert_eq!(page_kind_in_body(page), Some("degraded"));
        assert_eq!(
            page_kind_in_body(br#"<footer data-page="full">"#),
            Some("full")
        );
        assert_eq!(page_kind_in_body(b"<html></html>"), None);
        assert_eq!(Outcome::Timeout.status(), None);
        assert_eq!(Outcome::Error(Some(502)).status(), Some(502));
    }

    #[test]
    fn seconds_sort_every_request_into_one_bucket() {
        let ops = [
            op(Request::Catalog, 0.2, 0.1, Outcome::Full),
            op(Request::Product(1), 0.9, 0.3, Outcome::Degraded),
            op(Request::Checkout(0), 1.1, 0.5, Outcome::Accepted),
            op(Request::Catalog, 1.2, 1.5, Outcome::Full),
            op(Request::Catalog, 1.3, 0.01, Outcome::Error(Some(503))),
            op(Request::Checkout(2), 3.5, 5.0, Outcome::Timeout),
        ];
        let seconds = per_second(&ops, 4.0);
        assert_eq!(seconds.len(), 4);
        assert_eq!(
            seconds[0],
            Second {
                t: 0.0,
                arrivals: 2,
                full: 1,
                degraded: 1,
                ..Second::default()
            }
        );
        let one = &seconds[1];
        assert_eq!(
            (one.arrivals, one.checkouts, one.late, one.errors),
            (3, 1, 1, 1)
        );
        assert_eq!(seconds[2].arrivals, 0, "empty seconds are kept");
        assert_eq!((seconds[3].timeouts, seconds[3].failed()), (1, 1));
        let total: u64 = seconds.iter().map(|s| s.arrivals).sum();
        assert_eq!(total, ops.len() as u64);
        // A straggler past the planned end still lands in a bucket.
        let late = per_second(&[op(Request::Catalog, 5.5, 0.1, Outcome::Full)], 4.0);
        assert_eq!((late.len(), late[5].t, late[5].full), (6, 5.0, 1));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&values, 1.0), Some(100.0));
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_summary_counts_the_window_only() {
        let mut ops = vec![
            // Outside the window [10, 20).
            op(Request::Catalog, 9.99, 0.1, Outcome::Full),
            op(Request::Catalog, 20.0, 0.1, Outcome::Full),
        ];
        for i in 0..90 {
            ops.push(op(
                Request::Catalog,
                10.0 + i as f64 * 0.1,
                0.05,
                Outcome::Full,
            ));
        }
        for i in 0..4 {
            ops.push(op(Request::Product(i), 12.0, 0.2, Outcome::Degraded));
        }
        ops.push(op(Request::Checkout(0), 13.0, 0.3, Outcome::Accepted));
        ops.push(op(Request::Checkout(1), 13.0, 2.0, Outcome::Accepted));
        ops.push(op(
            Request::Checkout(2),
            13.0,
            0.01,
            Outcome::Error(Some(503)),
        ));
        ops.push(op(Request::Catalog, 14.0, 0.02, Outcome::Error(None)));
        ops.push(op(Request::Catalog, 15.0, 0.01, Outcome::Error(Some(503))));
        ops.push(Op {
            start: 16.5,
            ..op(Request::Checkout(3), 16.0, 5.0, Outcome::Timeout)
        });
        let s = summarize(&ops, 10.0, 20.0);
        assert_eq!(s.requests, 100);
        assert_eq!((s.browse, s.checkouts), (96, 4));
        // 90 full + 4 degraded + 1 checkout in time; the slow checkout is late.
        assert_eq!(s.answered, 95);
        assert!((s.answered_share() - 0.95).abs() < 1e-9);
        assert_eq!((s.full, s.degraded, s.accepted, s.late), (90, 4, 2, 1));
        assert!((s.degraded_share() - 4.0 / 94.0).abs() < 1e-9);
        assert_eq!((s.errors, s.timeouts), (3, 1));
        assert_eq!(s.errors_by_status.get(&Some(503)), Some(&2));
        assert_eq!(s.errors_by_status.get(&None), Some(&1));
        assert!((s.checkouts_per_second() - 0.2).abs() < 1e-9);
        assert!((s.checkouts_accepted_share() - 0.5).abs() < 1e-9);
        assert!((s.offered_rate() - 10.0).abs() < 1e-9);
        assert_eq!(s.p50, Some(0.05));
        // The 99th of 100 sorted latencies: 2.0 (the timeout is the 100th).
        assert_eq!(s.p99, Some(2.0));
        assert_eq!(s.checkout_p99, Some(5.0));
        assert_eq!(s.lag_max, Some(0.5));
        assert_eq!(s.lag_p99, Some(0.0));

        let empty = summarize(&[], 0.0, 10.0);
        assert_eq!(
            (empty.requests, empty.answered_share(), empty.p99),
            (0, 0.0, None)
        );
    }

    #[test]
    fn the_goal_needs_both_answers_in_time_and_checkout_goodput() {
        let plan = plan(); // reference: 0.2 × 100 = 20 checkouts/s
        let summary = |answered: u64, accepted: u64| Summary {
            window: 10.0,
            requests: 1_000,
            answered,
            accepted,
            ..Summary::default()
        };
        let good = check_goal(&summary(990, 180), &plan, Goal::ISSUE_13);
        assert!(good.met(), "{good:?}");
        assert!((good.checkout_goodput - 0.9).abs() < 1e-9);
        assert!((good.checkout_reference - 20.0).abs() < 1e-9);
        let slow = check_goal(&summary(989, 600), &plan, Goal::ISSUE_13);
        assert!(!slow.answered_ok && slow.goodput_ok && !slow.met());
        let starved = check_goal(&summary(1_000, 179), &plan, Goal::ISSUE_13);
        assert!(starved.answered_ok && !starved.goodput_ok);
        let nothing = check_goal(&Summary::default(), &plan, Goal::ISSUE_13);
        assert!(!nothing.met());
    }

    #[test]
    fn run_specs() {
        assert_eq!(
            RunSpec::parse("auto").map(|r| (r.degrade, r.partitioned)),
            Ok(("auto".into(), false))
        );
        let cut = RunSpec::parse(" Auto+Partition ").expect("valid");
        assert!(cut.partitioned);
        assert_eq!(cut.key(), "auto+partition");
        assert_eq!(cut.label(), "degrade=auto, inventory cut off");
        assert!(RunSpec::parse("off").is_ok_and(|r| !r.partitioned));
        assert!(RunSpec::parse("sometimes").is_err());
        assert!(RunSpec::parse("auto+latency").is_err());
    }
}
