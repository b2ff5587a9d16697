//! The config service's wire contract, declared once: the config nodes (`services/config`) serve it and
//! every client ([`crate::ConfigClient`], [`crate::Follower`], tests) speaks it, so a header, an error code
//! or a field cannot be renamed on one side only.
//!
//! - **Paths**: `PUT|GET|DELETE /v1/kv/{key}` (a key may contain `/`), `GET /v1/kv?prefix=`,
//!   `GET /v1/watch?prefix=&from_revision=` (Server-Sent Events).
//! - **Headers**: [`REVISION_HEADER`] on every read (the node's store revision: a watch from it misses
//!   nothing after the read), [`FORWARDED_BY_HEADER`] on a request a follower forwarded to the leader,
//!   [`FORWARDED_TO_HEADER`] on the answer it relays.
//! - **Bodies**: [`PutRequest`] → [`Written`]; [`KeyValue`]; [`KeyList`]; the `data` of a watch event is a
//!   [`WatchEvent`] (`event:` [`WatchEventKind`], `id:` its revision). Errors use the shared body of
//!   docs/contracts.md ([`distlab_platform::ErrorBody`]); the codes a client acts on are [`ErrorCode`].
//! - **Limits**: [`MAX_KEY_CHARS`], [`MAX_VALUE_BYTES`], [`MAX_WATCH_REVISION`].
//!
//! The types carry their OpenAPI schemas (utoipa), which the config service's `/openapi.json` is built from.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A revision of the store: it grows by one with every change, the same on every node (etcd's revision). A
/// key's revision is the store revision of its last write.
pub type Revision = u64;

/// `/v1/kv`: the key-value resource; a key is read, written and deleted at `/v1/kv/{key}`.
pub const KV_PATH: &str = "/v1/kv";
/// `/v1/watch`: the Server-Sent-Events stream of changes.
pub const WATCH_PATH: &str = "/v1/watch";

/// The store revision of the node that answered a read: watch from it and nothing after the read is missed.
pub const REVISION_HEADER: &str = "x-distlab-revision";
/// Set on a request a follower forwarded to the leader (its value: the follower's node id). A request that
/// carries it is never forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-distlab-forwarded-by";
/// Set on an answer the leader gave to a forwarded request (its value: the leader's node id).
pub const FORWARDED_TO_HEADER: &str = "x-distlab-forwarded-to";
/// The standard Server-Sent-Events header a reconnecting watcher may send instead of `from_revision`.
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";

/// Longest key, in characters (Unicode scalar values).
pub const MAX_KEY_CHARS: usize = 512;
/// Largest value, in bytes of JSON.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest `from_revision` accepted (2^53 − 1, the largest integer every JSON client reads exactly); far
/// beyond any revision a store reaches.
pub const MAX_WATCH_REVISION: Revision = (1 << 53) - 1;
/// How often a watch stream sends a keep-alive comment when nothing changes.
pub const WATCH_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_KEY_CHARS} characters")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
    /// Refused by the clients of this crate only: a URL cannot carry a `.` or `..` path segment (it is
    /// resolved away), so such a key cannot be addressed at `/v1/kv/{key}`.
    #[error("must not have a `.` or `..` segment (a URL cannot carry one)")]
    DotSegment,
}

/// The config service's rules for a key: 1 to [`MAX_KEY_CHARS`] characters, no control character.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(KeyError::TooLong);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::ControlCharacter);
    }
    Ok(())
}

/// Body of `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// Any JSON value except `null` and `""`.
    #[schema(value_type = Object)]
    pub value: Option<Value>,
    /// Compare-and-set: apply only if the key's current revision is this (0 = the key must not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub prev_revision: Option<Revision>,
}

/// Answer to a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Written {
    pub key: String,
    /// The revision of the change.
    pub revision: Revision,
}

/// A key's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyValue {
    pub key: String,
    /// Any JSON value but `null` and `""`.
    pub value: Value,
    pub revision: Revision,
}

/// `GET /v1/kv?prefix=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyEntry>,
    /// The store revision on the node that answered.
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyEntry {
    pub key: String,
    pub revision: Revision,
}

