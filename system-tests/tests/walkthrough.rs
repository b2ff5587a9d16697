//! The README's curl walkthrough, against the services of the running local stack (`cargo xtask up`):
//! seed a product, place an order, watch it confirm. Also the endpoints every service has.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::{eventually, http, inventory_url, order_url, require_stack};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn the_readme_walkthrough_confirms_an_order_on_the_running_stack() {
    require_stack(true);
    let http = http();
    // A SKU of this run's own, so that earlier runs and users' data do not matter.
    let sku = format!("WALK-{}", &Uuid::new_v4().simple().to_string()[..8]);

    let product: Value = http
        .put(format!("{}/products/{sku}", inventory_url()))
        .json(&json!({"name": "Walkthrough widget", "price_cents": 1999, "stock": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(product["available"], 10);

    let placed = http
        .post(format!("{}/orders", order_url()))
        .header("idempotency-key", format!("walkthrough-{sku}"))
        .json(&json!({"customer_id": "alice", "items": [{"sku": sku, "quantity": 3}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 202);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["status"], "PENDING");
    let id = placed["id"].as_str().unwrap().to_owned();

    let confirmed: Value = eventually("the order to be CONFIRMED", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{}/orders/{id}", order_url()));
        async move {
            let order: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (order["status"] == "CONFIRMED").then_some(order)
        }
    })
    .await;
    assert_eq!(confirmed["items"], json!([{"sku": sku, "quantity": 3}]));

    let product: Value = http
        .get(format!("{}/products/{sku}", inventory_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (product["available"].as_i64(), product["reserved"].as_i64()),
        (Some(7), Some(3))
    );

    // An order beyond the stock is REJECTED with the reason.
    let too_many: Value = http
        .post(format!("{}/orders", order_url()))
        .json(&json!({"customer_id": "bob", "items": [{"sku": sku, "quantity": 8}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = too_many["id"].as_str().unwrap().to_owned();
    let rejected: Value = eventually("the order to be REJECTED", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{}/orders/{id}", order_url()));
        async move {
            let order: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (order["status"] == "REJECTED").then_some(order)
        }
    })
    .await;
    assert_eq!(rejected["reason"], "insufficient_stock");
}

#[tokio::test]
async fn every_service_serves_health_readiness_metrics_and_openapi() {
    require_stack(true);
    let http = http();
    for (base, path) in [(order_url(), "/orders"), (inventory_url(), "/products")] {
        let health: Value = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "ok");

        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{base} is ready");
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(ready["checks"]["kafka"], "ok");

        // A request first, so the per-route counter exists.
        http.get(format!("{base}{path}")).send().await.unwrap();
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

        let openapi: Value = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
        assert!(
            openapi["paths"][path].is_object(),
            "{base}/openapi.json documents {path}"
        );
    }
}
