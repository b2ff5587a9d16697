//! CAP on the Raft config service itself: which side of a partition keeps answering, and what.
//!
//! The config service is **CP**. Cut one node off from the other two with the chaos sidecar and:
//!
//! - the **majority** (two of three) goes on accepting writes — after electing a new leader if it lost the
//!   old one;
//! - the **minority** node refuses what needs a majority: a linearizable read there fails (a 503 such as
//!   `no_quorum`, or no answer at all), never a wrong value — consistency over availability;
//! - a **stale** read on the minority still answers at once, with the old value: the explicit, opt-in AP
//!   escape hatch;
//! - after the heal the minority catches up from the leader's log and its stale read shows the new value.
//!
//! The node cut off is the **current leader** (found with `GET /v1/cluster`), the more interesting case: the
//! other two must notice it is gone and elect a new leader before they accept the write, and
//! [`ConfigCapOutcome::majority_write_ms`] includes that election. The partition (`cap-config`, mode `hold`,
//! a pulled cable) cuts the Raft links `config-N->config-M` between the sides; the experiment itself talks to
//! every node on its own port, which no partition cuts. The partition is healed on every path, errors
//! included (and, best effort, when the future is dropped half-way).
//!
//! [`run`] drives the running local stack; [`rows`] formats its outcome (pure, unit-tested).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::POLL_INTERVAL;

/// Name of the chaos partition this experiment makes (and heals).
pub const PARTITION: &str = "cap-config";
/// Client time-out of the linearizable read on the minority node.
pub const MINORITY_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the majority may take to accept the write (election included).
pub const MAJORITY_WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// How long the minority node may take to show the new value after the heal.
pub const CATCH_UP_DEADLINE: Duration = Duration::from_secs(20);
/// How long the cluster may take, before the partition, to name a leader and replicate `before`.
const SETTLE_DEADLINE: Duration = Duration::from_secs(10);
/// Client time-out of the first write attempts on the majority: a follower that still believes in the cut-off
/// leader forwards to it, and that forward hangs (`hold`), so an attempt gives up quickly and the next one
/// finds the new leader. Later attempts wait longer (see [`write_attempt_timeout`]) in case commits are slow.
const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Client time-out of the other requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What one run of the experiment saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigCapOutcome {
    /// The node cut off, e.g. `config-1 (http://127.0.0.1:8091)`.
    pub minority_node: String,
    pub key: String,
    /// The value written before the partition.
    pub before: Value,
    /// The value written on the majority during the partition.
    pub after: Value,
    /// How long the majority took to accept the write, from the cut (a new leader's election included).
    pub majority_write_ms: f64,
    /// What a linearizable read on the minority node got during the partition, e.g. `503 no_quorum after
    /// 1.20 s` or `timed out after 2.00 s`.
    pub minority_linearizable: String,
    /// Whether that read failed (the CP answer); `false` would mean the minority served a linearizable read.
    pub minority_linearizable_failed: bool,
    /// The value a stale read on the minority node returned during the partition (`None`: it did not answer
    /// 200).
    pub minority_stale: Option<Value>,
    /// `minority_stale == Some(before)`.
    pub minority_stale_is_old: bool,
    /// After the heal, how long until the minority node's stale read returned `after` (`None`: not within
    /// [`CATCH_UP_DEADLINE`]).
    pub healed_catch_up_ms: Option<f64>,
}

