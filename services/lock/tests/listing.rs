//! `GET /locks`: the held locks among those granted through this instance, with holders and fencing tokens.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

mod common;

use reqwest::StatusCode;
use serde_json::Value;

async fn listed(locks: &common::TestLocks, query: &str) -> Value {
    distlab_testkit::get_json(&locks.http, &format!("{}/locks{query}", locks.url)).await
}

fn entry<'a>(listing: &'a Value, backend: &str, name: &str) -> Option<&'a Value> {
    listing["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["backend"] == backend && l["name"] == name)
}

#[tokio::test]
async fn a_held_lock_is_listed_with_its_holder_and_fencing_token_on_every_backend_until_released() {
    let locks = common::spawn().await;
    let name = common::unique("listed");
    let mut leases = Vec::new();
    for backend in common::BACKENDS {
        leases.push(locks.acquire(backend, &name, "lister", 30_000, 0).await);
    }
    let listing = listed(&locks, "").await;
    assert_eq!(listing["unreadable"], serde_json::json!([]), "{listing}");
    for (backend, lease) in common::BACKENDS.iter().zip(&leases) {
        let held = entry(&listing, backend, &name)
            .unwrap_or_else(|| panic!("{backend}: {name} is not listed: {listing}"));
        assert_eq!(held["holder"]["owner"], "lister", "{backend}");
        assert_eq!(
            held["holder"]["fencing_token"], lease["fencing_token"],
            "{backend}"
        );
        assert!(
            held["holder"].get("lease_id").is_none(),
            "never the lease id"
        );
    }
    let only_pg = listed(&locks, "?backend=pg").await;
    assert!(
        only_pg["locks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["backend"] == "pg"),
        "{only_pg}"
    );
    assert!(entry(&only_pg, "pg", &name).is_some(), "{only_pg}");

    for (backend, lease) in common::BACKENDS.iter().zip(&leases) {
        assert_eq!(
            locks.release(backend, &name, lease).await.status(),
            StatusCode::OK
        );
    }
    let after = listed(&locks, "").await;
    for backend in common::BACKENDS {
        assert!(
            entry(&after, backend, &name).is_none(),
            "{backend}: a released lock is still listed: {after}"
        );
    }
}

#[tokio::test]
async fn an_unknown_backend_in_the_listing_is_a_422() {
    let locks = common::spawn().await;
    let response = locks
        .http
        .get(format!("{}/locks?backend=etcd", locks.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
