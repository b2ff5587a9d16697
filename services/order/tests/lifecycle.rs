//! The real `distlab-order` binary: configured from environment variables, it serves, and on SIGTERM it
//! drains and exits with success.

#![allow(clippy::unwrap_used)] // a failed step fails the test right there

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distlab_testkit::{TestDatabase, get_json, unique_group, unique_kafka};

#[tokio::test]
async fn the_binary_reads_its_environment_serves_and_stops_cleanly_on_sigterm() {
    distlab_testkit::require_stack(false);
    let db = TestDatabase::create(&distlab_testkit::orders_server()).await;
    let kafka = unique_kafka(&distlab_testkit::kafka_brokers());
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlab-order"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", &db.url)
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("ORDER_EVENTS_TOPIC", &kafka.order_events_topic)
        .env("INVENTORY_EVENTS_TOPIC", &kafka.inventory_events_topic)
        .env("CONSUMER_GROUP", unique_group("order"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The address it bound is in its "listening" log line.
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                let rest = line.split("addr=").nth(1)?;
                Some(rest.split_whitespace().next()?.to_owned())
            })
    })
    .await
    .unwrap()
    .expect("the service logs the address it listens on");
    let http = distlab_testkit::http();
    let ready = get_json(&http, &format!("http://{addr}/readyz")).await;
    assert_eq!(ready["status"], "ready");

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(distlab_testkit::POLL_INTERVAL).await;
    };
    assert!(
        status.success(),
        "the service exits with success after SIGTERM: {status}"
    );
}
