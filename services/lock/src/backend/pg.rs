//! 数据库的唯一索引 — the seed's database lock, naive and safe.
//!
//! [`NaiveLock`] is the seed's text as code: `INSERT` a row under a unique index to lock, `DELETE` it to
//! unlock. Its three weaknesses are the seed's: a holder that dies without deleting blocks everyone for
//! ever (no expiry); a second caller's insert fails at once (no waiting); the holder's own second insert
//! fails too (not reentrant). The tests show each.
//!
//! [`PgLocks`] fixes them in one statement: the row carries a lease (`expires_at`, from the database's
//! clock) and an expired row is taken over by `INSERT … ON CONFLICT DO UPDATE … WHERE expired`; the same
//! owner re-entering bumps `hold_count` instead of failing; releasing the last hold deletes the row and
//! `NOTIFY`s `distlab_lock_released`, which wakes waiters (see [`super::WaitQueues::acquire`]). The fencing
//! token comes from one sequence, so it only grows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Attempt, LockError, WaitQueues};
use crate::lease::{Holder, Lease, LockName, Ttl};

/// The channel releases are announced on (payload: the lock name).
pub const RELEASED_CHANNEL: &str = "distlab_lock_released";

/// The seed's lock, weaknesses included. Only for showing them; the service uses [`PgLocks`].
#[derive(Debug, Clone)]
pub struct NaiveLock {
    pool: PgPool,
}

