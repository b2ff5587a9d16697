//! 数据库的唯一索引: the seed's naive database lock and its three weaknesses, then the safe form that
//! fixes each — against a real PostgreSQL database of the test's own.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::{Duration, Instant};

use distlab_testkit::TestDatabase;
use lock::backend::LockError;
use lock::backend::pg::{NaiveLock, PgLocks};
use lock::lease::{LockName, Ttl};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

async fn database() -> PgPool {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_lock_stores(false);
    let db = TestDatabase::create(&distlab_testkit::orders_server()).await;
    let pool = db.pool().await;
    lock::MIGRATOR.run(&pool).await.unwrap();
    pool
}

fn name(text: &str) -> LockName {
    LockName::parse(text).unwrap()
}

fn ttl(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

#[tokio::test]
async fn naive_lock_a_crashed_holder_blocks_everyone_for_ever() {
    let naive = NaiveLock::new(database().await);
    assert!(naive.try_lock("report", "crashed-worker").await.unwrap());
    // The holder dies without deleting its row. Nothing ever removes it: no expiry.
    for attempt in 0..3 {
        assert!(
            !naive.try_lock("report", "worker-2").await.unwrap(),
            "attempt {attempt}: the dead holder's row still blocks"
        );
    }
    // Only a manual delete — by anyone, nothing checks who — frees it.
    assert!(naive.unlock("report").await.unwrap());
    assert!(naive.try_lock("report", "worker-2").await.unwrap());
}

#[tokio::test]
async fn naive_lock_a_second_caller_fails_at_once() {
    let naive = NaiveLock::new(database().await);
    assert!(naive.try_lock("report", "a").await.unwrap());
    let started = Instant::now();
    assert!(!naive.try_lock("report", "b").await.unwrap());
    // The insert fails with a unique violation straight away: there is no way to wait for the lock.
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn naive_lock_is_not_reentrant() {
    let naive = NaiveLock::new(database().await);
    assert!(naive.try_lock("report", "a").await.unwrap());
    assert!(
        !naive.try_lock("report", "a").await.unwrap(),
        "the holder itself cannot take its own lock again"
    );
}

#[tokio::test]
async fn safe_lock_expires_a_crashed_holder() {
    let locks = PgLocks::start(database().await, CancellationToken::new())
        .await
        .unwrap();
    let lock = name("report");
    let crashed = locks
        .acquire(&lock, "crashed", ttl(300), Duration::ZERO)
        .await
        .unwrap();
    let started = Instant::now();
    let next = locks
        .acquire(&lock, "next", ttl(10_000), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(next.fencing_token > crashed.fencing_token);
    // The crashed holder comes back: its lease is gone and it cannot touch the new one.
    assert!(matches!(
        locks.release(&lock, crashed.lease_id).await,
        Err(LockError::NotHolder(_))
    ));
    assert!(matches!(
        locks.renew(&lock, crashed.lease_id, ttl(1000)).await,
        Err(LockError::NotHolder(_))
    ));
}

#[tokio::test]
async fn safe_lock_waits_and_is_woken_by_the_release() {
    let locks = PgLocks::start(database().await, CancellationToken::new())
        .await
        .unwrap();
    let lock = name("report");
    let first = locks
        .acquire(&lock, "first", ttl(60_000), Duration::ZERO)
        .await
        .unwrap();
    let waiter = {
        let (locks, lock) = (locks.clone(), lock.clone());
        tokio::spawn(async move {
            locks
                .acquire(&lock, "second", ttl(60_000), Duration::from_secs(20))
                .await
        })
    };
    distlab_testkit::eventually("the second caller to wait", Duration::from_secs(10), || {
        let waiting = locks.waiters().count("report");
        async move { (waiting == 1).then_some(()) }
    })
    .await;
    let released = Instant::now();
    assert_eq!(locks.release(&lock, first.lease_id).await.unwrap(), 0);
    let second = waiter.await.unwrap().unwrap();
    assert!(
        released.elapsed() < Duration::from_millis(900),
        "woken by NOTIFY, not by the 1 s backstop: {:?}",
        released.elapsed()
    );
    assert_eq!(second.wakeups, 1);
    assert!(second.fencing_token > first.fencing_token);
}

#[tokio::test]
async fn safe_lock_is_reentrant_by_owner() {
    let locks = PgLocks::start(database().await, CancellationToken::new())
        .await
        .unwrap();
    let lock = name("report");
    let outer = locks
        .acquire(&lock, "alice", ttl(10_000), Duration::ZERO)
        .await
        .unwrap();
    let inner = locks
        .acquire(&lock, "alice", ttl(10_000), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(inner.lease_id, outer.lease_id, "one lease, held twice");
    assert_eq!(inner.fencing_token, outer.fencing_token);
    assert_eq!((outer.holds, inner.holds), (1, 2));
    assert!(matches!(
        locks.acquire(&lock, "bob", ttl(10_000), Duration::ZERO).await,
        Err(LockError::Held { holder: Some(h) }) if h.owner == "alice"
    ));
    assert_eq!(locks.release(&lock, outer.lease_id).await.unwrap(), 1);
    assert!(
        locks.holder(&lock).await.unwrap().is_some(),
        "still held once"
    );
    assert_eq!(locks.release(&lock, outer.lease_id).await.unwrap(), 0);
    assert!(locks.holder(&lock).await.unwrap().is_none());
    let bob = locks
        .acquire(&lock, "bob", ttl(10_000), Duration::ZERO)
        .await
        .unwrap();
    assert!(bob.fencing_token > outer.fencing_token);
}
