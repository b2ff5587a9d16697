//! Two-phase commit over the order and inventory databases (the seed's 2PC), against real PostgreSQL
//! `PREPARE TRANSACTION`: the happy path, the participants' idempotency, the seed's four problems shown and
//! then recovered from, crashes at every step, and many concurrent orders.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use distlab_system_tests::{Options, TestSystem};
use distlab_testkit::{eventually, get_json};
use futures::StreamExt;
use serde_json::{Value, json};

async fn seeded(options: Options, stock: &[(&str, i64)]) -> (TestSystem, BTreeMap<String, i64>) {
    let system = TestSystem::start(options).await;
    let mut initial = BTreeMap::new();
    for (sku, units) in stock {
        system.seed(sku, *units).await;
        initial.insert((*sku).to_owned(), *units);
    }
    (system, initial)
}

/// Places a one-item 2PC order in the background; the task answers its status code.
fn place_in_background(system: &TestSystem, sku: &str) -> tokio::task::JoinHandle<u16> {
    let (http, url) = (
        system.http.clone(),
        format!("{}/orders", system.orders[0].url),
    );
    let body = json!({"customer_id": "bg", "items": [{"sku": sku, "quantity": 1}], "mode": "2pc"});
    tokio::spawn(async move {
        http.post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// Waits until the inventory holds one prepared branch.
async fn wait_for_prepared_inventory_branch(system: &TestSystem) {
    eventually(
        "the inventory branch to be prepared",
        Duration::from_secs(10),
        || async { (system.prepared_in(&system.inventory_db).await == 1).then_some(()) },
    )
    .await;
}

/// Whether a plain update of the product's row can take its lock within 100 ms.
async fn row_is_locked(system: &TestSystem, sku: &str) -> bool {
    let mut tx = system.inventory_db.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '100ms'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let touched = sqlx::query("UPDATE products SET updated_at = now() WHERE sku = $1")
        .bind(sku)
        .execute(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    touched.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_2pc_order_is_confirmed_or_refused_at_once_and_leaves_nothing_prepared() {
    let (system, initial) = seeded(Options::default(), &[("TP-1", 5)]).await;

    let (status, confirmed) = system.place_2pc(0, &[("TP-1", 3)]).await;
    assert_eq!(status, 201, "{confirmed}");
    assert_eq!(confirmed["status"], "CONFIRMED");
    assert_eq!(confirmed["mode"], "2pc");
    let id = confirmed["id"].as_str().unwrap();
    assert_eq!(
        system.order(id).await.unwrap()["status"],
        "CONFIRMED",
        "readable at once"
    );
    assert_eq!(system.product("TP-1").await, (2, 3));

    let (status, refused) = system.place_2pc(0, &[("TP-1", 3)]).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "insufficient_stock");
    let rejected_id = refused["error"]["details"]["order"]["id"].as_str().unwrap();
    let rejected = system.order(rejected_id).await.unwrap();
    assert_eq!(
        (rejected["status"].as_str(), rejected["reason"].as_str()),
        (Some("REJECTED"), Some("insufficient_stock"))
    );

    let (status, unknown) = system.place_2pc(0, &[("TP-1", 1), ("TP-NOPE", 1)]).await;
    assert_eq!(status, 409);
    assert_eq!(unknown["error"]["code"], "unknown_sku");
    assert_eq!(
        system.product("TP-1").await,
        (2, 3),
        "nothing of a refused order is reserved"
    );

    // The coordinator's log shows each branch's vote and acknowledgement.
    let gid = refused["error"]["details"]["gid"].as_str().unwrap();
    let transaction = system.transaction(gid).await;
    assert_eq!(transaction["state"], "ABORTED");
    assert_eq!(transaction["reason"], "insufficient_stock");
    let votes: BTreeMap<String, String> = transaction["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["participant"].as_str().unwrap().to_owned(),
                b["vote"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        votes,
        BTreeMap::from([
            ("inventory".into(), "no".into()),
            ("order".into(), "yes".into())
        ])
    );
    assert!(
        transaction["branches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["acked_at"].is_string())
    );

    system.wait_until_2pc_settled(Duration::from_secs(10)).await;
    system.check_invariants(&initial).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_replays_a_2pc_answer() {
    let (system, _) = seeded(Options::default(), &[("TP-K", 5)]).await;
    let send = |quantity: u32| {
        let (http, url) = (
            system.http.clone(),
            format!("{}/orders", system.orders[0].url),
        );
        async move {
            let body = json!({"customer_id": "k", "items": [{"sku": "TP-K", "quantity": quantity}], "mode": "2pc"});
            let response = http
                .post(url)
                .header("idempotency-key", "two-phase-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) = send(2).await;
    assert_eq!(status, 201);
    assert_eq!(
        send(2).await,
        (201, first),
        "the same request replays its answer"
    );
    assert_eq!(
        send(3).await.0,
        422,
        "another request with the key is refused"
    );
    assert_eq!(system.product("TP-K").await, (3, 2), "reserved once");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_answer_repeated_and_crossed_messages_consistently() {
    // The test speaks to the participant as a coordinator would, with gids the real coordinator's log
    // never saw; its reconciliation would roll those back, so it is kept out of the way.
    let options = Options {
        recovery_interval_ms: 600_000,
        ..Options::default()
    };
    let (system, _) = seeded(options, &[("TP-I", 5)]).await;
    let inventory = &system.inventories[0].url;
    let post = |path: &str, body: Value| {
        let (http, url) = (system.http.clone(), format!("{inventory}/2pc/{path}"));
        async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let order = |id: &str| {
        json!({"order_id": id, "customer_id": "p", "items": [{"sku": "TP-I", "quantity": 2}],
               "placed_at": "2026-01-01T00:00:00Z"})
    };
    let (gid, other) = (
        "distlab_00000000000000000000000000000001",
        "distlab_00000000000000000000000000000002",
    );

    let prepare = json!({"gid": gid, "order": order("01a21771-b9f9-70c0-9fa4-000000000001")});
    assert_eq!(post("prepare", prepare.clone()).await.1["vote"], "yes");
    assert_eq!(
        post("prepare", prepare.clone()).await.1["vote"],
        "yes",
        "a repeated prepare gives the same vote"
    );
    assert_eq!(
        get_json(&system.http, &format!("{inventory}/2pc/{gid}")).await["state"],
        "prepared"
    );
    assert!(
        row_is_locked(&system, "TP-I").await,
        "a prepared branch holds its row locks"
    );
    assert_eq!(
        post("commit", json!({"gid": gid})).await,
        post("commit", json!({"gid": gid})).await
    );
    assert_eq!(
        get_json(&system.http, &format!("{inventory}/2pc/{gid}")).await["state"],
        "committed"
    );
    let (status, conflict) = post("rollback", json!({"gid": gid})).await;
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("branch_conflict"))
    );

    // A rollback that overtakes its prepare: the late prepare votes no.
    assert_eq!(
        post("rollback", json!({"gid": other})).await.1["state"],
        "aborted"
    );
    let late = json!({"gid": other, "order": order("01a21771-b9f9-70c0-9fa4-000000000002")});
    let (_, vote) = post("prepare", late).await;
    assert_eq!(
        (vote["vote"].as_str(), vote["reason"].as_str()),
        (Some("no"), Some("rolled_back"))
    );
    assert_eq!(
        system.product("TP-I").await,
        (3, 2),
        "only the committed branch reserved"
    );

    // A rollback that arrives while its prepare is still on its way in (held 500 ms at the door).
    let third = "distlab_00000000000000000000000000000003";
    system
        .arm(
            inventory,
            json!({"point": "prepare", "action": "delay", "ms": 500}),
        )
        .await;
    let in_flight = tokio::spawn({
        let (http, url) = (system.http.clone(), format!("{inventory}/2pc/prepare"));
        let body = json!({"gid": third, "order": order("01a21771-b9f9-70c0-9fa4-000000000003")});
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    assert_eq!(
        post("rollback", json!({"gid": third})).await.1["state"],
        "aborted"
    );
    assert_eq!(
        in_flight.await.unwrap()["vote"],
        "no",
        "the prepare that was overtaken votes no"
    );
    assert_eq!(system.prepared_in(&system.inventory_db).await, 0);

    let (status, bad) = post(
        "commit",
        json!({"gid": "distlab_x'; DROP TABLE products; --"}),
    )
    .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (422, Some("invalid_body")),
        "hostile gids never reach SQL"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn problem_1_synchronous_blocking_a_prepared_branch_makes_the_next_order_wait() {
    let (system, initial) = seeded(Options::default(), &[("TP-B", 10)]).await;
    // The coordinator stalls 1.5 s between the votes and the decision: the branches stay prepared.
    system
        .arm(
            &system.coordinator.url,
            json!({"point": "before_decision", "action": "delay", "ms": 1500}),
        )
        .await;
    let first = place_in_background(&system, "TP-B");
    wait_for_prepared_inventory_branch(&system).await;
    assert!(
        row_is_locked(&system, "TP-B").await,
        "the undecided branch holds the product's row lock"
    );
    let ready = get_json(
        &system.http,
        &format!("{}/readyz", system.inventories[0].url),
    )
    .await;
    assert_eq!(
        ready["checks"]["twopc"]["prepared"], 1,
        "readiness shows the prepared transaction"
    );

    // A second order on the same SKU waits for the first one's decision.
    let started = Instant::now();
    let (status, _) = system.place_2pc(0, &[("TP-B", 1)]).await;
    let waited = started.elapsed();
    assert_eq!(status, 201);
    assert_eq!(first.await.unwrap(), 201);
    assert!(
        waited >= Duration::from_millis(700),
        "the second order waited only {waited:?}"
    );
    eprintln!("problem 1: the second order waited {waited:?} behind the undecided first one");

    system.wait_until_2pc_settled(Duration::from_secs(10)).await;
    system.check_invariants(&initial).await;
    assert_eq!(system.product("TP-B").await, (8, 2));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn problem_2_single_point_of_failure_participants_stay_prepared_until_the_coordinator_returns()
 {
    let (mut system, initial) = seeded(Options::default(), &[("TP-S", 10)]).await;
    // The coordinator dies after phase 1, before deciding.
    system
        .arm(
            &system.coordinator.url,
            json!({"point": "before_decision", "action": "crash"}),
        )
        .await;
    let (status, body) = system.place_2pc(0, &[("TP-S", 4)]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("coordinator_unavailable"))
    );
    assert_eq!(
        system.prepared_transactions().await,
        2,
        "both branches stay prepared"
    );
    assert!(row_is_locked(&system, "TP-S").await, "and hold their locks");
    assert_eq!(system.product("TP-S").await, (10, 0), "nothing is visible");

    // Restarted, the coordinator finds the undecided transaction; past its deadline it presumes abort.
    system.restart_coordinator().await;
    system.wait_until_2pc_settled(Duration::from_secs(20)).await;
    let transaction = system.transaction(&system.latest_gid().await).await;
    assert_eq!(
        (
            transaction["state"].as_str(),
            transaction["reason"].as_str()
        ),
        (Some("ABORTED"), Some("timeout"))
    );
    assert!(!row_is_locked(&system, "TP-S").await);
    assert_eq!(system.product("TP-S").await, (10, 0));

    // Dying after the decision is logged: recovery carries the commit out.
    system
        .arm(
            &system.coordinator.url,
            json!({"point": "after_decision", "action": "crash"}),
        )
        .await;
    let (status, _) = system.place_2pc(0, &[("TP-S", 4)]).await;
    assert_eq!(status, 503);
    system.restart_coordinator().await;
    system.wait_until_2pc_settled(Duration::from_secs(20)).await;
    let transaction = system.transaction(&system.latest_gid().await).await;
    assert_eq!(transaction["state"], "COMMITTED");
    let id = transaction["order"]["order_id"].as_str().unwrap();
    assert_eq!(system.order(id).await.unwrap()["status"], "CONFIRMED");
    assert_eq!(system.product("TP-S").await, (6, 4));
    system.check_invariants(&initial).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn problem_3_inconsistency_commit_reaches_one_participant_until_recovery_closes_the_gap() {
    let (system, initial) = seeded(Options::default(), &[("TP-C", 10)]).await;
    // Every phase-2 message to the inventory is lost until the fault is cleared.
    system
        .arm(
            &system.coordinator.url,
            json!({"point": "phase2:inventory", "action": "drop", "times": 1000}),
        )
        .await;
    let (status, order) = system.place_2pc(0, &[("TP-C", 3)]).await;
    assert_eq!(status, 201, "the decision is commit");
    let id = order["id"].as_str().unwrap();

    // The window: the order is committed and readable, the inventory's reservation is not.
    assert_eq!(system.order(id).await.unwrap()["status"], "CONFIRMED");
    assert_eq!(
        system.product("TP-C").await,
        (10, 0),
        "the inventory has not committed"
    );
    assert_eq!(system.prepared_in(&system.inventory_db).await, 1);
    let transaction = system.transaction(&system.latest_gid().await).await;
    assert_eq!(transaction["state"], "COMMITTING");

    // The message gets through again: recovery closes the gap.
    let cleared = system
        .http
        .delete(format!("{}/admin/faults", system.coordinator.url))
        .bearer_auth(distlab_system_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    system.wait_until_2pc_settled(Duration::from_secs(20)).await;
    assert_eq!(system.product("TP-C").await, (7, 3));
    system.check_invariants(&initial).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn problem_4_over_conservative_one_no_or_one_slow_participant_aborts_everything() {
    let options = Options {
        prepare_timeout_ms: 1000,
        ..Options::default()
    };
    let (system, initial) = seeded(options, &[("TP-O", 10)]).await;

    system
        .arm(
            &system.inventories[0].url,
            json!({"point": "prepare", "action": "vote_no"}),
        )
        .await;
    let (status, body) = system.place_2pc(0, &[("TP-O", 1)]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("transaction_aborted"))
    );
    assert_eq!(body["error"]["details"]["reason"], "vote_no_fault");

    // A participant slower than the prepare timeout counts as a no; its late prepare is refused.
    system
        .arm(
            &system.inventories[0].url,
            json!({"point": "prepare", "action": "delay", "ms": 1500}),
        )
        .await;
    let (status, body) = system.place_2pc(0, &[("TP-O", 1)]).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["details"]["reason"], "inventory_unavailable");
    // The slow prepare goes on after the coordinator gave up, meets the rollback's refusal and votes no.
    let gid = body["error"]["details"]["gid"].as_str().unwrap();
    let branch = eventually(
        "the late prepare to end",
        Duration::from_secs(10),
        || async {
            let branch = get_json(
                &system.http,
                &format!("{}/2pc/{gid}", system.inventories[0].url),
            )
            .await;
            (branch["state"] == "aborted").then_some(branch)
        },
    )
    .await;
    assert_eq!(branch["reason"], "rolled_back");

    system.wait_until_2pc_settled(Duration::from_secs(20)).await;
    assert_eq!(
        system.product("TP-O").await,
        (10, 0),
        "stock was there, but nothing was sold"
    );
    system.check_invariants(&initial).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_killed_at_any_step_or_a_participant_killed_while_prepared_loses_nothing() {
    let (mut system, initial) = seeded(Options::default(), &[("TP-K1", 20), ("TP-K2", 20)]).await;
    for point in ["before_decision", "after_decision", "after_first_ack"] {
        system
            .arm(
                &system.coordinator.url,
                json!({"point": point, "action": "crash"}),
            )
            .await;
        let (status, _) = system.place_2pc(0, &[("TP-K1", 1), ("TP-K2", 2)]).await;
        assert_eq!(status, 503, "the coordinator crashed at {point}");
        if point == "after_first_ack" {
            // Phase 2 goes to the order first: it committed, the inventory is still prepared.
            assert_eq!(
                system.prepared_in(&system.orders_db).await,
                0,
                "the order branch committed"
            );
            assert_eq!(
                system.prepared_in(&system.inventory_db).await,
                1,
                "the inventory branch waits"
            );
        }
        system.restart_coordinator().await;
        system.wait_until_2pc_settled(Duration::from_secs(20)).await;
        system.check_invariants(&initial).await;
    }

    // The inventory is killed while its branch is prepared; the decision waits for it, then applies.
    system
        .arm(
            &system.coordinator.url,
            json!({"point": "before_decision", "action": "delay", "ms": 1000}),
        )
        .await;
    let order = place_in_background(&system, "TP-K1");
    wait_for_prepared_inventory_branch(&system).await;
    system.kill_inventory(0).await;
    assert_eq!(
        order.await.unwrap(),
        201,
        "the votes were in: the decision is commit"
    );
    assert_eq!(
        system.prepared_in(&system.inventory_db).await,
        1,
        "the branch outlives its process"
    );
    system.restart_inventory(0).await;
    system.wait_until_2pc_settled(Duration::from_secs(20)).await;

    system.check_invariants(&initial).await;
    let committed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transactions WHERE state = 'COMMITTED'")
            .fetch_one(&system.coordinator_db)
            .await
            .unwrap();
    let confirmed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'CONFIRMED'")
            .fetch_one(&system.orders_db)
            .await
            .unwrap();
    assert_eq!(
        committed, confirmed,
        "every committed transaction is one confirmed order, and only those"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_2pc_orders_sell_exactly_the_stock() {
    let (system, initial) = seeded(
        Options::default(),
        &[("TP-A", 70), ("TP-B", 70), ("TP-C", 60)],
    )
    .await;
    let skus = ["TP-A", "TP-B", "TP-C"];
    let outcomes: Vec<u16> = futures::stream::iter(0..300)
        .map(|i| {
            let system = &system;
            async move { system.place_2pc(0, &[(skus[i % 3], 1)]).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let confirmed = outcomes.iter().filter(|s| **s == 201).count();
    let refused = outcomes.iter().filter(|s| **s == 409).count();
    assert_eq!(
        (confirmed, refused),
        (200, 100),
        "exactly the 200 units are sold: {outcomes:?}"
    );
    system.wait_until_2pc_settled(Duration::from_secs(20)).await;
    system.check_invariants(&initial).await;
    for sku in skus {
        assert_eq!(system.product(sku).await.0, 0, "{sku} is sold out");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_and_2pc_orders_on_the_same_skus_keep_the_invariants() {
    let (system, initial) = seeded(Options::default(), &[("TP-M1", 40), ("TP-M2", 40)]).await;
    let skus = ["TP-M1", "TP-M2"];
    futures::stream::iter(0..160)
        .for_each_concurrent(16, |i| {
            let system = &system;
            async move {
                let items = [(skus[i % 2], 1 + (i % 3) as u32)];
                if i % 2 == 0 {
                    let (status, _) = system.place_2pc(0, &items).await;
                    assert!(status == 201 || status == 409, "2PC answered {status}");
                } else {
                    system.place(0, &items).await;
                }
            }
        })
        .await;
    system.wait_until_all_decided(Duration::from_secs(60)).await;
    system.wait_until_2pc_settled(Duration::from_secs(20)).await;
    system.check_invariants(&initial).await;
    system.stop().await;
}
