//! The seed's 本地消息表 (local message table + Kafka) flow, end to end against real PostgreSQL and Kafka,
//! proven by invariants (see `TestSystem::check_invariants`), not by eye.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::collections::BTreeMap;
use std::time::Duration;

use distlab_messaging::Envelope;
use distlab_messaging::events::{OrderItem, OrderPlaced};
use distlab_system_tests::{Options, TestSystem};
use distlab_testkit::{PrivateBroker, consumer_lag, eventually, topic_message_count};
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `count` random orders of 1–3 distinct items (quantity 1–5) over `skus`.
fn random_orders(skus: &[String], count: usize, seed: u64) -> Vec<Vec<(String, u32)>> {
    let mut rng = Lcg(seed);
    (0..count)
        .map(|_| {
            let lines = 1 + rng.below(3) as usize;
            let mut picked: Vec<String> = Vec::new();
            while picked.len() < lines {
                let sku = &skus[rng.below(skus.len() as u64) as usize];
                if !picked.contains(sku) {
                    picked.push(sku.clone());
                }
            }
            picked
                .into_iter()
                .map(|sku| (sku, 1 + rng.below(5) as u32))
                .collect()
        })
        .collect()
}

async fn seed_skus(system: &TestSystem, count: usize, stock: i64) -> BTreeMap<String, i64> {
    let mut initial = BTreeMap::new();
    for i in 0..count {
        let sku = format!("SKU-{i:02}");
        system.seed(&sku, stock).await;
        initial.insert(sku, stock);
    }
    initial
}

/// Places the orders, `concurrency` at a time, spread round-robin over the order instances.
async fn place_all(
    system: &TestSystem,
    orders: &[Vec<(String, u32)>],
    concurrency: usize,
) -> Vec<Uuid> {
    let all: Vec<usize> = (0..system.orders.len()).collect();
    place_through(system, &all, orders, concurrency).await
}

