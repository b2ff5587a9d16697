//! A whole order system of a test's own: fresh orders, inventory and coordinator databases, topics and
//! consumer groups of its own, any number of order and inventory service instances and one 2PC coordinator,
//! running in the test process against the real PostgreSQL and Kafka of the local stack (or a
//! [`PrivateBroker`](distlab_testkit::PrivateBroker)).
//!
//! [`TestSystem::check_invariants`] states what both flows guarantee, from the databases themselves.
//! Services run with `CRASH_MODE=halt`: an injected crash stops the service, not the test process, and
//! [`TestSystem::restart_coordinator`] / [`TestSystem::restart_inventory`] bring one back on its port.

#![allow(clippy::unwrap_used)] // test support: a failed step should fail the test right there

use std::collections::BTreeMap;
use std::time::Duration;

use distlab_messaging::consumer::ConsumerStats;
use distlab_messaging::kafka::KafkaArgs;
use distlab_messaging::outbox::RelayFaults;
use distlab_testkit::{TestDatabase, eventually, unique_group, unique_kafka};
use distlab_twopc::faults::{AdminArgs, CrashStyle, Faults};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One running service instance.
#[derive(Debug)]
pub struct Instance {
    pub url: String,
    pub relay_faults: RelayFaults,
    pub consumer_stats: ConsumerStats,
    faults: Faults,
    shutdown: CancellationToken,
    /// The service task; its error is kept as text (tests only look at success).
    task: Option<JoinHandle<Result<(), String>>>,
}

/// Runs a built application (order and inventory have the same lifecycle methods) as an [`Instance`].
macro_rules! start_instance {
    ($app:expr) => {{
        let app = $app;
        Instance {
            url: format!("http://{}", app.local_addr().unwrap()),
            relay_faults: app.relay_faults(),
            consumer_stats: app.consumer_stats(),
            faults: app.faults(),
            shutdown: app.shutdown_token(),
            task: Some(tokio::spawn(async move {
                app.run_until_stopped().await.map_err(|e| format!("{e:#}"))
            })),
        }
    }};
}

impl Instance {
    /// Kills the instance, as `kill -9` would a process: it crashes (nothing it does from now on takes
    /// effect; prepared transactions stay in PostgreSQL) and its tasks end.
    pub async fn kill(&mut self) {
        self.faults.crash_now();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }

    /// Stops the instance gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let outcome = task.await.expect("the service task does not panic");
            assert!(
                outcome.is_ok(),
                "service stopped with an error: {outcome:?}"
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub order_instances: usize,
    pub inventory_instances: usize,
    /// Kafka to use; the stack's broker when `None`.
    pub brokers: Option<String>,
    /// How long the coordinator waits for a vote.
    pub prepare_timeout_ms: u64,
    /// How long a 2PC transaction may stay undecided before recovery aborts it.
    pub transaction_timeout_ms: u64,
    /// How long an outbox order waits for its answer before its `OrderPlaced` is sent again.
    pub redeliver_after_ms: u64,
    /// How often the coordinator's recovery runs; it also rolls back prepared branches its log does not
    /// know, so a test that plays the coordinator itself sets this far out.
    pub recovery_interval_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            order_instances: 1,
            inventory_instances: 1,
            brokers: None,
            prepare_timeout_ms: 5000,
            transaction_timeout_ms: 6000,
            redeliver_after_ms: order::Config::local().redeliver_after_ms,
            recovery_interval_ms: 200,
        }
    }
}

/// The admin token of the test services.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Admin settings of the test services: a known token, and crashes that halt the service only.
fn admin() -> AdminArgs {
    AdminArgs {
        admin_token: Some(ADMIN_TOKEN.into()),
        crash_mode: CrashStyle::Halt,
    }
}

/// The running coordinator.
#[derive(Debug)]
pub struct CoordinatorInstance {
    pub url: String,
    faults: Faults,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), String>>>,
}

#[derive(Debug)]
pub struct TestSystem {
    pub orders_db: PgPool,
    pub inventory_db: PgPool,
    pub coordinator_db: PgPool,
    pub kafka: KafkaArgs,
    pub order_group: String,
    pub inventory_group: String,
    pub orders: Vec<Instance>,
    pub inventories: Vec<Instance>,
    pub coordinator: CoordinatorInstance,
    pub http: reqwest::Client,
    inventory_config: inventory::Config,
    coordinator_config: coordinator::Config,
}

