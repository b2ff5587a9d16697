//! What a lock request means, with no IO: the lock name, the backend, the bounds on TTL and waiting,
//! and RedLock's arithmetic (majority and validity). Requests are parsed here once, at the edge
//! ("parse, don't validate"); the backends only ever see a [`LockName`] and a [`Ttl`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use distlab_platform::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest lock name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest owner accepted.
pub const MAX_OWNER_LEN: usize = 128;
/// Shortest lease: below this a lease expires while its answer is still on the wire.
pub const MIN_TTL: Duration = Duration::from_millis(10);
/// Longest lease. A lease is a promise about the future; an hour is already more than any holder should
/// need between renewals, and a crashed holder blocks everyone for this long on expiring backends.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Longest blocking wait: well below the 30 s request timeout, so a waiter always gets an answer.
pub const MAX_WAIT: Duration = Duration::from_secs(25);

/// The four lock methods of the seed's section 一.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// 数据库的唯一索引: a row under a unique index, made safe with expiry, waiting and reentrancy.
    Pg,
    /// Redis `SET NX PX` with compare-and-delete release.
    Redis,
    /// RedLock over N independent Redis instances.
    Redlock,
    /// ZooKeeper ephemeral sequential nodes (有序节点).
    Zookeeper,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Pg,
        Backend::Redis,
        Backend::Redlock,
        Backend::Zookeeper,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Pg => "pg",
            Backend::Redis => "redis",
            Backend::Redlock => "redlock",
            Backend::Zookeeper => "zookeeper",
        }
    }

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == text)
            .ok_or_else(|| {
                FieldError::new(
                    "backend",
                    format!("unknown backend {text:?}: one of pg, redis, redlock, zookeeper"),
                )
            })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lock name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, safe as a Redis key part and a znode name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockName(String);