impl NaiveLock {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Inserts the row: `Ok(true)` if this caller now holds the lock, `Ok(false)` if the unique index
    /// refused it — at once, whoever holds it, even the caller itself.
    pub async fn try_lock(&self, name: &str, owner: &str) -> sqlx::Result<bool> {
        let inserted = sqlx::query("INSERT INTO naive_locks (name, owner) VALUES ($1, $2)")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Deletes the row. Nothing checks who deletes it.
    pub async fn unlock(&self, name: &str) -> sqlx::Result<bool> {
        let deleted = sqlx::query("DELETE FROM naive_locks WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }
}

/// The safe database lock.
#[derive(Debug, Clone)]
pub struct PgLocks {
    pool: PgPool,
    queues: WaitQueues,
}

#[derive(sqlx::FromRow)]
struct Granted {
    lease_id: Uuid,
    fencing_token: i64,
    expires_at: DateTime<Utc>,
    hold_count: i32,
}

#[derive(sqlx::FromRow)]
struct Current {
    owner: String,
    fencing_token: i64,
    expires_at: DateTime<Utc>,
    remaining_ms: f64,
}

impl Current {
    fn holder(&self) -> Holder {
        Holder {
            owner: self.owner.clone(),
            fencing_token: self.fencing_token as u64,
            expires_at: Some(self.expires_at),
        }
    }
}

impl PgLocks {
    /// The backend, and the task that turns `NOTIFY distlab_lock_released` into wake-ups until `stop`.
    pub async fn start(pool: PgPool, stop: CancellationToken) -> anyhow::Result<Self> {
        let queues = WaitQueues::default();
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(RELEASED_CHANNEL).await?;
        let sender = queues.notifier();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    next = listener.recv() => next,
                };
                match next {
                    Ok(notification) => {
                        let _ = sender.send(notification.payload().to_owned());
                    }
                    Err(error) => {
                        // PgListener reconnects on the next recv; waiters fall back to the backstop.
                        tracing::warn!(%error, "lock release listener lost its connection");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            }
        });
        Ok(Self { pool, queues })
    }

    pub async fn acquire(
        &self,
        name: &LockName,
        owner: &str,
        ttl: Ttl,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.queues
            .acquire(name, wait, || self.try_acquire(name, owner, ttl))
            .await
    }

    /// One attempt: take a free or expired lock, or re-enter one this owner holds.
    async fn try_acquire(
        &self,
        name: &LockName,
        owner: &str,
        ttl: Ttl,
    ) -> Result<Attempt, LockError> {
        let granted: Option<Granted> = sqlx::query_as(
            // The clock is read once: EXCLUDED.acquired_at is "now" for every comparison below.
            "WITH now AS (SELECT clock_timestamp() AS t)
             INSERT INTO locks AS l
                 (name, lease_id, owner, hold_count, fencing_token, acquired_at, expires_at)
             SELECT $1, $2, $3, 1, nextval('lock_fencing_tokens'), t, t + $4 * interval '1 millisecond'
             FROM now
             ON CONFLICT (name) DO UPDATE SET
                 lease_id      = CASE WHEN l.expires_at > EXCLUDED.acquired_at THEN l.lease_id
                                      ELSE EXCLUDED.lease_id END,
                 hold_count    = CASE WHEN l.expires_at > EXCLUDED.acquired_at THEN l.hold_count + 1
                                      ELSE 1 END,
                 fencing_token = CASE WHEN l.expires_at > EXCLUDED.acquired_at THEN l.fencing_token
                                      ELSE EXCLUDED.fencing_token END,
                 acquired_at   = CASE WHEN l.expires_at > EXCLUDED.acquired_at THEN l.acquired_at
                                      ELSE EXCLUDED.acquired_at END,
                 owner         = EXCLUDED.owner,
                 expires_at    = GREATEST(l.expires_at, EXCLUDED.expires_at)
             -- Take over an expired lease, or re-enter our own live one.
             WHERE l.expires_at <= EXCLUDED.acquired_at OR l.owner = EXCLUDED.owner
             RETURNING lease_id, fencing_token, expires_at, hold_count",
        )
        .bind(name.as_str())
        .bind(Uuid::new_v4())
        .bind(owner)
        .bind(ttl.millis() as i64)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(g) = granted {
            return Ok(Attempt::Acquired(Lease {
                lease_id: g.lease_id,
                fencing_token: g.fencing_token as u64,
                expires_at: g.expires_at,
                holds: g.hold_count as u32,
                wakeups: 0,
            }));
        }
        let current = self.current(name).await?;
        Ok(Attempt::Held {
            retry_in: current
                .as_ref()
                .map(|c| Duration::from_millis(c.remaining_ms.max(0.0) as u64 + 1)),
            holder: current.as_ref().map(Current::holder),
        })
    }

    async fn current(&self, name: &LockName) -> Result<Option<Current>, LockError> {
        Ok(sqlx::query_as(
            "SELECT owner, fencing_token, expires_at,
                    (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::float8 AS remaining_ms
             FROM locks WHERE name = $1",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Extends a live lease to `ttl` from now.
    pub async fn renew(
        &self,
        name: &LockName,
        lease_id: Uuid,
        ttl: Ttl,
    ) -> Result<Lease, LockError> {
        let renewed: Option<Granted> = sqlx::query_as(
            "UPDATE locks SET expires_at = clock_timestamp() + $3 * interval '1 millisecond'
             WHERE name = $1 AND lease_id = $2 AND expires_at > clock_timestamp()
             RETURNING lease_id, fencing_token, expires_at, hold_count",
        )
        .bind(name.as_str())
        .bind(lease_id)
        .bind(ttl.millis() as i64)
        .fetch_optional(&self.pool)
        .await?;
        match renewed {
            Some(g) => Ok(Lease {
                lease_id: g.lease_id,
                fencing_token: g.fencing_token as u64,
                expires_at: g.expires_at,
                holds: g.hold_count as u32,
                wakeups: 0,
            }),
            None => Err(self.not_holder(name, lease_id).await?),
        }
    }

    /// Gives back one hold; the last one deletes the row and wakes the waiters. Returns the holds left.
    pub async fn release(&self, name: &LockName, lease_id: Uuid) -> Result<u32, LockError> {
        let mut tx = self.pool.begin().await?;
        let holds: Option<i32> = sqlx::query_scalar(
            "SELECT hold_count FROM locks
             WHERE name = $1 AND lease_id = $2 AND expires_at > clock_timestamp() FOR UPDATE",
        )
        .bind(name.as_str())
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?;
        let left = match holds {
            None => {
                drop(tx);
                return Err(self.not_holder(name, lease_id).await?);
            }
            Some(n) if n > 1 => {
                sqlx::query("UPDATE locks SET hold_count = hold_count - 1 WHERE name = $1")
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await?;
                n - 1
            }
            Some(_) => {
                sqlx::query("DELETE FROM locks WHERE name = $1")
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(RELEASED_CHANNEL)
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await?;
                0
            }
        };
        tx.commit().await?;
        Ok(left as u32)
    }

    pub fn waiters(&self) -> &super::Waiters {
        &self.queues.waiters
    }

    pub fn readiness(&self) -> distlab_platform::http::ReadinessCheck {
        distlab_platform::http::ReadinessCheck::postgres("locks-db", self.pool.clone())
    }

    /// The current holder, if the lease has not lapsed.
    pub async fn holder(&self, name: &LockName) -> Result<Option<Holder>, LockError> {
        Ok(self
            .current(name)
            .await?
            .filter(|c| c.remaining_ms > 0.0)
            .map(|c| c.holder()))
    }

    /// Why a lease cannot be renewed or released: someone else holds the lock (409), or nobody does (404).
    async fn not_holder(&self, name: &LockName, lease_id: Uuid) -> Result<LockError, LockError> {
        Ok(match self.holder(name).await? {
            Some(holder) => LockError::NotHolder(format!(
                "lease {lease_id} does not hold lock {name}: {} does (fencing token {})",
                holder.owner, holder.fencing_token
            )),
            None => LockError::NotFound(format!(
                "lease {lease_id} does not hold lock {name}: its lease lapsed or was released"
            )),
        })
    }
}
