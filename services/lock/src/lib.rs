//! The lock service: the four distributed locks of the seed's section 一 (分布式锁), each on its real
//! store, each with a fencing token.
//!
//! | backend | seed | mechanism | waiters woken by |
//! |---|---|---|---|
//! | `pg` | 数据库的唯一索引 | a row under a unique index, with expiry, waiting and reentrancy ([`backend::pg`]) | `LISTEN/NOTIFY` |
//! | `redis` | Redis 的 SETNX 指令 | `SET NX PX` + compare-and-delete ([`backend::redis`]) | pub/sub |
//! | `redlock` | Redis 的 RedLock 算法 | a majority of N instances within the TTL ([`backend::redlock`]) | pub/sub |
//! | `zookeeper` | Zookeeper 的有序节点 | ephemeral sequential nodes, predecessor watches ([`backend::zookeeper`]) | watches |
//!
//! A lease alone cannot give mutual exclusion: a holder that pauses (GC, swap, a stopped VM) past its TTL
//! wakes up still believing it holds the lock. So every grant carries a fencing token that only grows, and
//! the protected resource refuses a token lower than one it has seen — the inventory service's
//! `POST /products/{sku}/adjust` does.
//!
//! HTTP: see [`http`].

pub mod backend;
pub mod config;
pub mod http;
pub mod lease;
pub mod recent;

use std::net::SocketAddr;

use anyhow::Context;
use distlab_platform::http::{ReadinessCheck, Service, ServiceInfo, service_router};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
// Lets zookeeper-client spawn its session tasks on tokio (its runtime-agnostic `asyncs` needs a runtime).
use asyncs as _;

use backend::Locks;
pub use config::Config;

/// The pg backend's schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/locks");

/// Connects every backend. PostgreSQL must answer (its schema is migrated now); Redis and ZooKeeper are
/// connected lazily, so the service starts — and RedLock works — with some of them down.
pub async fn connect(config: &Config, stop: &CancellationToken) -> anyhow::Result<Locks> {
    let pool = distlab_platform::db::connect(&config.database_url, config.database_max_connections)
        .await?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot migrate the lock database")?;
    Ok(Locks {
        pg: backend::pg::PgLocks::start(pool, stop.clone()).await?,
        redis: backend::redis::RedisLocks::start(&config.redis_url, stop.clone())?,
        redlock: backend::redlock::RedLock::start(
            &config.redlock_urls(),
            config.redlock_instance_timeout(),
            stop.clone(),
        )?,
        zookeeper: backend::zookeeper::ZkLocks::new(&config.zookeeper, &config.zookeeper_root),
        recent: recent::Recent::default(),
    })
}

/// A built lock service, ready to run.
#[derive(Debug)]
pub struct Application {
    service: Service,
    locks: Locks,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        distlab_platform::metrics::install();
        let shutdown = CancellationToken::new();
        let locks = connect(&config, &shutdown).await?;
        let router = service_router(
            http::router(locks.clone()),
            ServiceInfo {
                openapi: http::openapi(),
                readiness: readiness(&locks),
            },
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Self {
            service: Service::new(listener, router, shutdown),
            locks,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    /// The backends this service runs (tests).
    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.service
            .run_until_stopped()
            .await
            .context("lock service failed")
    }
}

/// `/readyz`: each backend's store. RedLock is ready while a majority of its instances answer.
fn readiness(locks: &Locks) -> Vec<ReadinessCheck> {
    let redis = locks.redis.clone();
    let redlock = locks.redlock.clone();
    let zookeeper = locks.zookeeper.clone();
    vec![
        locks.pg.readiness(),
        ReadinessCheck::new("redis", move || {
            let redis = redis.clone();
            async move { redis.instance().ping().await.map_err(|e| e.to_string()) }
        }),
        ReadinessCheck::with_detail("redlock", move || {
            let redlock = redlock.clone();
            async move {
                let pings =
                    futures::future::join_all(redlock.instances().iter().map(|i| i.ping())).await;
                let up = pings.iter().filter(|p| p.is_ok()).count();
                let n = pings.len();
                let detail = format!("{up} of {n} instances answer");
                if up >= lease::quorum(n) {
                    Ok(serde_json::json!(detail))
                } else {
                    Err(detail)
                }
            }
        }),
        ReadinessCheck::new("zookeeper", move || {
            let zookeeper = zookeeper.clone();
            async move { zookeeper.ping().await.map_err(|e| e.to_string()) }
        }),
    ]
}
