//! `cargo xtask chaos …`: the chaos sidecar's admin API without writing JSON, and the links table of
//! `cargo xtask status`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::stack::block_on;
use crate::stack::links::CHAOS_PORT;

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Every link (proxy) with its faults, then the partitions in force.
    List,
    /// Cut every link between two groups of parts, both ways: `partition order,orders-db inventory`.
    Partition {
        /// Parts on one side, comma-separated (the names either side of `->` in `list`).
        side_a: String,
        /// Parts on the other side.
        side_b: String,
        /// Name of the partition (default: the two sides).
        #[arg(long)]
        name: Option<String>,
        /// `hold` (bytes wait, like pulled cables) or `reset` (connections reset, like a firewall).
        #[arg(long, default_value = "hold")]
        mode: String,
    },
    /// Heal one partition, or all of them.
    Heal { name: Option<String> },
    /// Add latency to a link (both directions unless --stream).
    Latency {
        link: String,
        ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter: u64,
        /// `upstream` or `downstream` only.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Answer matching requests on an HTTP link with an error status.
    HttpError {
        link: String,
        status: u16,
        #[arg(long)]
        path_prefix: Option<String>,
        #[arg(long)]
        method: Option<String>,
        /// Probability per request (0..=1).
        #[arg(long, default_value_t = 1.0)]
        toxicity: f64,
    },
    /// Take a link down (its connections close, new ones are refused).
    Disable { link: String },
    /// Bring a link back.
    Enable { link: String },
    /// The fault log, newest first.
    Events {
        #[arg(long)]
        link: Option<String>,
    },
    /// Every link enabled, every toxic removed, every partition healed.
    Reset,
}

/// A client of the chaos sidecar's admin API (with `CHAOS_ADMIN_TOKEN`, if set).
#[derive(Debug)]
pub(crate) struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Admin {
            http,
            base: format!("http://127.0.0.1:{CHAOS_PORT}"),
        })
    }

    /// [`Admin::request`] on the xtask's runtime, for code that is not async.
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        block_on(self.request(method, path, body))
    }

    /// One admin request: its JSON answer (`Null` when empty), or an error with the sidecar's message.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = std::env::var("CHAOS_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
        {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!("the chaos sidecar does not answer at {url} (cargo xtask up starts it)")
        })?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("");
            let details = &value["error"]["details"];
            bail!(
                "{status}: {message} {}",
                if details.is_null() {
                    String::new()
                } else {
                    details.to_string()
                }
            );
        }
        Ok(value)
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None)
    }

    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body))
    }
}

