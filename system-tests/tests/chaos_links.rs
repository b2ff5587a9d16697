//! The chaos sidecar wired into the running stack (`cargo xtask up`): every link is proxied and carries its
//! traffic; a fault on a link acts on the service behind it and heals; each service reaches Kafka through
//! its own link, so a partition cuts one service from the broker and not the other; a sidecar killed and
//! started again by `cargo xtask up` brings every link back with no fault.
//!
//! These tests break links the whole stack shares, so each runs alone (`.config/nextest.toml`).

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::{
    chaos_url, coordinator_url, eventually, get_json, http, inventory_url, lock_url, order_url,
    require_chaos, require_stack,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// The links `cargo xtask up` makes (xtask/src/stack/links.rs; docs/chaos.md).
const LINKS: [&str; 26] = [
    "order->orders-db",
    "order->coordinator",
    "order->config-1",
    "order->config-2",
    "order->config-3",
    "order->inventory",
    "inventory->inventory-db",
    "coordinator->orders-db",
    "coordinator->order",
    "coordinator->inventory",
    "lock->orders-db",
    "lock->redis-16379",
    "lock->redis-16380",
    "lock->redis-16381",
    "lock->zookeeper",
    "config-1->config-2",
    "config-1->config-3",
    "config-2->config-1",
    "config-2->config-3",
    "config-3->config-1",
    "config-3->config-2",
    "gateway->inventory",
    "gateway->order",
    "clients->kafka",
    "order->kafka",
    "inventory->kafka",
];

/// Bytes a link has carried so far, both directions (from the sidecar's metrics).
async fn bytes(http: &reqwest::Client, link: &str) -> u64 {
    let text = http
        .get(format!("{}/metrics", chaos_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("chaos_bytes_total{") && l.contains(&format!("link=\"{link}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn seed(http: &reqwest::Client, stock: i64) -> String {
    let sku = format!("CHAOS-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let seeded = http
        .put(format!("{}/products/{sku}", inventory_url()))
        .json(&json!({"name": "Chaos widget", "price_cents": 100, "stock": stock}))
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 200);
    sku
}

/// Places an outbox order and waits until it is CONFIRMED.
async fn confirmed_order(http: &reqwest::Client, sku: &str) {
    let placed: Value = http
        .post(format!("{}/orders", order_url()))
        .json(&json!({"customer_id": "chaos", "items": [{"sku": sku, "quantity": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{}/orders/{}", order_url(), placed["id"].as_str().unwrap());
    eventually(
        "the order to be confirmed",
        Duration::from_secs(60),
        || async { (get_json(http, &url).await["status"] == "CONFIRMED").then_some(()) },
    )
    .await;
}

/// Panics with what to do unless the running stack has the services' Kafka links and the services use them:
/// a stack started before they existed has neither (restart it).
async fn require_kafka_links(http: &reqwest::Client) {
    let proxies = get_json(http, &format!("{}/proxies", chaos_url())).await;
    for link in ["order->kafka", "inventory->kafka"] {
        assert_eq!(
            (&proxies[link]["protocol"], &proxies[link]["advertised"]),
            (&json!("kafka"), &json!("127.0.0.1:17090")),
            "the running sidecar has no kafka proxy {link}: the stack was started before the services' \
             Kafka links existed; restart it (`cargo xtask down && cargo xtask up`)"
        );
    }
    // Each service's consumer fetches all the time: a service on its link makes it carry bytes.
    for link in ["order->kafka", "inventory->kafka"] {
        let before = bytes(http, link).await;
        let service = link.split("->").next().unwrap_or_default().to_owned();
        eventually(
            &format!(
                "the {service} service to reach Kafka through {link} (a service started before the link \
                 existed uses clients->kafka: restart the stack with `cargo xtask down && cargo xtask up`)"
            ),
            Duration::from_secs(15),
            || async { (bytes(http, link).await > before).then_some(()) },
        )
        .await;
    }
}

async fn ready(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = http.get(format!("{url}/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn every_link_of_the_stack_is_proxied_and_carries_its_traffic() {
    require_stack(true);
    require_chaos();
    let http = http();
    let proxies = get_json(&http, &format!("{}/proxies", chaos_url())).await;
    for link in LINKS {
        let proxy = &proxies[link];
        assert_eq!(proxy["enabled"], true, "{link}: {proxies}");
    }
    let carried = [
        "order->orders-db",
        "inventory->inventory-db",
        "order->kafka",
        "inventory->kafka",
    ];
    let before: Vec<u64> = futures::future::join_all(carried.map(|l| bytes(&http, l))).await;
    let sku = seed(&http, 5).await;
    confirmed_order(&http, &sku).await;
    for (link, before) in carried.into_iter().zip(before) {
        let after = bytes(&http, link).await;
        assert!(
            after > before,
            "{link} carried nothing for an order ({before} → {after})"
        );
    }
    // The Raft leader's heartbeats cross two node-to-node links all the time.
    let raft = [
        "config-1->config-2",
        "config-1->config-3",
        "config-2->config-1",
        "config-2->config-3",
        "config-3->config-1",
        "config-3->config-2",
    ];
    let first: Vec<u64> = futures::future::join_all(raft.map(|l| bytes(&http, l))).await;
    eventually(
        "Raft heartbeats through the node-to-node links",
        Duration::from_secs(10),
        || async {
            let now: Vec<u64> = futures::future::join_all(raft.map(|l| bytes(&http, l))).await;
            (now.iter().zip(&first).filter(|(n, f)| n > f).count() >= 2).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn cutting_the_order_service_from_its_database_makes_it_unready_until_healed() {
    require_stack(true);
    require_chaos();
    let http = http();
    let partitions = format!("{}/partitions", chaos_url());
    let made = http
        .post(&partitions)
        .json(
            &json!({"name": "order-db-cut", "sides": [["order"], ["orders-db"]], "mode": "reset"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    assert_eq!(made["links"], json!(["order->orders-db"]));
    let (_, body) = eventually(
        "the order service to notice",
        Duration::from_secs(30),
        || async {
            ready(&http, &order_url())
                .await
                .filter(|(status, _)| *status == 503)
        },
    )
    .await;
    let healed = http
        .delete(format!("{partitions}/order-db-cut"))
        .send()
        .await
        .unwrap();
    assert_eq!(healed.status(), 204);
    eventually(
        "the order service to be ready again",
        Duration::from_secs(30),
        || async {
            ready(&http, &order_url())
                .await
                .filter(|(status, _)| *status == 200)
        },
    )
    .await;
    assert!(body.to_string().contains("database"), "{body}");
    let events = get_json(
        &http,
        &format!("{}/events?link=order-%3Eorders-db", chaos_url()),
    )
    .await;
    let cut = &events["events"][0];
    assert_eq!(cut["fault"]["name"], "order-db-cut");
    assert!(cut["ended_at"].is_string());
}

#[tokio::test]
async fn cutting_the_order_service_from_kafka_holds_its_orders_while_the_inventory_keeps_its_link()
{
    require_stack(true);
    require_chaos();
    let http = http();
    require_kafka_links(&http).await;
    let sku = seed(&http, 5).await;
    let partitions = format!("{}/partitions", chaos_url());
    let made = http
        .post(&partitions)
        .json(&json!({"name": "order-kafka-cut", "sides": [["order"], ["kafka"]], "mode": "hold"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    // Whatever happens below, the partition is healed before the test ends: it would break every test after.
    let cut = std::panic::AssertUnwindSafe(async {
        assert_eq!(made["links"], json!(["order->kafka"]), "{made}");
        let inventory_before = bytes(&http, "inventory->kafka").await;
        let placed: Value = http
            .post(format!("{}/orders", order_url()))
            // Outbox by name: an order naming no mode may follow another default (2PC, or the CAP switch).
            .json(&json!({"customer_id": "chaos", "mode": "outbox",
                          "items": [{"sku": sku, "quantity": 1}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(placed["status"], "PENDING", "{placed}");
        let url = format!("{}/orders/{}", order_url(), placed["id"].as_str().unwrap());
        // Its event cannot leave the order service: the order stays PENDING (an order normally confirms
        // within tens of milliseconds)…
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let order = get_json(&http, &url).await;
            assert_eq!(
                order["status"], "PENDING",
                "the order went on although order->kafka is cut: {order}"
            );
        }
        // …while the inventory service keeps its own link to the broker.
        assert!(
            bytes(&http, "inventory->kafka").await > inventory_before,
            "inventory->kafka carried nothing during the order service's cut"
        );
        let (status, body) = ready(&http, &inventory_url()).await.unwrap();
        assert_eq!(status, 200, "the inventory service lost Kafka too: {body}");
        url
    });
    let outcome = futures::FutureExt::catch_unwind(cut).await;
    let healed = http
        .delete(format!("{partitions}/order-kafka-cut"))
        .send()
        .await
        .unwrap();
    let url = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    assert_eq!(healed.status(), 204);
    // Healed: the held event flows on and the order is confirmed.
    eventually(
        "the held order to be confirmed after the heal",
        Duration::from_secs(90),
        || async { (get_json(&http, &url).await["status"] == "CONFIRMED").then_some(()) },
    )
    .await;
    let events = get_json(
        &http,
        &format!("{}/events?link=order-%3Ekafka", chaos_url()),
    )
    .await;
    let cut = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["fault"]["name"] == "order-kafka-cut")
        .unwrap_or_else(|| panic!("no event of the cut on order->kafka: {events}"));
    assert!(cut["connections"].as_u64().unwrap() >= 1, "{cut}");
    assert!(cut["ended_at"].is_string(), "{cut}");
    let inventory_events = get_json(
        &http,
        &format!("{}/events?link=inventory-%3Ekafka", chaos_url()),
    )
    .await;
    assert!(
        !inventory_events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["fault"]["name"] == "order-kafka-cut"),
        "{inventory_events}"
    );
}

#[tokio::test]
async fn an_http_fault_on_the_coordinator_link_fails_2pc_prepares_until_removed() {
    require_stack(true);
    require_chaos();
    let http = http();
    let sku = seed(&http, 10).await;
    let toxics = format!("{}/proxies/coordinator-%3Einventory/toxics", chaos_url());
    let added = http
        .post(&toxics)
        .json(&json!({"name": "prepare-fails", "type": "http_error", "stream": "upstream",
                      "attributes": {"status": 503, "path_prefix": "/2pc/prepare", "method": "POST"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let order =
        json!({"customer_id": "chaos", "mode": "2pc", "items": [{"sku": sku, "quantity": 1}]});
    let refused = http
        .post(format!("{}/orders", order_url()))
        .json(&order)
        .send()
        .await
        .unwrap();
    let refused_status = refused.status().as_u16();
    let removed = http
        .delete(format!("{toxics}/prepare-fails"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert_ne!(
        refused_status, 201,
        "a 2PC order was confirmed although inventory's prepare failed"
    );
    let events = get_json(
        &http,
        &format!("{}/events?link=coordinator-%3Einventory", chaos_url()),
    )
    .await;
    assert!(
        events["events"][0]["requests"].as_u64().unwrap() >= 1,
        "{events}"
    );
    let accepted = http
        .post(format!("{}/orders", order_url()))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
}

#[tokio::test]
async fn a_killed_sidecar_comes_back_with_every_link_and_no_fault() {
    require_stack(true);
    require_chaos();
    let http = http();
    // A fault and a partition that must not survive.
    let chaos = chaos_url();
    http.post(format!("{chaos}/proxies/order-%3Ecoordinator/toxics"))
        .json(&json!({"type": "latency", "attributes": {"latency": 50}}))
        .send()
        .await
        .unwrap();
    http.post(format!("{chaos}/partitions"))
        .json(&json!({"name": "doomed", "sides": [["lock"], ["zookeeper"]]}))
        .send()
        .await
        .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let pid = std::fs::read_to_string(root.join(".distlab/pids/chaos.pid")).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let up = tokio::process::Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["xtask", "up", "--infra-only"])
        .output()
        .await
        .unwrap();
    assert!(
        up.status.success(),
        "cargo xtask up failed:\n{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let proxies = get_json(&http, &format!("{chaos}/proxies")).await;
    for link in LINKS {
        assert_eq!(proxies[link]["toxics"], json!([]), "{link}");
        assert_eq!(proxies[link]["cut_by"], json!([]), "{link}");
    }
    assert_eq!(
        get_json(&http, &format!("{chaos}/partitions")).await,
        json!({"partitions": []})
    );
    // The stack works through the new sidecar: every client lost its connections with the old one and
    // finds its way back by itself. The lock service repeats a command whose Redis connection turns out
    // dead on the new connection (services/lock/src/backend/redis.rs): a Redis lock is granted at the
    // first try, without waiting.
    let acquire = |backend: &'static str, wait_ms: u64| {
        let request = http
            .post(format!("{}/locks/chaos-restart-{}/acquire", lock_url(), Uuid::new_v4().simple()))
            .json(&json!({"backend": backend, "owner": "chaos-test", "ttl_ms": 1000, "wait_ms": wait_ms}));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    for backend in ["redis", "redlock"] {
        let (status, body) = acquire(backend, 0).await;
        assert_eq!(status, 200, "{backend}: {body}");
    }
    for url in [order_url(), inventory_url(), coordinator_url(), lock_url()] {
        eventually(
            &format!("{url} to be ready"),
            Duration::from_secs(60),
            || async {
                ready(&http, &url)
                    .await
                    .filter(|(status, _)| *status == 200)
            },
        )
        .await;
    }
    for backend in ["pg", "zookeeper"] {
        let (status, body) = acquire(backend, 10_000).await;
        assert_eq!(status, 200, "{backend}: {body}");
    }
    let sku = seed(&http, 5).await;
    confirmed_order(&http, &sku).await;
}

#[tokio::test]
async fn a_switch_set_on_the_sidecar_is_stored_in_the_config_service_and_followed() {
    require_stack(true);
    require_chaos();
    let http = http();
    let chaos = chaos_url();
    let nodes: Vec<String> = (8091..=8093)
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    // cap_mode governs the stack's orders while it is set: put it back as it was at the end.
    let endpoints = distlab_testkit::cap::Endpoints::local().await.unwrap();
    let previous = distlab_testkit::cap::switch_value(&http, &endpoints)
        .await
        .unwrap();
    let follower = distlab_config_client::Follower::switch(nodes.clone(), "cap_mode").unwrap();
    let followed = follower.followed().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(follower.run(stop.clone()));

    for value in ["AP", "CP"] {
        let set = http
            .put(format!("{chaos}/switches/cap_mode"))
            .json(&json!({"value": value.to_lowercase()}))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 200);
        let set: Value = set.json().await.unwrap();
        assert_eq!(set["value"], value, "stored as spelled in the table");
        // In the Raft config service, under the documented key…
        let stored = get_json(
            &http,
            "http://127.0.0.1:8092/v1/kv/distlab/switches/cap_mode",
        )
        .await;
        assert_eq!(stored["value"], value);
        assert_eq!(stored["revision"], set["revision"]);
        // …followed by a replica of any service…
        eventually(
            "the follower to see the switch",
            Duration::from_secs(10),
            || async { (followed.value().as_deref() == Some(value)).then_some(()) },
        )
        .await;
        // …and read back by the sidecar.
        assert_eq!(
            get_json(&http, &format!("{chaos}/switches/cap_mode")).await["value"],
            value
        );
    }
    stop.cancel();

    let bad = http
        .put(format!("{chaos}/switches/cap_mode"))
        .json(&json!({"value": "BASE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let unknown = http
        .put(format!("{chaos}/switches/warp_drive"))
        .json(&json!({"value": "on"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        get_json(&http, &format!("{chaos}/switches/cap_mode")).await["value"],
        "CP"
    );
    distlab_testkit::cap::restore_switch(&http, &endpoints, previous.as_deref())
        .await
        .unwrap();
}
