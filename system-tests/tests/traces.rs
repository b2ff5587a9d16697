//! OpenTelemetry traces across every hop of an order (docs/observability.md, "Traces"): the order,
//! inventory and coordinator binaries run as processes of the test's own, exporting OTLP to the testkit's
//! receiver, and one order is ONE connected trace — through HTTP (`traceparent` headers), the outbox row,
//! Kafka (the envelope's `traceparent`) and back; a 2PC order shows prepare and commit per participant, on
//! the coordinator's side and on the participant's.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::otlp::{OtlpReceiver, ReceivedSpan, connected};
use distlab_testkit::processes::ServiceProcess;
use distlab_testkit::{TestDatabase, eventually, unique_group, unique_kafka, unused_port};
use serde_json::{Value, json};

/// How long the services may take to start, and a trace to arrive whole.
const START: Duration = Duration::from_secs(60);
const ARRIVE: Duration = Duration::from_secs(30);

/// The three services of an order, each exporting to `receiver`, on databases and topics of their own.
struct Shop {
    order: ServiceProcess,
    inventory: ServiceProcess,
    // Kept running (and killed on drop) with the others.
    _coordinator: ServiceProcess,
    http: reqwest::Client,
}

impl Shop {
    async fn start(receiver: &OtlpReceiver) -> Self {
        distlab_testkit::require_stack(false);
        let orders_db = TestDatabase::create(&distlab_testkit::orders_server()).await;
        let inventory_db = TestDatabase::create(&distlab_testkit::inventory_server()).await;
        let coordinator_db = TestDatabase::create(&distlab_testkit::orders_server()).await;
        let kafka = unique_kafka(&distlab_testkit::kafka_brokers());
        let (order_port, inventory_port, coordinator_port) =
            (unused_port(), unused_port(), unused_port());
        let common = |db: &TestDatabase, group: &str| {
            vec![
                ("DATABASE_URL", db.url.clone()),
                ("KAFKA_BROKERS", kafka.brokers.clone()),
                ("ORDER_EVENTS_TOPIC", kafka.order_events_topic.clone()),
                (
                    "INVENTORY_EVENTS_TOPIC",
                    kafka.inventory_events_topic.clone(),
                ),
                ("CONSUMER_GROUP", unique_group(group)),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
                // Export every 200 ms, so that the test waits for spans a short while.
                ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
            ]
        };
        let mut order_env = common(&orders_db, "order");
        order_env.extend([
            ("CONFIG_URLS", String::new()),
            (
                "COORDINATOR_URL",
                format!("http://127.0.0.1:{coordinator_port}"),
            ),
            (
                "INVENTORY_URL",
                format!("http://127.0.0.1:{inventory_port}"),
            ),
        ]);
        let mut coordinator_env = common(&coordinator_db, "coordinator");
        coordinator_env.push((
            "PARTICIPANTS",
            format!(
                "order=http://127.0.0.1:{order_port},inventory=http://127.0.0.1:{inventory_port}"
            ),
        ));
        let mut order = ServiceProcess::spawn("distlab-order", order_port, &order_env);
        let mut inventory = ServiceProcess::spawn(
            "distlab-inventory",
            inventory_port,
            &common(&inventory_db, "inventory"),
        );
        let mut coordinator =
            ServiceProcess::spawn("distlab-coordinator", coordinator_port, &coordinator_env);
        order.wait_ready(START).await;
        inventory.wait_ready(START).await;
        coordinator.wait_ready(START).await;
        Self {
            order,
            inventory,
            _coordinator: coordinator,
            http: distlab_testkit::http(),
        }
    }

    async fn seed(&self, sku: &str, stock: i64) {
        let response = self
            .http
            .put(format!("{}/products/{sku}", self.inventory.url))
            .json(&json!({"name": format!("Product {sku}"), "price_cents": 100, "stock": stock}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "seeding {sku}");
    }

    async fn place(&self, mode: &str, sku: &str, traceparent: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}/orders", self.order.url)).json(
            &json!({"customer_id": "tracer", "items": [{"sku": sku, "quantity": 1}], "mode": mode}),
        );
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn status_of(&self, id: &str) -> String {
        let order =
            distlab_testkit::get_json(&self.http, &format!("{}/orders/{id}", self.order.url)).await;
        order["status"].as_str().unwrap().to_owned()
    }
}

