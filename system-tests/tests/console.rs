//! The live console (`/console`) in a real browser (Debian's headless Chromium through WebDriver), served by a
//! gateway of the test's own that watches the running stack (`cargo xtask up`): every panel renders and
//! keeps updating; a Raft leader isolated from the page shows cut off and a new leader appears on the page;
//! the heal from the page joins it again; the `degrade` switch flipped from the page turns the storefront's
//! pages degraded, and flipped back. No JavaScript error in the console.
//!
//! The lock panel reads a lock service of the test's own (the stack's may predate `GET /locks`). These tests
//! partition the config cluster and flip a switch of the whole stack, so each runs alone
//! (`.config/nextest.toml`); whatever happens, each heals its partition and restores the switch.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use distlab_testkit::browser::Browser;
use distlab_testkit::{TestDatabase, chaos_url, eventually, http, require_chaos, require_stack};
use futures::FutureExt;
use serde_json::{Value, json};

/// A gateway and a lock service of the test's own, against the stack.
struct Console {
    url: String,
    lock_url: String,
    _db: TestDatabase,
}

async fn start() -> Console {
    distlab_platform::telemetry::init_for_tests();
    require_stack(true);
    require_chaos();
    distlab_testkit::require_lock_stores(false);
    let db = TestDatabase::create(&distlab_testkit::orders_server()).await;
    let redis = distlab_testkit::redis_urls();
    let locks = lock::Application::build(lock::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        database_max_connections: 4,
        redis_url: redis[0].clone(),
        redlock_urls: redis.join(","),
        zookeeper: distlab_testkit::zookeeper(),
        ..lock::Config::local()
    })
    .await
    .expect("the lock service builds");
    let lock_url = format!("http://{}", locks.local_addr().unwrap());
    tokio::spawn(locks.run_until_stopped());
    let gateway = gateway::Application::build(gateway::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        lock_url: lock_url.clone(),
        chaos_url: chaos_url(),
        ..gateway::Config::local()
    })
    .await
    .expect("the gateway builds");
    let url = format!("http://{}", gateway.local_addr().unwrap());
    tokio::spawn(gateway.run_until_stopped());
    Console {
        url,
        lock_url,
        _db: db,
    }
}

/// Opens the console and waits for its first two snapshots.
async fn open(console: &Console) -> Browser {
    let mut browser = Browser::start().await;
    browser.set_timeout(Duration::from_secs(30));
    browser.goto(&format!("{}/console", console.url)).await;
    browser.wait_for("#stream[data-state=live]").await;
    browser
        .wait_for("body:not([data-snapshots='0']):not([data-snapshots='1'])")
        .await;
    browser
}

/// Removes the console's isolation of every config node, straight at the sidecar.
async fn heal_all(http: &reqwest::Client) {
    for node in 1..=3 {
        let _ = http
            .delete(format!(
                "{}/partitions/console-isolate-config-{node}",
                chaos_url()
            ))
            .send()
            .await;
    }
}

async fn switch_value(http: &reqwest::Client, name: &str) -> Option<String> {
    let state: Value = http
        .get(format!("{}/switches/{name}", chaos_url()))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    state["value"].as_str().map(str::to_owned)
}

async fn set_switch(http: &reqwest::Client, name: &str, value: &str) {
    let _ = http
        .put(format!("{}/switches/{name}", chaos_url()))
        .json(&json!({ "value": value }))
        .send()
        .await;
}

