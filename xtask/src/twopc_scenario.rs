//! `cargo xtask scenario 2pc`: the seed's four problems of two-phase commit (section 二, 2PC), shown one
//! after the other on the running stack through the services' fault switches (`/admin/faults`), each
//! followed by what brings the system back: blocking, the coordinator as a single point of failure,
//! inconsistency between the participants, and over-conservative aborts.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use crate::stack::{Stack, block_on};
use crate::verdict::Verdict;

const ORDER: &str = "http://127.0.0.1:8081";
const INVENTORY: &str = "http://127.0.0.1:8082";
const COORDINATOR: &str = "http://127.0.0.1:8083";

/// How long the coordinator stalls between the votes and the decision in problem 1.
const STALL: Duration = Duration::from_millis(2_000);

/// The services' admin token in the local stack (`ADMIN_TOKEN` overrides it, as for the stack).
fn admin_token() -> String {
    std::env::var("ADMIN_TOKEN").unwrap_or_else(|_| "distlab-local-admin".into())
}

/// Polls `check` every 50 ms until it answers `Some`, or fails after `within` naming `what`.
pub(crate) async fn poll<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) if Instant::now() > deadline => {
                return Err(error.context(format!("{what}: not within {within:?}")));
            }
            Err(_) => {}
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Client {
    http: reqwest::Client,
    sku: String,
}

impl Client {
    async fn get(&self, url: String) -> anyhow::Result<Value> {
        let response = self.http.get(&url).send().await?;
        ensure!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// Places a one-unit 2PC order: the status and the body.
    async fn place(&self) -> anyhow::Result<(u16, Value)> {
        let body = json!({"customer_id": "scenario-2pc", "items": [{"sku": self.sku, "quantity": 1}], "mode": "2pc"});
        let response = self
            .http
            .post(format!("{ORDER}/orders"))
            .json(&body)
            .send()
            .await
            .context("POST /orders")?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn arm(&self, service: &str, rule: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{service}/admin/faults"))
            .bearer_auth(admin_token())
            .json(&rule)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "arming {rule} at {service}: {}",
            response.status()
        );
        Ok(())
    }

    async fn disarm(&self, service: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!("{service}/admin/faults"))
            .bearer_auth(admin_token())
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Prepared transactions the inventory holds (its readiness check counts them).
    async fn inventory_prepared(&self) -> anyhow::Result<u64> {
        // /readyz answers 503 while something is unhealthy: read the body either way.
        let ready: Value = self
            .http
            .get(format!("{INVENTORY}/readyz"))
            .send()
            .await?
            .json()
            .await?;
        ready["checks"]["twopc"]["prepared"]
            .as_u64()
            .context("the inventory's /readyz has no checks.twopc.prepared")
    }

    /// `(available, reserved)` of the scenario's product.
    async fn stock(&self) -> anyhow::Result<(i64, i64)> {
        let product = self
            .get(format!("{INVENTORY}/products/{}", self.sku))
            .await?;
        Ok((
            product["available"].as_i64().context("available")?,
            product["reserved"].as_i64().context("reserved")?,
        ))
    }

    /// Transactions the coordinator has not finished.
    async fn unfinished(&self) -> anyhow::Result<usize> {
        let mut open = 0;
        for state in ["PREPARING", "COMMITTING", "ABORTING"] {
            let list = self
                .get(format!("{COORDINATOR}/transactions?state={state}"))
                .await?;
            open += list["transactions"].as_array().map_or(0, Vec::len);
        }
        Ok(open)
    }

    async fn settled(&self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        poll("every 2PC transaction to finish", within, || async {
            Ok(
                (self.unfinished().await? == 0 && self.inventory_prepared().await? == 0)
                    .then_some(()),
            )
        })
        .await?;
        Ok(started.elapsed())
    }
}

/// `cargo xtask up` from inside a scenario: starts the parts that are not running (a crashed one). It runs on
/// a thread of its own, outside the runtime, because the stack's probes block on the runtime themselves.
pub(crate) async fn restart_missing_parts() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| {
        std::thread::spawn(|| Stack::discover()?.up(true))
            .join()
            .map_err(|_| anyhow::anyhow!("cargo xtask up panicked"))?
    })
    .await?
}

/// Runs the four problems; each prints what the seed claims, what happened, and how it recovered.
pub fn scenario() -> anyhow::Result<Verdict> {
    block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let sku = format!("SCN-2PC-{}", std::process::id());
        let client = Client { http, sku };
        client
            .http
            .get(format!("{COORDINATOR}/healthz"))
            .send()
            .await
            .context("the coordinator does not answer on :8083 (cargo xtask up)")?;
        client
            .http
            .put(format!("{INVENTORY}/products/{}", client.sku))
            .json(&json!({"name": "2PC scenario", "price_cents": 100, "stock": 100}))
            .send()
            .await?
            .error_for_status()?;
        client.disarm(COORDINATOR).await?;
        client.disarm(INVENTORY).await?;
        client.settled(Duration::from_secs(30)).await?;
        let outcome = run(&client).await;
        // Whatever happened, leave no fault armed.
        let _ = client.disarm(COORDINATOR).await;
        let _ = client.disarm(INVENTORY).await;
        let (measured, passed) = outcome?;
        Ok(Verdict {
            section: "二 2PC",
            claim: "2PC blocks while undecided, hangs on its coordinator, can leave participants disagreeing, aborts on any no",
            measured,
            passed,
        })
    })
}