/// The outcome as table rows (label, value), in the experiment's order.
pub fn rows(outcome: &ConfigCapOutcome) -> Vec<(String, String)> {
    let stale = match &outcome.minority_stale {
        Some(value) if outcome.minority_stale_is_old => {
            format!("{value} — the old value (available, not consistent)")
        }
        Some(value) if *value == outcome.after => {
            format!("{value} — already the new value (unexpected during a partition)")
        }
        Some(value) => format!("{value} — neither value written (unexpected)"),
        None => "no value (unexpected: stale reads should answer on any node)".to_owned(),
    };
    let linearizable = if outcome.minority_linearizable_failed {
        format!(
            "{} — refused (consistent, not available)",
            outcome.minority_linearizable
        )
    } else {
        format!(
            "{} — answered (unexpected on a minority)",
            outcome.minority_linearizable
        )
    };
    let catch_up = match outcome.healed_catch_up_ms {
        Some(ms) => format!("{} after the heal", secs(ms)),
        None => format!(
            "not within {} after the heal",
            secs(CATCH_UP_DEADLINE.as_secs_f64() * 1000.0)
        ),
    };
    vec![
        ("node cut off".to_owned(), outcome.minority_node.clone()),
        ("key".to_owned(), outcome.key.clone()),
        (
            "written before the cut".to_owned(),
            outcome.before.to_string(),
        ),
        (
            "written on the majority".to_owned(),
            format!(
                "{} — accepted {} after the cut",
                outcome.after,
                secs(outcome.majority_write_ms)
            ),
        ),
        ("linearizable read, minority".to_owned(), linearizable),
        ("stale read, minority".to_owned(), stale),
        ("minority shows the new value".to_owned(), catch_up),
    ]
}