/// Runs `body`; then, even when it panicked, heals and restores the degrade switch; then fails as it did.
async fn with_cleanup(body: impl std::future::Future<Output = ()>) {
    let http = http();
    let degrade = switch_value(&http, "degrade").await;
    heal_all(&http).await;
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    heal_all(&http).await;
    set_switch(&http, "degrade", degrade.as_deref().unwrap_or("auto")).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn every_panel_renders_and_keeps_updating_with_a_held_lock_and_its_fencing_token() {
    let console = start().await;
    let http = http();
    let name = format!(
        "console-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let lease: Value = http
        .post(format!("{}/locks/{name}/acquire", console.lock_url))
        .json(&json!({"backend": "redis", "owner": "console-test", "ttl_ms": 60_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = lease["fencing_token"].as_u64().expect("a fencing token");

    let browser = open(&console).await;
    for panel in ["raft", "orders", "twopc", "locks", "chaos", "switches"] {
        browser
            .wait_for_attr(&format!("#{panel}"), "data-reachable", "true")
            .await;
    }
    for node in 1..=3 {
        let row = browser
            .wait_for(&format!("#node-{node}[data-reachable=true]"))
            .await;
        let state = row.attr("data-state").await.unwrap().unwrap_or_default();
        assert!(
            ["leader", "follower", "candidate", "learner"].contains(&state.as_str()),
            "node {node}: {state}"
        );
    }
    browser.wait_for("#raft-map g[data-node='3'] circle").await;
    browser.wait_for("#orders dd[data-field=accepted]").await;
    let accepted = browser.text("#orders dd[data-field=accepted]").await;
    assert!(
        accepted.trim().parse::<u64>().is_ok(),
        "accepted: {accepted:?}"
    );
    browser
        .wait_for_text(
            &format!("#locks tr[data-lock='redis/{name}'] td[data-field=fencing_token]"),
            &token.to_string(),
        )
        .await;
    for switch in ["cap_mode", "degrade"] {
        let value = browser
            .attr(&format!("#switch-{switch}"), "data-value")
            .await
            .unwrap_or_default();
        assert!(!value.is_empty(), "{switch} shows no value");
    }
    // Live: later snapshots keep arriving on the same page.
    let seen: u64 = browser
        .attr("body", "data-snapshots")
        .await
        .unwrap()
        .parse()
        .unwrap();
    eventually("two more snapshots", Duration::from_secs(10), || async {
        let now: u64 = browser.attr("body", "data-snapshots").await?.parse().ok()?;
        (now >= seen + 2).then_some(())
    })
    .await;
    // A lock released leaves the panel.
    let released = http
        .post(format!("{}/locks/{name}/release", console.lock_url))
        .json(&json!({"backend": "redis", "lease_id": lease["lease_id"]}))
        .send()
        .await
        .unwrap();
    assert!(released.status().is_success());
    browser
        .wait_for_absent(&format!("#locks tr[data-lock='redis/{name}']"))
        .await;
    browser.screenshot("console").await;
    browser.assert_no_console_errors().await;
    browser.close().await;
}

/// Each config node's row state, by node id, as the page shows it now.
async fn node_states(browser: &Browser) -> Option<Vec<String>> {
    let mut states = Vec::new();
    for node in 1..=3 {
        states.push(browser.attr(&format!("#node-{node}"), "data-state").await?);
    }
    Some(states)
}

#[tokio::test]
async fn a_leader_isolated_from_the_page_is_replaced_and_healed_and_a_switch_flipped_from_the_page_degrades_the_shop()
 {
    let console = start().await;
    with_cleanup(async {
        let http = http();
        let browser = open(&console).await;

        // The leader a majority agrees on, as the page shows it.
        let leader = eventually(
            "the page to show a leader",
            Duration::from_secs(30),
            || async {
                let leader = browser.attr("#raft-leader", "data-leader").await?;
                leader.parse::<u64>().ok()
            },
        )
        .await;
        browser
            .click(&format!("button[data-isolate='{leader}']"))
            .await;
        browser
            .wait_for_attr("#control-result", "data-outcome", "ok")
            .await;
        browser
            .wait_for(&format!("#node-{leader}[data-isolated=true]"))
            .await;
        browser.wait_for("#raft-map line.cut").await;
        browser
            .wait_for(&format!(
                "#chaos li[data-partition='console-isolate-config-{leader}']"
            ))
            .await;
        // The other two elect a new leader, and the page says so.
        let successor = eventually(
            "a new leader on the page",
            Duration::from_secs(30),
            || async {
                let now = browser.attr("#raft-leader", "data-leader").await?;
                now.parse::<u64>().ok().filter(|id| *id != leader)
            },
        )
        .await;
        browser
            .wait_for_attr(&format!("#node-{successor}"), "data-state", "leader")
            .await;
        browser.screenshot("console-partitioned").await;

        // Heal from the page: the cut goes, and the cluster settles on one leader with two followers.
        browser
            .click(&format!("button[data-heal='{leader}']"))
            .await;
        // The sidecar answered the heal (a click on a disabled button would do nothing at all).
        browser
            .wait_for_text("#control-result", &format!("heal node {leader}: done"))
            .await;
        browser
            .wait_for(&format!("#node-{leader}[data-isolated=false]"))
            .await;
        browser.wait_for_absent("#raft-map line.cut").await;
        eventually(
            "one leader and two followers after the heal",
            Duration::from_secs(30),
            || async {
                let mut states = node_states(&browser).await?;
                states.sort();
                (states == ["follower", "follower", "leader"]).then_some(())
            },
        )
        .await;

        // degrade=on from the page: the shop's pages are served degraded.
        browser
            .click("button[data-switch=degrade][data-value=on]")
            .await;
        browser
            .wait_for_attr("#switch-degrade", "data-value", "on")
            .await;
        let page_of = |url: String| {
            let http = http.clone();
            async move {
                let response = http.get(url).send().await.ok()?;
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                Some((header("x-distlab-degrade-mode")?, header("x-distlab-page")?))
            }
        };
        eventually(
            "the storefront to serve a degraded page",
            Duration::from_secs(20),
            || async {
                let (mode, page) = page_of(format!("{}/", console.url)).await?;
                (mode == "on" && page == "degraded").then_some(())
            },
        )
        .await;
        // And back to auto from the page: the gateway follows.
        browser
            .click("button[data-switch=degrade][data-value=auto]")
            .await;
        browser
            .wait_for_attr("#switch-degrade", "data-value", "auto")
            .await;
        eventually(
            "the storefront to follow degrade=auto again",
            Duration::from_secs(20),
            || async {
                let (mode, _) = page_of(format!("{}/", console.url)).await?;
                (mode == "auto").then_some(())
            },
        )
        .await;
        browser.assert_no_console_errors().await;
        browser.close().await;
    })
    .await;
}