/// How a read is served (`?consistency=`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Served by the leader after it confirmed its leadership with a majority (ReadIndex).
    #[default]
    Linearizable,
    /// Served from this node's state machine, which may lag; the revision says how far.
    Stale,
}

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    #[serde(default)]
    pub consistency: Consistency,
}

/// Query of `GET /v1/kv`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    #[param(max_length = 512)]
    pub prefix: String,
    #[serde(default)]
    pub consistency: Consistency,
}

/// Query of `DELETE /v1/kv/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Delete only if the key's current revision is this.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u64>)]
    pub prev_revision: Option<Revision>,
}

/// Query of `GET /v1/watch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WatchParams {
    /// Only keys starting with this.
    #[serde(default)]
    #[param(max_length = 512)]
    pub prefix: String,
    /// Deliver every change after this revision; without it, only changes from now on. A reconnecting
    /// client passes the last revision it received (or sends `Last-Event-ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u64>, maximum = 9007199254740991_u64)]
    pub from_revision: Option<Revision>,
}

/// The `data` of a `put` or `delete` watch event: one applied change, as watchers see it. Its `id:` is the
/// revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub revision: Revision,
    pub key: String,
    /// `None` for a delete (then absent from the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl WatchEvent {
    /// `put` when the change carries a value, `delete` when it does not.
    pub fn kind(&self) -> WatchEventKind {
        if self.value.is_some() {
            WatchEventKind::Put
        } else {
            WatchEventKind::Delete
        }
    }
}

/// The `event:` field of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEventKind {
    /// A key was set; `data` is a [`WatchEvent`] with its value.
    Put,
    /// A key was deleted; `data` is a [`WatchEvent`] without a value.
    Delete,
    /// The node's history no longer reaches back to the watcher's revision; `data` is the error body of a
    /// 410 `compacted`, and the stream ends. Read the current values and watch from there.
    Compacted,
}

impl WatchEventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Compacted => "compacted",
        }
    }

    /// The kind an `event:` field names, if it is one of the config service's.
    pub fn parse(event: &str) -> Option<Self> {
        [Self::Put, Self::Delete, Self::Compacted]
            .into_iter()
            .find(|kind| kind.as_str() == event)
    }
}

/// The error codes of the config service that a client acts on (`error.code` of the shared error body).
/// Bad input gets the shared codes of docs/contracts.md (`validation_failed`, `malformed_json`, …), which
/// are not repeated here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 404: no such key. Its `details.revision` is the node's store revision (on a read).
    KeyNotFound,
    /// 409: `prev_revision` did not match; `details.current_revision` is the key's revision (0: absent).
    RevisionMismatch,
    /// 410: a watch from before the node's kept history; read the key again and watch from there.
    Compacted,
    /// 413: the value is over [`MAX_VALUE_BYTES`] of JSON.
    ValueTooLarge,
    /// 409: a membership change openraft refused.
    MembershipChangeRefused,
    /// 503: this node does not lead and cannot forward (no leader known, or the request was already
    /// forwarded once); not applied.
    NotLeader,
    /// 503: the leader is on the other side of a partition; not applied.
    Partitioned,
    /// 503: the follower could not connect to the leader; not applied.
    LeaderUnreachable,
    /// 503: the leader has not heard from a majority lately; not applied.
    NoQuorum,
    /// 503: the node's Raft has stopped; not applied.
    NodeStopped,
    /// 503: the write was proposed but not committed in time; it **may still be applied**.
    CommitTimeout,
    /// 503: the write's fate is unknown (leadership changed while it was in flight); it **may be applied**.
    CommitUnknown,
    /// 503: the leader did not answer a forwarded request; it **may have been applied**.
    ForwardInterrupted,
}

