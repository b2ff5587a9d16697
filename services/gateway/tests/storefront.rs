//! The storefront against the real stack (inventory, order service, chaos sidecar): each test runs a gateway
//! of its own, over a catalog of its own (a unique SKU prefix), and breaks only proxies of its own.
//!
//! Pages and checkout work end to end; bad input gets a clear 4xx and places nothing; a cut-off inventory
//! gives the last known stock "as of" and opens, then closes, its breaker; a cut-off order service pauses
//! ordering but not browsing; over the concurrency limit browsing is shed and checkout is not.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::{
    chaos_url, eventually, inventory_url, order_url, require_chaos, require_stack,
};
use gateway::degrade::DegradeMode;
use gateway::{Application, Config};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use uuid::Uuid;

struct Shop {
    url: String,
    prefix: String,
    http: reqwest::Client,
    proxies: Vec<String>,
}

/// A proxy of the stack's chaos sidecar in front of `upstream`, named after this test.
async fn proxy(http: &reqwest::Client, name: &str, upstream: &str) -> String {
    let upstream = upstream.trim_start_matches("http://");
    let response = http
        .post(format!("{}/proxies", chaos_url()))
        .json(
            &json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream,
                      "protocol": "http"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    format!("http://{}", body["listen"].as_str().unwrap())
}

async fn set_enabled(http: &reqwest::Client, name: &str, enabled: bool) {
    let response = http
        .post(format!("{}/proxies/{name}", chaos_url()))
        .json(&json!({"enabled": enabled}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{name} enabled={enabled}"
    );
}

impl Shop {
    /// A gateway in `mode` whose inventory and order service are reached through proxies of its own
    /// (`{tag}-inventory`, `{tag}-order`), over `products` products of its own with `stock` each.
    async fn open(mode: DegradeMode, products: usize, stock: i64) -> Self {
        Self::open_with(mode, products, stock, |_| {}).await
    }

    /// As [`Shop::open`], with the gateway's configuration adjusted by `adjust`.
    async fn open_with(
        mode: DegradeMode,
        products: usize,
        stock: i64,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        distlab_platform::telemetry::init_for_tests();
        require_stack(true);
        require_chaos();
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let tag = format!("gw{}", &Uuid::new_v4().simple().to_string()[..10]);
        let prefix = format!("{tag}-");
        for i in 0..products {
            let response = http
                .put(format!("{}/products/{prefix}{i}", inventory_url()))
                .json(&json!({"name": format!("Thing {i}"), "price_cents": 1999, "stock": stock}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let inventory = proxy(&http, &format!("{tag}-inventory"), &inventory_url()).await;
        let order = proxy(&http, &format!("{tag}-order"), &order_url()).await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            inventory_url: inventory,
            order_url: order,
            config_urls: String::new(),
            degrade: mode,
            catalog_prefix: prefix.clone(),
            catalog_refresh_ms: 600_000,
            ..Config::local()
        };
        adjust(&mut config);
        let app = Application::build(config).await.unwrap();
        let url = format!("http://{}", app.local_addr().unwrap());
        tokio::spawn(app.run_until_stopped());
        Self {
            url,
            prefix,
            http,
            proxies: vec![format!("{tag}-inventory"), format!("{tag}-order")],
        }
    }

    fn sku(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn checkout(&self, form: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let response = self
            .http
            .post(format!("{}/checkout", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// `path` as a full page (a loaded machine may need a few tries for the dependencies to answer within
    /// the gateway's time-outs).
    async fn full_page(&self, path: &str) -> (reqwest::header::HeaderMap, String) {
        eventually(
            &format!("{path} as a full page"),
            Duration::from_secs(20),
            || async {
                let (status, headers, html) = self.get(path).await;
                (status == StatusCode::OK && header(&headers, "x-distlab-page") == "full")
                    .then_some((headers, html))
            },
        )
        .await
    }

    async fn readiness(&self) -> Value {
        let (_, _, body) = self.get("/readyz").await;
        serde_json::from_str(&body).unwrap()
    }

    async fn cut(&self, dependency: usize, cut: bool) {
        set_enabled(&self.http, &self.proxies[dependency], !cut).await;
    }

    async fn close(self) {
        for name in &self.proxies {
            let _ = self
                .http
                .delete(format!("{}/proxies/{name}", chaos_url()))
                .send()
                .await;
        }
    }
}

const INVENTORY: usize = 0;
const ORDERS: usize = 1;

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The orders of `customer` among the order service's latest 500.
async fn orders_of(http: &reqwest::Client, customer: &str) -> usize {
    let list = distlab_testkit::get_json(http, &format!("{}/orders?limit=500", order_url())).await;
    list["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["customer_id"] == customer)
        .count()
}

#[tokio::test]
async fn a_customer_browses_buys_and_the_order_page_follows_the_order_to_confirmed() {
    let shop = Shop::open(DegradeMode::Auto, 3, 10).await;
    let (headers, html) = shop.full_page("/").await;
    assert_eq!(header(&headers, "x-distlab-degrade-mode"), "auto");
    for i in 0..3 {
        assert!(
            html.contains(&format!("data-sku=\"{}\"", shop.sku(i))),
            "{html}"
        );
    }
    assert!(
        html.contains("id=\"bestsellers\""),
        "a full page has the non-core panel"
    );
    assert!(html.contains("data-page=\"full\""));
    for path in ["/healthz", "/readyz", "/no/such/page"] {
        let (_, headers, _) = shop.get(path).await;
        assert_eq!(header(&headers, "x-distlab-degrade-mode"), "auto", "{path}");
    }

    let (status, _, html) = shop.get(&format!("/products/{}", shop.sku(1))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"checkout\""), "{html}");

    let customer = format!("c{}", &Uuid::new_v4().simple().to_string()[..12]);
    let key = Uuid::new_v4().to_string();
    let form = format!(
        "sku={}&quantity=2&customer_id={customer}&idempotency_key={key}",
        shop.sku(1)
    );
    let (status, headers, body) = shop.checkout(&form).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let location = header(&headers, "location").to_owned();
    assert!(location.starts_with("/orders/"), "{location}");
    // The same form again (a double click) is the same order.
    let (again, headers_again, _) = shop.checkout(&form).await;
    assert_eq!(again, StatusCode::SEE_OTHER);
    assert_eq!(header(&headers_again, "location"), location);

    let (status, _, html) = shop.get(&location).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"status\""), "{html}");
    let id = location.trim_start_matches("/orders/").to_owned();
    eventually(
        "the order to be confirmed",
        Duration::from_secs(30),
        || async {
            let (_, _, body) = shop.get(&format!("/api/orders/{id}")).await;
            let order: Value = serde_json::from_str(&body).ok()?;
            (order["status"] == "CONFIRMED").then_some(())
        },
    )
    .await;
    let (_, _, html) = shop.get(&location).await;
    assert!(html.contains("data-status=\"CONFIRMED\""), "{html}");
    assert_eq!(orders_of(&shop.http, &customer).await, 1);
    shop.close().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_places_nothing() {
    let shop = Shop::open(DegradeMode::Auto, 1, 10).await;
    let customer = format!("c{}", &Uuid::new_v4().simple().to_string()[..12]);
    let sku = shop.sku(0);
    for (form, field) in [
        (
            format!("sku={sku}&quantity=0&customer_id={customer}"),
            "quantity",
        ),
        (
            format!("sku={sku}&quantity=1001&customer_id={customer}"),
            "quantity",
        ),
        (
            format!("sku={sku}&quantity=two&customer_id={customer}"),
            "quantity",
        ),
        (
            format!("sku=a%20b&quantity=1&customer_id={customer}"),
            "sku",
        ),
        (format!("sku={sku}&quantity=1"), "customer_id"),
        (
            format!("sku={sku}&quantity=1&customer_id=%3Cscript%3E"),
            "customer_id",
        ),
    ] {
        let (status, _, html) = shop.checkout(&form).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{form}: {html}");
        assert!(
            html.contains("id=\"error\"") && html.contains(field),
            "{form}: {html}"
        );
        assert!(!html.contains("<script>"), "interpolated input is escaped");
    }
    let response = shop
        .http
        .post(format!("{}/checkout", shop.url))
        .json(&json!({"sku": sku}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A product the shop does not sell: refused before anything is placed.
    let (status, _, html) = shop
        .checkout(&format!(
            "sku={}-none&quantity=1&customer_id={customer}",
            shop.prefix
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");

    assert_eq!(shop.get("/products/a%20b").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        shop.get(&format!("/products/{}-none", shop.prefix)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        shop.get("/orders/not-a-uuid").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        shop.get(&format!("/orders/{}", Uuid::now_v7())).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _, body) = shop.get("/api/orders/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    distlab_testkit::assert_error_body(&serde_json::from_str(&body).unwrap(), "invalid_order_id");
    let (status, _, body) = shop.get("/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    distlab_testkit::assert_error_body(&serde_json::from_str(&body).unwrap(), "not_found");
    assert_eq!(
        orders_of(&shop.http, &customer).await,
        0,
        "bad input placed an order"
    );
    shop.close().await;
}

#[tokio::test]
async fn a_cut_off_inventory_gives_stock_as_of_and_its_breaker_opens_then_closes() {
    let shop = Shop::open(DegradeMode::Auto, 2, 10).await;
    shop.full_page("/").await;

    shop.cut(INVENTORY, true).await;
    for _ in 0..4 {
        let started = std::time::Instant::now();
        let (status, headers, html) = shop.get("/").await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a cut dependency must not hang a page"
        );
        assert_eq!(status, StatusCode::OK, "{html}");
        assert_eq!(header(&headers, "x-distlab-page"), "degraded");
        assert_eq!(
            header(&headers, "x-distlab-degraded-because"),
            "inventory_unavailable"
        );
        assert!(html.contains("id=\"stock-as-of\""), "{html}");
        assert!(
            html.contains(&format!("data-sku=\"{}\"", shop.sku(0))),
            "the last known catalog"
        );
    }
    let ready = shop.readiness().await;
    assert_eq!(
        ready["checks"]["dependencies"]["inventory"]["breaker"], "open",
        "{ready}"
    );
    // Product pages come from the last known catalog too.
    let (status, _, html) = shop.get(&format!("/products/{}", shop.sku(1))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"stock-as-of\""), "{html}");

    shop.cut(INVENTORY, false).await;
    eventually(
        "the breaker to close and full pages to return",
        Duration::from_secs(15),
        || async {
            let (_, headers, _) = shop.get("/").await;
            (header(&headers, "x-distlab-page") == "full").then_some(())
        },
    )
    .await;
    let ready = shop.readiness().await;
    assert_eq!(
        ready["checks"]["dependencies"]["inventory"]["breaker"], "closed",
        "{ready}"
    );
    shop.close().await;
}

#[tokio::test]
async fn a_cut_off_order_service_pauses_ordering_and_browsing_goes_on() {
    let shop = Shop::open(DegradeMode::Auto, 1, 10).await;
    let customer = format!("c{}", &Uuid::new_v4().simple().to_string()[..12]);
    shop.cut(ORDERS, true).await;
    // One key for every attempt: an attempt whose outcome is unknown cannot order twice.
    let form = format!(
        "sku={}&quantity=1&customer_id={customer}&idempotency_key={}",
        shop.sku(0),
        Uuid::new_v4()
    );
    let (status, headers, html) = shop.checkout(&form).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(html.contains("Ordering is paused"), "{html}");
    assert!(headers.contains_key("retry-after"));
    // Browsing: the catalog without the bestsellers panel (the non-core part, asked of the order
    // service on a breaker of its own).
    let (status, headers, html) = shop.get("/").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(
        header(&headers, "x-distlab-degraded-because"),
        "panel_unavailable"
    );
    assert!(!html.contains("id=\"bestsellers\""));
    assert!(html.contains(&format!("data-sku=\"{}\"", shop.sku(0))));
    // Once the breaker is open, the product page says ordering is paused instead of offering the form.
    for _ in 0..3 {
        let _ = shop.checkout(&form).await;
    }
    let (_, _, html) = shop.get(&format!("/products/{}", shop.sku(0))).await;
    assert!(html.contains("id=\"ordering-paused\""), "{html}");
    assert!(!html.contains("id=\"checkout\""));

    shop.cut(ORDERS, false).await;
    eventually("ordering to resume", Duration::from_secs(15), || async {
        let (status, _, _) = shop.checkout(&form).await;
        (status == StatusCode::SEE_OTHER).then_some(())
    })
    .await;
    assert_eq!(
        orders_of(&shop.http, &customer).await,
        1,
        "only the order after the heal"
    );
    shop.close().await;
}

#[tokio::test]
async fn over_the_limit_browsing_is_shed_at_once_and_checkout_still_goes_through() {
    let shop = Shop::open_with(DegradeMode::Auto, 1, 100, |config| {
        // The slow inventory below must make pages slow, not trip the breaker.
        config.inventory_timeout_ms = 5_000;
    })
    .await;
    shop.get("/").await; // the last known catalog
    // Every full page now waits 200 ms for the inventory.
    const SLOW: Duration = Duration::from_millis(200);
    let toxic = shop
        .http
        .post(format!(
            "{}/proxies/{}/toxics",
            chaos_url(),
            shop.proxies[INVENTORY]
        ))
        .json(
            &json!({"name": "slow", "type": "latency", "stream": "downstream",
                      "attributes": {"latency": SLOW.as_millis() as u64}}),
        )
        .send()
        .await
        .unwrap();
    assert!(
        toxic.status().is_success(),
        "{}",
        toxic.text().await.unwrap()
    );

    // A flood of browsing: 40 clients, each asking for the catalog again as soon as it has a page, until
    // the checkout below is done (at most 20 s).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (http, url, stop) = (shop.http.clone(), shop.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut pages = Vec::new();
                let until = std::time::Instant::now() + Duration::from_secs(20);
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && std::time::Instant::now() < until
                {
                    let started = std::time::Instant::now();
                    let response = http.get(format!("{url}/")).send().await.unwrap();
                    let kind = header(response.headers(), "x-distlab-page").to_owned();
                    pages.push((response.status(), kind, started.elapsed()));
                }
                pages
            })
        })
        .collect();
    // Checkout once every browse slot is taken.
    eventually(
        "the browse limit to be reached",
        Duration::from_secs(10),
        || async {
            let limits = &shop.readiness().await["checks"]["dependencies"]["limits"]["browse"];
            (limits["in_flight"].as_u64()? >= limits["limit"].as_u64()?).then_some(())
        },
    )
    .await;
    let customer = format!("c{}", &Uuid::new_v4().simple().to_string()[..12]);
    let form = format!("sku={}&quantity=1&customer_id={customer}", shop.sku(0));
    let (checkout, _, body) = shop.checkout(&form).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        checkout,
        StatusCode::SEE_OTHER,
        "checkout is never shed for browsing: {body}"
    );

    let mut pages = Vec::new();
    for client in flood {
        pages.extend(client.await.unwrap());
    }
    assert!(pages.iter().all(|(status, _, _)| *status == StatusCode::OK));
    let full = pages.iter().filter(|(_, kind, _)| kind == "full").count();
    let mut shed: Vec<Duration> = pages
        .iter()
        .filter(|(_, kind, _)| kind == "degraded")
        .map(|(_, _, took)| *took)
        .collect();
    assert!(full >= 1, "full pages are served up to the limit");
    assert!(
        !shed.is_empty(),
        "40 clients of slow pages exceed the limit (full: {full})"
    );
    // A shed page does not wait for the slow inventory: it is served at once, from memory.
    shed.sort();
    let median = shed[shed.len() / 2];
    assert!(median < SLOW, "median shed page took {median:?}");
    shop.close().await;
}
