//! Redis 的 SETNX 指令 — one Redis instance, and the per-instance scripts RedLock reuses.
//!
//! The seed's SETNX + EXPIRE, done the way that is safe: `SET key value NX PX ttl` is one command, so a
//! crash between the two can not leave a lock without expiry. The value names the lease
//! (`<lease_id>:<fencing token>:<owner>`); release and renew are Lua scripts that compare it first
//! (compare-and-delete, compare-and-pexpire), so nobody releases or extends a lock that expired and was
//! taken by someone else. The fencing token is an `INCR` of `distlab:redis:fence:<name>` inside the
//! acquire script, so a grant and its token are one atomic step. Releases `PUBLISH` the lock name on
//! `distlab:redis:released`, which wakes waiters (see [`super::WaitQueues::acquire`]).
//!
//! What it does not promise: a Redis restart without an append-only file loses the fencing counter (the
//! local stack runs Redis with `appendonly yes`, `appendfsync everysec`: a crash may lose the last second
//! of increments, so a token could repeat — the resource then still refuses *older* tokens, but not an
//! equal one); and one instance is a single point of failure — that is what RedLock is for.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Attempt, LockError, WaitQueues};
use crate::lease::expires_in;
use crate::lease::{Holder, Lease, LockName, Ttl};

/// Which backend's keys an instance holds: the redis backend and RedLock share the stack's first instance,
/// so each has its own keys (`distlab:<backend>:lock:<name>`, `…:fence:<name>`) and release channel
/// (`distlab:<backend>:released`, message: the lock name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Redis,
    Redlock,
}

impl Namespace {
    fn prefix(self) -> &'static str {
        match self {
            Namespace::Redis => "distlab:redis",
            Namespace::Redlock => "distlab:redlock",
        }
    }

    pub fn lock_key(self, name: &LockName) -> String {
        format!("{}:lock:{name}", self.prefix())
    }

    pub fn fence_key(self, name: &LockName) -> String {
        format!("{}:fence:{name}", self.prefix())
    }

    pub fn released_channel(self) -> String {
        format!("{}:released", self.prefix())
    }
}

/// `SET NX PX`, and on success the next fencing token. KEYS: lock, fence. ARGV: lease id, ttl ms, owner.
/// Returns `{1, token}` or `{0, pttl, value}` of the current holder.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local token = (tonumber(redis.call('GET', KEYS[2])) or 0) + 1
        if redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token .. ':' .. ARGV[3], 'NX', 'PX', ARGV[2]) then
            return {1, redis.call('INCR', KEYS[2])}
        end
        return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1])}
        ",
    )
});

/// RedLock's second step: raise the instance's counter to the lease's token (the highest of the
/// majority's) and record it in the value, if this instance still holds the lease.
/// KEYS: lock, fence. ARGV: lease id, token, owner. Returns 1 or 0.
static FENCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local value = redis.call('GET', KEYS[1])
        if not value or string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then
            return 0
        end
        if (tonumber(redis.call('GET', KEYS[2])) or 0) < tonumber(ARGV[2]) then
            redis.call('SET', KEYS[2], ARGV[2])
        end
        redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[3], 'KEEPTTL')
        return 1
        ",
    )
});

/// Compare-and-delete, then announce the release on the channel unless it is empty.
/// KEYS: lock. ARGV: lease id, channel, name. Returns 1 released, 0 someone else holds it, -1 nobody does.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local value = redis.call('GET', KEYS[1])
        if not value then return -1 end
        if string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then return 0 end
        redis.call('DEL', KEYS[1])
        if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
        return 1
        ",
    )
});

/// Compare-and-pexpire. KEYS: lock. ARGV: lease id, ttl ms.
/// Returns `{1, value}` renewed (the value carries the lease's token), `{0}` other holder, `{-1}` none.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local value = redis.call('GET', KEYS[1])
        if not value then return {-1} end
        if string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then return {0} end
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return {1, value}
        ",
    )
});

/// The holder stored in a lock key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub lease_id: Uuid,
    pub fencing_token: u64,
    pub owner: String,
}

impl Stored {
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.splitn(3, ':');
        Some(Self {
            lease_id: Uuid::parse_str(parts.next()?).ok()?,
            fencing_token: parts.next()?.parse().ok()?,
            owner: parts.next()?.to_owned(),
        })
    }

    pub fn holder(&self, pttl_ms: i64) -> Holder {
        Holder {
            owner: self.owner.clone(),
            fencing_token: self.fencing_token,
            expires_at: (pttl_ms >= 0).then(|| expires_in(Duration::from_millis(pttl_ms as u64))),
        }
    }
}

/// What one instance said to an acquire.
#[derive(Debug)]
pub enum InstanceAcquire {
    Acquired {
        token: u64,
    },
    Held {
        pttl_ms: i64,
        holder: Option<Stored>,
    },
}

/// What one instance said to a release or renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    Done,
    OtherHolder,
    NoHolder,
}

impl Compared {
    fn from_code(code: i64) -> Self {
        match code {
            1 => Compared::Done,
            0 => Compared::OtherHolder,
            _ => Compared::NoHolder,
        }
    }
}