/// Runs the experiment against the running stack: `config_urls` are the nodes' base URLs in order
/// (`config-1`, `config-2`, …, as the chaos sidecar names them), `chaos_url` the sidecar's admin API.
/// Each step is reported through `progress`, in plain words.
pub async fn run(
    config_urls: &[String],
    chaos_url: &str,
    progress: &dyn Fn(&str),
) -> anyhow::Result<ConfigCapOutcome> {
    if config_urls.len() < 3 {
        bail!(
            "the experiment needs at least three config nodes, got {}: {config_urls:?}",
            config_urls.len()
        );
    }
    let nodes: Vec<ConfigNode> = config_urls
        .iter()
        .enumerate()
        .map(|(i, url)| ConfigNode {
            name: format!("config-{}", i + 1),
            url: url.trim_end_matches('/').to_owned(),
        })
        .collect();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let chaos = Chaos {
        http: http.clone(),
        url: chaos_url.trim_end_matches('/').to_owned(),
        token: std::env::var("CHAOS_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };

    if chaos.partition_exists().await? {
        chaos.heal().await?;
        progress(&format!(
            "healed a partition `{PARTITION}` left over from an earlier run"
        ));
    }

    // The leader is the node cut off: the majority must then elect a new one.
    let (minority, leader_id, term) = find_leader(&http, &nodes).await?;
    let majority: Vec<&ConfigNode> = nodes.iter().filter(|n| n.name != minority.name).collect();
    progress(&format!(
        "{} leads (node {leader_id}, term {term}); it is the node that will be cut off, so {} must elect a new leader",
        minority.name,
        names(&majority)
    ));

    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let key = format!("distlab/scenario/cap-probe-{millis}");
    let before = json!({"phase": "before the partition", "run": millis.to_string()});
    let after =
        json!({"phase": "during the partition, on the majority", "run": millis.to_string()});

    let started = Instant::now();
    let deadline = started + SETTLE_DEADLINE;
    loop {
        match put(&http, minority, &key, &before, REQUEST_TIMEOUT).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                progress(&format!("writing `{key}` not accepted yet: {error:#}"));
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(error) => {
                return Err(error.context(format!(
                    "writing the first value before the partition (for {SETTLE_DEADLINE:?})"
                )));
            }
        }
    }
    progress(&format!(
        "wrote {before} to `{key}` through {}",
        minority.name
    ));
    poll_stale_until(&http, minority, &key, &before, deadline)
        .await
        .with_context(|| {
            format!(
                "{} did not show the first value before the partition",
                minority.name
            )
        })?;
    progress(&format!("{} has it (stale read)", minority.name));

    let links = chaos.partition(minority, &majority).await?;
    let cut_at = Instant::now();
    progress(&format!(
        "{} cut off from {} ({} Raft links held: {})",
        minority.name,
        names(&majority),
        links.len(),
        links.join(", ")
    ));
    let mut guard = HealGuard {
        chaos: Some(chaos.clone()),
    };

    let during = during_partition(
        &http, minority, &majority, &key, &before, &after, cut_at, progress,
    )
    .await;
    guard.chaos = None;
    let healed = chaos.heal().await;
    let healed_at = Instant::now();
    let during = match (during, healed) {
        (Ok(during), Ok(())) => during,
        (Ok(_), Err(heal)) => return Err(heal),
        (Err(error), Ok(())) => return Err(error),
        (Err(error), Err(heal)) => {
            return Err(error.context(format!(
                "and healing the partition `{PARTITION}` failed too: {heal:#} — heal it with \
                 `curl -X DELETE {}/partitions/{PARTITION}`",
                chaos.url
            )));
        }
    };
    progress(&format!(
        "partition healed: {} can reach {} again",
        minority.name,
        names(&majority)
    ));

    let healed_catch_up_ms = match poll_stale_until(
        &http,
        minority,
        &key,
        &after,
        healed_at + CATCH_UP_DEADLINE,
    )
    .await
    {
        Ok(()) => {
            let ms = healed_at.elapsed().as_secs_f64() * 1000.0;
            progress(&format!(
                "{} shows the new value {} after the heal",
                minority.name,
                secs(ms)
            ));
            Some(ms)
        }
        Err(error) => {
            progress(&format!(
                "{} still does not show the new value {} after the heal: {error:#}",
                minority.name,
                secs(CATCH_UP_DEADLINE.as_secs_f64() * 1000.0)
            ));
            None
        }
    };

    Ok(ConfigCapOutcome {
        minority_node: format!("{} ({})", minority.name, minority.url),
        key,
        minority_stale_is_old: during.stale.as_ref() == Some(&before),
        before,
        after,
        majority_write_ms: during.majority_write_ms,
        minority_linearizable: during.linearizable,
        minority_linearizable_failed: during.linearizable_failed,
        minority_stale: during.stale,
        healed_catch_up_ms,
    })
}

/// What happened while the partition was in force.
struct During {
    majority_write_ms: f64,
    linearizable: String,
    linearizable_failed: bool,
    stale: Option<Value>,
}

/// The steps under the partition; the caller heals afterwards, whatever this returns.
#[allow(clippy::too_many_arguments)]
async fn during_partition(
    http: &reqwest::Client,
    minority: &ConfigNode,
    majority: &[&ConfigNode],
    key: &str,
    before: &Value,
    after: &Value,
    cut_at: Instant,
    progress: &dyn Fn(&str),
) -> anyhow::Result<During> {
    // The write, through the majority's nodes in turn, until one accepts it.
    let deadline = cut_at + MAJORITY_WRITE_DEADLINE;
    let mut last_reported = String::new();
    let mut attempt = 0usize;
    let (via, written) = loop {
        let node = majority[attempt % majority.len()];
        attempt += 1;
        match put(http, node, key, after, write_attempt_timeout(attempt)).await {
            Ok(written) => break (node, written),
            Err(error) => {
                let error = format!("{error:#}");
                // One line per kind of refusal, not one per attempt.
                let kind = error_kind(&error);
                if kind != last_reported {
                    progress(&format!(
                        "the majority has not accepted the write yet ({:.2} s after the cut): {error}",
                        cut_at.elapsed().as_secs_f64()
                    ));
                    last_reported = kind;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the majority ({}) did not accept a write of `{key}` within {MAJORITY_WRITE_DEADLINE:?} of the cut; last error: {error}",
                        names(majority)
                    );
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    };
    let majority_write_ms = cut_at.elapsed().as_secs_f64() * 1000.0;
    let leader = match written.forwarded_to {
        Some(id) => format!("node {id}, through {}", via.name),
        None => via.name.clone(),
    };
    progress(&format!(
        "the majority accepted {after} {} after the cut (revision {}; leader {leader}, {attempt} attempt(s))",
        secs(majority_write_ms),
        written.revision
    ));

    // A linearizable read on the minority node: the CP answer is a refusal, or no answer.
    let url = format!("{}/v1/kv/{key}?consistency=linearizable", minority.url);
    let asked = Instant::now();
    let answer = http.get(&url).timeout(MINORITY_READ_TIMEOUT).send().await;
    let took = asked.elapsed().as_secs_f64() * 1000.0;
    let (linearizable, linearizable_failed) = match answer {
        Err(error) if error.is_timeout() => (format!("timed out after {}", secs(took)), true),
        Err(error) => (format!("failed after {}: {error}", secs(took)), true),
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let described = describe_answer(status.as_u16(), &body, took);
            (described, !status.is_success())
        }
    };
    progress(&format!(
        "linearizable read on {}: {linearizable}",
        minority.name
    ));

    // A stale read on the minority node: it answers from its own copy — the old value.
    let url = format!("{}/v1/kv/{key}?consistency=stale", minority.url);
    let stale = match http.get(&url).timeout(MINORITY_READ_TIMEOUT).send().await {
        Err(error) => {
            progress(&format!(
                "stale read on {} got no answer: {error}",
                minority.name
            ));
            None
        }
        Ok(response) if response.status().is_success() => {
            let body: Value = response.json().await.with_context(|| {
                format!(
                    "the stale read on {} answered 200 but not JSON",
                    minority.name
                )
            })?;
            let value = body.get("value").cloned();
            let verdict = match &value {
                Some(v) if v == before => "the old value",
                Some(v) if v == after => "already the new value",
                _ => "neither value written",
            };
            progress(&format!(
                "stale read on {}: {} ({verdict}, revision {})",
                minority.name,
                value
                    .as_ref()
                    .map_or_else(|| "no value".to_owned(), Value::to_string),
                body.get("revision").unwrap_or(&Value::Null)
            ));
            value
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            progress(&format!(
                "stale read on {}: {}",
                minority.name,
                describe_answer(status, &body, 0.0)
            ));
            None
        }
    };

    Ok(During {
        majority_write_ms,
        linearizable,
        linearizable_failed,
        stale,
    })
}

/// One config node as the sidecar names it.
#[derive(Debug, Clone)]
struct ConfigNode {
    name: String,
    url: String,
}

/// An accepted write.
#[derive(Debug)]
struct Written {
    revision: u64,
    /// The leader a follower forwarded the write to (`x-distlab-forwarded-to`).
    forwarded_to: Option<String>,
}

/// `PUT /v1/kv/{key}` on `node`; an error names the node, the status and the body.
async fn put(
    http: &reqwest::Client,
    node: &ConfigNode,
    key: &str,
    value: &Value,
    timeout: Duration,
) -> anyhow::Result<Written> {
    let url = format!("{}/v1/kv/{key}", node.url);
    let asked = Instant::now();
    let response = http
        .put(&url)
        .timeout(timeout)
        .json(&json!({ "value": value }))
        .send()
        .await
        .map_err(|error| {
            if error.is_timeout() {
                anyhow!(
                    "PUT {url} ({}): timed out after {}",
                    node.name,
                    secs(asked.elapsed().as_secs_f64() * 1000.0)
                )
            } else {
                anyhow!("PUT {url} ({}): {error}", node.name)
            }
        })?;
    let status = response.status();
    let forwarded_to = response
        .headers()
        .get("x-distlab-forwarded-to")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "PUT {url} ({}): {} — {body}",
            node.name,
            describe_answer(
                status.as_u16(),
                &body,
                asked.elapsed().as_secs_f64() * 1000.0
            )
        );
    }
    let written: Value = serde_json::from_str(&body).with_context(|| {
        format!(
            "PUT {url} ({}) answered {status} but not JSON: {body}",
            node.name
        )
    })?;
    Ok(Written {
        revision: written
            .get("revision")
            .and_then(Value::as_u64)
            .unwrap_or_default(),
        forwarded_to,
    })
}

