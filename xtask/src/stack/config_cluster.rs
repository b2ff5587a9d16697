//! The config nodes' Raft cluster: initialised once through node 1, and each node's role for `status`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::probe::http_get;
use super::{PROBE_INTERVAL, READY_TIMEOUT, admin_token};

/// Initialises the config cluster through node 1 (once: an initialised cluster answers 409), then waits
/// until it has elected a leader.
pub(super) async fn init_config_cluster() -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let response = http
        .post("http://127.0.0.1:8091/v1/cluster/init")
        .bearer_auth(admin_token())
        .send()
        .await
        .context("POST /v1/cluster/init")?;
    match response.status().as_u16() {
        200 => println!("    config cluster initialised (nodes 1–3)"),
        409 => {}
        other => bail!(
            "initialising the config cluster: {other} {}",
            response.text().await.unwrap_or_default()
        ),
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while http_get(8091, "/readyz").map(|(status, _)| status) != Some(200) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the config cluster elected no leader within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    Ok(())
}

/// `  follower of 2, term 3` for `cargo xtask status`.
pub(super) async fn raft_role(port: u16) -> String {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return String::new();
    };
    let url = format!("http://127.0.0.1:{port}/v1/cluster");
    let Ok(response) = http.get(url).send().await else {
        return String::new();
    };
    let Ok(status) = response.json::<serde_json::Value>().await else {
        return String::new();
    };
    let term = &status["term"];
    match (status["state"].as_str(), status["leader"].as_u64()) {
        (Some("leader"), _) => format!(" — LEADER, term {term}"),
        (Some(state), Some(leader)) => format!(" — {state} of node {leader}, term {term}"),
        (Some(state), None) => format!(" — {state}, no leader known, term {term}"),
        _ => String::new(),
    }
}
