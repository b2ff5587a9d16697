//! `cargo xtask observability check`: the Prometheus configuration and the Grafana dashboards of
//! `deploy/observability/` checked against the tools and against the running local stack.
//!
//! 1. `promtool check config deploy/observability/prometheus.yml` (promtool comes with Debian's
//!    `prometheus` package, installed when missing).
//! 2. Every dashboard of `deploy/observability/grafana/dashboards/` parses, has a uid and a title, and its
//!    panels use the data source of the provisioning (uid `prometheus`).
//! 3. Every metric name of every PromQL expression of those dashboards is exported by some service of the
//!    running stack: each service's `/metrics` is read on 127.0.0.1 and its `# TYPE` lines collected
//!    (`http_request_duration_seconds_bucket` counts as known when `http_request_duration_seconds` is a
//!    histogram). A name no service exports fails the check, with the panels that use it.
//!
//! The `metrics` crate exports a series only once it was touched, so before comparing, the check sends a
//! little traffic that changes nothing: `/readyz` of every service (HTTP metrics, the 2PC participants'
//! prepared-transaction gauges), the storefront's catalog page (the gateway's page, concurrency and
//! breaker metrics) and one acquire and release of a lock of its own (`observability-check`, pg backend).
//! Gauges that services refresh on their own (outbox, consumer lag, Raft, 2PC recovery) appear within
//! seconds of start; the check polls until every name is there or [`DEADLINE`] has passed. Counters of rare
//! events that the dashboards show (load shed, breaker refusals, chaos faults) are registered at zero by the
//! services when they start. Dashboards use no metric that only an order would create.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::install;
use crate::stack::block_on;

/// `cargo xtask observability …`.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// promtool on the Prometheus configuration; the dashboards' shape; every metric the dashboards use
    /// against the metrics the running stack exports.
    Check,
}

/// Every service of the local stack that serves `/metrics`, with its port (config: its three nodes).
pub const SERVICES: &[(&str, u16)] = &[
    ("gateway", 8080),
    ("order", 8081),
    ("inventory", 8082),
    ("coordinator", 8083),
    ("lock", 8084),
    ("config-1", 8091),
    ("config-2", 8092),
    ("config-3", 8093),
    ("chaos", 8474),
];

/// The data source uid of `grafana/provisioning/datasources/prometheus.yml`.
pub const DATASOURCE_UID: &str = "prometheus";

/// How long the check waits for the stack to export every metric the dashboards use.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs the whole check (see the module documentation).
pub fn check(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("deploy/observability");
    promtool_check(&dir.join("prometheus.yml"))?;
    let dashboards = load_dashboards(&dir.join("grafana/dashboards"))?;
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, dashboard) in &dashboards {
        for (panel, expr) in expressions(dashboard) {
            for name in metric_names(&expr) {
                uses.entry(name)
                    .or_default()
                    .insert(format!("{file}: {panel}"));
            }
        }
    }
    println!(
        "==> {} dashboard(s) use {} metric names; reading /metrics of {} services",
        dashboards.len(),
        uses.len(),
        SERVICES.len()
    );
    let used: BTreeSet<String> = uses.keys().cloned().collect();
    let missing = block_on(wait_for_metrics(&used))?;
    if missing.is_empty() {
        println!("==> every metric of the dashboards is exported by the stack");
        return Ok(());
    }
    let mut report = String::new();
    for name in &missing {
        let panels: Vec<&str> = uses[name].iter().map(String::as_str).collect();
        report.push_str(&format!("\n  {name}  (used by {})", panels.join("; ")));
    }
    bail!(
        "{} metric name(s) used by the dashboards are exported by no service of the running stack:{report}",
        missing.len()
    )
}

/// `promtool check config`, installing promtool first if need be.
fn promtool_check(config: &Path) -> anyhow::Result<()> {
    install::ensure_package("prometheus")?;
    println!("==> promtool check config {}", config.display());
    install::run(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(config),
    )
    .context("promtool rejects the Prometheus configuration")
}

/// Every `*.json` of `dir`, parsed and checked for a uid, a title and the provisioned data source.
fn load_dashboards(dir: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let mut dashboards = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let file = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path)?;
        let dashboard: Value =
            serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))?;
        let problems = dashboard_problems(&dashboard);
        anyhow::ensure!(problems.is_empty(), "{file}: {}", problems.join("; "));
        dashboards.push((file, dashboard));
    }
    anyhow::ensure!(!dashboards.is_empty(), "no dashboard in {}", dir.display());
    Ok(dashboards)
}

