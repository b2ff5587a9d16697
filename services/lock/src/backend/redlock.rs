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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::redis::{Compared, Instance, InstanceAcquire, Namespace, Stored, refusal};
use super::{Attempt, LockError, WaitQueues};
use crate::lease::{Holder, Lease, LockName, Ttl, expires_in, quorum, redlock_validity};

/// How long an instance's connection may take to connect or answer before it is rebuilt; each RedLock
/// call is bounded far more tightly by [`RedLock::start`]'s `timeout`.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a release asks the instances that did not answer.
const RELEASE_ROUNDS: usize = 3;

/// The RedLock backend.
#[derive(Debug, Clone)]
pub struct RedLock {
    instances: Vec<Instance>,
    timeout: Duration,
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
        let queues = WaitQueues::default();
        let instances = urls
            .iter()
            .map(|url| Instance::new(url, Namespace::Redlock, CONNECTION_TIMEOUT))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for instance in &instances {
            instance.forward_releases(queues.notifier(), stop.clone());
        }
        Ok(Self {
            instances,
            timeout,
            queues,
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
        self.queues
            .acquire(name, wait, || self.try_acquire(name, owner, ttl))
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
        // Silently: announcing would wake this caller's own wait (and everyone else's) for nothing.
        if !granted.is_empty() {
            self.on_all(|i| i.release(name, lease_id, false)).await;
        }
        if answered < quorum(n) {
            return Err(LockError::Unavailable(format!(
                "only {answered} of {n} Redis instances answered; RedLock needs {}",
                quorum(n)
            )));
        }
        Ok(Attempt::Held { holder, retry_in })
    }

    /// Extends the lease on a majority, or fails — and then gives up what it still had, since a lease
    /// without a majority is lost and its leftover keys would only block their instances.
    pub async fn renew(
        &self,
        name: &LockName,
        lease_id: Uuid,
        ttl: Ttl,
    ) -> Result<Lease, LockError> {
        let n = self.instances.len();
        let start = Instant::now();
        let answers = self.on_all(|i| i.renew(name, lease_id, ttl)).await;
        // Every fenced instance stores the lease's token; an instance left out of the fence step stores a
        // lower one. So the highest is the lease's.
        let tokens: Vec<u64> = answers
            .iter()
            .filter_map(|a| match a {
                Ok(Ok(token)) => Some(*token),
                _ => None,
            })
            .collect();
        let compared: Vec<Result<Compared, LockError>> = answers
            .into_iter()
            .map(|a| {
                a.map(|renewed| match renewed {
                    Ok(_) => Compared::Done,
                    Err(refused) => refused,
                })
            })
            .collect();
        match redlock_validity(n, tokens.len(), ttl.duration(), start.elapsed()) {
            Some(validity) => Ok(Lease {
                lease_id,
                fencing_token: tokens.iter().copied().max().unwrap_or_default(),
                expires_at: expires_in(validity),
                holds: 1,
                wakeups: 0,
            }),
            None => {
                if !tokens.is_empty() {
                    self.on_all(|i| i.release(name, lease_id, false)).await;
                }
                Err(self.refused(name, lease_id, &compared))
            }
        }
    }

    /// Releases on every instance. It was the holder's only if a majority still had the lease; otherwise
    /// the leftovers are deleted all the same and the answer says whose the lock is. Waiters are told only
    /// once every instance has answered: woken earlier, they would find the lock still held on the others.
    pub async fn release(&self, name: &LockName, lease_id: Uuid) -> Result<u32, LockError> {
        // Compare-and-delete is idempotent, so instances that did not answer are asked again: a release
        // lost to one slow reply would otherwise leave the lock held for a whole TTL.
        let mut answers: Vec<Result<Compared, LockError>> = Vec::new();
        for round in 0..RELEASE_ROUNDS {
            let this_round = self.on_all(|i| i.release(name, lease_id, false)).await;
            answers = if round == 0 {
                this_round
            } else {
                answers
                    .into_iter()
                    .zip(this_round)
                    .map(|(before, now)| match (before, now) {
                        (Ok(known), _) => Ok(known),
                        // The earlier, unanswered delete may well have happened.
                        (Err(_), Ok(Compared::NoHolder)) => Ok(Compared::Done),
                        (Err(_), now) => now,
                    })
                    .collect()
            };
            if answers.iter().all(|a| a.is_ok()) {
                break;
            }
        }
        let released = count(&answers, Compared::Done);
        if released > 0 {
            self.on_all(|i| i.announce(name)).await;
        }
        if released >= quorum(self.instances.len()) {
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

    /// The lease stored on a majority of instances, if any, with its token (the highest stored: the
    /// fenced one) and the least time it has left.
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
        let quorum = quorum(self.instances.len());
        let Some((leader, _)) = found.iter().find(|(candidate, _)| {
            found
                .iter()
                .filter(|(s, _)| s.lease_id == candidate.lease_id)
                .count()
                >= quorum
        }) else {
            return Ok(None);
        };
        let same: Vec<&(Stored, i64)> = found
            .iter()
            .filter(|(s, _)| s.lease_id == leader.lease_id)
            .collect();
        let stored = Stored {
            fencing_token: same
                .iter()
                .map(|(s, _)| s.fencing_token)
                .max()
                .unwrap_or_default(),
            ..leader.clone()
        };
        let pttl = same.iter().map(|(_, t)| *t).min().unwrap_or(-1);
        Ok(Some((stored, pttl)))
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