async fn start_coordinator(config: coordinator::Config) -> CoordinatorInstance {
    let app = coordinator::Application::build(config)
        .await
        .expect("the coordinator builds");
    CoordinatorInstance {
        url: format!("http://{}", app.local_addr().unwrap()),
        faults: app.faults(),
        shutdown: app.shutdown_token(),
        task: Some(tokio::spawn(async move {
            app.run_until_stopped().await.map_err(|e| format!("{e:#}"))
        })),
    }
}

/// A port that is free now, for a service that must be reachable at a known address before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

impl TestSystem {
    pub async fn start(options: Options) -> Self {
        distlab_platform::telemetry::init_for_tests();
        distlab_testkit::require_stack(false);
        let brokers = options
            .brokers
            .clone()
            .unwrap_or_else(distlab_testkit::kafka_brokers);
        let orders_db = TestDatabase::create(&distlab_testkit::orders_server()).await;
        let inventory_db = TestDatabase::create(&distlab_testkit::inventory_server()).await;
        let coordinator_db = TestDatabase::create(&distlab_testkit::orders_server()).await;
        let coordinator_port = free_port();
        let kafka = unique_kafka(&brokers);
        let order_group = unique_group("order");
        let inventory_group = unique_group("inventory");

        let inventory_config = inventory::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: inventory_db.url.clone(),
            database_max_connections: 8,
            kafka: kafka.clone(),
            consumer_group: inventory_group.clone(),
            admin: admin(),
        };
        let mut inventories = Vec::new();
        for _ in 0..options.inventory_instances {
            let app = inventory::Application::build(inventory_config.clone())
                .await
                .expect("inventory builds");
            inventories.push(start_instance!(app));
        }
        let mut orders = Vec::new();
        for _ in 0..options.order_instances {
            let config = order::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                database_url: orders_db.url.clone(),
                database_max_connections: 8,
                kafka: kafka.clone(),
                consumer_group: order_group.clone(),
                default_mode: order::orders::Mode::Outbox,
                coordinator_url: format!("http://127.0.0.1:{coordinator_port}"),
                redeliver_after_ms: options.redeliver_after_ms,
                inventory_url: inventories[0].url.clone(),
                cap_mode: order::cap::CapMode::Cp,
                admin: admin(),
            };
            let app = order::Application::build(config)
                .await
                .expect("order builds");
            orders.push(start_instance!(app));
        }
        let coordinator_config = coordinator::Config {
            listen: format!("127.0.0.1:{coordinator_port}").parse().unwrap(),
            database_url: coordinator_db.url.clone(),
            database_max_connections: 8,
            participants: format!("order={},inventory={}", orders[0].url, inventories[0].url),
            prepare_timeout_ms: options.prepare_timeout_ms,
            phase2_timeout_ms: 1000,
            transaction_timeout_ms: options.transaction_timeout_ms,
            recovery_interval_ms: options.recovery_interval_ms,
            admin: admin(),
        };
        let coordinator = start_coordinator(coordinator_config.clone()).await;
        Self {
            orders_db: orders_db.pool().await,
            inventory_db: inventory_db.pool().await,
            coordinator_db: coordinator_db.pool().await,
            kafka,
            order_group,
            inventory_group,
            orders,
            inventories,
            coordinator,
            http: distlab_testkit::http(),
            inventory_config,
            coordinator_config,
        }
    }

    /// Starts the coordinator again on its port and log, after a (halting) crash or a kill: the new one
    /// begins with recovery.
    pub async fn restart_coordinator(&mut self) {
        if !self.coordinator.faults.is_crashed() {
            self.coordinator.faults.crash_now();
        }
        if let Some(task) = self.coordinator.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        self.coordinator = start_coordinator(self.coordinator_config.clone()).await;
    }

    /// Kills inventory instance `i`, as `kill -9` would.
    pub async fn kill_inventory(&mut self, i: usize) {
        self.inventories[i].kill().await;
    }

    /// Starts inventory instance `i` again on its old port (after a kill or a halting crash).
    pub async fn restart_inventory(&mut self, i: usize) {
        self.inventories[i].kill().await;
        let mut config = self.inventory_config.clone();
        config.listen = self.inventories[i]
            .url
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let app = inventory::Application::build(config)
            .await
            .expect("inventory builds again");
        self.inventories[i] = start_instance!(app);
    }

    /// Arms a fault on the service at `base_url` through its admin API.
    pub async fn arm(&self, base_url: &str, rule: Value) {
        let response = self
            .http
            .post(format!("{base_url}/admin/faults"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "arming {rule}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Places a 2PC order through order instance `instance`; its status and body.
    pub async fn place_2pc(&self, instance: usize, items: &[(&str, u32)]) -> (u16, Value) {
        let response = self.post_order(instance, items, Some("2pc")).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// A product's `(available, reserved)`, from the inventory's API.
    pub async fn product(&self, sku: &str) -> (i64, i64) {
        let product = distlab_testkit::get_json(
            &self.http,
            &format!("{}/products/{sku}", self.inventories[0].url),
        )
        .await;
        (
            product["available"].as_i64().unwrap(),
            product["reserved"].as_i64().unwrap(),
        )
    }

    /// An order as the order service's API shows it (`None` when it does not exist).
    pub async fn order(&self, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/orders/{id}", self.orders[0].url))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => Some(response.json().await.unwrap()),
            404 => None,
            other => panic!("GET /orders/{id} answered {other}"),
        }
    }

    /// The coordinator's view of a transaction.
    pub async fn transaction(&self, gid: &str) -> Value {
        distlab_testkit::get_json(
            &self.http,
            &format!("{}/transactions/{gid}", self.coordinator.url),
        )
        .await
    }

    /// The gid of the newest transaction in the coordinator's log.
    pub async fn latest_gid(&self) -> String {
        sqlx::query_scalar("SELECT gid FROM transactions ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&self.coordinator_db)
            .await
            .unwrap()
    }

    /// Prepared distlab transactions in one participant database.
    pub async fn prepared_in(&self, db: &PgPool) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'distlab\\_%'",
        )
        .fetch_one(db)
        .await
        .unwrap()
    }

    /// Prepared distlab transactions left in both participant databases.
    pub async fn prepared_transactions(&self) -> i64 {
        self.prepared_in(&self.orders_db).await + self.prepared_in(&self.inventory_db).await
    }

    /// Waits until the coordinator's log has no undone transaction and no participant holds a prepared one.
    pub async fn wait_until_2pc_settled(&self, timeout: Duration) {
        eventually("every 2PC transaction to be complete and nothing prepared", timeout, || async {
            let undone: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM transactions WHERE state IN ('PREPARING', 'COMMITTING', 'ABORTING')",
            )
            .fetch_one(&self.coordinator_db)
            .await
            .unwrap();
            (undone == 0 && self.prepared_transactions().await == 0).then_some(())
        })
        .await;
    }

    /// Creates (or resets) a product with `stock` units.
    pub async fn seed(&self, sku: &str, stock: i64) {
        let response = self
            .http
            .put(format!("{}/products/{sku}", self.inventories[0].url))
            .json(&json!({"name": format!("Product {sku}"), "price_cents": 100, "stock": stock}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "seeding {sku}");
    }

    /// `POST /orders` through order instance `instance`, in `mode` (the service's default when `None`).
    async fn post_order(
        &self,
        instance: usize,
        items: &[(&str, u32)],
        mode: Option<&str>,
    ) -> reqwest::Response {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        let mut body = json!({"customer_id": "tester", "items": items});
        if let Some(mode) = mode {
            body["mode"] = json!(mode);
        }
        self.http
            .post(format!("{}/orders", self.orders[instance].url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Places an order through order instance `instance`; returns its id after asserting 202.
    pub async fn place(&self, instance: usize, items: &[(&str, u32)]) -> Uuid {
        let response = self.post_order(instance, items, None).await;
        assert_eq!(response.status(), 202, "placing an order");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "PENDING");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Waits until no order is PENDING any more.
    pub async fn wait_until_all_decided(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PENDING'")
                    .fetch_one(&self.orders_db)
                    .await
                    .unwrap();
            if pending == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for every order to be CONFIRMED or REJECTED: \
                     {pending} still PENDING; where the flow stands: {}",
                    self.flow_state().await
                );
            }
            tokio::time::sleep(distlab_testkit::POLL_INTERVAL).await;
        }
    }

    /// Where each hop of the outbox flow stands (for a test that timed out): the two outboxes (rows, most
    /// attempts, a last error), what the inventory decided, what each side's consumers applied.
    async fn flow_state(&self) -> String {
        async fn one(db: &sqlx::PgPool, sql: &str) -> String {
            match sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(db)
                .await
            {
                Ok(text) => text,
                Err(error) => format!("<{error}>"),
            }
        }
        let outbox = "SELECT format('%s rows, max attempts %s, last error %s', count(*), \
                      coalesce(max(attempts), 0), coalesce(max(last_error), '-')) FROM outbox";
        let applied = "SELECT count(*)::text FROM processed_messages";
        let consumers: Vec<String> = self
            .orders
            .iter()
            .map(|i| ("order", i))
            .chain(self.inventories.iter().map(|i| ("inventory", i)))
            .map(|(name, i)| {
                let stats = &i.consumer_stats;
                format!(
                    "{name} consumer {} partitions, {}, {} rewinds, last look error {}",
                    stats.assigned_partitions(),
                    if stats.paused() { "PAUSED" } else { "fetching" },
                    stats.rewinds(),
                    stats.look_error().unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        format!(
            "order outbox: {}; inventory outbox: {}; inventory decided {} orders; messages applied: \
             inventory {}, order {}; {}",
            one(&self.orders_db, outbox).await,
            one(&self.inventory_db, outbox).await,
            one(
                &self.inventory_db,
                "SELECT count(*)::text FROM order_outcomes"
            )
            .await,
            one(&self.inventory_db, applied).await,
            one(&self.orders_db, applied).await,
            consumers.join("; "),
        )
    }

    /// Undelivered rows in the orders database's outbox.
    pub async fn pending_order_outbox(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.orders_db)
            .await
            .unwrap()
    }

    /// What the outbox flow guarantees once every order is decided, checked from both databases:
    ///
    /// - per SKU, `available + reserved` is the initial stock and neither is negative;
    /// - per SKU, `reserved` is the sum of the quantities of CONFIRMED orders;
    /// - the reservations of each CONFIRMED order are exactly its items (merged per SKU); a REJECTED order
    ///   holds no reservation; no reservation belongs to an order that is not CONFIRMED (an order reserved
    ///   twice cannot hide: `(order, sku)` is the table's key, and stock taken twice breaks the sums above);
    /// - every REJECTED order has a reason.
    pub async fn check_invariants(&self, initial: &BTreeMap<String, i64>) {
        let products: Vec<(String, i32, i32)> =
            sqlx::query_as("SELECT sku, available, reserved FROM products")
                .fetch_all(&self.inventory_db)
                .await
                .unwrap();
        let orders: Vec<(Uuid, String, Value, Option<String>)> =
            sqlx::query_as("SELECT id, status, items, reason FROM orders")
                .fetch_all(&self.orders_db)
                .await
                .unwrap();
        let reservations: Vec<(Uuid, String, i32)> =
            sqlx::query_as("SELECT order_id, sku, quantity FROM reservations")
                .fetch_all(&self.inventory_db)
                .await
                .unwrap();

        let mut confirmed_demand: BTreeMap<String, i64> = BTreeMap::new();
        let mut expected_reservations: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
        for (id, status, items, reason) in &orders {
            assert_ne!(status, "PENDING", "order {id} is still PENDING");
            if status == "REJECTED" {
                assert!(reason.is_some(), "REJECTED order {id} has no reason");
                continue;
            }
            for item in items.as_array().unwrap() {
                let sku = item["sku"].as_str().unwrap().to_owned();
                let quantity = item["quantity"].as_i64().unwrap();
                *confirmed_demand.entry(sku.clone()).or_default() += quantity;
                *expected_reservations.entry((*id, sku)).or_default() += quantity;
            }
        }
        let actual_reservations: BTreeMap<(Uuid, String), i64> = reservations
            .iter()
            .map(|(order, sku, quantity)| ((*order, sku.clone()), i64::from(*quantity)))
            .collect();
        assert_eq!(
            actual_reservations, expected_reservations,
            "reservations differ from the CONFIRMED orders' items"
        );

        for (sku, initial_stock) in initial {
            let (_, available, reserved) = products
                .iter()
                .find(|(s, _, _)| s == sku)
                .unwrap_or_else(|| panic!("product {sku} is gone"));
            let (available, reserved) = (i64::from(*available), i64::from(*reserved));
            assert!(
                available >= 0 && reserved >= 0,
                "{sku}: available {available}, reserved {reserved}"
            );
            assert_eq!(
                available + reserved,
                *initial_stock,
                "{sku}: available + reserved ≠ initial stock"
            );
            assert_eq!(
                reserved,
                confirmed_demand.get(sku).copied().unwrap_or(0),
                "{sku}: reserved ≠ Σ quantities of CONFIRMED orders"
            );
        }
    }

    /// Stops every instance gracefully.
    pub async fn stop(mut self) {
        self.coordinator.shutdown.cancel();
        if let Some(task) = self.coordinator.task.take() {
            let _ = task.await;
        }
        for instance in self.orders.iter_mut().chain(self.inventories.iter_mut()) {
            instance.stop().await;
        }
    }
}