/// What is wrong with a dashboard's shape: no uid or title, a panel id used twice, a panel or query on
/// another data source than the provisioned one.
pub fn dashboard_problems(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for field in ["uid", "title"] {
        if dashboard[field].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {field}"));
        }
    }
    let mut ids = BTreeSet::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        if let Some(id) = panel["id"].as_u64()
            && !ids.insert(id)
        {
            problems.push(format!("panel id {id} used twice"));
        }
        let sources = std::iter::once(&panel["datasource"]).chain(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        );
        for source in sources {
            if !source.is_null() && source["uid"] != DATASOURCE_UID {
                problems.push(format!(
                    "panel \"{title}\" uses data source {source}, not uid {DATASOURCE_UID}"
                ));
            }
        }
    }
    problems
}

/// Every panel of a dashboard, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Every PromQL expression of a dashboard's panels, with the panel's title.
pub fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .map(move |expr| (title.clone(), expr.to_owned()))
        })
        .collect()
}

/// PromQL's aggregation operators, keywords and functions: never metric names. Any other identifier
/// followed by `(` is taken for a function too.
const NOT_METRICS: &[&str] = &[
    // aggregation operators (may be followed by `by (...)` before their parenthesis)
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
    // keywords and binary operators
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names, not of expressions.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects, as written (a histogram's `_bucket` included). Skips
/// label matchers (`{...}`), ranges and subqueries (`[...]`), label lists (`by (le)`), strings, numbers,
/// Grafana variables (`$__rate_interval`), functions and keywords.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After a keyword of LABEL_LISTS, the next parenthesis holds label names.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_to(&chars, i, '}');
        } else if c == '[' {
            i = skip_to(&chars, i, ']');
        } else if c == '(' && label_list_next {
            label_list_next = false;
            i = skip_to(&chars, i, ')');
        } else if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_to(&chars, i, '}');
            } else {
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number (1, 0.95, 1e3, 0x1F) or a duration (5m): never a name.
            while i < chars.len() && (is_ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // PromQL's keywords are case-insensitive (`SUM`, `Inf`); metric names are not.
            let lower = word.to_ascii_lowercase();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            // `group_left` may come without a list: a word after it ends the wait.
            label_list_next = LABEL_LISTS.contains(&lower.as_str());
            if label_list_next || NOT_METRICS.contains(&lower.as_str()) || next == Some(&'(') {
                // An aggregation, keyword or function.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string that starts at `start` (backslash escapes honoured, except in raw strings).
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
        } else if chars[i] == quote {
            return i + 1;
        } else {
            i += 1;
        }
    }
    i
}