/// One line per span, `service: name`, sorted, for messages.
fn listing(spans: &[ReceivedSpan]) -> String {
    names(spans)
        .into_iter()
        .map(|(service, name)| format!("  {service}: {name}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(service, span name)` of each span, sorted.
fn names(spans: &[ReceivedSpan]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = spans
        .iter()
        .map(|s| (s.service.clone(), s.name.clone()))
        .collect();
    names.sort();
    names
}

/// Waits until the spans of `trace_id` include every `(service, name)` of `expected` (as many times as it
/// is listed), then checks they are one connected trace; returns its spans.
async fn whole_trace(
    receiver: &OtlpReceiver,
    trace_id: &str,
    expected: &[(&str, &str)],
) -> Vec<ReceivedSpan> {
    let spans = eventually(
        &format!("trace {trace_id} to hold {expected:?}"),
        ARRIVE,
        || async {
            let spans = receiver.trace(trace_id);
            let mut left = names(&spans);
            let complete = expected.iter().all(|(service, name)| {
                let found = left.iter().position(|(s, n)| s == service && n == name);
                found.map(|i| left.remove(i)).is_some()
            });
            complete.then_some(spans)
        },
    )
    .await;
    if let Err(why) = connected(&spans) {
        panic!("trace {trace_id} is not one connected trace: {why}");
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_is_one_trace_across_http_the_outbox_kafka_and_2pc() {
    let receiver = OtlpReceiver::start().await;
    let shop = Shop::start(&receiver).await;
    shop.seed("TRACE-1", 10).await;

    // An outbox order, placed by a client that does not trace: the order service's request span is the
    // root, and the trace goes on through the outbox and Kafka to the inventory and back.
    let (status, placed) = shop.place("outbox", "TRACE-1", None).await;
    assert_eq!(status, 202, "{placed}");
    let id = placed["id"].as_str().unwrap().to_owned();
    eventually("the outbox order to be confirmed", ARRIVE, || async {
        (shop.status_of(&id).await == "CONFIRMED").then_some(())
    })
    .await;
    let root = eventually("the order request's span", ARRIVE, || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.service == "order" && s.name == "POST /orders")
    })
    .await;
    assert_eq!(root.parent_span_id, None, "no caller traced: {root}");
    let outbox = whole_trace(
        &receiver,
        &root.trace_id,
        &[
            ("order", "POST /orders"),
            ("order", "publish OrderPlaced"),
            ("inventory", "consume OrderPlaced"),
            ("inventory", "publish StockReserved"),
            ("order", "consume StockReserved"),
        ],
    )
    .await;
    assert_eq!(connected(&outbox).unwrap().span_id, root.span_id);
    // The hops follow one another: each is the child of the one before.
    let find = |service: &str, name: &str| {
        outbox
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap()
    };
    let chain = [
        find("order", "POST /orders"),
        find("order", "publish OrderPlaced"),
        find("inventory", "consume OrderPlaced"),
        find("inventory", "publish StockReserved"),
        find("order", "consume StockReserved"),
    ];
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].parent_span_id.as_deref(),
            Some(pair[0].span_id.as_str()),
            "{} follows {}",
            pair[1],
            pair[0]
        );
    }
    println!("outbox order's trace:\n{}", listing(&outbox));

    // A 2PC order, placed by a client that traces: the whole transaction is in the client's trace.
    let trace_id = "5e1f0c2a9b7d4e3f8a6b1c0d2e4f6a8b";
    let caller = "00f067aa0ba902b7";
    let (status, confirmed) = shop
        .place(
            "2pc",
            "TRACE-1",
            Some(&format!("00-{trace_id}-{caller}-01")),
        )
        .await;
    assert_eq!(status, 201, "{confirmed}");
    let two_phase = whole_trace(
        &receiver,
        trace_id,
        &[
            ("order", "POST /orders"),
            ("coordinator", "POST /transactions"),
            ("coordinator", "2pc.prepare order"),
            ("coordinator", "2pc.prepare inventory"),
            ("coordinator", "2pc.commit order"),
            ("coordinator", "2pc.commit inventory"),
            ("order", "POST /2pc/prepare"),
            ("order", "2pc.prepare"),
            ("order", "POST /2pc/commit"),
            ("order", "2pc.commit"),
            ("inventory", "POST /2pc/prepare"),
            ("inventory", "2pc.prepare"),
            ("inventory", "POST /2pc/commit"),
            ("inventory", "2pc.commit"),
        ],
    )
    .await;
    let root = connected(&two_phase).unwrap();
    assert_eq!(
        (root.service.as_str(), root.name.as_str()),
        ("order", "POST /orders")
    );
    assert_eq!(
        root.parent_span_id.as_deref(),
        Some(caller),
        "the caller's traceparent is the parent"
    );
    // Each participant's request is the child of the coordinator's span for that participant and phase.
    for (participant, phase) in [
        ("order", "prepare"),
        ("inventory", "prepare"),
        ("order", "commit"),
        ("inventory", "commit"),
    ] {
        let at_coordinator = two_phase
            .iter()
            .find(|s| s.service == "coordinator" && s.name == format!("2pc.{phase} {participant}"))
            .unwrap();
        let request = two_phase
            .iter()
            .find(|s| {
                s.service == participant
                    && s.name == format!("POST /2pc/{phase}")
                    && s.parent_span_id.as_deref() == Some(at_coordinator.span_id.as_str())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {participant} request under {at_coordinator}:\n{}",
                    listing(&two_phase)
                )
            });
        assert!(
            two_phase.iter().any(|s| s.service == participant
                && s.name == format!("2pc.{phase}")
                && s.parent_span_id.as_deref() == Some(request.span_id.as_str())),
            "the {participant} branch's {phase} span is under its request"
        );
    }
    println!("2PC order's trace:\n{}", listing(&two_phase));
}
