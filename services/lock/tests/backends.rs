//! The behaviour every backend must have, through the HTTP API against the real stores: mutual exclusion
//! under 50 contenders with tokens that only grow, expiry of a holder that went away, and leases that are
//! not the holder's changing nothing.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{LONG, unique};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

/// How many callers contend for one lock.
const CONTENDERS: usize = 50;

/// 50 callers each take the lock, then read a shared counter, yield, and write it back plus one. With
/// mutual exclusion no increment is lost and no two callers are ever inside at once; the tokens, logged
/// inside the critical section, strictly increase.
async fn mutual_exclusion(backend: &'static str) {
    let locks = Arc::new(common::spawn().await);
    let name = unique("mutex");
    let counter = Arc::new(std::sync::Mutex::new(0_u64));
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..CONTENDERS)
        .map(|i| {
            let (locks, name, counter, inside, overlaps, tokens) = (
                locks.clone(),
                name.clone(),
                counter.clone(),
                inside.clone(),
                overlaps.clone(),
                tokens.clone(),
            );
            tokio::spawn(async move {
                let lease = locks
                    .acquire(backend, &name, &format!("worker-{i}"), 10_000, 20_000)
                    .await;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokens
                    .lock()
                    .await
                    .push(lease["fencing_token"].as_u64().unwrap());
                // Read-modify-write with a gap, where a second holder would lose an update.
                let read = *counter.lock().unwrap();
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                *counter.lock().unwrap() = read + 1;
                inside.fetch_sub(1, Ordering::SeqCst);
                let released = locks.release(backend, &name, &lease).await;
                assert_eq!(released.status(), StatusCode::OK, "{backend}: release");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "{backend}: two holders at once"
    );
    assert_eq!(
        *counter.lock().unwrap(),
        CONTENDERS as u64,
        "{backend}: an update was lost"
    );
    let tokens = tokens.lock().await;
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "{backend}: tokens must strictly increase in the order of holding: {tokens:?}"
    );
    assert_eq!(locks.holder(backend, &name).await, json!(null));
}

/// A holder that never releases (it died) blocks the next caller only until its lease lapses; the next
/// holder's token is higher, and the dead holder's late release is refused without touching the new one.
async fn expiry_after_the_holder_dies(backend: &'static str) {
    let locks = common::spawn().await;
    let name = unique("expiry");
    let dead = locks.acquire(backend, &name, "dead", 400, 0).await;
    let started = Instant::now();
    let next = locks.acquire(backend, &name, "next", 10_000, 10_000).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "{backend}: the lock was granted after {waited:?}, before the holder's 400 ms lease lapsed"
    );
    assert!(
        next["fencing_token"].as_u64() > dead["fencing_token"].as_u64(),
        "{backend}: {next} after {dead}"
    );
    let late = locks.release(backend, &name, &dead).await;
    assert!(
        [StatusCode::CONFLICT, StatusCode::NOT_FOUND].contains(&late.status()),
        "{backend}: a lapsed lease's release answered {}",
        late.status()
    );
    let holder = locks.holder(backend, &name).await;
    assert_eq!(holder["owner"], "next", "{backend}: {holder}");
    assert_eq!(holder["fencing_token"], next["fencing_token"]);
    assert_eq!(
        locks.release(backend, &name, &next).await.status(),
        StatusCode::OK
    );
}

