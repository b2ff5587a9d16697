//! The flash sale (秒杀): why a distributed lock matters, shown on the real inventory and lock services.
//!
//! One SKU with `stock` units and `buyers` concurrent buyers who each want one unit and do the naive
//! read-check-write through the inventory API: read the product; if units are left, take one with
//! `POST /products/{sku}/adjust {"delta": -1}`. Unguarded, many buyers read the same "units left" before
//! any of them writes, and the shop sells more than it has. Guarded by a lock, each buyer re-reads and
//! writes while holding it, and the write carries the lock's fencing token. A buyer reads before queueing
//! for the lock, and leaves when nothing is left.
//!
//! Shared by the flash-sale test (which asserts) and `cargo xtask scenario flash-sale` (which prints).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Barrier;

/// What one run of the sale did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `none` or the lock backend.
    pub guard: String,
    pub sku: String,
    pub stock: i64,
    /// Buyers whose adjust succeeded.
    pub sold: u64,
    /// The product's `available` afterwards.
    pub final_available: i64,
    /// Acquires that timed out (the buyer then re-read the stock and tried again if any was left).
    pub lock_timeouts: u64,
    /// Adjusts refused for a stale fencing token.
    pub stale_refusals: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn oversold(&self) -> bool {
        self.sold as i64 > self.stock || self.final_available < 0
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<10} sold {:>4} of {} · available afterwards {:>5} · {} · lock timeouts {} · stale tokens refused {} · {:.1} s",
            self.guard,
            self.sold,
            self.stock,
            self.final_available,
            if self.oversold() { "OVERSOLD" } else { "exact" },
            self.lock_timeouts,
            self.stale_refusals,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub inventory: String,
    pub lock: String,
}

#[derive(Default)]
struct Counters {
    sold: AtomicU64,
    lock_timeouts: AtomicU64,
    stale_refusals: AtomicU64,
}

/// Runs one sale: `guard` is `None` (no lock) or a backend name (`pg`, `redis`, `redlock`, `zookeeper`).
pub async fn run(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    guard: Option<&str>,
    buyers: usize,
    stock: i64,
) -> Result<Outcome, String> {
    let label = guard.unwrap_or("none").to_owned();
    let sku = format!(
        "flash-{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let put = http
        .put(format!("{}/products/{sku}", endpoints.inventory))
        .json(&json!({"name": "Flash sale item", "price_cents": 999, "stock": stock}))
        .send()
        .await
        .map_err(|e| format!("cannot reach the inventory service: {e}"))?;
    if !put.status().is_success() {
        return Err(format!("seeding {sku} answered {}", put.status()));
    }
    let counters = Arc::new(Counters::default());
    let barrier = Arc::new(Barrier::new(buyers));
    let started = Instant::now();
    let tasks: Vec<_> = (0..buyers)
        .map(|i| {
            let buyer = Buyer {
                http: http.clone(),
                endpoints: endpoints.clone(),
                sku: sku.clone(),
                guard: guard.map(str::to_owned),
                name: format!("buyer-{i}"),
                counters: counters.clone(),
            };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                buyer.buy().await
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| format!("a buyer panicked: {e}"))??;
    }
    let elapsed = started.elapsed();
    let product = get(http, &format!("{}/products/{sku}", endpoints.inventory)).await?;
    Ok(Outcome {
        guard: label,
        sku,
        stock,
        sold: counters.sold.load(Ordering::Relaxed),
        final_available: product["available"].as_i64().unwrap_or_default(),
        lock_timeouts: counters.lock_timeouts.load(Ordering::Relaxed),
        stale_refusals: counters.stale_refusals.load(Ordering::Relaxed),
        elapsed,
    })
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url} answered {}", response.status()));
    }
    response.json().await.map_err(|e| format!("GET {url}: {e}"))
}

struct Buyer {
    http: reqwest::Client,
    endpoints: Endpoints,
    sku: String,
    guard: Option<String>,
    name: String,
    counters: Arc<Counters>,
}

impl Buyer {
    fn product_url(&self) -> String {
        format!("{}/products/{}", self.endpoints.inventory, self.sku)
    }

    fn lock_url(&self, action: &str) -> String {
        format!(
            "{}/locks/flash-sale.{}/{action}",
            self.endpoints.lock, self.sku
        )
    }

    async fn units_left(&self) -> Result<i64, String> {
        Ok(get(&self.http, &self.product_url()).await?["available"]
            .as_i64()
            .unwrap_or_default())
    }

    /// The naive write: one unit, optionally fenced. True if the inventory took it.
    async fn take_one(&self, fence: Option<Value>) -> Result<bool, String> {
        let mut body = json!({"delta": -1});
        if let Some(fence) = fence {
            body["lock"] = fence;
        }
        let response = self
            .http
            .post(format!("{}/adjust", self.product_url()))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("adjust: {e}"))?;
        match response.status().as_u16() {
            200 => {
                self.counters.sold.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            409 => {
                self.counters.stale_refusals.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            other => Err(format!("adjust answered {other}")),
        }
    }

    async fn buy(&self) -> Result<(), String> {
        loop {
            // Read, check…
            if self.units_left().await? <= 0 {
                return Ok(());
            }
            let Some(backend) = &self.guard else {
                // …write, with nothing between the check and the write.
                self.take_one(None).await?;
                return Ok(());
            };
            let response = self
                .http
                .post(self.lock_url("acquire"))
                .json(&json!({"backend": backend, "owner": self.name, "ttl_ms": 10_000, "wait_ms": 20_000}))
                .send()
                .await
                .map_err(|e| format!("acquire: {e}"))?;
            match response.status().as_u16() {
                200 => {}
                409 => {
                    self.counters.lock_timeouts.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                other => {
                    let body = response.text().await.unwrap_or_default();
                    return Err(format!("acquire answered {other}: {body}"));
                }
            }
            let lease: Value = response.json().await.map_err(|e| e.to_string())?;
            // Under the lock: check again, then write with the fencing token.
            let bought = if self.units_left().await? > 0 {
                let fence = json!({"name": format!("flash-sale.{}", self.sku), "token": lease["fencing_token"]});
                self.take_one(Some(fence)).await
            } else {
                Ok(false)
            };
            let released = self
                .http
                .post(self.lock_url("release"))
                .json(&json!({"backend": backend, "lease_id": lease["lease_id"]}))
                .send()
                .await
                .map_err(|e| format!("release: {e}"))?;
            if !released.status().is_success() {
                return Err(format!("release answered {}", released.status()));
            }
            bought?;
            return Ok(());
        }
    }
}
