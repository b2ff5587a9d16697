//! The four lock backends and what they share: the error type, and the waiting loop of the backends
//! whose store cannot queue waiters itself (pg, redis, redlock).
//!
//! ZooKeeper queues waiters in the store (one sequential node each, each watching its predecessor). A row
//! or a Redis key cannot: every waiter would retry on every release (the herd effect the seed warns about
//! in ZooKeeper's section, here at the service). So waiters of one lock name first queue in this process
//! ([`WaitQueues`], FIFO), and only the head of the queue contends with other processes through the
//! backend, woken by the backend's own notification (LISTEN/NOTIFY, Redis pub/sub) or by the holder's
//! expiry time, never by a tight poll.

pub mod pg;
pub mod redis;
pub mod redlock;
pub mod zookeeper;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

use crate::lease::{Backend, Holder, Lease, LockName, Ttl};

/// Longest a waiter sleeps between two attempts when no notification comes: a backstop against a lost
/// notification (a dropped pub/sub connection), not the wake-up path.
pub const BACKSTOP: Duration = Duration::from_secs(2);

/// How soon a waiter tries again after the store did not answer.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Not acquired within the wait.
    #[error("the lock is held by someone else")]
    Held { holder: Option<Holder> },
    /// The lease exists but is not (or no longer) the current holder's.
    #[error("{0}")]
    NotHolder(String),
    /// No such lease.
    #[error("{0}")]
    NotFound(String),
    /// The backend does not answer (or, for RedLock, too few instances do).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for LockError {
    fn from(error: sqlx::Error) -> Self {
        if distlab_platform::db::is_unavailable(&error) {
            LockError::Unavailable(format!("the lock database is not answering: {error}"))
        } else {
            LockError::Internal(error.into())
        }
    }
}

impl From<::redis::RedisError> for LockError {
    fn from(error: ::redis::RedisError) -> Self {
        if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            LockError::Unavailable(format!("redis is not answering: {error}"))
        } else {
            LockError::Internal(error.into())
        }
    }
}

/// The outcome of one non-blocking attempt.
#[derive(Debug)]
pub enum Attempt {
    Acquired(Lease),
    /// Someone else holds it; their lease lapses in `retry_in` at the latest.
    Held {
        holder: Option<Holder>,
        retry_in: Option<Duration>,
    },
}

/// How many callers wait for each lock name in this process, right now (shown on `GET /locks/{name}`).
#[derive(Debug, Default, Clone)]
pub struct Waiters {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Waiters {
    /// Counts the caller as waiting for `name` until the guard drops.
    pub fn enter(&self, name: &str) -> WaitingGuard {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default() += 1;
        WaitingGuard {
            waiters: self.clone(),
            name: name.to_owned(),
        }
    }

    pub fn count(&self, name: &str) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct WaitingGuard {
    waiters: Waiters,
    name: String,
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        let mut counts = self
            .waiters
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.name);
            }
        }
    }
}

/// Per lock name, a FIFO of this process's waiters (tokio's mutex is fair), their count, and the channel
/// on which the backend's release notifications arrive.
#[derive(Debug, Clone)]
pub struct WaitQueues {
    queues: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    pub waiters: Waiters,
    released: broadcast::Sender<String>,
}

impl Default for WaitQueues {
    fn default() -> Self {
        Self {
            queues: Arc::default(),
            waiters: Waiters::default(),
            released: broadcast::channel(1024).0,
        }
    }
}

impl WaitQueues {
    /// Where the backend's listener reports each released lock name.
    pub fn notifier(&self) -> broadcast::Sender<String> {
        self.released.clone()
    }

    fn queue(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        // Forget queues nobody waits in, so the map does not grow with every name ever locked.
        if queues.len() > 1024 {
            queues.retain(|_, q| Arc::strong_count(q) > 1);
        }
        queues.entry(key.to_owned()).or_default().clone()
    }
}

impl WaitQueues {
    /// Tries `attempt` once; if the lock is held, queues behind this process's other waiters for `name`,
    /// then retries whenever a notification names the lock, the holder's lease lapses, or [`BACKSTOP`]
    /// passes, until `wait` is over.
    pub async fn acquire<F, Fut>(
        &self,
        name: &LockName,
        wait: Duration,
        attempt: F,
    ) -> Result<Lease, LockError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Attempt, LockError>>,
    {
        acquire_waiting(self, name, wait, attempt).await
    }
}