/// Polls a stale read of `key` on `node` until it returns `expected`, or fails at `deadline` saying what the
/// node last answered.
async fn poll_stale_until(
    http: &reqwest::Client,
    node: &ConfigNode,
    key: &str,
    expected: &Value,
    deadline: Instant,
) -> anyhow::Result<()> {
    let url = format!("{}/v1/kv/{key}?consistency=stale", node.url);
    loop {
        let last = match http.get(&url).timeout(REQUEST_TIMEOUT).send().await {
            Err(error) => format!("no answer: {error}"),
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if status == 200 {
                    let value = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|b| b.get("value").cloned());
                    if value.as_ref() == Some(expected) {
                        return Ok(());
                    }
                }
                format!("{status} {body}")
            }
        };
        if Instant::now() >= deadline {
            bail!(
                "GET {url} ({}) did not return {expected} in time; it last answered {last}",
                node.name
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The node every node agrees leads (polled until one is named), with its id and term.
async fn find_leader<'a>(
    http: &reqwest::Client,
    nodes: &'a [ConfigNode],
) -> anyhow::Result<(&'a ConfigNode, u64, u64)> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let mut last = Vec::new();
        for node in nodes {
            let url = format!("{}/v1/cluster", node.url);
            match http.get(&url).send().await {
                Ok(response) if response.status().is_success() => {
                    let status: Value = response.json().await.with_context(|| {
                        format!("GET {url} ({}) answered but not JSON", node.name)
                    })?;
                    let state = status.get("state").and_then(Value::as_str).unwrap_or("?");
                    if state == "leader" {
                        let id = status
                            .get("node_id")
                            .and_then(Value::as_u64)
                            .unwrap_or_default();
                        let term = status
                            .get("term")
                            .and_then(Value::as_u64)
                            .unwrap_or_default();
                        return Ok((node, id, term));
                    }
                    // A follower names the leader: take it from its member list.
                    if let Some(found) = leader_from_status(&status, nodes) {
                        let term = status
                            .get("term")
                            .and_then(Value::as_u64)
                            .unwrap_or_default();
                        let id = status
                            .get("leader")
                            .and_then(Value::as_u64)
                            .unwrap_or_default();
                        return Ok((&nodes[found], id, term));
                    }
                    last.push(format!("{}: {state}, no leader known", node.name));
                }
                Ok(response) => last.push(format!("{}: {}", node.name, response.status())),
                Err(error) => last.push(format!("{}: {error}", node.name)),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no config node named a leader within {SETTLE_DEADLINE:?} ({}); is the stack up (`cargo xtask up`)?",
                last.join("; ")
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Index in `nodes` of the leader a `GET /v1/cluster` answer names, matched by its address in `members`.
fn leader_from_status(status: &Value, nodes: &[ConfigNode]) -> Option<usize> {
    let leader = status.get("leader").and_then(Value::as_u64)?;
    let addr = status
        .get("members")
        .and_then(|m| m.get(leader.to_string()))
        .and_then(Value::as_str)?;
    nodes.iter().position(|n| crate::host_port(&n.url) == addr)
}

/// The chaos sidecar's partition API.
#[derive(Debug, Clone)]
struct Chaos {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Chaos {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn partition_exists(&self) -> anyhow::Result<bool> {
        let path = format!("/partitions/{PARTITION}");
        let response = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .with_context(|| {
                format!(
                    "the chaos sidecar at {} does not answer; is the stack up (`cargo xtask up`)?",
                    self.url
                )
            })?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => {
                let body = response.text().await.unwrap_or_default();
                bail!("GET {}{path}: {status} {body}", self.url)
            }
        }
    }

    /// Cuts `minority` off from `majority` (mode `hold`); returns the links cut.
    async fn partition(
        &self,
        minority: &ConfigNode,
        majority: &[&ConfigNode],
    ) -> anyhow::Result<Vec<String>> {
        let sides = json!([
            [minority.name],
            majority.iter().map(|n| n.name.clone()).collect::<Vec<_>>()
        ]);
        let response = self
            .request(reqwest::Method::POST, "/partitions")
            .json(&json!({"name": PARTITION, "sides": sides, "mode": "hold"}))
            .send()
            .await
            .with_context(|| format!("POST {}/partitions: no answer", self.url))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!(
                "POST {}/partitions (cut {} off from {}): {status} {body}",
                self.url,
                minority.name,
                names(majority)
            );
        }
        let view: Value = serde_json::from_str(&body).with_context(|| {
            format!(
                "POST {}/partitions answered 201 but not JSON: {body}",
                self.url
            )
        })?;
        let links: Vec<String> = view
            .get("links")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if links.is_empty() {
            // Nothing cut: the experiment would show nothing. Undo and say why.
            let _ = self.heal().await;
            bail!(
                "the partition cut no link between {} and {} (answer: {body}); are the config nodes' \
                 Raft links proxied by the sidecar?",
                minority.name,
                names(majority)
            );
        }
        Ok(links)
    }

    /// `DELETE /partitions/cap-config`; a partition already gone is fine.
    async fn heal(&self) -> anyhow::Result<()> {
        let path = format!("/partitions/{PARTITION}");
        let response = self
            .request(reqwest::Method::DELETE, &path)
            .send()
            .await
            .with_context(|| format!("DELETE {}{path}: no answer", self.url))?;
        match response.status().as_u16() {
            204 | 200 | 404 => Ok(()),
            status => {
                let body = response.text().await.unwrap_or_default();
                bail!("DELETE {}{path}: {status} {body}", self.url)
            }
        }
    }
}

/// Heals the partition if the experiment's future is dropped (or panics) while it is in force — best effort,
/// on a task of its own. Disarmed (`chaos = None`) when [`run`] heals it itself.
struct HealGuard {
    chaos: Option<Chaos>,
}

impl Drop for HealGuard {
    fn drop(&mut self) {
        if let Some(chaos) = self.chaos.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = chaos.heal().await;
            });
        }
    }
}

