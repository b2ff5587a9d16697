//! The storefront of the running stack (`cargo xtask up`, gateway on 8080) in a real browser (Debian's
//! headless Chromium through WebDriver) and over HTTP: a customer buys and watches the order turn
//! CONFIRMED without a reload; with the inventory partitioned away the pages show the degraded banner and
//! stock "as of"; with the order service cut off checkout says ordering is paused; the `degrade` switch
//! flips the running gateway. No JavaScript error in the console. Screenshots go to `.distlab/screenshots/`.
//!
//! These tests partition the gateway and flip a switch of the whole stack, so each runs alone
//! (`.config/nextest.toml`).

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::browser::Browser;
use distlab_testkit::{chaos_url, eventually, http, require_chaos, require_stack};
use serde_json::json;
use uuid::Uuid;

/// The stack's storefront.
fn gateway_url() -> String {
    std::env::var("DISTLAB_GATEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into())
}

/// A product of the shop `cargo xtask up` seeds.
const SKU: &str = "shop-mug";
const PARTITION: &str = "storefront-test";

fn require_gateway() {
    require_stack(true);
    require_chaos();
    let addr = gateway_url().trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1))
            .is_ok(),
        "the storefront gateway ({addr}) is not running. Start the stack with `cargo xtask up`."
    );
}

/// Sets the `degrade` switch through the chaos sidecar and waits for the gateway to follow it.
async fn set_degrade(http: &reqwest::Client, value: &str) {
    let answer = http
        .put(format!("{}/switches/degrade", chaos_url()))
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "degrade={value}: {}",
        answer.status()
    );
    eventually(
        &format!("the gateway to follow degrade={value}"),
        Duration::from_secs(20),
        || async {
            let response = http
                .get(format!("{}/healthz", gateway_url()))
                .send()
                .await
                .ok()?;
            let mode = response
                .headers()
                .get("x-distlab-degrade-mode")?
                .to_str()
                .ok()?;
            (mode == value).then_some(())
        },
    )
    .await;
}

/// Cuts the gateway from `part` (reset: the gateway's calls fail at once).
async fn partition(http: &reqwest::Client, part: &str) {
    heal(http).await;
    let answer = http
        .post(format!("{}/partitions", chaos_url()))
        .json(&json!({"name": PARTITION, "sides": [["gateway"], [part]], "mode": "reset"}))
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap()
    );
}

async fn heal(http: &reqwest::Client) {
    let _ = http
        .delete(format!("{}/partitions/{PARTITION}", chaos_url()))
        .send()
        .await;
}

/// Keeps the test's product in stock on a long-lived stack (every run buys some).
async fn restock(http: &reqwest::Client) {
    let inventory = distlab_testkit::inventory_url();
    let url = format!("{inventory}/products/{SKU}");
    let product = distlab_testkit::get_json(http, &url).await;
    if product["available"].as_i64().unwrap_or(0) < 50 {
        let answer = http
            .post(format!("{url}/adjust"))
            .json(&json!({"delta": 100}))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "restock: {}", answer.status());
    }
}

