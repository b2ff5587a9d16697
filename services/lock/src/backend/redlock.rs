//! Redis 的 RedLock 算法 — the seed's three steps over N independent Redis instances:
//!
//! 1. try the lock on every instance (the single-instance acquire script of [`super::redis`], each with a
//!    timeout far below the TTL, all at once);
//! 2. it is held only if a majority (N/2 + 1) granted it and `validity = ttl − elapsed − drift` is still
//!    positive ([`crate::lease::redlock_validity`]);
//! 3. otherwise release it on every instance.
//!
//! **Fencing tokens.** Each instance keeps its own counter and the acquire script increments it. The lease's
//! token is the highest counter of the majority, and before the lease is granted a second step
//! ([`super::redis::Instance::fence`]) raises every majority instance's counter to that token while it
//! still holds the lease there — again on a majority. That makes the tokens monotonic without clocks:
//! if lease B is requested after lease A was granted, A's fence step reached a majority M_A and B's
//! acquire a majority M_B; they share an instance i, where B's `SET NX` could only succeed after A's key
//! there was gone, i.e. after A raised i's counter to token(A); so B's increment on i, and B's token,
//! exceed token(A).
//!
//! What it does **not** promise: that counters survive an instance that restarts without its data (a
//! restart with an empty dataset can both grant a second lock — Kleppmann's objection to RedLock — and
//! lower a token); that two leases never overlap in time when clocks jump or a process pauses (that is
//! what the token is for: the resource must check it); and ordering between leases whose requests
//! overlapped in time (neither was granted before the other was requested).

use std::time::Duration;

use futures::future::join_all;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::redis::{Compared, Instance, InstanceAcquire, Stored, expires_in, refusal};
use super::{Attempt, LockError, WaitQueues, acquire_waiting};
use crate::lease::{Holder, Lease, LockName, Ttl, quorum, redlock_validity};

/// The RedLock backend.
#[derive(Debug, Clone)]
pub struct RedLock {
    instances: Vec<Instance>,
    timeout: Duration,
    released: broadcast::Sender<String>,
    queues: WaitQueues,
}