impl LockName {
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(FieldError::new(
                "name",
                format!("must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease's time to live, between [`MIN_TTL`] and [`MAX_TTL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Duration);

impl Ttl {
    pub fn from_millis(ms: i64) -> Result<Self, FieldError> {
        let (min, max) = (MIN_TTL.as_millis() as i64, MAX_TTL.as_millis() as i64);
        if (min..=max).contains(&ms) {
            Ok(Self(Duration::from_millis(ms as u64)))
        } else {
            Err(FieldError::new(
                "ttl_ms",
                format!("must be between {min} and {max} milliseconds"),
            ))
        }
    }

    pub fn duration(self) -> Duration {
        self.0
    }

    pub fn millis(self) -> u64 {
        self.0.as_millis() as u64
    }
}

/// How long an acquire may wait for the lock (0 = try once).
pub fn parse_wait(ms: i64) -> Result<Duration, FieldError> {
    let max = MAX_WAIT.as_millis() as i64;
    if (0..=max).contains(&ms) {
        Ok(Duration::from_millis(ms as u64))
    } else {
        Err(FieldError::new(
            "wait_ms",
            format!("must be between 0 and {max} milliseconds"),
        ))
    }
}

/// A lease owner: 1 to 128 printable characters. Reentrancy (pg) is by owner.
pub fn parse_owner(owner: &str) -> Result<String, FieldError> {
    let len = owner.chars().count();
    if (1..=MAX_OWNER_LEN).contains(&len) && !owner.chars().any(char::is_control) {
        Ok(owner.to_owned())
    } else {
        Err(FieldError::new(
            "owner",
            format!("must be 1 to {MAX_OWNER_LEN} characters, none of them control characters"),
        ))
    }
}

/// A lease id as the backends issue them: a UUID.
pub fn parse_lease_id(text: &str) -> Result<uuid::Uuid, FieldError> {
    uuid::Uuid::parse_str(text)
        .map_err(|_| FieldError::new("lease_id", "must be the lease_id an acquire returned"))
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub lease_id: uuid::Uuid,
    /// Strictly greater than every token granted before it for this lock name on this backend; hand it to
    /// the resource you protect, which must refuse a token lower than one it has seen.
    pub fencing_token: u64,
    /// When the lease lapses unless renewed (for ZooKeeper: when the service closes the holder's session).
    pub expires_at: DateTime<Utc>,
    /// How many times this holder holds the lock (pg reentrancy by owner; always 1 elsewhere).
    pub holds: u32,
    /// How many times the backend woke this caller while it waited (0 if it got the lock at once). On
    /// ZooKeeper a waiter is woken only by its predecessor, so this stays at 1 however many wait.
    pub wakeups: u32,
}

/// Who holds a lock now (never the lease id: that is the holder's capability to release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Holder {
    pub owner: String,
    pub fencing_token: u64,
    /// `None` when the backend does not know (a ZooKeeper lease held through another service instance).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The moment `d` from now, for a lease's `expires_at`.
pub fn expires_in(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// RedLock's rule: a lock taken on `acquired` of `instances` in `elapsed` is valid for
/// `ttl − elapsed − drift`, and only if `acquired` is a majority and that validity is positive.
/// Drift is Redis's own recommendation: 1% of the TTL plus 2 ms for the clocks of the instances.
pub fn redlock_validity(
    instances: usize,
    acquired: usize,
    ttl: Duration,
    elapsed: Duration,
) -> Option<Duration> {
    let drift = ttl / 100 + Duration::from_millis(2);
    let validity = ttl.checked_sub(elapsed)?.checked_sub(drift)?;
    (acquired >= quorum(instances) && !validity.is_zero()).then_some(validity)
}

/// A majority of `instances`: N/2 + 1.
pub fn quorum(instances: usize) -> usize {
    instances / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "stock.SKU-1", "x_y", &"n".repeat(128)] {
            assert!(LockName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "with space", "é", &"n".repeat(129)] {
            assert!(LockName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttl_and_wait_bounds() {
        assert!(Ttl::from_millis(0).is_err());
        assert!(Ttl::from_millis(-5).is_err());
        assert!(Ttl::from_millis(9).is_err());
        assert_eq!(Ttl::from_millis(10).map(Ttl::millis), Ok(10));
        assert!(Ttl::from_millis(3_600_000).is_ok());
        assert!(Ttl::from_millis(3_600_001).is_err());
        assert!(Ttl::from_millis(i64::MAX).is_err());
        assert_eq!(parse_wait(0), Ok(Duration::ZERO));
        assert!(parse_wait(-1).is_err());
        assert!(parse_wait(25_001).is_err());
    }

    #[test]
    fn owners() {
        assert!(parse_owner("worker-1").is_ok());
        assert!(parse_owner("").is_err());
        assert!(parse_owner("a\nb").is_err());
        assert!(parse_owner(&"o".repeat(129)).is_err());
    }

    #[test]
    fn backends_round_trip() {
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.as_str()), Ok(b));
        }
        assert!(Backend::parse("etcd").is_err());
    }

    #[test]
    fn redlock_needs_a_majority_and_time_left() {
        let ttl = Duration::from_millis(1000);
        let fast = Duration::from_millis(5);
        // 3 instances: 2 is a majority, 1 is not.
        assert_eq!(
            redlock_validity(3, 2, ttl, fast),
            Some(Duration::from_millis(1000 - 5 - 12))
        );
        assert_eq!(redlock_validity(3, 1, ttl, fast), None);
        // 5 instances: 3 needed.
        assert!(redlock_validity(5, 3, ttl, fast).is_some());
        assert!(redlock_validity(5, 2, ttl, fast).is_none());
        // Acquiring took longer than the lease (minus drift): nothing is held.
        assert_eq!(
            redlock_validity(3, 3, ttl, Duration::from_millis(990)),
            None
        );
        assert_eq!(redlock_validity(3, 3, ttl, Duration::from_secs(5)), None);
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(4), 3);
    }
}
