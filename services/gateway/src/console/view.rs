//! What the console shows, made from the sources' answers: pure functions, unit-tested.

use serde_json::{Value, json};

/// One sample of a Prometheus text exposition: `name{label="value",…} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus text exposition; comments, blank lines and lines that do not parse are
/// skipped (a timestamp after the value is ignored).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(char::is_whitespace)?;
            (&line[..space], Vec::new(), &line[space..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y \"quoted\""` (the exposition's escapes: `\\`, `\"`, `\n`).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        }
        labels.push((name.trim().to_owned(), value));
    }
}

/// The sum of every sample named `name` whose labels include each of `labels` (0 when there is none: a
/// counter appears only once touched).
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(n, v)| s.label(n) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// A count as a JSON integer (metrics are floats; these are whole numbers).
fn count(value: f64) -> Value {
    // A count is never negative nor beyond u64 in practice; saturate rather than wrap.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = value.max(0.0).round() as u64;
    json!(whole)
}

/// The order flow from the order service's `/metrics` (counters since the service started) and its list of
/// PENDING orders (`pending`, `pending_more` when there are more than the page held).
pub fn order_flow(samples: &[Sample], pending: usize, pending_more: bool) -> Value {
    let placed = sum(samples, "orders_placed_total", &[]);
    let two_pc_committed = sum(samples, "orders_placed_total", &[("mode", "2pc")]);
    let confirmed = sum(
        samples,
        "orders_finalized_total",
        &[("status", "CONFIRMED")],
    );
    let rejected = sum(samples, "orders_finalized_total", &[("status", "REJECTED")])
        + sum(samples, "orders_rejected_total", &[]);
    let cap_mode = samples
        .iter()
        .find(|s| s.name == "order_cap_mode" && s.value >= 1.0)
        .and_then(|s| s.label("mode"))
        .map(str::to_owned);
    json!({
        "accepted": count(placed),
        "confirmed": count(confirmed + two_pc_committed),
        "rejected": count(rejected),
        "pending": pending,
        "pending_more": pending_more,
        "outbox_depth": count(sum(samples, "outbox_pending_messages", &[])),
        "outbox_stuck": count(sum(samples, "outbox_stuck_messages", &[])),
        "outbox_oldest_seconds": samples
            .iter()
            .filter(|s| s.name == "outbox_oldest_pending_seconds")
            .map(|s| s.value)
            .fold(0.0_f64, f64::max),
        "prepared_branches": count(sum(samples, "twopc_prepared_transactions", &[])),
        "cap_mode": cap_mode,
    })
}

/// The Raft node ids of a link named `config-A->config-B`.
fn config_link(name: &str) -> Option<(u64, u64)> {
    let (from, to) = name.split_once("->")?;
    Some((
        from.strip_prefix("config-")?.parse().ok()?,
        to.strip_prefix("config-")?.parse().ok()?,
    ))
}

/// The node-to-node links of the config cluster that are cut now, from the sidecar's `GET /proxies`: a
/// link cut by a partition (`cut_by`) or disabled. `[{"from", "to", "by": [why…]}]`, ordered.
pub fn raft_cuts(proxies: &Value) -> Value {
    let mut cuts: Vec<(u64, u64, Vec<String>)> = proxies
        .as_object()
        .into_iter()
        .flat_map(|proxies| proxies.iter())
        .filter_map(|(name, proxy)| {
            let (from, to) = config_link(name)?;
            let mut by: Vec<String> = proxy["cut_by"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(|p| format!("partition {p}")))
                .collect();
            if proxy["enabled"] == false {
                by.push("disabled".into());
            }
            (!by.is_empty()).then_some((from, to, by))
        })
        .collect();
    cuts.sort();
    Value::Array(
        cuts.into_iter()
            .map(|(from, to, by)| json!({"from": from, "to": to, "by": by}))
            .collect(),
    )
}

/// The links with a fault now, from the sidecar's `GET /proxies`: toxics, a cut, or disabled.
/// `[{"link", "enabled", "cut_by", "toxics": [{"name", "type", "stream", "toxicity", "attributes"}]}]`.
pub fn faults(proxies: &Value) -> Value {
    let mut faulty: Vec<Value> = proxies
        .as_object()
        .into_iter()
        .flat_map(|proxies| proxies.iter())
        .filter(|(_, proxy)| {
            let has = |field: &str| proxy[field].as_array().is_some_and(|a| !a.is_empty());
            has("toxics") || has("cut_by") || proxy["enabled"] == false
        })
        .map(|(name, proxy)| {
            json!({
                "link": name,
                "enabled": proxy["enabled"] != false,
                "cut_by": proxy["cut_by"].as_array().cloned().unwrap_or_default(),
                "toxics": proxy["toxics"].as_array().cloned().unwrap_or_default(),
            })
        })
        .collect();
    faulty.sort_by(|a, b| a["link"].as_str().cmp(&b["link"].as_str()));
    Value::Array(faulty)
}

/// The partition the console makes to isolate config node `id`.
pub fn isolation_name(id: u64) -> String {
    format!("console-isolate-config-{id}")
}

/// The sidecar's `POST /partitions` body that isolates config node `id` of `nodes` from the others: only
/// the Raft links between config nodes are cut (no other part is named).
pub fn isolation(id: u64, nodes: &[u64], mode: &str) -> Value {
    let others: Vec<String> = nodes
        .iter()
        .filter(|n| **n != id)
        .map(|n| format!("config-{n}"))
        .collect();
    json!({
        "name": isolation_name(id),
        "sides": [[format!("config-{id}")], others],
        "mode": mode,
    })
}

