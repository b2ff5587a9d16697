//! The headless browser helper (`distlab_testkit::browser`) against a tiny HTTP server of the test's own —
//! no distlab service, no stack. Needs Debian's `chromium` and `chromium-driver` (`cargo xtask install`).
//!
//! - A page whose script changes an element's text after a click (after a fetch, as the gateway's order
//!   page does): the change is seen without a reload, a form is filled and submitted, a screenshot is
//!   written, and the console holds no error.
//! - A page that throws: the console-error collection reports the uncaught exception, and
//!   `assert_no_console_errors` fails naming it; a wait that cannot succeed fails with the page's HTML.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::response::Html;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use distlab_testkit::browser::Browser;
use futures::FutureExt;
use serde_json::json;

const FORM_PAGE: &str = r#"<!doctype html>
<html>
<head><title>form page</title><link rel="icon" href="data:,"></head>
<body>
  <h1 id="greeting" data-state="idle">Hello</h1>
  <button id="change" type="button">Change</button>
  <form id="order" method="post" action="/submitted">
    <input type="number" name="quantity" value="1">
    <input type="text" name="customer_id" value="guest">
    <button id="buy">Buy</button>
  </form>
  <script>
    console.log("form page ready");
    document.getElementById("change").addEventListener("click", () => {
      fetch("/api/greeting")
        .then((response) => response.json())
        .then((body) => {
          const greeting = document.getElementById("greeting");
          greeting.textContent = body.text;
          greeting.dataset.state = "changed";
        });
    });
  </script>
</body>
</html>"#;

const THROWING_PAGE: &str = r#"<!doctype html>
<html>
<head><title>throwing page</title><link rel="icon" href="data:,"></head>
<body>
  <p id="before">the script below throws</p>
  <script>
    console.log("about to throw");
    throw new Error("kaput from the page");
  </script>
</body>
</html>"#;

async fn submitted(Form(form): Form<HashMap<String, String>>) -> Html<String> {
    let quantity = form.get("quantity").cloned().unwrap_or_default();
    let customer = form.get("customer_id").cloned().unwrap_or_default();
    Html(format!(
        r#"<!doctype html><html><head><link rel="icon" href="data:,"></head>
        <body><p id="result" data-quantity="{quantity}">{quantity} for {customer}</p></body></html>"#
    ))
}

/// Serves the test pages on a free loopback port; returns the base URL.
async fn serve() -> String {
    let router = Router::new()
        .route("/", get(|| async { Html(FORM_PAGE) }))
        .route("/throws", get(|| async { Html(THROWING_PAGE) }))
        .route(
            "/api/greeting",
            get(|| async { Json(json!({ "text": "Changed by the script" })) }),
        )
        .route("/submitted", post(submitted));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The message of a panic caught by `catch_unwind`.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_changes_the_text_without_reload_and_a_form_submits() {
    let base = serve().await;
    let browser = Browser::start().await;

    browser.goto(&format!("{base}/")).await;
    browser.wait_for_text("#greeting", "Hello").await;
    // A mark in the page's JavaScript state: a reload would lose it.
    browser
        .client()
        .execute("window.distlabMark = 'kept'", vec![])
        .await
        .unwrap();

    browser.click("#change").await;
    browser
        .wait_for_text("#greeting", "Changed by the script")
        .await;
    browser
        .wait_for_attr("#greeting", "data-state", "changed")
        .await;
    let mark = browser
        .client()
        .execute("return window.distlabMark", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("kept"), "the page was not reloaded");

    let screenshot = browser.screenshot("testkit-browser-form").await;
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{} is a PNG image",
        screenshot.display()
    );

    browser.fill("#order [name=quantity]", "3").await;
    browser.fill("#order [name=customer_id]", "alice").await;
    browser.submit("#order").await;
    browser.wait_for_text("#result", "3 for alice").await;
    assert_eq!(browser.url().await, format!("{base}/submitted"));
    assert_eq!(
        browser.attr("#result", "data-quantity").await.as_deref(),
        Some("3")
    );

    let entries = browser.console_entries().await;
    assert!(
        entries
            .iter()
            .any(|e| e.message.contains("form page ready") && !e.is_error()),
        "the console log is collected (console.log at level INFO): {entries:?}"
    );
    browser.assert_no_console_errors().await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_throws_is_reported_and_a_failed_wait_shows_the_page() {
    let base = serve().await;
    let mut browser = Browser::start().await;

    browser.goto(&format!("{base}/throws")).await;
    let error = browser.wait_for_console_error("kaput from the page").await;
    assert_eq!(error.source, "javascript", "an uncaught exception: {error}");
    assert!(error.is_error());

    let failed = AssertUnwindSafe(browser.assert_no_console_errors())
        .catch_unwind()
        .await
        .expect_err("assert_no_console_errors fails on a page that threw");
    let message = panic_message(failed);
    assert!(
        message.contains("kaput from the page") && message.contains("/throws"),
        "the failure names the error and the page: {message}"
    );

    browser.clear_console().await;
    browser.assert_no_console_errors().await;

    browser.set_timeout(Duration::from_millis(500));
    let failed = AssertUnwindSafe(browser.wait_for_text("#before", "something else"))
        .catch_unwind()
        .await
        .expect_err("a wait for text that never comes fails");
    let message = panic_message(failed);
    assert!(
        message.contains("timed out after 500ms")
            && message.contains("the script below throws")
            && message.contains("<p id=\"before\">"),
        "the failure shows what it saw and the page's HTML: {message}"
    );
    browser.close().await;
}