async fn acquire_waiting<F, Fut>(
    queues: &WaitQueues,
    name: &LockName,
    wait: Duration,
    mut attempt: F,
) -> Result<Lease, LockError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt, LockError>>,
{
    let deadline = Instant::now() + wait;
    // Subscribe before the first attempt, so a release between the attempt and the wait is not missed.
    let mut released = queues.released.subscribe();
    let mut last_holder = match attempt().await {
        Ok(Attempt::Acquired(lease)) => return Ok(lease),
        Ok(Attempt::Held { holder, .. }) if wait.is_zero() => {
            return Err(LockError::Held { holder });
        }
        Ok(Attempt::Held { holder, .. }) => holder,
        Err(LockError::Unavailable(_)) if !wait.is_zero() => None,
        Err(error) => return Err(error),
    };
    let queue = queues.queue(name.as_str());
    let Ok(_turn) = tokio::time::timeout_at(deadline, queue.lock()).await else {
        return Err(LockError::Held {
            holder: last_holder,
        });
    };
    let mut wakeups = 0;
    loop {
        // Drain notifications older than this attempt: the attempt sees their effect.
        released = released.resubscribe();
        let nap = match attempt().await {
            Ok(Attempt::Acquired(mut lease)) => {
                lease.wakeups = wakeups;
                return Ok(lease);
            }
            Ok(Attempt::Held { holder, retry_in }) => {
                last_holder = holder;
                if Instant::now() >= deadline {
                    return Err(LockError::Held {
                        holder: last_holder,
                    });
                }
                retry_in.unwrap_or(BACKSTOP).min(BACKSTOP)
            }
            // A slow or briefly unreachable store is retried while the caller is willing to wait.
            Err(LockError::Unavailable(message)) => {
                if Instant::now() >= deadline {
                    return Err(LockError::Unavailable(message));
                }
                tracing::debug!(lock = %name, %message, "lock store unavailable; retrying");
                UNAVAILABLE_RETRY
            }
            Err(error) => return Err(error),
        };
        let until = (Instant::now() + nap).min(deadline);
        let _waiting = queues.waiters.enter(name.as_str());
        if wait_for(&mut released, name.as_str(), until).await {
            wakeups += 1;
        }
    }
}

/// Waits until a notification names `name` (true) or `until` passes (false).
async fn wait_for(released: &mut broadcast::Receiver<String>, name: &str, until: Instant) -> bool {
    loop {
        match tokio::time::timeout_at(until, released.recv()).await {
            Err(_) => return false,
            Ok(Ok(released)) if released == name => return true,
            Ok(Ok(_)) => continue,
            // Missed some: one of them may have been ours.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return true,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                tokio::time::sleep_until(until).await;
                return false;
            }
        }
    }
}

/// What every backend offers. The HTTP layer picks one with [`Locks::get`]; each backend keeps its own
/// inherent methods (its tests call them directly) and this trait forwards to them.
pub trait LockBackend: Send + Sync {
    /// Takes the lock for `owner` for `ttl`, waiting up to `wait` while someone else holds it.
    fn acquire<'a>(
        &'a self,
        name: &'a LockName,
        owner: &'a str,
        ttl: Ttl,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Lease, LockError>>;

    /// Extends the lease to `ttl` from now, if it still holds the lock.
    fn renew<'a>(
        &'a self,
        name: &'a LockName,
        lease_id: Uuid,
        ttl: Ttl,
    ) -> BoxFuture<'a, Result<Lease, LockError>>;

    /// Gives the lease back; returns the holds left (pg reentrancy; 0 means the lock is free).
    fn release<'a>(
        &'a self,
        name: &'a LockName,
        lease_id: Uuid,
    ) -> BoxFuture<'a, Result<u32, LockError>>;

    /// Who holds the lock now, if anyone.
    fn holder<'a>(&'a self, name: &'a LockName)
    -> BoxFuture<'a, Result<Option<Holder>, LockError>>;

    /// Callers of this process waiting for a lock, by name.
    fn waiters(&self) -> &Waiters;
}

/// Implements [`LockBackend`] for a backend by forwarding to its inherent methods of the same names.
macro_rules! forward_lock_backend {
    ($backend:ty) => {
        impl LockBackend for $backend {
            fn acquire<'a>(
                &'a self,
                name: &'a LockName,
                owner: &'a str,
                ttl: Ttl,
                wait: Duration,
            ) -> BoxFuture<'a, Result<Lease, LockError>> {
                Box::pin(<$backend>::acquire(self, name, owner, ttl, wait))
            }

            fn renew<'a>(
                &'a self,
                name: &'a LockName,
                lease_id: Uuid,
                ttl: Ttl,
            ) -> BoxFuture<'a, Result<Lease, LockError>> {
                Box::pin(<$backend>::renew(self, name, lease_id, ttl))
            }

            fn release<'a>(
                &'a self,
                name: &'a LockName,
                lease_id: Uuid,
            ) -> BoxFuture<'a, Result<u32, LockError>> {
                Box::pin(<$backend>::release(self, name, lease_id))
            }

            fn holder<'a>(
                &'a self,
                name: &'a LockName,
            ) -> BoxFuture<'a, Result<Option<Holder>, LockError>> {
                Box::pin(<$backend>::holder(self, name))
            }

            fn waiters(&self) -> &Waiters {
                <$backend>::waiters(self)
            }
        }
    };
}

forward_lock_backend!(pg::PgLocks);
forward_lock_backend!(redis::RedisLocks);
forward_lock_backend!(redlock::RedLock);
forward_lock_backend!(zookeeper::ZkLocks);

/// All four backends.
#[derive(Debug, Clone)]
pub struct Locks {
    pub pg: pg::PgLocks,
    pub redis: redis::RedisLocks,
    pub redlock: redlock::RedLock,
    pub zookeeper: zookeeper::ZkLocks,
    /// The names granted lately through this instance (`GET /locks`).
    pub recent: crate::recent::Recent,
}

impl Locks {
    /// The backend a request names.
    pub fn get(&self, backend: Backend) -> &dyn LockBackend {
        match backend {
            Backend::Pg => &self.pg,
            Backend::Redis => &self.redis,
            Backend::Redlock => &self.redlock,
            Backend::Zookeeper => &self.zookeeper,
        }
    }
}