/// Renewing or releasing a lease that is not the holder's is refused and changes nothing.
async fn strangers_are_refused(backend: &'static str) {
    let locks = common::spawn().await;
    let name = unique("stranger");
    let lease = locks.acquire(backend, &name, "holder", 10_000, 0).await;
    let stranger = json!({"lease_id": uuid::Uuid::new_v4()});
    let refused = locks.release(backend, &name, &stranger).await;
    let status = refused.status();
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        (status == StatusCode::CONFLICT && body["error"]["code"] == "not_holder")
            || (status == StatusCode::NOT_FOUND && body["error"]["code"] == "lease_not_found"),
        "{backend}: {status} {body}"
    );
    let renew = locks
        .post(
            &format!("/locks/{name}/renew"),
            json!({"backend": backend, "lease_id": stranger["lease_id"], "ttl_ms": 60_000}),
        )
        .await;
    assert!(
        [StatusCode::CONFLICT, StatusCode::NOT_FOUND].contains(&renew.status()),
        "{backend}: renew by a stranger answered {}",
        renew.status()
    );
    let holder = locks.holder(backend, &name).await;
    assert_eq!(holder["owner"], "holder");
    assert_eq!(holder["fencing_token"], lease["fencing_token"]);
    let expires = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap()
    };
    assert!(
        expires(&holder) <= expires(&lease) + chrono::Duration::seconds(1),
        "{backend}: the stranger's renew extended the lease: {holder} vs {lease}"
    );
    // Someone else still cannot take it; the holder can renew and release, once.
    let busy = locks
        .try_acquire(backend, &name, "other", 10_000, 0)
        .await
        .unwrap_err();
    distlab_testkit::expect_error(busy, StatusCode::CONFLICT, "lock_held").await;
    let renewed = locks
        .post(
            &format!("/locks/{name}/renew"),
            json!({"backend": backend, "lease_id": lease["lease_id"], "ttl_ms": 60_000}),
        )
        .await;
    assert_eq!(renewed.status(), StatusCode::OK, "{backend}: renew");
    let renewed: serde_json::Value = renewed.json().await.unwrap();
    assert_eq!(renewed["fencing_token"], lease["fencing_token"]);
    assert_eq!(
        locks.release(backend, &name, &lease).await.status(),
        StatusCode::OK
    );
    let again = locks.release(backend, &name, &lease).await;
    assert_eq!(
        again.status(),
        StatusCode::NOT_FOUND,
        "{backend}: double release"
    );
    assert_eq!(locks.holder(backend, &name).await, json!(null));
}

/// A wait is answered when the holder releases, not when the wait runs out.
async fn a_release_wakes_the_waiter(backend: &'static str) {
    let locks = Arc::new(common::spawn().await);
    let name = unique("wake");
    let first = locks.acquire(backend, &name, "first", 60_000, 0).await;
    let waiter = {
        let (locks, name) = (locks.clone(), name.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let lease = locks
                .acquire(backend, &name, "second", 60_000, 20_000)
                .await;
            (lease, started.elapsed())
        })
    };
    // Release once the waiter has tried, failed and is waiting.
    distlab_testkit::eventually("the second caller to be waiting", LONG, || async {
        let state = distlab_testkit::get_json(
            &locks.http,
            &format!("{}/locks/{name}?backend={backend}", locks.url),
        )
        .await;
        (state["waiting"] == 1).then_some(())
    })
    .await;
    let released_at = Instant::now();
    assert_eq!(
        locks.release(backend, &name, &first).await.status(),
        StatusCode::OK
    );
    let (lease, _) = waiter.await.unwrap();
    let after_release = released_at.elapsed();
    assert!(
        after_release < Duration::from_millis(900),
        "{backend}: the waiter got the lock {after_release:?} after the release: it was not woken"
    );
    assert_eq!(lease["wakeups"], 1, "{backend}: {lease}");
    assert_eq!(
        locks.release(backend, &name, &lease).await.status(),
        StatusCode::OK
    );
}

macro_rules! per_backend {
    ($($backend:ident),*) => {
        $(
            mod $backend {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn mutual_exclusion_with_50_contenders() {
                    super::mutual_exclusion(stringify!($backend)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn expiry_after_the_holder_dies() {
                    super::expiry_after_the_holder_dies(stringify!($backend)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn strangers_are_refused() {
                    super::strangers_are_refused(stringify!($backend)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_release_wakes_the_waiter() {
                    super::a_release_wakes_the_waiter(stringify!($backend)).await;
                }
            }
        )*
    };
}

per_backend!(pg, redis, redlock, zookeeper);
