//! The README's curl walkthrough, against the services of the running local stack (`cargo xtask up`):
//! seed a product, place an order, watch it confirm. Also the endpoints every service has.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::{eventually, get_json, http, inventory_url, order_url, require_stack};
use serde_json::{Value, json};
use uuid::Uuid;

/// Places an order on the stack's order service; returns its id after asserting 202 PENDING.
async fn place(http: &reqwest::Client, body: Value, key: Option<&str>) -> String {
    let mut request = http.post(format!("{}/orders", order_url())).json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    let placed: Value = response.json().await.unwrap();
    assert_eq!(placed["status"], "PENDING");
    placed["id"].as_str().unwrap().to_owned()
}

/// Waits until the order has `status`; returns it.
async fn wait_for_status(http: &reqwest::Client, id: &str, status: &'static str) -> Value {
    let url = format!("{}/orders/{id}", order_url());
    eventually(
        &format!("order {id} to be {status}"),
        Duration::from_secs(30),
        || async {
            let order = get_json(http, &url).await;
            (order["status"] == status).then_some(order)
        },
    )
    .await
}

#[tokio::test]
async fn the_readme_walkthrough_confirms_an_order_on_the_running_stack() {
    require_stack(true);
    let http = http();
    // A SKU of this run's own, so that earlier runs and users' data do not matter.
    let sku = format!("WALK-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let product_url = format!("{}/products/{sku}", inventory_url());

    let seeded = http
        .put(&product_url)
        .json(&json!({"name": "Walkthrough widget", "price_cents": 1999, "stock": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 200);
    assert_eq!(get_json(&http, &product_url).await["available"], 10);

    let order = json!({"customer_id": "alice", "items": [{"sku": sku, "quantity": 3}]});
    let id = place(&http, order, Some(&format!("walkthrough-{sku}"))).await;
    let confirmed = wait_for_status(&http, &id, "CONFIRMED").await;
    assert_eq!(confirmed["items"], json!([{"sku": sku, "quantity": 3}]));
    let product = get_json(&http, &product_url).await;
    assert_eq!(
        (product["available"].as_i64(), product["reserved"].as_i64()),
        (Some(7), Some(3))
    );
    // The order service tells the stock too: read through to the inventory while cap_mode is CP (the
    // default), and says so.
    let stock = http
        .get(format!("{}/stock/{sku}", order_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stock.status(), 200);
    assert_eq!(stock.headers()["x-distlab-cap-mode"], "CP");
    let stock: Value = stock.json().await.unwrap();
    assert_eq!(
        (&stock["available"], &stock["source"], &stock["version"]),
        (&json!(7), &json!("inventory"), &product["version"])
    );

    // An order beyond the stock is REJECTED with the reason.
    let id = place(
        &http,
        json!({"customer_id": "bob", "items": [{"sku": sku, "quantity": 8}]}),
        None,
    )
    .await;
    let rejected = wait_for_status(&http, &id, "REJECTED").await;
    assert_eq!(rejected["reason"], "insufficient_stock");
}

#[tokio::test]
async fn every_service_serves_health_readiness_metrics_and_openapi() {
    require_stack(true);
    let http = http();
    for (base, path) in [(order_url(), "/orders"), (inventory_url(), "/products")] {
        assert_eq!(
            get_json(&http, &format!("{base}/healthz")).await["status"],
            "ok"
        );
        let ready = get_json(&http, &format!("{base}/readyz")).await;
        assert_eq!(ready["checks"]["kafka"], "ok", "{base} is ready");

        // A request first, so the per-route counter exists.
        get_json(&http, &format!("{base}{path}")).await;
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!(
                "http_requests_total{{method=\"GET\",route=\"{path}\",status=\"200\"}}"
            )),
            "{base}/metrics counts requests by matched route"
        );
        assert!(
            metrics.contains("outbox_pending_messages"),
            "{base}/metrics has the outbox gauges"
        );

        let openapi = get_json(&http, &format!("{base}/openapi.json")).await;
        assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
        assert!(
            openapi["paths"][path].is_object(),
            "{base}/openapi.json documents {path}"
        );
        assert!(
            openapi["paths"]["/2pc/prepare"].is_object(),
            "{base}/openapi.json documents the 2PC participant"
        );
    }
}

#[tokio::test]
async fn the_readme_2pc_walkthrough_confirms_then_refuses_on_the_running_stack() {
    require_stack(true);
    let http = http();
    let coordinator = distlab_testkit::coordinator_url();
    let sku = format!("GADGET-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let seeded = http
        .put(format!("{}/products/{sku}", inventory_url()))
        .json(&json!({"name": "Gadget", "price_cents": 4999, "stock": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 200);

    let order = |quantity: u32| json!({"customer_id": "carol", "items": [{"sku": sku, "quantity": quantity}], "mode": "2pc"});
    let confirmed = http
        .post(format!("{}/orders", order_url()))
        .json(&order(2))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 201);
    let confirmed: Value = confirmed.json().await.unwrap();
    assert_eq!(
        (confirmed["status"].as_str(), confirmed["mode"].as_str()),
        (Some("CONFIRMED"), Some("2pc"))
    );

    let refused = http
        .post(format!("{}/orders", order_url()))
        .json(&order(9))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "insufficient_stock");
    assert_eq!(refused["error"]["details"]["order"]["status"], "REJECTED");

    let gid = refused["error"]["details"]["gid"].as_str().unwrap();
    let transaction = get_json(&http, &format!("{coordinator}/transactions/{gid}")).await;
    assert_eq!(transaction["state"], "ABORTED");
    assert_eq!(transaction["branches"].as_array().unwrap().len(), 2);
    let product = get_json(&http, &format!("{}/products/{sku}", inventory_url())).await;
    assert_eq!(
        (product["available"].as_i64(), product["reserved"].as_i64()),
        (Some(3), Some(2))
    );
}
