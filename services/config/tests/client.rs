//! The shared client crate (`distlab-config-client`) against real `distlab-config` processes (each test
//! has its own three nodes): its `ConfigClient` and its `Follower` speak the contract the nodes serve.

use std::time::Duration;

use distlab_config_client::{
    ClientError, ConfigClient, Consistency, FollowedKey, Follower, Latest, switch_key,
};
use distlab_testkit::raft_cluster::RaftCluster;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const BINARY: &str = env!("CARGO_BIN_EXE_distlab-config");

/// How long a change may take to reach a follower (across a node's death: a backoff and a new watch).
const FOLLOW_DEADLINE: Duration = Duration::from_secs(15);

/// The cluster's node URLs, `first` first.
fn urls_from(cluster: &RaftCluster, first: u64) -> Vec<String> {
    let mut ids = cluster.ids();
    ids.sort_by_key(|id| *id != first);
    ids.into_iter().map(|id| cluster.url(id)).collect()
}

async fn wait_for(
    key: &FollowedKey<String>,
    what: &str,
    check: impl FnMut(&distlab_config_client::KeyState<String>) -> bool,
) {
    let mut changes = key.subscribe();
    let waited = tokio::time::timeout(FOLLOW_DEADLINE, changes.wait_for(check)).await;
    assert!(
        waited.is_ok_and(|r| r.is_ok()),
        "timed out waiting for {what}: {}",
        key.detail()
    );
}

/// Sets the switch, again while no node can take the write (an election is under way after a leader
/// died).
async fn put_during_an_election(client: &ConfigClient, name: &str, value: &str) {
    distlab_testkit::eventually(
        &format!("a node to take the write of switch {name}"),
        Duration::from_secs(10),
        || async { client.put_switch(name, value).await.ok() },
    )
    .await;
}

#[tokio::test]
async fn the_client_reads_writes_and_compares_and_sets_through_any_node() {
    let cluster = RaftCluster::start(BINARY, 3, &[]).await;
    let leader = cluster.leader().await;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let client = ConfigClient::new(urls_from(&cluster, follower)).expect("a client");
    let key = switch_key("cap_mode");

    // Written through a follower (forwarded), read linearizably and from the follower's own copy.
    assert_eq!(
        client.get(&key, Consistency::Linearizable).await.ok(),
        Some(None)
    );
    let written = client.put_switch("cap_mode", "CP").await.expect("written");
    let read = client
        .get(&key, Consistency::Linearizable)
        .await
        .expect("read")
        .expect("present");
    assert_eq!((read.value, read.revision), (json!("CP"), written.revision));
    client
        .get(&key, Consistency::Stale)
        .await
        .expect("a stale read answers");

    // Compare-and-set.
    match client.put_if(&key, &json!("AP"), 0).await {
        Err(ClientError::RevisionMismatch { current, .. }) => {
            assert_eq!(current, written.revision);
        }
        other => panic!("expected a revision mismatch, got {other:?}"),
    }
    let swapped = client
        .put_if(&key, &json!("AP"), written.revision)
        .await
        .expect("swapped");
    assert!(swapped.revision > written.revision);

    // The node's own refusals are final and typed.
    match client.put(&key, &json!("")).await {
        Err(ClientError::Rejected { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (422, "validation_failed"));
        }
        other => panic!("expected a 422, got {other:?}"),
    }

    // Any character a key may hold reaches the node intact.
    let odd = "distlab/test/a b?c%d#e&f=g";
    client.put(odd, &json!({"x": 1})).await.expect("written");
    let read = client
        .get(odd, Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(read.map(|kv| kv.key), Some(odd.to_owned()));

    // Delete, twice.
    let deleted = client.delete(&key).await.expect("deleted");
    assert!(deleted.is_some_and(|d| d.revision > swapped.revision));
    assert_eq!(client.delete(&key).await.ok(), Some(None));

    // The first node listed cut off from the others: the client goes on with another one.
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != follower)
        .collect();
    cluster.partition(follower, &others).await;
    let written = client
        .put_switch("cap_mode", "AP")
        .await
        .expect("written through the majority side");
    let read = client
        .get(&key, Consistency::Linearizable)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(read.revision, written.revision);
    cluster.heal().await;
}

#[tokio::test]
async fn a_switch_is_followed_across_the_death_of_the_node_followed() {
    let mut cluster = RaftCluster::start(BINARY, 3, &[]).await;
    let leader = cluster.leader().await;
    let follower = Follower::switch(urls_from(&cluster, leader), "degrade").expect("a follower");
    let degrade = follower.followed().clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(follower.run(shutdown.clone()));

    wait_for(&degrade, "the follower to connect", |s| {
        s.status.following && s.latest == Latest::Absent
    })
    .await;
    let client = ConfigClient::new(urls_from(&cluster, leader)).expect("a client");
    client.put_switch("degrade", "auto").await.expect("written");
    wait_for(&degrade, "auto", |s| {
        s.latest.value().is_some_and(|v| v == "auto")
    })
    .await;
    assert_eq!(degrade.status().node, Some(cluster.url(leader)));

    // The node followed dies: the follower moves on, and sees the next change.
    cluster.kill(leader);
    put_during_an_election(&client, "degrade", "on").await;
    wait_for(&degrade, "on, from another node", |s| {
        s.latest.value().is_some_and(|v| v == "on") && s.status.following
    })
    .await;
    assert_ne!(degrade.status().node, Some(cluster.url(leader)));

    // A value that is not a JSON string is ignored, and said so.
    client
        .put(&switch_key("degrade"), &json!({"level": 2}))
        .await
        .expect("written");
    wait_for(&degrade, "the invalid value to be reported", |s| {
        s.invalid.is_some()
    })
    .await;
    assert_eq!(degrade.value().as_deref(), Some("on"));
    assert!(
        degrade.detail()["invalid_value"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a switch value")),
        "{}",
        degrade.detail()
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the follower stops on shutdown")
        .expect("the follower does not panic");
}