async fn run(client: &Client) -> anyhow::Result<(String, bool)> {
    let mut passed = true;
    let mut check = |ok: bool, what: &str| {
        println!("    {} {what}", if ok { "✓" } else { "✗" });
        passed &= ok;
    };

    println!(
        "==> 2.1 同步阻塞 blocking: the coordinator stalls {STALL:?} between the votes and its decision"
    );
    client
        .arm(
            COORDINATOR,
            json!({"point": "before_decision", "action": "delay", "ms": STALL.as_millis() as u64}),
        )
        .await?;
    let first = {
        let client = Client {
            http: client.http.clone(),
            sku: client.sku.clone(),
        };
        tokio::spawn(async move { client.place().await })
    };
    poll(
        "the inventory's branch to be prepared",
        Duration::from_secs(10),
        || async { Ok((client.inventory_prepared().await? >= 1).then_some(())) },
    )
    .await?;
    println!("    the first order's inventory branch is prepared and holds the product's row");
    let started = Instant::now();
    let (second, _) = client.place().await?;
    let waited = started.elapsed();
    let (first, _) = first.await??;
    println!(
        "    a second order on the same product waited {:.2} s (first {first}, second {second})",
        waited.as_secs_f64()
    );
    check(
        first == 201 && second == 201 && waited >= STALL / 2,
        "the second order waited for the first one's decision",
    );
    client.disarm(COORDINATOR).await?;
    client.settled(Duration::from_secs(20)).await?;

    println!(
        "==> 2.2 单点问题 single point of failure: the coordinator dies right after logging its decision"
    );
    client
        .arm(
            COORDINATOR,
            json!({"point": "after_decision", "action": "crash"}),
        )
        .await?;
    let before = client.stock().await?;
    let (status, body) = client.place().await?;
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!("    the order got {status} {code}");
    let prepared = client.inventory_prepared().await?;
    println!(
        "    with the coordinator gone the inventory holds {prepared} prepared transaction(s); stock {before:?} unchanged: {:?}",
        client.stock().await?
    );
    check(
        status == 503 && prepared >= 1,
        "the participants stay prepared while the coordinator is down",
    );
    println!("    restarting the coordinator (cargo xtask up)");
    let restarted = Instant::now();
    restart_missing_parts().await?;
    client.settled(Duration::from_secs(30)).await?;
    let after = client.stock().await?;
    println!(
        "    recovery finished the transaction {:.1} s after the restart began: stock {before:?} → {after:?}",
        restarted.elapsed().as_secs_f64()
    );
    check(
        after.1 == before.1 + 1 && after.0 == before.0 - 1,
        "recovery carried the logged commit out on both sides",
    );

    println!("==> 2.3 数据不一致 inconsistency: every phase-2 message to the inventory is lost");
    client
        .arm(
            COORDINATOR,
            json!({"point": "phase2:inventory", "action": "drop", "times": 1000}),
        )
        .await?;
    let before = client.stock().await?;
    let (status, body) = client.place().await?;
    let order_status = match body["id"].as_str() {
        Some(id) => client.get(format!("{ORDER}/orders/{id}")).await?["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        None => String::new(),
    };
    let during = client.stock().await?;
    let prepared = client.inventory_prepared().await?;
    println!(
        "    the order: {status} {order_status}; the inventory: stock {during:?}, {prepared} branch still prepared"
    );
    check(
        status == 201 && order_status == "CONFIRMED" && during == before && prepared == 1,
        "the order committed while the inventory did not",
    );
    client.disarm(COORDINATOR).await?;
    let healed = client.settled(Duration::from_secs(30)).await?;
    let after = client.stock().await?;
    println!(
        "    the messages get through again: the gap closed {:.1} s later, stock {after:?}",
        healed.as_secs_f64()
    );
    check(
        after == (before.0 - 1, before.1 + 1),
        "recovery closed the gap",
    );

    println!("==> 2.4 太过保守 over-conservative: one participant's no aborts everything");
    client
        .arm(INVENTORY, json!({"point": "prepare", "action": "vote_no"}))
        .await?;
    let before = client.stock().await?;
    let (status, body) = client.place().await?;
    let reason = body["error"]["details"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let after = client.stock().await?;
    println!(
        "    the order got {status} ({reason}) although {} units were there; stock {after:?}",
        before.0
    );
    check(
        status == 409 && reason == "vote_no_fault" && after == before,
        "one no aborted the whole transaction",
    );
    client.disarm(INVENTORY).await?;
    client.settled(Duration::from_secs(20)).await?;

    let measured = format!(
        "blocked {:.1} s behind an undecided order; prepared while the coordinator was down, then committed; gap closed {:.1} s after heal; one no aborted",
        waited.as_secs_f64(),
        healed.as_secs_f64()
    );
    Ok((measured, passed))
}