pub fn run(command: ChaosCommand) -> anyhow::Result<()> {
    let admin = Admin::new()?;
    match command {
        ChaosCommand::List => print_links(&admin),
        ChaosCommand::Partition {
            side_a,
            side_b,
            name,
            mode,
        } => {
            let side = |s: &str| -> Vec<String> {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            let name = name.unwrap_or_else(|| format!("{side_a}|{side_b}"));
            let made = admin.post(
                "/partitions",
                json!({"name": name, "sides": [side(&side_a), side(&side_b)], "mode": mode}),
            )?;
            let cut = list_of(&made["links"]);
            if cut.is_empty() {
                println!(
                    "partition {name} ({mode}) made, but no link joins the two sides (it will cut links created later); \
                     `cargo xtask chaos list` shows which parts talk to which"
                );
            } else {
                println!("partition {name} ({mode}) cuts: {cut}");
            }
            Ok(())
        }
        ChaosCommand::Heal { name } => {
            let names: Vec<String> = match name {
                Some(name) => vec![name],
                None => admin.get("/partitions")?["partitions"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            for name in &names {
                admin.send(
                    reqwest::Method::DELETE,
                    &format!("/partitions/{}", segment(name)),
                    None,
                )?;
                println!("healed {name}");
            }
            if names.is_empty() {
                println!("no partition in force");
            }
            Ok(())
        }
        ChaosCommand::Latency {
            link,
            ms,
            jitter,
            stream,
        } => {
            let streams = match stream.as_deref() {
                Some(s) => vec![s.to_owned()],
                None => vec!["upstream".to_owned(), "downstream".to_owned()],
            };
            for stream in streams {
                admin.post(
                    &format!("/proxies/{}/toxics", segment(&link)),
                    json!({"type": "latency", "stream": stream, "attributes": {"latency": ms, "jitter": jitter}}),
                )?;
                println!("{link}: +{ms} ms ±{jitter} {stream}");
            }
            Ok(())
        }
        ChaosCommand::HttpError {
            link,
            status,
            path_prefix,
            method,
            toxicity,
        } => {
            let toxic = admin.post(
                &format!("/proxies/{}/toxics", segment(&link)),
                json!({"type": "http_error", "stream": "upstream", "toxicity": toxicity,
                       "attributes": {"status": status, "path_prefix": path_prefix, "method": method}}),
            )?;
            println!("{link}: toxic {} answers {status}", toxic["name"]);
            Ok(())
        }
        ChaosCommand::Disable { link } => {
            admin.post(
                &format!("/proxies/{}", segment(&link)),
                json!({"enabled": false}),
            )?;
            println!("{link}: down");
            Ok(())
        }
        ChaosCommand::Enable { link } => {
            admin.post(
                &format!("/proxies/{}", segment(&link)),
                json!({"enabled": true}),
            )?;
            println!("{link}: up");
            Ok(())
        }
        ChaosCommand::Events { link } => {
            let path = match &link {
                Some(link) => format!("/events?link={}", segment(link)),
                None => "/events".to_owned(),
            };
            let events = admin.get(&path)?;
            println!(
                "{:<5} {:<26} {:<26} {:>6} {:>6}  from – to",
                "id", "link", "fault", "conns", "reqs"
            );
            for e in events["events"].as_array().into_iter().flatten() {
                println!(
                    "{:<5} {:<26} {:<26} {:>6} {:>6}  {} – {}",
                    e["id"].as_u64().unwrap_or(0),
                    e["link"].as_str().unwrap_or(""),
                    format!(
                        "{} {}",
                        e["fault"]["type"].as_str().unwrap_or(""),
                        e["fault"]["name"].as_str().unwrap_or("")
                    ),
                    e["connections"].as_u64().unwrap_or(0),
                    e["requests"].as_u64().unwrap_or(0),
                    e["started_at"].as_str().unwrap_or(""),
                    e["ended_at"].as_str().unwrap_or("now"),
                );
            }
            Ok(())
        }
        ChaosCommand::Reset => {
            admin.post("/reset", Value::Null)?;
            println!("every link enabled, every toxic removed, every partition healed");
            Ok(())
        }
    }
}

/// The links table (also printed by `cargo xtask status`).
pub fn print_links_if_running() {
    match Admin::new().and_then(|admin| print_links(&admin)) {
        Ok(()) => {}
        Err(error) => println!("\nlinks: {error:#}"),
    }
}

fn print_links(admin: &Admin) -> anyhow::Result<()> {
    let proxies = admin.get("/proxies")?;
    let partitions = admin.get("/partitions")?;
    println!(
        "\n{:<26} {:>6} {:>6}  {:<5} faults",
        "link", "proxy", "server", "kind"
    );
    for proxy in proxies.as_object().into_iter().flat_map(|m| m.values()) {
        let port = |field: &str| {
            proxy[field]
                .as_str()
                .and_then(|a| a.rsplit_once(':'))
                .map_or("-", |(_, p)| p)
                .to_owned()
        };
        let mut faults: Vec<String> = proxy["toxics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{} {} {}",
                    t["type"].as_str().unwrap_or(""),
                    t["stream"].as_str().unwrap_or(""),
                    t["attributes"]
                )
            })
            .collect();
        if proxy["enabled"] == false {
            faults.insert(0, "DISABLED".into());
        }
        for cut in proxy["cut_by"].as_array().into_iter().flatten() {
            faults.push(format!("CUT by {}", cut.as_str().unwrap_or("")));
        }
        println!(
            "{:<26} {:>6} {:>6}  {:<5} {}",
            proxy["name"].as_str().unwrap_or(""),
            port("listen"),
            port("upstream"),
            proxy["protocol"].as_str().unwrap_or("tcp"),
            if faults.is_empty() {
                "-".to_owned()
            } else {
                faults.join("; ")
            }
        );
    }
    let partitions = partitions["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in &partitions {
        println!(
            "partition {} ({}): {} — cuts {}",
            p["name"].as_str().unwrap_or(""),
            p["mode"].as_str().unwrap_or(""),
            p["sides"]
                .as_array()
                .into_iter()
                .flatten()
                .map(list_of)
                .collect::<Vec<_>>()
                .join(" | "),
            list_of(&p["links"])
        );
    }
    Ok(())
}

fn list_of(value: &Value) -> String {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A name as one URL path segment (`order->orders-db` has a `>`, which URLs spell `%3E`).
pub(crate) fn segment(name: &str) -> String {
    name.replace('%', "%25")
        .replace('>', "%3E")
        .replace('|', "%7C")
        .replace(' ', "%20")
        .replace('?', "%3F")
        .replace('#', "%23")
}