/// The index after the `close` that ends the group opened at `start`, skipping strings inside (a label
/// value may hold any character).
fn skip_to(chars: &[char], start: usize, close: char) -> usize {
    let open = chars[start];
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

/// The metric names of a Prometheus text exposition, with their types, from its `# TYPE` lines.
pub fn exported_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Those of `used` that `exported` lacks. A name ending in `_bucket`, `_sum` or `_count` is known when
/// its stem is an exported histogram (or a summary, for `_sum` and `_count`).
pub fn unknown(used: &BTreeSet<String>, exported: &BTreeMap<String, String>) -> Vec<String> {
    let known = |name: &str| {
        if exported.contains_key(name) {
            return true;
        }
        [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ]
        .iter()
        .any(|(suffix, types)| {
            name.strip_suffix(suffix)
                .and_then(|stem| exported.get(stem))
                .is_some_and(|t| types.contains(&t.as_str()))
        })
    };
    used.iter().filter(|n| !known(n)).cloned().collect()
}

/// Reads every service's `/metrics` once (which also creates their `http_requests_total` series), sends the
/// warm-up traffic, then reads them again until none of `used` is missing or [`DEADLINE`] has passed;
/// returns what is still missing. Fails at once, naming them, when services do not answer.
async fn wait_for_metrics(used: &BTreeSet<String>) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    read_all(&http).await?;
    warm_up(&http).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let exported = read_all(&http).await?;
        let missing = unknown(used, &exported);
        if missing.is_empty() || Instant::now() >= deadline {
            println!(
                "==> the stack exports {} metric names; {} of the dashboards' {} missing",
                exported.len(),
                missing.len(),
                used.len()
            );
            return Ok(missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The metric names and types every service exports now; fails naming the services that do not answer.
async fn read_all(http: &reqwest::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let mut exported = BTreeMap::new();
    let mut down = Vec::new();
    for (service, port) in SERVICES {
        let url = format!("http://127.0.0.1:{port}/metrics");
        match async {
            http.get(&url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        }
        .await
        {
            Ok(text) => exported.extend(exported_types(&text)),
            Err(error) => down.push(format!("{service} (:{port}: {})", root_cause(&error))),
        }
    }
    anyhow::ensure!(
        down.is_empty(),
        "no metrics from {}; is the stack up (`cargo xtask up`)?",
        down.join(", ")
    );
    Ok(exported)
}

/// The innermost cause of an error ("Connection refused"), without the URL every outer layer repeats.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Traffic that touches the lazily created series and changes nothing (see the module documentation).
/// Failures are printed, not fatal: a metric that stays missing is what the check reports.
async fn warm_up(http: &reqwest::Client) {
    for (service, port) in SERVICES {
        if let Err(error) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            println!("    warm-up: {service} /readyz: {error}");
        }
    }
    if let Err(error) = http.get("http://127.0.0.1:8080/").send().await {
        println!("    warm-up: the storefront page: {error}");
    }
    if let Err(error) = lock_round_trip(http).await {
        println!("    warm-up: a lock acquire and release: {error:#}");
    }
}

/// Acquires and releases the lock `observability-check` on the pg backend.
async fn lock_round_trip(http: &reqwest::Client) -> anyhow::Result<()> {
    let base = "http://127.0.0.1:8084/locks/observability-check";
    let lease: Value = http
        .post(format!("{base}/acquire"))
        .json(&json!({"backend": "pg", "owner": "xtask-observability", "ttl_ms": 10_000}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let lease_id = lease["lease_id"]
        .as_str()
        .context("the acquire answer has no lease_id")?;
    http.post(format!("{base}/release"))
        .json(&json!({"backend": "pg", "lease_id": lease_id}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn a_rate_of_a_selector_names_its_metric_only() {
        assert_eq!(
            names(r#"sum by (service) (rate(http_requests_total{route!="/metrics"}[1m]))"#),
            ["http_requests_total"]
        );
    }

    #[test]
    fn label_lists_matchers_and_numbers_are_not_metrics() {
        assert_eq!(
            names(
                "histogram_quantile(0.95, sum by (service, le) \
                 (rate(http_request_duration_seconds_bucket{status=~\"5..\", le!=\"+Inf\"}[5m])))"
            ),
            ["http_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names("sum without (instance) (up) > bool 1e3 offset 5m"),
            ["up"]
        );
    }

    #[test]
    fn both_sides_of_a_binary_operator_count_and_keywords_do_not() {
        assert_eq!(
            names(
                "sum(rate(a_total{x=\"{not_a_metric}\"}[1m])) / on (service) group_left (route) \
                 sum(b_total) or vector(0) unless c"
            ),
            ["a_total", "b_total", "c"]
        );
        assert_eq!(
            names("scalar(max(raft_commit_index)) - max by (instance) (raft_applied_index)"),
            ["raft_applied_index", "raft_commit_index"]
        );
    }

    #[test]
    fn strings_variables_subqueries_and_recording_rule_names() {
        assert_eq!(
            names(
                "label_replace(job:up:sum, \"dst\", \"$1\", \"src\", \"(.*)\") + \
                 max_over_time(x_seconds[$__rate_interval:1m]) * ${factor}"
            ),
            ["job:up:sum", "x_seconds"]
        );
        assert_eq!(names("topk(10, foo) == 1"), ["foo"]);
        assert_eq!(
            names("SUM(a) + Inf + b * on(x) group_left c"),
            ["a", "b", "c"]
        );
        assert!(names("time() - 3").is_empty());
    }

    #[test]
    fn histogram_series_are_known_by_their_stem() {
        let exported = exported_types(
            "# HELP x\n# TYPE lock_operation_seconds histogram\nlock_operation_seconds_bucket{le=\"1\"} 0\n\
             # TYPE outbox_pending_messages gauge\n# TYPE odd_count gauge\n",
        );
        assert_eq!(exported["lock_operation_seconds"], "histogram");
        let used: BTreeSet<String> = [
            "lock_operation_seconds_bucket",
            "lock_operation_seconds_count",
            "outbox_pending_messages",
            "outbox_pending_messages_sum",
            "odd_count",
            "raft_term",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            unknown(&used, &exported),
            ["outbox_pending_messages_sum", "raft_term"]
        );
    }

    #[test]
    fn the_overview_dashboard_is_well_formed_and_names_real_looking_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/observability/grafana/dashboards/distlab-overview.json"
        );
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("JSON");
        assert_eq!(dashboard_problems(&dashboard), Vec::<String>::new());
        let exprs = expressions(&dashboard);
        assert!(exprs.len() > 20, "{exprs:?}");
        for (panel, expr) in exprs {
            let names = metric_names(&expr);
            assert!(!names.is_empty(), "{panel}: {expr}");
            for name in names {
                assert!(
                    name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{panel}: {name} in {expr}"
                );
            }
        }
    }

    #[test]
    fn a_panel_on_another_data_source_is_a_problem() {
        let dashboard = json!({
            "uid": "x", "title": "x",
            "panels": [{"type": "row", "id": 1, "panels": [
                {"id": 2, "title": "p", "datasource": {"uid": "loki"}, "targets": []},
                {"id": 2, "title": "q", "targets": [{"datasource": {"uid": "prometheus"}, "expr": "up"}]}
            ]}]
        });
        assert_eq!(
            dashboard_problems(&dashboard),
            [
                "panel \"p\" uses data source {\"uid\":\"loki\"}, not uid prometheus",
                "panel id 2 used twice"
            ]
        );
    }
}