/// The leader most reachable nodes agree on, when a majority of `nodes_total` names the same one.
pub fn agreed_leader(nodes: &[Value], nodes_total: usize) -> Option<u64> {
    let mut votes: Vec<(u64, usize)> = Vec::new();
    for leader in nodes.iter().filter_map(|n| n["leader"].as_u64()) {
        match votes.iter_mut().find(|(id, _)| *id == leader) {
            Some((_, n)) => *n += 1,
            None => votes.push((leader, 1)),
        }
    }
    votes
        .into_iter()
        .find(|(_, n)| *n > nodes_total / 2)
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP orders_placed_total orders
# TYPE orders_placed_total counter
orders_placed_total{mode="outbox"} 7
orders_placed_total{mode="2pc"} 3
orders_finalized_total{status="CONFIRMED"} 5
orders_finalized_total{status="REJECTED"} 1
orders_rejected_total{mode="2pc"} 2
outbox_pending_messages{relay="order"} 4
outbox_stuck_messages{relay="order"} 0
outbox_oldest_pending_seconds{relay="order"} 1.5
twopc_prepared_transactions 1
order_cap_mode{mode="CP"} 0
order_cap_mode{mode="AP"} 1
http_requests_total{method="GET",route="/orders/{id}",status="200"} 12 1700000000000
weird{a="x \"q\" , y",b="\\"} 2
not a sample line
"#;

    #[test]
    fn the_exposition_parses_into_samples_with_labels_escapes_and_timestamps() {
        let samples = parse_metrics(EXPOSITION);
        assert_eq!(samples.len(), 13, "{samples:?}");
        let http = samples
            .iter()
            .find(|s| s.name == "http_requests_total")
            .unwrap();
        assert_eq!(http.label("route"), Some("/orders/{id}"));
        assert!((http.value - 12.0).abs() < f64::EPSILON);
        let weird = samples.iter().find(|s| s.name == "weird").unwrap();
        assert_eq!(weird.label("a"), Some("x \"q\" , y"));
        assert_eq!(weird.label("b"), Some("\\"));
        let bare = samples
            .iter()
            .find(|s| s.name == "twopc_prepared_transactions")
            .unwrap();
        assert!(bare.labels.is_empty());
    }

    #[test]
    fn the_order_flow_counts_both_modes_and_reads_the_outbox_and_cap_mode() {
        let flow = order_flow(&parse_metrics(EXPOSITION), 2, false);
        assert_eq!(flow["accepted"], 10);
        assert_eq!(
            flow["confirmed"], 8,
            "5 outbox confirmations and 3 committed 2PC orders"
        );
        assert_eq!(flow["rejected"], 3);
        assert_eq!(flow["pending"], 2);
        assert_eq!(flow["outbox_depth"], 4);
        assert_eq!(flow["outbox_oldest_seconds"], 1.5);
        assert_eq!(flow["prepared_branches"], 1);
        assert_eq!(flow["cap_mode"], "AP");
    }

    #[test]
    fn an_order_service_that_placed_nothing_yet_shows_zeros() {
        let flow = order_flow(&parse_metrics("# nothing yet\n"), 0, false);
        assert_eq!(flow["accepted"], 0);
        assert_eq!(flow["confirmed"], 0);
        assert_eq!(flow["outbox_depth"], 0);
        assert_eq!(flow["cap_mode"], Value::Null);
    }

    fn proxies() -> Value {
        json!({
            "config-1->config-2": {"enabled": true, "toxics": [], "cut_by": ["console-isolate-config-1"]},
            "config-2->config-1": {"enabled": true, "toxics": [], "cut_by": ["console-isolate-config-1"]},
            "config-2->config-3": {"enabled": false, "toxics": [], "cut_by": []},
            "config-3->config-2": {"enabled": true, "toxics": [], "cut_by": []},
            "order->orders-db": {"enabled": true, "cut_by": [],
                "toxics": [{"name": "slow", "type": "latency", "stream": "downstream", "attributes": {"latency": 200}}]},
            "order->config-1": {"enabled": true, "toxics": [], "cut_by": []}
        })
    }

    #[test]
    fn raft_cuts_are_the_config_links_cut_by_a_partition_or_disabled() {
        assert_eq!(
            raft_cuts(&proxies()),
            json!([
                {"from": 1, "to": 2, "by": ["partition console-isolate-config-1"]},
                {"from": 2, "to": 1, "by": ["partition console-isolate-config-1"]},
                {"from": 2, "to": 3, "by": ["disabled"]},
            ])
        );
        assert_eq!(raft_cuts(&json!({})), json!([]));
    }

    #[test]
    fn faults_list_only_links_with_a_toxic_a_cut_or_disabled() {
        let links: Vec<String> = faults(&proxies())
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["link"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            links,
            [
                "config-1->config-2",
                "config-2->config-1",
                "config-2->config-3",
                "order->orders-db"
            ]
        );
    }

    #[test]
    fn isolating_a_node_names_only_the_config_nodes() {
        assert_eq!(
            isolation(2, &[1, 2, 3], "hold"),
            json!({"name": "console-isolate-config-2",
                   "sides": [["config-2"], ["config-1", "config-3"]], "mode": "hold"})
        );
    }

    #[test]
    fn the_agreed_leader_needs_a_majority_of_all_nodes() {
        let nodes = [
            json!({"leader": 2}),
            json!({"leader": 2}),
            json!({"leader": 1}),
        ];
        assert_eq!(agreed_leader(&nodes, 3), Some(2));
        assert_eq!(agreed_leader(&nodes[1..], 3), None, "one vote each");
        assert_eq!(agreed_leader(&[json!({"leader": null})], 3), None);
    }
}
