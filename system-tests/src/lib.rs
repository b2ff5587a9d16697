//! A whole order system of a test's own: fresh orders and inventory databases, topics and consumer groups
//! of its own, and any number of order and inventory service instances running in the test process against
//! the real PostgreSQL and Kafka of the local stack (or a [`PrivateBroker`](distlab_testkit::PrivateBroker)).
//!
//! [`TestSystem::check_invariants`] states what the outbox flow guarantees, from the databases themselves.

#![allow(clippy::unwrap_used)] // test support: a failed step should fail the test right there

use std::collections::BTreeMap;
use std::time::Duration;

use distlab_messaging::consumer::ConsumerStats;
use distlab_messaging::kafka::KafkaArgs;
use distlab_messaging::outbox::RelayFaults;
use distlab_testkit::{TestDatabase, eventually, unique_group, unique_kafka};
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
            shutdown: app.shutdown_token(),
            task: Some(tokio::spawn(async move {
                app.run_until_stopped().await.map_err(|e| format!("{e:#}"))
            })),
        }
    }};
}

impl Instance {
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            order_instances: 1,
            inventory_instances: 1,
            brokers: None,
        }
    }
}

#[derive(Debug)]
pub struct TestSystem {
    pub orders_db: PgPool,
    pub inventory_db: PgPool,
    pub kafka: KafkaArgs,
    pub order_group: String,
    pub inventory_group: String,
    pub orders: Vec<Instance>,
    pub inventories: Vec<Instance>,
    pub http: reqwest::Client,
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
        let kafka = unique_kafka(&brokers);
        let order_group = unique_group("order");
        let inventory_group = unique_group("inventory");

        let mut inventories = Vec::new();
        for _ in 0..options.inventory_instances {
            let config = inventory::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                database_url: inventory_db.url.clone(),
                database_max_connections: 8,
                kafka: kafka.clone(),
                consumer_group: inventory_group.clone(),
            };
            let app = inventory::Application::build(config)
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
            };
            let app = order::Application::build(config)
                .await
                .expect("order builds");
            orders.push(start_instance!(app));
        }
        Self {
            orders_db: orders_db.pool().await,
            inventory_db: inventory_db.pool().await,
            kafka,
            order_group,
            inventory_group,
            orders,
            inventories,
            http: distlab_testkit::http(),
        }
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

    /// Places an order through order instance `instance`; returns its id after asserting 202.
    pub async fn place(&self, instance: usize, items: &[(&str, u32)]) -> Uuid {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        let response = self
            .http
            .post(format!("{}/orders", self.orders[instance].url))
            .json(&json!({"customer_id": "tester", "items": items}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "placing an order");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "PENDING");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Waits until no order is PENDING any more.
    pub async fn wait_until_all_decided(&self, timeout: Duration) {
        eventually(
            "every order to be CONFIRMED or REJECTED",
            timeout,
            || async {
                let pending: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PENDING'")
                        .fetch_one(&self.orders_db)
                        .await
                        .unwrap();
                (pending == 0).then_some(())
            },
        )
        .await;
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
        for instance in self.orders.iter_mut().chain(self.inventories.iter_mut()) {
            instance.stop().await;
        }
    }
}
