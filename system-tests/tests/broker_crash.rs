//! The broker killed under order load — the first thing a chaos lab's user tries — and the outbox flow
//! recovering with nobody restarting anything.
//!
//! Each test runs a broker of its own behind a [`KafkaTap`], places outbox orders continuously, and kills the
//! broker with SIGKILL at the moment a given request reaches it (a produce, a fetch, an offset commit), so
//! that request's outcome is unknown to its client. Orders go on being accepted while the broker is down;
//! the test waits until the relay has seen deliveries time out (the broker was gone long enough for every
//! client to notice), starts the broker again — on its data, or wiped, as a replaced broker would be — and
//! then requires, with the same service instances:
//!
//! - every order CONFIRMED or REJECTED within [`BACK_WITHIN`] of the broker's return;
//! - nothing applied twice and stock conserved per SKU ([`TestSystem::check_invariants`]);
//! - a broker that kept its data sends no consumer back to re-read, and the flow recovers with the order
//!   service's redelivery switched off (nothing may be lost, so nothing may need re-sending); a wiped one
//!   sends every consumer back, and redelivery re-sends what died with it.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a failed step fails the test right there

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use distlab_system_tests::{Options, TestSystem};
use distlab_testkit::{ApiKey, KafkaTap, PrivateBroker, eventually};
use futures::StreamExt;

/// How long after the broker's return every order must be final (the promise).
const BACK_WITHIN: Duration = Duration::from_secs(60);
/// A redelivery wait longer than any test: the relay and the consumers alone must recover.
const REDELIVERY_OFF: Duration = Duration::from_secs(600);
/// Orders placed per second while the test runs.
const ORDERS_PER_SECOND: u64 = 150;
/// Most orders one test places.
const MAX_ORDERS: usize = 6_000;
/// Orders placed after the broker's return before the load stops: the flow works on the restarted broker.
const ORDERS_AFTER_RETURN: usize = 300;