impl ErrorCode {
    const ALL: [Self; 13] = [
        Self::KeyNotFound,
        Self::RevisionMismatch,
        Self::Compacted,
        Self::ValueTooLarge,
        Self::MembershipChangeRefused,
        Self::NotLeader,
        Self::Partitioned,
        Self::LeaderUnreachable,
        Self::NoQuorum,
        Self::NodeStopped,
        Self::CommitTimeout,
        Self::CommitUnknown,
        Self::ForwardInterrupted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::KeyNotFound => "key_not_found",
            Self::RevisionMismatch => "revision_mismatch",
            Self::Compacted => "compacted",
            Self::ValueTooLarge => "value_too_large",
            Self::MembershipChangeRefused => "membership_change_refused",
            Self::NotLeader => "not_leader",
            Self::Partitioned => "partitioned",
            Self::LeaderUnreachable => "leader_unreachable",
            Self::NoQuorum => "no_quorum",
            Self::NodeStopped => "node_stopped",
            Self::CommitTimeout => "commit_timeout",
            Self::CommitUnknown => "commit_unknown",
            Self::ForwardInterrupted => "forward_interrupted",
        }
    }

    /// The code of an error body, if it is one of these.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == code)
    }

    /// A 503 of this code: another node (or a later try) may succeed.
    pub const fn is_unavailable(self) -> bool {
        matches!(
            self,
            Self::NotLeader
                | Self::Partitioned
                | Self::LeaderUnreachable
                | Self::NoQuorum
                | Self::NodeStopped
                | Self::CommitTimeout
                | Self::CommitUnknown
                | Self::ForwardInterrupted
        )
    }

    /// A write answered with this code may still be applied (so retrying a compare-and-set may fail on its
    /// own success).
    pub const fn may_have_applied(self) -> bool {
        matches!(
            self,
            Self::CommitTimeout | Self::CommitUnknown | Self::ForwardInterrupted
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_checked() {
        assert_eq!(check_key("distlab/order/default_mode"), Ok(()));
        assert_eq!(check_key(""), Err(KeyError::Empty));
        assert_eq!(
            check_key(&"é".repeat(MAX_KEY_CHARS)),
            Ok(()),
            "characters, not bytes"
        );
        assert_eq!(
            check_key(&"k".repeat(MAX_KEY_CHARS + 1)),
            Err(KeyError::TooLong)
        );
        assert_eq!(check_key("a\nb"), Err(KeyError::ControlCharacter));
        assert_eq!(
            KeyError::TooLong.to_string(),
            "must be at most 512 characters"
        );
    }

    #[test]
    fn error_codes_and_event_kinds_round_trip_through_their_text() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(
                !code.may_have_applied() || code.is_unavailable(),
                "{code}: an indeterminate write is a 503"
            );
        }
        assert_eq!(ErrorCode::parse("validation_failed"), None);
        for kind in [
            WatchEventKind::Put,
            WatchEventKind::Delete,
            WatchEventKind::Compacted,
        ] {
            assert_eq!(WatchEventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(WatchEventKind::parse("message"), None);
    }

    #[test]
    fn bodies_have_the_documented_json_shapes() {
        let put = PutRequest {
            value: Some(json!("2pc")),
            prev_revision: None,
        };
        assert_eq!(
            serde_json::to_value(&put).ok(),
            Some(json!({"value": "2pc"}))
        );
        let cas = PutRequest {
            prev_revision: Some(0),
            ..put
        };
        assert_eq!(
            serde_json::to_value(&cas).ok(),
            Some(json!({"value": "2pc", "prev_revision": 0}))
        );
        assert!(
            serde_json::from_value::<PutRequest>(json!({"value": 1, "ttl": 5})).is_err(),
            "unknown fields are refused"
        );

        let delete = WatchEvent {
            revision: 8,
            key: "k".into(),
            value: None,
        };
        assert_eq!(
            serde_json::to_value(&delete).ok(),
            Some(json!({"revision": 8, "key": "k"}))
        );
        assert_eq!(delete.kind(), WatchEventKind::Delete);
        let put: WatchEvent =
            serde_json::from_value(json!({"revision": 9, "key": "k", "value": {"a": 1}}))
                .expect("a put event");
        assert_eq!(put.kind(), WatchEventKind::Put);

        let query = serde_urlencoded_query(&WatchParams {
            prefix: "distlab/".into(),
            from_revision: Some(7),
        });
        assert_eq!(query, "prefix=distlab%2F&from_revision=7");
        let read = serde_urlencoded_query(&ReadParams {
            consistency: Consistency::Stale,
        });
        assert_eq!(read, "consistency=stale");
    }

    /// The query string reqwest builds from `params`.
    fn serde_urlencoded_query(params: &impl Serialize) -> String {
        let request = reqwest::Client::new()
            .get("http://node/")
            .query(params)
            .build()
            .expect("a request");
        request.url().query().unwrap_or_default().to_owned()
    }
}