/// Places the orders, `concurrency` at a time, spread round-robin over the given order instances.
async fn place_through(
    system: &TestSystem,
    instances: &[usize],
    orders: &[Vec<(String, u32)>],
    concurrency: usize,
) -> Vec<Uuid> {
    futures::stream::iter(orders.iter().enumerate())
        .map(|(i, items)| async move {
            let items: Vec<(&str, u32)> = items.iter().map(|(s, q)| (s.as_str(), *q)).collect();
            system.place(instances[i % instances.len()], &items).await
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_orders_over_ten_skus_all_settle_and_conserve_stock() {
    let system = TestSystem::start(Options::default()).await;
    let initial = seed_skus(&system, 10, 100).await;
    let skus: Vec<String> = initial.keys().cloned().collect();
    let orders = random_orders(&skus, 500, 7);
    let demand: u64 = orders.iter().flatten().map(|(_, q)| u64::from(*q)).sum();
    assert!(
        demand > 1000,
        "the test needs demand above the total stock, got {demand}"
    );

    let ids = place_all(&system, &orders, 32).await;
    assert_eq!(ids.len(), 500);
    system.wait_until_all_decided(Duration::from_secs(60)).await;
    system.check_invariants(&initial).await;

    let (confirmed, rejected): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'CONFIRMED'), count(*) FILTER (WHERE status = 'REJECTED') FROM orders",
    )
    .fetch_one(&system.orders_db)
    .await
    .unwrap();
    assert_eq!(confirmed + rejected, 500);
    assert!(
        confirmed > 0 && rejected > 0,
        "demand above stock must confirm some and reject some"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_order_placed_delivered_twice_reserves_once() {
    let system = TestSystem::start(Options::default()).await;
    let initial = BTreeMap::from([("DUP-1".to_owned(), 10), ("DUP-2".to_owned(), 10)]);
    for (sku, stock) in &initial {
        system.seed(sku, *stock).await;
    }

    // An OrderPlaced that reaches the inventory twice, back to back (a relay republish), then once more.
    let order_id = Uuid::now_v7();
    let envelope = Envelope::new(&OrderPlaced {
        order_id,
        customer_id: "dup".into(),
        items: vec![
            OrderItem {
                sku: "DUP-1".into(),
                quantity: 3,
            },
            OrderItem {
                sku: "DUP-2".into(),
                quantity: 2,
            },
        ],
    })
    .unwrap();
    let producer: FutureProducer =
        distlab_messaging::kafka::producer(&system.kafka.brokers, "test-dup").unwrap();
    let bytes = envelope.to_bytes();
    let key = order_id.to_string();
    for _ in 0..3 {
        let record = FutureRecord::to(&system.kafka.order_events_topic)
            .key(&key)
            .payload(&bytes);
        producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    eventually(
        "the inventory consumer to commit all three deliveries",
        Duration::from_secs(30),
        || async {
            let lag = consumer_lag(
                &system.kafka.brokers,
                &system.inventory_group,
                &system.kafka.order_events_topic,
            )
            .await;
            (lag == 0).then_some(())
        },
    )
    .await;

    let reservations: Vec<(String, i32)> =
        sqlx::query_as("SELECT sku, quantity FROM reservations WHERE order_id = $1 ORDER BY sku")
            .bind(order_id)
            .fetch_all(&system.inventory_db)
            .await
            .unwrap();
    assert_eq!(
        reservations,
        [("DUP-1".to_owned(), 3), ("DUP-2".to_owned(), 2)]
    );
    let products: Vec<(String, i32, i32)> =
        sqlx::query_as("SELECT sku, available, reserved FROM products ORDER BY sku")
            .fetch_all(&system.inventory_db)
            .await
            .unwrap();
    assert_eq!(
        products,
        [("DUP-1".to_owned(), 7, 3), ("DUP-2".to_owned(), 8, 2)]
    );
    eventually(
        "the inventory's outbox to be relayed",
        Duration::from_secs(30),
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&system.inventory_db)
                .await
                .unwrap();
            (left == 0).then_some(())
        },
    )
    .await;
    let messages =
        topic_message_count(&system.kafka.brokers, &system.kafka.inventory_events_topic).await;
    // The topic also carries the stock feed: one StockChanged per version of a product's stock (the
    // seeding and the one reservation).
    let stock_versions: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_versions")
        .fetch_one(&system.inventory_db)
        .await
        .unwrap();
    assert_eq!(stock_versions, 4, "two seeded products, each reserved once");
    assert_eq!(
        messages,
        1 + stock_versions,
        "one StockReserved for one order, besides the stock feed"
    );
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_messages WHERE message_id = $1")
            .bind(envelope.message_id)
            .fetch_one(&system.inventory_db)
            .await
            .unwrap();
    assert_eq!(processed, 1);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_are_accepted_while_the_broker_is_down_and_drain_when_it_is_back() {
    let mut broker = PrivateBroker::start().await;
    let system = TestSystem::start(Options {
        brokers: Some(broker.brokers()),
        ..Options::default()
    })
    .await;
    let initial = seed_skus(&system, 3, 40).await;
    let skus: Vec<String> = initial.keys().cloned().collect();

    broker.stop();
    let orders = random_orders(&skus, 60, 11);
    let ids = place_all(&system, &orders, 8).await;
    assert_eq!(
        ids.len(),
        60,
        "every order is accepted (202) while Kafka is down"
    );
    let pending = eventually(
        "the outbox to hold every order's message",
        Duration::from_secs(10),
        || async {
            let pending = system.pending_order_outbox().await;
            (pending == 60).then_some(pending)
        },
    )
    .await;
    assert_eq!(pending, 60);
    // Not one order can have moved on without Kafka.
    let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status <> 'PENDING'")
        .fetch_one(&system.orders_db)
        .await
        .unwrap();
    assert_eq!(decided, 0);
    // Keep Kafka down until deliveries have failed and the relay has scheduled retries (not forwarded →
    // retried), so what drains below is the retry path, not sends that were merely queued.
    eventually(
        "the relay to record failed deliveries",
        Duration::from_secs(30),
        || async {
            let failed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox WHERE attempts > 0 AND last_error IS NOT NULL",
            )
            .fetch_one(&system.orders_db)
            .await
            .unwrap();
            (failed > 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        system.pending_order_outbox().await,
        60,
        "no message is dropped while failing"
    );
    // …and the backlog is surfaced on the instance's /metrics.
    let metrics_url = format!("{}/metrics", system.orders[0].url);
    eventually(
        "the pending gauge to show the backlog",
        Duration::from_secs(10),
        || async {
            let metrics = system
                .http
                .get(&metrics_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metrics
                .contains("outbox_pending_messages{relay=\"order\"} 60")
                .then_some(())
        },
    )
    .await;

    broker.start_again().await;
    system.wait_until_all_decided(Duration::from_secs(60)).await;
    assert_eq!(system.pending_order_outbox().await, 0, "the outbox drained");
    system.check_invariants(&initial).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_dies_after_publishing_republishes_without_double_effect() {
    let system = TestSystem::start(Options::default()).await;
    let initial = seed_skus(&system, 4, 30).await;
    let skus: Vec<String> = initial.keys().cloned().collect();

    // The order relay's next three batches are published, then abandoned before they are removed from the outbox.
    system.orders[0].relay_faults.crash_after_publish(3);
    let orders = random_orders(&skus, 40, 13);
    place_all(&system, &orders, 8).await;
    system.wait_until_all_decided(Duration::from_secs(60)).await;

    let published =
        topic_message_count(&system.kafka.brokers, &system.kafka.order_events_topic).await;
    assert!(
        published > 40,
        "the abandoned batches were published again ({published} messages for 40 orders)"
    );
    let applied = system.inventories[0].consumer_stats.applied();
    assert_eq!(
        applied, 40,
        "each OrderPlaced applied once, the republished copies skipped"
    );
    system.check_invariants(&initial).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_of_each_service_keep_every_guarantee_even_when_one_leaves() {
    let mut system = TestSystem::start(Options {
        order_instances: 2,
        inventory_instances: 2,
        ..Options::default()
    })
    .await;
    let initial = seed_skus(&system, 10, 60).await;
    let skus: Vec<String> = initial.keys().cloned().collect();
    let orders = random_orders(&skus, 300, 17);

    // Both instances of each service are in their consumer group and share the 4 partitions.
    let all = system.orders.iter().chain(&system.inventories);
    let stats: Vec<_> = all.map(|i| i.consumer_stats.clone()).collect();
    eventually(
        "every instance to be assigned partitions",
        Duration::from_secs(30),
        || async {
            stats
                .iter()
                .all(|s| s.assigned_partitions() == 2)
                .then_some(())
        },
    )
    .await;
    // Half the orders through both order instances, concurrently.
    place_all(&system, &orders[..150], 32).await;
    system.wait_until_all_decided(Duration::from_secs(60)).await;
    system.check_invariants(&initial).await;
    for (i, instance) in system.orders.iter().chain(&system.inventories).enumerate() {
        assert!(
            instance.consumer_stats.applied() > 0,
            "instance {i} applied messages from its partitions"
        );
    }

    // One instance of each leaves (its partitions move to the other); the rest goes through the survivor.
    system.orders[0].stop().await;
    system.inventories[0].stop().await;
    let survivors = [
        system.orders[1].consumer_stats.clone(),
        system.inventories[1].consumer_stats.clone(),
    ];
    eventually(
        "the survivors to take over every partition",
        Duration::from_secs(30),
        || async {
            survivors
                .iter()
                .all(|s| s.assigned_partitions() == 4)
                .then_some(())
        },
    )
    .await;
    place_through(&system, &[1], &orders[150..], 32).await;
    system.wait_until_all_decided(Duration::from_secs(60)).await;
    system.check_invariants(&initial).await;
    let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&system.orders_db)
        .await
        .unwrap();
    assert_eq!(decided, 300);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejections_name_their_reason_and_reserve_nothing_of_the_order() {
    let system = TestSystem::start(Options::default()).await;
    let initial = BTreeMap::from([("R-A".to_owned(), 5), ("R-B".to_owned(), 5)]);
    for (sku, stock) in &initial {
        system.seed(sku, *stock).await;
    }
    // Enough of R-A, an unknown SKU: nothing of R-A may be taken.
    let unknown = system.place(0, &[("R-A", 2), ("R-NOPE", 1)]).await;
    // R-A twice in one order (3 + 3 > 5) and enough R-B: all or nothing means nothing.
    let short = system.place(0, &[("R-A", 3), ("R-B", 1), ("R-A", 3)]).await;
    // The same SKU twice within the stock is reserved as its sum.
    let merged = system.place(0, &[("R-B", 2), ("R-B", 2)]).await;
    system.wait_until_all_decided(Duration::from_secs(30)).await;

    let status = |id: Uuid| {
        let db = system.orders_db.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT status, reason FROM orders WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        status(unknown).await,
        ("REJECTED".into(), Some("unknown_sku".into()))
    );
    assert_eq!(
        status(short).await,
        ("REJECTED".into(), Some("insufficient_stock".into()))
    );
    assert_eq!(status(merged).await, ("CONFIRMED".into(), None));
    let held: Vec<(Uuid, String, i32)> =
        sqlx::query_as("SELECT order_id, sku, quantity FROM reservations")
            .fetch_all(&system.inventory_db)
            .await
            .unwrap();
    assert_eq!(held, [(merged, "R-B".to_owned(), 4)]);
    system.check_invariants(&initial).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_whose_message_or_answer_was_lost_is_sent_again_and_decided_once() {
    let system = TestSystem::start(Options {
        redeliver_after_ms: 500,
        ..Options::default()
    })
    .await;
    let initial = BTreeMap::from([("LOST-1".to_owned(), 10)]);
    system.seed("LOST-1", 10).await;

    // The answer is lost: the inventory decided (and reserved), the order never heard of it.
    let answered = system.place(0, &[("LOST-1", 2)]).await;
    system.wait_until_all_decided(Duration::from_secs(30)).await;
    sqlx::query("UPDATE orders SET status = 'PENDING', redeliver_at = now() WHERE id = $1")
        .bind(answered)
        .execute(&system.orders_db)
        .await
        .unwrap();
    // The request is lost: the order exists, its OrderPlaced left the outbox and never reached anyone.
    let unheard = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (id, customer_id, items, status, mode, redeliver_at)
         VALUES ($1, 'lost', '[{\"sku\": \"LOST-1\", \"quantity\": 3}]', 'PENDING', 'outbox', now())",
    )
    .bind(unheard)
    .execute(&system.orders_db)
    .await
    .unwrap();

    system.wait_until_all_decided(Duration::from_secs(30)).await;
    let orders: Vec<(Uuid, String, i32)> =
        sqlx::query_as("SELECT id, status, redeliveries FROM orders ORDER BY id")
            .fetch_all(&system.orders_db)
            .await
            .unwrap();
    for (id, status, redeliveries) in &orders {
        assert_eq!(status, "CONFIRMED", "order {id}");
        assert!(*redeliveries >= 1, "order {id} was sent again");
    }
    // Each reserved once: the repeated OrderPlaced about `answered` got the decision made before.
    system.check_invariants(&initial).await;
    assert_eq!(system.product("LOST-1").await, (5, 5));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_still_waiting_in_the_outbox_is_not_sent_again() {
    let mut broker = PrivateBroker::start().await;
    let system = TestSystem::start(Options {
        brokers: Some(broker.brokers()),
        redeliver_after_ms: 300,
        ..Options::default()
    })
    .await;
    let initial = seed_skus(&system, 1, 20).await;
    broker.stop();
    let ids = place_all(&system, &vec![vec![("SKU-00".to_owned(), 1)]; 5], 5).await;
    // Several sweeps have looked at the orders and found their OrderPlaced still queued: each time the
    // order's next check moved on, and nothing was sent.
    eventually(
        "the redelivery sweep to look at every order twice",
        Duration::from_secs(30),
        || async {
            let looked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orders WHERE redeliver_at > created_at + interval '900 milliseconds'",
            )
            .fetch_one(&system.orders_db)
            .await
            .unwrap();
            (looked == 5).then_some(())
        },
    )
    .await;
    let redeliveries: i64 = sqlx::query_scalar("SELECT sum(redeliveries) FROM orders")
        .fetch_one(&system.orders_db)
        .await
        .unwrap();
    assert_eq!(
        redeliveries, 0,
        "queued messages are the relay's to deliver"
    );
    assert_eq!(
        system.pending_order_outbox().await,
        5,
        "one message per order"
    );

    broker.start_again().await;
    system.wait_until_all_decided(Duration::from_secs(60)).await;
    assert_eq!(ids.len(), 5);
    system.check_invariants(&initial).await;
    system.stop().await;
}