impl RedLock {
    /// `timeout` bounds each call to one instance (Redis suggests 5–50 ms for a 10 s TTL).
    pub fn start(
        urls: &[String],
        timeout: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=9).contains(&urls.len()),
            "RedLock needs 1 to 9 Redis instances, got {}",
            urls.len()
        );
        let (released, _) = broadcast::channel(1024);
        let instances = urls
            .iter()
            .map(|url| Instance::new(url, timeout))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for instance in &instances {
            instance.forward_releases(released.clone(), stop.clone());
        }
        Ok(Self {
            instances,
            timeout,
            released,
            queues: WaitQueues::default(),
        })
    }

    pub fn waiters(&self) -> &super::Waiters {
        &self.queues.waiters
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Runs `call` on every instance at once, each bounded by the timeout; a timeout is an error.
    async fn on_all<'a, T, F, Fut>(&'a self, call: F) -> Vec<Result<T, LockError>>
    where
        F: Fn(&'a Instance) -> Fut,
        Fut: Future<Output = Result<T, LockError>>,
    {
        join_all(self.instances.iter().map(|instance| {
            let call = call(instance);
            async move {
                tokio::time::timeout(self.timeout, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(LockError::Unavailable(format!(
                            "{} did not answer within {:?}",
                            instance.url(),
                            self.timeout
                        )))
                    })
            }
        }))
        .await
    }

    pub async fn acquire(
        &self,
        name: &LockName,
        owner: &str,
        ttl: Ttl,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        acquire_waiting(
            &self.queues,
            name.as_str(),
            name,
            wait,
            &self.released,
            || self.try_acquire(name, owner, ttl),
        )
        .await
    }

    async fn try_acquire(
        &self,
        name: &LockName,
        owner: &str,
        ttl: Ttl,
    ) -> Result<Attempt, LockError> {
        let n = self.instances.len();
        let lease_id = Uuid::new_v4();
        let start = Instant::now();
        let answers = self
            .on_all(|i| i.try_acquire(name, lease_id, ttl, owner))
            .await;
        let mut granted = Vec::new();
        let mut answered = 0;
        let mut holder: Option<Holder> = None;
        let mut retry_in: Option<Duration> = None;
        for (index, answer) in answers.iter().enumerate() {
            match answer {
                Ok(InstanceAcquire::Acquired { token }) => {
                    answered += 1;
                    granted.push((index, *token));
                }
                Ok(InstanceAcquire::Held {
                    pttl_ms,
                    holder: stored,
                }) => {
                    answered += 1;
                    if holder.is_none() {
                        holder = stored.as_ref().map(|s| s.holder(*pttl_ms));
                    }
                    if *pttl_ms >= 0 {
                        let lapse = Duration::from_millis(*pttl_ms as u64);
                        retry_in = Some(retry_in.map_or(lapse, |r| r.min(lapse)));
                    }
                }
                Err(error) => tracing::debug!(%error, "redlock instance refused"),
            }
        }
        let token = granted.iter().map(|(_, t)| *t).max().unwrap_or_default();
        if redlock_validity(n, granted.len(), ttl.duration(), start.elapsed()).is_some() {
            let granted_on: Vec<&str> = granted
                .iter()
                .map(|(index, _)| self.instances[*index].url())
                .collect();
            let granted_on = &granted_on;
            let fenced = self
                .on_all(|i| async move {
                    if granted_on.contains(&i.url()) {
                        i.fence(name, lease_id, token, owner).await
                    } else {
                        Ok(false)
                    }
                })
                .await
                .into_iter()
                .filter(|r| matches!(r, Ok(true)))
                .count();
            if let Some(validity) = redlock_validity(n, fenced, ttl.duration(), start.elapsed()) {
                return Ok(Attempt::Acquired(Lease {
                    lease_id,
                    fencing_token: token,
                    expires_at: expires_in(validity),
                    holds: 1,
                    wakeups: 0,
                }));
            }
        }
        // Step 3: not held — undo whatever was taken, everywhere.
        if !granted.is_empty() {
            self.on_all(|i| i.release(name, lease_id, false)).await;
            self.on_all(|i| i.announce(name)).await;
        }
        if answered < quorum(n) {
            return Err(LockError::Unavailable(format!(
                "only {answered} of {n} Redis instances answered; RedLock needs {}",
                quorum(n)
            )));
        }
        Ok(Attempt::Held { holder, retry_in })
    }

    /// Extends the lease on a majority, or fails (and the lease is as good as lost).
    pub async fn renew(
        &self,
        name: &LockName,
        lease_id: Uuid,
        ttl: Ttl,
    ) -> Result<Lease, LockError> {
        let n = self.instances.len();
        let start = Instant::now();
        let answers = self.on_all(|i| i.renew(name, lease_id, ttl)).await;
        let renewed = count(&answers, Compared::Done);
        match redlock_validity(n, renewed, ttl.duration(), start.elapsed()) {
            Some(validity) => {
                let token = self
                    .holder_stored(name)
                    .await?
                    .filter(|s| s.lease_id == lease_id)
                    .map(|s| s.fencing_token)
                    .unwrap_or_default();
                Ok(Lease {
                    lease_id,
                    fencing_token: token,
                    expires_at: expires_in(validity),
                    holds: 1,
                    wakeups: 0,
                })
            }
            None => Err(self.refused(name, lease_id, &answers)),
        }
    }

    /// Releases on every instance; succeeds if any instance still had the lease. Waiters are told only
    /// once every instance has answered: woken earlier, they would find the lock still held on the others.
    pub async fn release(&self, name: &LockName, lease_id: Uuid) -> Result<u32, LockError> {
        let answers = self.on_all(|i| i.release(name, lease_id, false)).await;
        if count(&answers, Compared::Done) > 0 {
            self.on_all(|i| i.announce(name)).await;
            Ok(0)
        } else {
            Err(self.refused(name, lease_id, &answers))
        }
    }

    fn refused(
        &self,
        name: &LockName,
        lease_id: Uuid,
        answers: &[Result<Compared, LockError>],
    ) -> LockError {
        let answered = answers.iter().filter(|a| a.is_ok()).count();
        if answered < quorum(self.instances.len()) {
            LockError::Unavailable(format!(
                "only {answered} of {} Redis instances answered",
                self.instances.len()
            ))
        } else if count(answers, Compared::OtherHolder) > 0 {
            refusal(name, lease_id, Compared::OtherHolder)
        } else {
            refusal(name, lease_id, Compared::NoHolder)
        }
    }

    /// The lease stored on a majority of instances, if any.
    async fn holder_stored(&self, name: &LockName) -> Result<Option<Stored>, LockError> {
        Ok(self.holder_with_ttl(name).await?.map(|(s, _)| s))
    }

    async fn holder_with_ttl(&self, name: &LockName) -> Result<Option<(Stored, i64)>, LockError> {
        let answers = self.on_all(|i| i.holder(name)).await;
        let answered = answers.iter().filter(|a| a.is_ok()).count();
        if answered < quorum(self.instances.len()) {
            return Err(LockError::Unavailable(format!(
                "only {answered} of {} Redis instances answered",
                self.instances.len()
            )));
        }
        let found: Vec<(Stored, i64)> = answers.into_iter().flatten().flatten().collect();
        Ok(found
            .iter()
            .find(|(candidate, _)| {
                found
                    .iter()
                    .filter(|(s, _)| s.lease_id == candidate.lease_id)
                    .count()
                    >= quorum(self.instances.len())
            })
            .map(|(stored, _)| {
                let pttl = found
                    .iter()
                    .filter(|(s, _)| s.lease_id == stored.lease_id)
                    .map(|(_, t)| *t)
                    .min()
                    .unwrap_or(-1);
                (stored.clone(), pttl)
            }))
    }

    pub async fn holder(&self, name: &LockName) -> Result<Option<Holder>, LockError> {
        Ok(self
            .holder_with_ttl(name)
            .await?
            .map(|(stored, pttl)| stored.holder(pttl)))
    }
}

fn count(answers: &[Result<Compared, LockError>], wanted: Compared) -> usize {
    answers
        .iter()
        .filter(|a| matches!(a, Ok(c) if *c == wanted))
        .count()
}