/// One Redis instance: a lazily connecting, reconnecting connection and the lock scripts.
#[derive(Clone)]
pub struct Instance {
    url: String,
    namespace: Namespace,
    channel: String,
    client: redis::Client,
    connection: ConnectionManager,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Does not connect: an instance that is down is a fact RedLock must live with, not a start-up error.
    /// `timeout` bounds connecting and each reply; RedLock bounds its calls more tightly itself, without
    /// tearing down a connection that was merely slow once.
    pub fn new(url: &str, namespace: Namespace, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            url: url.to_owned(),
            namespace,
            channel: namespace.released_channel(),
            client,
            connection,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `command` on the shared connection. A connection found dead by this very command (broken
    /// pipe, reset, closed — a restarted proxy or server in between) has just been replaced by the
    /// connection manager: the command runs once more on the new one, instead of failing a request that a
    /// healthy Redis can serve. A command whose connection dropped after it reached Redis may thus run
    /// twice; every command here tolerates that (an acquire carries a fresh lease id, renew and fence are
    /// idempotent, a repeated release finds the lease gone and says so).
    async fn call<T, F, Fut>(&self, command: F) -> redis::RedisResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match command(self.connection.clone()).await {
            Err(error) if error.is_connection_dropped() => {
                tracing::debug!(url = %self.url, %error, "redis connection dropped; running the command once more");
                command(self.connection.clone()).await
            }
            result => result,
        }
    }

    pub async fn try_acquire(
        &self,
        name: &LockName,
        lease_id: Uuid,
        ttl: Ttl,
        owner: &str,
    ) -> Result<InstanceAcquire, LockError> {
        let reply: Vec<Value> = self
            .call(|mut connection| {
                let mut invocation = ACQUIRE.prepare_invoke();
                invocation
                    .key(self.namespace.lock_key(name))
                    .key(self.namespace.fence_key(name))
                    .arg(lease_id.to_string())
                    .arg(ttl.millis())
                    .arg(owner);
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await?;
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        match int(reply.first()) {
            Some(1) => Ok(InstanceAcquire::Acquired {
                token: int(reply.get(1)).unwrap_or_default() as u64,
            }),
            Some(0) => Ok(InstanceAcquire::Held {
                pttl_ms: int(reply.get(1)).unwrap_or(-1),
                holder: match reply.get(2) {
                    Some(Value::BulkString(bytes)) => {
                        Stored::parse(&String::from_utf8_lossy(bytes))
                    }
                    _ => None,
                },
            }),
            _ => Err(anyhow::anyhow!("unexpected reply to the acquire script: {reply:?}").into()),
        }
    }

    pub async fn fence(
        &self,
        name: &LockName,
        lease_id: Uuid,
        token: u64,
        owner: &str,
    ) -> Result<bool, LockError> {
        let done: i64 = self
            .call(|mut connection| {
                let mut invocation = FENCE.prepare_invoke();
                invocation
                    .key(self.namespace.lock_key(name))
                    .key(self.namespace.fence_key(name))
                    .arg(lease_id.to_string())
                    .arg(token)
                    .arg(owner);
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await?;
        Ok(done == 1)
    }

    /// Compare-and-delete; with `announce`, waiters hear of it at once.
    pub async fn release(
        &self,
        name: &LockName,
        lease_id: Uuid,
        announce: bool,
    ) -> Result<Compared, LockError> {
        let code: i64 = self
            .call(|mut connection| {
                let mut invocation = RELEASE.prepare_invoke();
                invocation
                    .key(self.namespace.lock_key(name))
                    .arg(lease_id.to_string())
                    .arg(if announce { self.channel.as_str() } else { "" })
                    .arg(name.as_str());
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await?;
        Ok(Compared::from_code(code))
    }

    /// Compare-and-pexpire: the lease's fencing token if it is still this lease's, else who has it.
    pub async fn renew(
        &self,
        name: &LockName,
        lease_id: Uuid,
        ttl: Ttl,
    ) -> Result<Result<u64, Compared>, LockError> {
        let reply: Vec<Value> = self
            .call(|mut connection| {
                let mut invocation = RENEW.prepare_invoke();
                invocation
                    .key(self.namespace.lock_key(name))
                    .arg(lease_id.to_string())
                    .arg(ttl.millis());
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await?;
        let code = match reply.first() {
            Some(Value::Int(code)) => *code,
            _ => {
                return Err(
                    anyhow::anyhow!("unexpected reply to the renew script: {reply:?}").into(),
                );
            }
        };
        match Compared::from_code(code) {
            Compared::Done => match reply.get(1) {
                Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
                _ => None,
            }
            .as_deref()
            .and_then(Stored::parse)
            .filter(|stored| stored.lease_id == lease_id)
            .map(|stored| Ok(stored.fencing_token))
            .ok_or_else(|| anyhow::anyhow!("the renew script returned no lease value").into()),
            refused => Ok(Err(refused)),
        }
    }

    /// The stored holder and its remaining time in ms.
    pub async fn holder(&self, name: &LockName) -> Result<Option<(Stored, i64)>, LockError> {
        let key = self.namespace.lock_key(name);
        let (value, pttl): (Option<String>, i64) = self
            .call(|mut connection| {
                let pipe = redis::pipe().get(&key).pttl(&key).clone();
                async move { pipe.query_async(&mut connection).await }
            })
            .await?;
        Ok(value.and_then(|v| Stored::parse(&v)).map(|s| (s, pttl)))
    }

    /// Tells waiters that `name` was released.
    pub async fn announce(&self, name: &LockName) -> Result<(), LockError> {
        let _: i64 = self
            .call(|mut connection| {
                let command = redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(name.as_str())
                    .clone();
                async move { command.query_async(&mut connection).await }
            })
            .await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), LockError> {
        let _: String =
            self.call(|mut connection| async move {
                redis::cmd("PING").query_async(&mut connection).await
            })
            .await?;
        Ok(())
    }

    /// Forwards every release announced on this instance to `sender` until `stop`, reconnecting as needed.
    pub fn forward_releases(&self, sender: broadcast::Sender<String>, stop: CancellationToken) {
        let client = self.client.clone();
        let url = self.url.clone();
        let channel = self.channel.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            loop {
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                match tokio::select! { () = stop.cancelled() => return, s = subscribed => s } {
                    Ok(pubsub) => {
                        let mut messages = pubsub.into_on_message();
                        loop {
                            let message = tokio::select! {
                                () = stop.cancelled() => return,
                                m = messages.next() => m,
                            };
                            let Some(message) = message else { break };
                            if let Ok(name) = message.get_payload::<String>() {
                                let _ = sender.send(name);
                            }
                        }
                        tracing::warn!(%url, "redis release subscription ended; resubscribing");
                    }
                    Err(error) => {
                        tracing::debug!(%url, %error, "cannot subscribe to lock releases yet");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }
}

/// The single-instance Redis lock.
#[derive(Debug, Clone)]
pub struct RedisLocks {
    instance: Instance,
    queues: WaitQueues,
}

impl RedisLocks {
    pub fn start(url: &str, stop: CancellationToken) -> anyhow::Result<Self> {
        let instance = Instance::new(url, Namespace::Redis, Duration::from_secs(2))?;
        let queues = WaitQueues::default();
        instance.forward_releases(queues.notifier(), stop);
        Ok(Self { instance, queues })
    }

    pub fn waiters(&self) -> &super::Waiters {
        &self.queues.waiters
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    pub async fn acquire(
        &self,
        name: &LockName,
        owner: &str,
        ttl: Ttl,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.queues
            .acquire(name, wait, || async {
                let lease_id = Uuid::new_v4();
                match self
                    .instance
                    .try_acquire(name, lease_id, ttl, owner)
                    .await?
                {
                    InstanceAcquire::Acquired { token } => Ok(Attempt::Acquired(Lease {
                        lease_id,
                        fencing_token: token,
                        expires_at: expires_in(ttl.duration()),
                        holds: 1,
                        wakeups: 0,
                    })),
                    InstanceAcquire::Held { pttl_ms, holder } => Ok(Attempt::Held {
                        holder: holder.map(|h| h.holder(pttl_ms)),
                        retry_in: (pttl_ms >= 0).then(|| Duration::from_millis(pttl_ms as u64)),
                    }),
                }
            })
            .await
    }

    pub async fn renew(
        &self,
        name: &LockName,
        lease_id: Uuid,
        ttl: Ttl,
    ) -> Result<Lease, LockError> {
        match self.instance.renew(name, lease_id, ttl).await? {
            Ok(token) => Ok(Lease {
                lease_id,
                fencing_token: token,
                expires_at: expires_in(ttl.duration()),
                holds: 1,
                wakeups: 0,
            }),
            Err(refused) => Err(refusal(name, lease_id, refused)),
        }
    }

    pub async fn release(&self, name: &LockName, lease_id: Uuid) -> Result<u32, LockError> {
        match self.instance.release(name, lease_id, true).await? {
            Compared::Done => Ok(0),
            other => Err(refusal(name, lease_id, other)),
        }
    }

    pub async fn holder(&self, name: &LockName) -> Result<Option<Holder>, LockError> {
        Ok(self
            .instance
            .holder(name)
            .await?
            .map(|(stored, pttl)| stored.holder(pttl)))
    }
}

/// The error for a release or renew that compared unequal.
pub fn refusal(name: &LockName, lease_id: Uuid, compared: Compared) -> LockError {
    match compared {
        Compared::OtherHolder => LockError::NotHolder(format!(
            "lease {lease_id} does not hold lock {name}: another lease does"
        )),
        Compared::NoHolder | Compared::Done => LockError::NotFound(format!(
            "lease {lease_id} does not hold lock {name}: its lease lapsed or was released"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip() {
        let id = Uuid::new_v4();
        let stored = Stored::parse(&format!("{id}:42:worker:with:colons"));
        assert_eq!(
            stored,
            Some(Stored {
                lease_id: id,
                fencing_token: 42,
                owner: "worker:with:colons".into()
            })
        );
        assert_eq!(Stored::parse("garbage"), None);
    }
}