const SKUS: [&str; 4] = ["CRASH-A", "CRASH-B", "CRASH-C", "CRASH-D"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_while_a_produce_is_in_flight_the_flow_recovers_by_itself() {
    kill_the_broker_under_load(ApiKey::Produce, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_while_a_fetch_is_in_flight_the_flow_recovers_by_itself() {
    kill_the_broker_under_load(ApiKey::Fetch, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_while_an_offset_commit_is_in_flight_the_flow_recovers_by_itself() {
    kill_the_broker_under_load(ApiKey::OffsetCommit, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_comes_back_without_its_data_is_noticed_and_nothing_is_lost() {
    kill_the_broker_under_load(ApiKey::Produce, true).await;
}

async fn kill_the_broker_under_load(moment: ApiKey, wipe: bool) {
    let (mut broker, tap) = PrivateBroker::start_tapped().await;
    let system = TestSystem::start(Options {
        brokers: Some(broker.brokers()),
        redeliver_after_ms: if wipe {
            Options::default().redeliver_after_ms
        } else {
            REDELIVERY_OFF.as_millis() as u64
        },
        ..Options::default()
    })
    .await;
    let initial: BTreeMap<String, i64> = SKUS.iter().map(|s| (s.to_string(), 2_000)).collect();
    for (sku, stock) in &initial {
        system.seed(sku, *stock).await;
    }

    let stop = AtomicBool::new(false);
    let placed = AtomicUsize::new(0);
    let load = place_until_stopped(&system, &stop, &placed);
    let scenario = async {
        let outcome = crash_and_return(&system, &mut broker, &tap, moment, wipe, &placed).await;
        stop.store(true, Ordering::SeqCst);
        outcome
    };
    let ((), back) = tokio::join!(load, scenario);

    let left = BACK_WITHIN.saturating_sub(back.elapsed());
    system.wait_until_all_decided(left).await;
    println!(
        "broker killed at a {moment:?} request{}: {} orders, every one final {:.1?} after the broker was back",
        if wipe { ", data wiped" } else { "" },
        placed.load(Ordering::SeqCst),
        back.elapsed()
    );
    system.check_invariants(&initial).await;

    let rewinds = || -> Vec<u64> {
        system
            .orders
            .iter()
            .chain(&system.inventories)
            .map(|i| i.consumer_stats.rewinds())
            .collect()
    };
    if wipe {
        // A consumer that held no partition when it first looked at the new broker (its group was
        // rejoining) goes back at a later look, every 5 s (docs/kafka.md): the orders may all be decided
        // before that.
        eventually(
            "every consumer to notice the replaced broker and read its partitions again",
            Duration::from_secs(20),
            || async { rewinds().iter().all(|r| *r > 0).then_some(()) },
        )
        .await;
    } else {
        let rewinds = rewinds();
        assert_eq!(
            rewinds,
            [0, 0],
            "a broker that kept its data sends no consumer back"
        );
    }
    system.stop().await;
}

/// Kills the broker when a `moment` request reaches it, keeps it down until the order relay has seen its
/// deliveries fail, starts it again (wiped if asked) and waits for [`ORDERS_AFTER_RETURN`] more orders.
/// Returns when the broker was back.
async fn crash_and_return(
    system: &TestSystem,
    broker: &mut PrivateBroker,
    tap: &KafkaTap,
    moment: ApiKey,
    wipe: bool,
    placed: &AtomicUsize,
) -> Instant {
    eventually(
        "orders to be confirmed before the crash",
        Duration::from_secs(30),
        || async {
            let confirmed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'CONFIRMED'")
                    .fetch_one(&system.orders_db)
                    .await
                    .unwrap();
            (confirmed >= 50).then_some(())
        },
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), tap.next_request(moment))
        .await
        .unwrap_or_else(|_| panic!("no {moment:?} request reached the broker within 30 s"))
        .unwrap();
    broker.stop();
    if wipe {
        broker.wipe();
    }
    let killed_at = placed.load(Ordering::SeqCst);
    eventually(
        "the order relay to see deliveries fail while the broker is down",
        Duration::from_secs(30),
        || async {
            let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE attempts > 0")
                .fetch_one(&system.orders_db)
                .await
                .unwrap();
            (failed > 0).then_some(())
        },
    )
    .await;
    assert!(
        placed.load(Ordering::SeqCst) > killed_at,
        "orders are accepted while the broker is down"
    );
    broker.start_again().await;
    let back = Instant::now();
    let returned_at = placed.load(Ordering::SeqCst);
    eventually(
        "orders to be placed after the broker's return",
        Duration::from_secs(30),
        || async {
            (placed.load(Ordering::SeqCst) >= returned_at + ORDERS_AFTER_RETURN).then_some(())
        },
    )
    .await;
    back
}

/// Places orders of 1–2 items at [`ORDERS_PER_SECOND`] until `stop` (at most [`MAX_ORDERS`]); each must be
/// accepted (202), broker or no broker.
async fn place_until_stopped(system: &TestSystem, stop: &AtomicBool, placed: &AtomicUsize) {
    let every = tokio::time::interval(Duration::from_micros(1_000_000 / ORDERS_PER_SECOND));
    let ticks = futures::stream::unfold(every, |mut every| async move {
        every.tick().await;
        Some(((), every))
    });
    let orders = futures::stream::iter(0..MAX_ORDERS)
        .zip(ticks)
        .map(|(i, ())| i)
        .take_while(|_| std::future::ready(!stop.load(Ordering::SeqCst)));
    orders
        .for_each_concurrent(16, |i| async move {
            let first = SKUS[i % SKUS.len()];
            let second = SKUS[(i / SKUS.len()) % SKUS.len()];
            let quantity = 1 + (i % 3) as u32;
            if first == second {
                system.place(0, &[(first, quantity)]).await;
            } else {
                system.place(0, &[(first, quantity), (second, 1)]).await;
            }
            placed.fetch_add(1, Ordering::SeqCst);
        })
        .await;
}
