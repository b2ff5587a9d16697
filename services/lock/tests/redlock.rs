//! RedLock with instances down: it works while a majority answers and refuses without one — against the
//! stack's Redis instances, a Redis of the test's own that the test kills, and ports nobody listens on.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::time::Duration;

use distlab_testkit::{PrivateRedis, redis_urls, unused_port};
use lock::backend::LockError;
use lock::backend::redis::Namespace;
use lock::backend::redlock::RedLock;
use lock::lease::{LockName, Ttl};
use tokio_util::sync::CancellationToken;

const INSTANCE_TIMEOUT: Duration = Duration::from_millis(50);

fn setup() {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_lock_stores(false);
}

fn name() -> LockName {
    LockName::parse(&format!(
        "redlock-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .unwrap()
}

fn ttl() -> Ttl {
    Ttl::from_millis(10_000).unwrap()
}

fn dead() -> String {
    format!("redis://127.0.0.1:{}", unused_port())
}

#[tokio::test]
async fn works_with_one_of_three_instances_killed() {
    setup();
    let stack = redis_urls();
    let mut third = PrivateRedis::start().await;
    let redlock = RedLock::start(
        &[stack[0].clone(), stack[1].clone(), third.url()],
        INSTANCE_TIMEOUT,
        CancellationToken::new(),
    )
    .unwrap();
    let held_before = name();
    let before = redlock
        .acquire(&held_before, "a", ttl(), Duration::ZERO)
        .await
        .unwrap();
    third.kill();
    let lock = name();
    let asked = chrono::Utc::now();
    let lease = redlock
        .acquire(&lock, "a", ttl(), Duration::ZERO)
        .await
        .expect("2 of 3 instances are a majority");
    assert!(lease.fencing_token >= 1);
    assert!(
        lease.expires_at <= asked + chrono::Duration::milliseconds(10_000 - 100),
        "validity is the TTL less the time taken and the drift (1% + 2 ms)"
    );
    // Mutual exclusion still holds with the surviving majority.
    assert!(matches!(
        redlock.acquire(&lock, "b", ttl(), Duration::ZERO).await,
        Err(LockError::Held { .. })
    ));
    assert_eq!(
        redlock.holder(&lock).await.unwrap().map(|h| h.owner),
        Some("a".into())
    );
    redlock.renew(&lock, lease.lease_id, ttl()).await.unwrap();
    assert_eq!(redlock.release(&lock, lease.lease_id).await.unwrap(), 0);
    let next = redlock
        .acquire(&lock, "b", ttl(), Duration::ZERO)
        .await
        .unwrap();
    assert!(next.fencing_token > lease.fencing_token);
    // A lease taken while all three were up is still released by the surviving two.
    assert_eq!(
        redlock
            .release(&held_before, before.lease_id)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn refuses_with_two_of_three_instances_down() {
    setup();
    let stack = redis_urls();
    let redlock = RedLock::start(
        &[stack[0].clone(), dead(), dead()],
        INSTANCE_TIMEOUT,
        CancellationToken::new(),
    )
    .unwrap();
    let lock = name();
    match redlock.acquire(&lock, "a", ttl(), Duration::ZERO).await {
        Err(LockError::Unavailable(message)) => {
            assert!(message.contains("1 of 3"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The one instance that did grant it was released again (step 3 of the seed's algorithm).
    let single =
        lock::backend::redis::Instance::new(&stack[0], Namespace::Redlock, Duration::from_secs(2))
            .unwrap();
    assert_eq!(single.holder(&lock).await.unwrap(), None);
}

#[tokio::test]
async fn five_instances_need_three() {
    setup();
    let stack = redis_urls();
    let five = |up: usize| -> Vec<String> {
        (0..5)
            .map(|i| if i < up { stack[i].clone() } else { dead() })
            .collect()
    };
    let three_up = RedLock::start(&five(3), INSTANCE_TIMEOUT, CancellationToken::new()).unwrap();
    let lease = three_up
        .acquire(&name(), "a", ttl(), Duration::ZERO)
        .await
        .expect("3 of 5 is a majority");
    assert!(lease.fencing_token >= 1);
    let two_up = RedLock::start(&five(2), INSTANCE_TIMEOUT, CancellationToken::new()).unwrap();
    assert!(matches!(
        two_up.acquire(&name(), "a", ttl(), Duration::ZERO).await,
        Err(LockError::Unavailable(_))
    ));
}

#[tokio::test]
async fn tokens_stay_monotonic_when_the_majority_changes() {
    // Instance counters drift apart when different majorities grant leases; the fence step keeps the
    // tokens increasing anyway.
    setup();
    let stack = redis_urls();
    let mut private = PrivateRedis::start().await;
    let lock = name();
    let all = RedLock::start(
        &[stack[0].clone(), stack[1].clone(), private.url()],
        INSTANCE_TIMEOUT,
        CancellationToken::new(),
    )
    .unwrap();
    // Push the private instance's counter far ahead through single-instance grants.
    let single = lock::backend::redis::Instance::new(
        &private.url(),
        Namespace::Redlock,
        Duration::from_secs(2),
    )
    .unwrap();
    for _ in 0..20 {
        let id = uuid::Uuid::new_v4();
        single.try_acquire(&lock, id, ttl(), "x").await.unwrap();
        single.release(&lock, id, false).await.unwrap();
    }
    let mut last = 0;
    for round in 0..4 {
        let lease = all
            .acquire(&lock, "a", ttl(), Duration::ZERO)
            .await
            .unwrap();
        assert!(
            lease.fencing_token > last,
            "round {round}: {} after {last}",
            lease.fencing_token
        );
        last = lease.fencing_token;
        all.release(&lock, lease.lease_id).await.unwrap();
        if round == 1 {
            private.kill(); // now the stack's two instances, with the lower counters, are the majority
        }
    }
}
