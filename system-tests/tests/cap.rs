//! CAP on the running stack (`cargo xtask up`): the `cap_mode` switch flips the order service live, and
//! the experiment of `distlab_testkit::cap` (short plan) is judged from its recorded history — CP never
//! answers stale or promises what it has not reserved and refuses during the partition; AP answers through
//! it, reads stale, and every order it promised beyond the real stock ends REJECTED with the reason.
//!
//! The switch governs every order of the stack while it is set, and the experiment partitions the stack:
//! the tests run alone (`.config/nextest.toml`) and put the switch back as they found it.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use distlab_testkit::cap::{self, Endpoints, Kind, Phase, Plan};
use distlab_testkit::{http, order_url, require_chaos, require_stack};
use serde_json::json;

async fn endpoints() -> Endpoints {
    require_stack(true);
    require_chaos();
    Endpoints::local().await.unwrap()
}

async fn cap_header(http: &reqwest::Client) -> String {
    let answer = http
        .get(format!("{}/orders?limit=1", order_url()))
        .send()
        .await
        .unwrap();
    answer
        .headers()
        .get("x-distlab-cap-mode")
        .expect("every response names the CAP mode")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_switch_flips_a_running_order_service_both_ways_and_a_bad_value_changes_nothing() {
    let ep = endpoints().await;
    let http = http();
    let previous = cap::switch_value(&http, &ep).await.unwrap();

    cap::switch_to(&http, &ep, "AP").await.unwrap();
    assert_eq!(cap_header(&http).await, "AP");
    cap::switch_to(&http, &ep, "CP").await.unwrap();
    assert_eq!(cap_header(&http).await, "CP");
    cap::switch_to(&http, &ep, "AP").await.unwrap();

    // The admin endpoint refuses a value the switch does not take, and writes nothing.
    let refused = http
        .put(format!("{}/switches/cap_mode", ep.chaos))
        .json(&json!({"value": "XP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(
        cap::switch_value(&http, &ep).await.unwrap().as_deref(),
        Some("AP")
    );

    // A malformed value written behind the sidecar's back is ignored by the follower (and reported).
    let node = &cap::config_urls()[0];
    let written = http
        .put(format!("{node}/v1/kv/distlab/switches/cap_mode"))
        .json(&json!({"value": 42}))
        .send()
        .await
        .unwrap();
    assert!(written.status().is_success(), "{}", written.status());
    distlab_testkit::eventually(
        "the order service to report the invalid switch value",
        std::time::Duration::from_secs(20),
        || async {
            let cap = cap::cap_readiness(&http, &order_url()).await?;
            cap["switch"]["invalid_value"].is_object().then_some(cap)
        },
    )
    .await;
    assert_eq!(cap_header(&http).await, "AP", "the last good value stays");

    cap::restore_switch(&http, &ep, previous.as_deref())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_refuses_during_a_partition_and_ap_answers_stale_and_reconciles_what_it_oversold() {
    let ep = endpoints().await;
    let http = http();
    let previous = cap::switch_value(&http, &ep).await.unwrap();
    let plan = Plan::short();
    let progress = |line: &str| eprintln!("  {line}");
    let cp = cap::run("CP", &plan, &ep, &progress).await;
    let ap = match &cp {
        Ok(_) => Some(cap::run("AP", &plan, &ep, &progress).await),
        Err(_) => None,
    };
    cap::restore_switch(&http, &ep, previous.as_deref())
        .await
        .unwrap();
    let cp_history = cp.unwrap();
    let ap_history = ap.unwrap().unwrap();
    let (cp, ap) = (cap::check(&cp_history), cap::check(&ap_history));
    eprintln!("{cp:#?}\n{ap:#?}");

    // CP: consistent, and unavailable while it cannot prove its answers — quickly.
    assert!(cp.drained && cp.conservation_problems.is_empty(), "{cp:?}");
    assert_eq!(cp.stale_reads(), 0, "CP never answers stale");
    assert_eq!(
        cp.oversold_units_promised, 0,
        "CP promises only reserved stock"
    );
    assert_eq!(cp.confirmed_beyond_stock, 0);
    assert_eq!((cp.lost_orders, cp.duplicated_orders), (0, 0));
    let refused = cp.phase(Phase::Partition);
    assert!(
        refused.availability() < 0.1,
        "CP refuses during the partition: {refused:?}"
    );
    let slowest_refusal = cp_history
        .ops
        .iter()
        .filter(|op| op.kind != Kind::Sale && op.status == Some(503))
        .map(|op| op.end - op.start)
        .fold(0.0, f64::max);
    assert!(
        slowest_refusal <= cap::ANSWER_WITHIN,
        "CP refuses within 1 s, not {slowest_refusal:.2} s"
    );
    assert!(cp.phase(Phase::Healthy).availability() > 0.95, "{cp:?}");

    // AP: available through the partition, stale, and honest about what it oversold once healed.
    assert!(ap.drained && ap.conservation_problems.is_empty(), "{ap:?}");
    let through = ap.phase(Phase::Partition);
    assert!(
        through.availability() >= 0.99,
        "AP answers during the partition: {through:?}"
    );
    assert!(ap.stale_reads() > 0, "the replica fell behind: {ap:?}");
    assert!(
        ap.oversold_orders > 0,
        "the counter sold what AP promised: {ap:?}"
    );
    assert_eq!(
        ap.oversold_orders, ap.oversold_orders_with_reason,
        "every oversold order is REJECTED oversold_during_partition"
    );
    assert_eq!(
        ap.confirmed_beyond_stock, 0,
        "reconciled: nothing confirmed beyond stock"
    );
    assert_eq!((ap.lost_orders, ap.duplicated_orders), (0, 0));
    assert!(ap.converged_after_heal.is_some());
}
