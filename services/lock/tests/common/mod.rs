//! A lock service of the test's own: in-process, on a free port, with a fresh database for the pg backend
//! and the stack's Redis instances and ZooKeeper. Lock names are unique per test.

#![allow(dead_code, unreachable_pub)] // each test file uses part of this module

use std::time::Duration;

use distlab_testkit::TestDatabase;
use lock::{Application, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const BACKENDS: [&str; 4] = ["pg", "redis", "redlock", "zookeeper"];

pub struct TestLocks {
    pub url: String,
    pub http: reqwest::Client,
    pub config: Config,
}

pub async fn spawn() -> TestLocks {
    distlab_platform::telemetry::init_for_tests();
    distlab_testkit::require_lock_stores(false);
    let db = TestDatabase::create(&distlab_testkit::orders_server()).await;
    let redis = distlab_testkit::redis_urls();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        database_max_connections: 8,
        redis_url: redis[0].clone(),
        redlock_urls: redis.join(","),
        zookeeper: distlab_testkit::zookeeper(),
        ..Config::local()
    };
    let app = Application::build(config.clone())
        .await
        .expect("the lock service builds");
    let url = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    TestLocks {
        url,
        http: distlab_testkit::http(),
        config,
    }
}

/// A lock name of this test's own.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

impl TestLocks {
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Acquire: the lease on 200, or the response otherwise.
    pub async fn try_acquire(
        &self,
        backend: &str,
        name: &str,
        owner: &str,
        ttl_ms: u64,
        wait_ms: u64,
    ) -> Result<Value, reqwest::Response> {
        let response = self
            .post(
                &format!("/locks/{name}/acquire"),
                json!({"backend": backend, "owner": owner, "ttl_ms": ttl_ms, "wait_ms": wait_ms}),
            )
            .await;
        if response.status() == StatusCode::OK {
            Ok(response.json().await.unwrap())
        } else {
            Err(response)
        }
    }

    pub async fn acquire(
        &self,
        backend: &str,
        name: &str,
        owner: &str,
        ttl_ms: u64,
        wait_ms: u64,
    ) -> Value {
        match self
            .try_acquire(backend, name, owner, ttl_ms, wait_ms)
            .await
        {
            Ok(lease) => lease,
            Err(response) => {
                let status = response.status();
                panic!(
                    "{backend}: acquire {name} answered {status}: {}",
                    response.text().await.unwrap()
                )
            }
        }
    }

    pub async fn release(&self, backend: &str, name: &str, lease: &Value) -> reqwest::Response {
        self.post(
            &format!("/locks/{name}/release"),
            json!({"backend": backend, "lease_id": lease["lease_id"]}),
        )
        .await
    }

    pub async fn holder(&self, backend: &str, name: &str) -> Value {
        distlab_testkit::get_json(
            &self.http,
            &format!("{}/locks/{name}?backend={backend}", self.url),
        )
        .await["holder"]
            .clone()
    }
}

pub const LONG: Duration = Duration::from_secs(20);