/// `503 no_quorum after 1.20 s` — the status, the error code of the shared error body if there is one,
/// and how long the answer took (left out when `ms` is 0).
fn describe_answer(status: u16, body: &str, ms: f64) -> String {
    let code = error_code(body);
    let mut text = status.to_string();
    if let Some(code) = code {
        text.push(' ');
        text.push_str(&code);
    }
    if ms > 0.0 {
        text.push_str(" after ");
        text.push_str(&secs(ms));
    }
    text
}

/// The `error.code` of distlab's error body.
fn error_code(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .get("error")?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

/// What kind of failure an error message is (its status and code, or "timed out"), to report each once.
fn error_kind(error: &str) -> String {
    if error.contains("timed out") {
        return "timed out".to_owned();
    }
    // `PUT url (node): 503 not_leader after … — body`: the part between "): " and " after".
    error
        .split_once("): ")
        .map(|(_, rest)| rest.split(" after").next().unwrap_or(rest))
        .unwrap_or(error)
        .to_owned()
}

/// The client time-out of write attempt `n` (from 1): 0.5 s for the first four, then 1 s, … up to 4 s.
fn write_attempt_timeout(n: usize) -> Duration {
    let factor = u32::try_from(1 + n.saturating_sub(1) / 4).unwrap_or(u32::MAX);
    WRITE_ATTEMPT_TIMEOUT
        .saturating_mul(factor)
        .min(Duration::from_secs(4))
}

fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

fn names(nodes: &[&ConfigNode]) -> String {
    match nodes {
        [] => String::new(),
        [one] => one.name.clone(),
        [init @ .., last] => format!(
            "{} and {}",
            init.iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            last.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> ConfigCapOutcome {
        ConfigCapOutcome {
            minority_node: "config-2 (http://127.0.0.1:8092)".to_owned(),
            key: "distlab/scenario/cap-probe-1".to_owned(),
            before: json!("old"),
            after: json!("new"),
            majority_write_ms: 612.0,
            minority_linearizable: "503 no_quorum after 1.00 s".to_owned(),
            minority_linearizable_failed: true,
            minority_stale: Some(json!("old")),
            minority_stale_is_old: true,
            healed_catch_up_ms: Some(150.0),
        }
    }

    #[test]
    fn rows_tell_the_cp_story() {
        let rows = rows(&outcome());
        let get = |label: &str| {
            rows.iter()
                .find(|(l, _)| l == label)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(rows.len(), 7);
        assert_eq!(get("node cut off"), "config-2 (http://127.0.0.1:8092)");
        assert_eq!(get("written before the cut"), "\"old\"");
        assert_eq!(
            get("written on the majority"),
            "\"new\" — accepted 0.61 s after the cut"
        );
        assert_eq!(
            get("linearizable read, minority"),
            "503 no_quorum after 1.00 s — refused (consistent, not available)"
        );
        assert_eq!(
            get("stale read, minority"),
            "\"old\" — the old value (available, not consistent)"
        );
        assert_eq!(get("minority shows the new value"), "0.15 s after the heal");
    }

    #[test]
    fn rows_flag_what_should_not_happen() {
        let mut o = outcome();
        o.minority_linearizable = "200 after 0.01 s".to_owned();
        o.minority_linearizable_failed = false;
        o.minority_stale = None;
        o.minority_stale_is_old = false;
        o.healed_catch_up_ms = None;
        let rows = rows(&o);
        assert!(rows[4].1.contains("unexpected"), "{rows:?}");
        assert!(rows[5].1.contains("unexpected"), "{rows:?}");
        assert_eq!(rows[6].1, "not within 20.00 s after the heal");
        o.minority_stale = Some(json!("new"));
        assert!(super::rows(&o)[5].1.contains("already the new value"));
    }

    #[test]
    fn answers_are_described_by_status_code_and_time() {
        let body = r#"{"error":{"code":"no_quorum","message":"no majority"}}"#;
        assert_eq!(
            describe_answer(503, body, 1234.0),
            "503 no_quorum after 1.23 s"
        );
        assert_eq!(describe_answer(502, "bad gateway", 0.0), "502");
        assert_eq!(error_code(body).as_deref(), Some("no_quorum"));
        assert_eq!(error_code("{}"), None);
    }

    #[test]
    fn write_attempts_wait_longer_as_they_fail() {
        assert_eq!(write_attempt_timeout(1), Duration::from_millis(500));
        assert_eq!(write_attempt_timeout(4), Duration::from_millis(500));
        assert_eq!(write_attempt_timeout(5), Duration::from_secs(1));
        assert_eq!(write_attempt_timeout(1000), Duration::from_secs(4));
    }

    #[test]
    fn failures_are_grouped_by_kind() {
        assert_eq!(
            error_kind("PUT http://x/v1/kv/k (config-1): 503 not_leader after 0.01 s — {…}"),
            "503 not_leader"
        );
        assert_eq!(
            error_kind("PUT http://x/v1/kv/k (config-1): timed out after 2.00 s"),
            "timed out"
        );
    }

    #[test]
    fn the_leader_is_found_by_its_address() {
        let nodes: Vec<ConfigNode> = (1..=3)
            .map(|i| ConfigNode {
                name: format!("config-{i}"),
                url: format!("http://127.0.0.1:809{i}"),
            })
            .collect();
        let status = json!({"state": "follower", "leader": 3, "term": 4,
            "members": {"1": "127.0.0.1:8091", "2": "127.0.0.1:8092", "3": "127.0.0.1:8093"}});
        assert_eq!(leader_from_status(&status, &nodes), Some(2));
        assert_eq!(leader_from_status(&json!({"leader": null}), &nodes), None);
        let refs: Vec<&ConfigNode> = nodes.iter().collect();
        assert_eq!(names(&refs), "config-1, config-2 and config-3");
        assert_eq!(names(&refs[1..]), "config-2 and config-3");
    }
}
