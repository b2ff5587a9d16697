//! `cargo xtask scenario outbox`: the seed's local message table (section 二, 本地消息表) on the running
//! stack. Clients place outbox orders while the message broker is killed (SIGKILL) and started again; the
//! orders keep being accepted, and once the broker is back every order settles and the stock agrees with
//! the orders — eventual consistency, without restarting anything else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::stack::{Stack, block_on};
use crate::twopc_scenario::restart_missing_parts;
use crate::verdict::Verdict;

const ORDER: &str = "http://127.0.0.1:8081";
const INVENTORY: &str = "http://127.0.0.1:8082";

/// `cargo xtask scenario outbox` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboxArgs {
    /// Concurrent clients placing orders.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// Seconds into the load when the broker is killed.
    #[arg(long, default_value_t = 3)]
    kill_at: u64,
    /// Seconds the broker stays down.
    #[arg(long, default_value_t = 4)]
    down_for: u64,
}

/// One placed order: its id and whether the broker was down when it was accepted.
struct Placed {
    id: String,
    broker_down: bool,
}

/// Runs the scenario and checks that every order settled and the stock agrees with them.
pub fn scenario(args: OutboxArgs) -> anyhow::Result<Verdict> {
    let stack = Stack::discover()?;
    let kafka_pid = stack.root().join(".distlab").join("pids").join("kafka.pid");
    block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        http.get(format!("{ORDER}/healthz"))
            .send()
            .await
            .context("the order service does not answer on :8081 (cargo xtask up)")?;
        let sku = format!("SCN-OUTBOX-{}", std::process::id());
        let stock = 1_000_000;
        http.put(format!("{INVENTORY}/products/{sku}"))
            .json(&json!({"name": "outbox scenario", "price_cents": 1, "stock": stock}))
            .send()
            .await?
            .error_for_status()?;
        println!(
            "==> {} clients place outbox orders for {} s; the broker is killed (SIGKILL) {} s in and started again {} s later",
            args.clients, args.seconds, args.kill_at, args.down_for
        );
        let down = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let load_for = Duration::from_secs(args.seconds);
        let clients: Vec<_> = (0..args.clients)
            .map(|_| {
                let (http, sku, down) = (http.clone(), sku.clone(), down.clone());
                tokio::spawn(async move {
                    let mut placed = Vec::new();
                    let mut refused = 0_u64;
                    while started.elapsed() < load_for {
                        let broker_down = down.load(Ordering::Relaxed);
                        // The mode is explicit: a `cap_mode` switch left set would otherwise decide it.
                        let body = json!({"customer_id": "scenario-outbox", "items": [{"sku": sku, "quantity": 1}], "mode": "outbox"});
                        let answer = http.post(format!("{ORDER}/orders")).json(&body).send().await;
                        match answer {
                            Ok(response) if response.status().as_u16() == 202 => {
                                let order: Value = response.json().await.unwrap_or(Value::Null);
                                if let Some(id) = order["id"].as_str() {
                                    placed.push(Placed { id: id.to_owned(), broker_down });
                                }
                            }
                            _ => refused += 1,
                        }
                    }
                    (placed, refused)
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_secs(args.kill_at)).await;
        let pid = std::fs::read_to_string(&kafka_pid)
            .with_context(|| format!("no broker pid in {}", kafka_pid.display()))?;
        let pid = pid.trim().to_owned();
        // A stale pid file must not make us kill an unrelated process.
        let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        ensure!(
            String::from_utf8_lossy(&command).contains("tansu"),
            "pid {pid} in {} is not the broker (tansu); is the stack up?",
            kafka_pid.display()
        );
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()?;
        ensure!(killed.success(), "kill -KILL {pid} failed");
        down.store(true, Ordering::Relaxed);
        println!(
            "    {:>5.1} s  broker killed (pid {pid})",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(args.down_for)).await;
        println!(
            "    {:>5.1} s  starting the broker again (cargo xtask up)",
            started.elapsed().as_secs_f64()
        );
        restart_missing_parts().await?;
        down.store(false, Ordering::Relaxed);
        let back = Instant::now();
        println!(
            "    {:>5.1} s  broker back",
            started.elapsed().as_secs_f64()
        );

        let mut placed = Vec::new();
        let mut refused = 0;
        for client in clients {
            let (mine, not_accepted) = client.await?;
            placed.extend(mine);
            refused += not_accepted;
        }
        let while_down = placed.iter().filter(|p| p.broker_down).count();
        println!(
            "    {} orders accepted ({while_down} while the broker was down), {refused} not accepted",
            placed.len()
        );

        // Every order settles: poll the ones still pending until none is.
        let mut pending: Vec<&Placed> = placed.iter().collect();
        let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut still = Vec::new();
            for order in pending {
                let body: Value = http
                    .get(format!("{ORDER}/orders/{}", order.id))
                    .send()
                    .await?
                    .json()
                    .await?;
                match body["status"].as_str() {
                    Some("PENDING") | None => still.push(order),
                    Some(status) => *statuses.entry(status.to_owned()).or_default() += 1,
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} orders still PENDING 90 s after the broker was back",
                pending.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let settled = back.elapsed();
        let confirmed = statuses.get("CONFIRMED").copied().unwrap_or_default();
        let product: Value = http
            .get(format!("{INVENTORY}/products/{sku}"))
            .send()
            .await?
            .json()
            .await?;
        let (available, reserved) = (
            product["available"].as_i64().context("available")?,
            product["reserved"].as_i64().context("reserved")?,
        );
        println!(
            "    every order final {:.1} s after the broker was back: {statuses:?}",
            settled.as_secs_f64()
        );
        println!(
            "    stock: {available} available + {reserved} reserved = {} (was {stock}); confirmed units {confirmed}",
            available + reserved
        );
        let passed = refused == 0
            && while_down > 0
            && reserved == confirmed as i64
            && available + reserved == stock;
        Ok(Verdict {
            section: "二 本地消息表 outbox",
            claim: "orders are accepted while the broker is down, and order and stock agree once messages flow",
            measured: format!(
                "{} orders ({while_down} with the broker down), all final {:.1} s after its return, stock conserved: {}",
                placed.len(),
                settled.as_secs_f64(),
                reserved == confirmed as i64 && available + reserved == stock
            ),
            passed,
        })
    })
}