/// The page kind a plain GET of `path` is served as now.
async fn page_kind(http: &reqwest::Client, path: &str) -> Option<String> {
    let response = http
        .get(format!("{}{path}", gateway_url()))
        .send()
        .await
        .ok()?;
    Some(
        response
            .headers()
            .get("x-distlab-page")?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

/// No partition left, `degrade=auto`, full pages served: where every test starts.
async fn healthy_shop(http: &reqwest::Client) {
    heal(http).await;
    set_degrade(http, "auto").await;
    until_full(http).await;
}

/// Waits until the shop serves full pages again (breakers closed).
async fn until_full(http: &reqwest::Client) {
    eventually("full pages again", Duration::from_secs(20), || async {
        (page_kind(http, "/").await.as_deref() == Some("full")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_customer_buys_in_a_browser_and_the_order_page_turns_confirmed_without_a_reload() {
    require_gateway();
    let http = http();
    restock(&http).await;
    healthy_shop(&http).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", gateway_url())).await;
    browser
        .wait_for(&format!("li.product[data-sku='{SKU}']"))
        .await;
    browser.wait_for_attr("#served", "data-page", "full").await;
    browser.wait_for("#bestsellers").await;
    browser.screenshot("storefront-catalog").await;

    browser
        .click(&format!("li.product[data-sku='{SKU}'] a"))
        .await;
    browser.wait_for("#checkout").await;
    let customer = format!("browser-{}", &Uuid::new_v4().simple().to_string()[..10]);
    browser.fill("#customer", &customer).await;
    browser.fill("#quantity", "1").await;
    browser.submit("#checkout").await;
    browser.wait_for("#status").await;
    // Mark this document: if the page reloaded to show the new status, the mark would be gone.
    browser
        .client()
        .execute("window.__distlab_mark = 'same page'; return true;", vec![])
        .await
        .unwrap();
    browser
        .wait_for_attr("#status", "data-status", "CONFIRMED")
        .await;
    let mark = browser
        .client()
        .execute("return window.__distlab_mark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("same page"), "the order page reloaded");
    browser.screenshot("storefront-order-confirmed").await;
    browser.assert_no_console_errors().await;
    browser.close().await;
}

#[tokio::test]
async fn with_the_inventory_partitioned_the_pages_show_the_degraded_banner_and_stock_as_of() {
    require_gateway();
    let http = http();
    healthy_shop(&http).await; // the last known catalog is fresh
    let browser = Browser::start().await;
    partition(&http, "inventory").await;
    browser.goto(&format!("{}/", gateway_url())).await;
    browser
        .wait_for_attr("#served", "data-page", "degraded")
        .await;
    browser
        .wait_for_attr("#banner", "data-reason", "inventory_unavailable")
        .await;
    let as_of = browser.text("#stock-as-of").await;
    assert!(as_of.ends_with("UTC"), "stock as of: {as_of}");
    browser
        .wait_for(&format!("li.product[data-sku='{SKU}']"))
        .await;
    browser.screenshot("storefront-degraded").await;
    browser
        .click(&format!("li.product[data-sku='{SKU}'] a"))
        .await;
    browser.wait_for("#stock-as-of").await;
    browser.wait_for("#checkout").await; // ordering still works: the order service is reachable
    browser.assert_no_console_errors().await;
    heal(&http).await;
    until_full(&http).await;
    browser.close().await;
}

#[tokio::test]
async fn with_the_order_service_cut_off_checkout_says_ordering_is_paused() {
    require_gateway();
    let http = http();
    healthy_shop(&http).await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/products/{SKU}", gateway_url()))
        .await;
    browser.wait_for("#checkout").await;
    partition(&http, "order").await;
    browser.submit("#checkout").await;
    let message = browser.text("#error").await;
    assert!(message.contains("Ordering is paused"), "{message}");
    browser
        .wait_for_attr("#served", "data-page", "degraded")
        .await;
    browser.screenshot("storefront-ordering-paused").await;
    // Browsing goes on.
    browser.goto(&format!("{}/", gateway_url())).await;
    browser
        .wait_for(&format!("li.product[data-sku='{SKU}']"))
        .await;
    // A 503 page is a failed resource load for the browser's console; only script errors count here.
    let script_errors: Vec<_> = browser
        .console_errors()
        .await
        .into_iter()
        .filter(|e| e.source != "network")
        .collect();
    assert!(script_errors.is_empty(), "{script_errors:?}");
    heal(&http).await;
    until_full(&http).await;
    browser.close().await;
}

#[tokio::test]
async fn the_degrade_switch_flips_the_running_gateway() {
    require_gateway();
    let http = http();
    heal(&http).await;
    set_degrade(&http, "on").await;
    let response = http
        .get(format!("{}/", gateway_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-distlab-page"], "degraded");
    assert_eq!(
        response.headers()["x-distlab-degraded-because"],
        "promotion"
    );
    let html = response.text().await.unwrap();
    assert!(
        html.contains("data-mode=\"on\"") && !html.contains("id=\"bestsellers\""),
        "{html}"
    );
    // A planned promotion keeps checkout working.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let checkout = no_redirect
        .post(format!("{}/checkout", gateway_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("sku={SKU}&quantity=1&customer_id=switch-test"))
        .send()
        .await
        .unwrap();
    assert_eq!(checkout.status(), 303);

    set_degrade(&http, "off").await;
    assert_eq!(page_kind(&http, "/").await.as_deref(), Some("full"));
    let ready = distlab_testkit::get_json(&http, &format!("{}/readyz", gateway_url())).await;
    assert_eq!(ready["checks"]["degrade"]["mode"], "off", "{ready}");
    assert_eq!(ready["checks"]["degrade"]["source"], "config_service");
    set_degrade(&http, "auto").await;
}
