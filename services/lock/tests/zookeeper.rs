//! Zookeeper 的有序节点 against the stack's real ZooKeeper: each waiter is woken only by its predecessor
//! (no 羊群效应), unlike waiters that watch all children; and a holder whose session expires loses the lock
//! to ZooKeeper itself.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::sync::Arc;
use std::time::{Duration, Instant};

use lock::backend::zookeeper::{Watch, ZkLocks};
use lock::lease::{Lease, LockName, Ttl};

const WAITERS: usize = 50;

fn setup() {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_lock_stores(false);
}

fn name() -> LockName {
    LockName::parse(&format!(
        "zk-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .unwrap()
}

fn ttl(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

fn locks(watch: Watch) -> ZkLocks {
    ZkLocks::new(&distlab_testkit::zookeeper(), "/distlab/test-locks").with_watch(watch)
}

/// A holder, then `WAITERS` waiters queued behind it; each takes the lock in turn and releases it. Returns
/// each waiter's lease (with the number of notifications it received).
async fn queue_up(watch: Watch) -> Vec<Lease> {
    let locks = Arc::new(locks(watch));
    let lock = name();
    let first = locks
        .acquire(&lock, "first", ttl(60_000), Duration::ZERO)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..WAITERS)
        .map(|i| {
            let (locks, lock) = (locks.clone(), lock.clone());
            tokio::spawn(async move {
                let lease = locks
                    .acquire(
                        &lock,
                        &format!("waiter-{i}"),
                        ttl(60_000),
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                locks.release(&lock, lease.lease_id).await.unwrap();
                lease
            })
        })
        .collect();
    distlab_testkit::eventually("every waiter to be queued", Duration::from_secs(30), || {
        let waiting = locks.waiters().count(lock.as_str());
        async move { (waiting == WAITERS).then_some(()) }
    })
    .await;
    locks.release(&lock, first.lease_id).await.unwrap();
    let mut leases = Vec::new();
    for task in tasks {
        leases.push(task.await.unwrap());
    }
    leases.sort_by_key(|l| l.fencing_token);
    assert!(
        leases
            .windows(2)
            .all(|w| w[0].fencing_token < w[1].fencing_token)
            && leases[0].fencing_token > first.fencing_token,
        "tokens (czxids) strictly increase in holding order"
    );
    leases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_waiter_is_woken_only_by_its_predecessor() {
    setup();
    let leases = queue_up(Watch::Predecessor).await;
    let wakeups: Vec<u32> = leases.iter().map(|l| l.wakeups).collect();
    assert!(
        wakeups.iter().all(|&w| w == 1),
        "one notification per waiter, whatever the queue length: {wakeups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watching_all_children_wakes_the_herd() {
    setup();
    let leases = queue_up(Watch::AllChildren).await;
    let total: u32 = leases.iter().map(|l| l.wakeups).sum();
    // Every release (and every newly queued node) wakes every waiter still queued: about N²/2 wake-ups
    // for N waiters, where predecessor watches need N.
    assert!(
        total as usize > 10 * WAITERS,
        "the herd: {total} wake-ups for {WAITERS} waiters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_releases_the_lock() {
    setup();
    // The holder's process dies: its session is neither closed nor kept alive.
    let crashing = locks(Watch::Predecessor).detached();
    let survivor = locks(Watch::Predecessor);
    let lock = name();
    let held = crashing
        .acquire(&lock, "crashing", ttl(2_000), Duration::ZERO)
        .await
        .unwrap();
    assert!(crashing.abandon(held.lease_id));
    let started = Instant::now();
    let next = survivor
        .acquire(&lock, "survivor", ttl(10_000), Duration::from_secs(20))
        .await
        .expect("the lock is free once ZooKeeper expires the dead session");
    let waited = started.elapsed();
    // The session was opened with the lease's 2 s TTL as its timeout: ZooKeeper expires it about that
    // long after the last heartbeat, and deletes the ephemeral node with it.
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(10),
        "released by the session's expiry after ~2 s, not at once and not never: {waited:?}"
    );
    assert!(next.fencing_token > held.fencing_token);
    assert_eq!(next.wakeups, 1, "woken by the node's deletion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_lock_directory_is_reaped_and_made_again() {
    setup();
    let locks = locks(Watch::Predecessor);
    let lock = name();
    let zk = zookeeper_client::Client::connect(&distlab_testkit::zookeeper())
        .await
        .unwrap();
    let dir = format!("/distlab/test-locks/{lock}");
    let first = locks
        .acquire(&lock, "a", ttl(10_000), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        zk.check_stat(&dir).await.unwrap().is_some(),
        "{dir} holds the lease node"
    );
    locks.release(&lock, first.lease_id).await.unwrap();
    // The directory is a container node: ZooKeeper removes it once its last lease node is gone.
    distlab_testkit::eventually(
        "ZooKeeper to reap the empty lock directory",
        Duration::from_secs(30),
        || {
            let (zk, dir) = (zk.clone(), dir.clone());
            async move { zk.check_stat(&dir).await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
    // The backend still believes it made the directory; it finds out and makes it again.
    let second = locks
        .acquire(&lock, "b", ttl(10_000), Duration::ZERO)
        .await
        .unwrap();
    assert!(second.fencing_token > first.fencing_token);
    assert!(zk.check_stat(&dir).await.unwrap().is_some());
    locks.release(&lock, second.lease_id).await.unwrap();
}
