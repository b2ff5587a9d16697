//! [`FollowedKey`]: what a [`Follower`](crate::Follower) knows of its key — the latest value, whether it
//! is fresh, and what went wrong — behind a cheap handle that readers clone and read without ever waiting
//! on the network.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use distlab_platform::http::ReadinessCheck;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::follower::FollowError;
use crate::wire::Revision;

/// A value of the key and the revision of the write that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

/// The latest value of a followed key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Latest<T> {
    /// No node has answered yet.
    #[default]
    Unknown,
    /// The key does not exist (a read answered 404, or a `delete` event).
    Absent,
    /// The key's latest valid value.
    Present(Versioned<T>),
}

impl<T> Latest<T> {
    /// The value, when the key has one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Present(versioned) => Some(&versioned.value),
            Self::Unknown | Self::Absent => None,
        }
    }

    /// The revision of the value, when the key has one.
    pub fn revision(&self) -> Option<Revision> {
        match self {
            Self::Present(versioned) => Some(versioned.revision),
            Self::Unknown | Self::Absent => None,
        }
    }
}

/// A value of the key that the parser refused: ignored, the last good value stays.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidValue {
    pub revision: Revision,
    pub value: Value,
    pub reason: String,
}

/// Whether the follower is connected, to which node, and since when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowStatus {
    /// A node answered and its watch is open.
    pub following: bool,
    /// The node followed now, or else the last one tried.
    pub node: Option<String>,
    /// When the watch on the current node opened; `None` while not following.
    pub connected_since: Option<DateTime<Utc>>,
    /// When the config service was last lost (or first not reached); `None` while following. Retries do
    /// not move it: it says how old the value may be.
    pub stale_since: Option<DateTime<Utc>>,
    /// Why the last node stopped answering; `None` while following.
    pub last_error: Option<String>,
}

/// Everything a [`FollowedKey`] holds.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState<T> {
    pub latest: Latest<T>,
    /// The key's latest value, when the parser refused it (cleared by the next valid value or a delete).
    pub invalid: Option<InvalidValue>,
    pub status: FollowStatus,
}

impl<T> Default for KeyState<T> {
    fn default() -> Self {
        Self {
            latest: Latest::Unknown,
            invalid: None,
            status: FollowStatus::default(),
        }
    }
}

type Parse<T> = dyn Fn(&Value) -> Result<T, String> + Send + Sync;

/// One key of the config service as its [`Follower`](crate::Follower) keeps it: cheap to clone (two
/// `Arc`s), shared by the follower that writes it and every reader (request handlers, `/readyz`).
///
/// Each value the follower receives goes through the key's parser: a value it refuses is ignored (the
/// last good one stays in force) and reported in [`KeyState::invalid`]; a value older than the one in
/// force (from a node that lags behind) is ignored. [`FollowedKey::subscribe`] wakes on every change of
/// the [`KeyState`], the status included.
pub struct FollowedKey<T = Value> {
    key: Arc<str>,
    parse: Arc<Parse<T>>,
    state: Arc<watch::Sender<KeyState<T>>>,
}

impl<T> Clone for FollowedKey<T> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            parse: self.parse.clone(),
            state: self.state.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for FollowedKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowedKey")
            .field("key", &self.key)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl FollowedKey<Value> {
    /// `key`, whatever JSON value it holds.
    pub fn new(key: impl Into<String>) -> Self {
        Self::parsed(key, |value: &Value| {
            Ok::<_, std::convert::Infallible>(value.clone())
        })
    }
}

impl<T: Send + Sync + 'static> FollowedKey<T> {
    /// `key`, whose values `parse` turns into a `T` (or refuses, with a reason shown in `/readyz`).
    pub fn parsed<E: fmt::Display>(
        key: impl Into<String>,
        parse: impl Fn(&Value) -> Result<T, E> + Send + Sync + 'static,
    ) -> Self {
        let (state, _) = watch::channel(KeyState::default());
        Self {
            key: Arc::from(key.into()),
            parse: Arc::new(move |value| parse(value).map_err(|error| error.to_string())),
            state: Arc::new(state),
        }
    }

    /// The followed key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The state now, borrowed: hold it briefly (the follower waits for it to be released).
    pub fn borrow(&self) -> watch::Ref<'_, KeyState<T>> {
        self.state.borrow()
    }

    /// A receiver that wakes on every change of the state.
    pub fn subscribe(&self) -> watch::Receiver<KeyState<T>> {
        self.state.subscribe()
    }

    /// Whether a config node answers and its watch is open.
    pub fn is_following(&self) -> bool {
        self.state.borrow().status.following
    }

    /// The connection status now.
    pub fn status(&self) -> FollowStatus {
        self.state.borrow().status.clone()
    }

    /// What `/readyz` may show for the key, e.g.
    /// `{"key":"distlab/switches/cap_mode","state":"present","value":"AP","revision":12,"following":true,
    /// "node":"http://127.0.0.1:8091","connected_since":"…"}`; while no node answers `"following":false`
    /// with `stale_since` and `last_error`; `"state"` is `unknown` until a node answered, `absent` when the
    /// key does not exist; a refused value shows as `invalid_value` (`revision`, `value`, `reason`).
    pub fn detail(&self) -> Value
    where
        T: Serialize,
    {
        let state = self.state.borrow();
        let mut detail = json!({"key": self.key(), "following": state.status.following});
        match &state.latest {
            Latest::Unknown => detail["state"] = json!("unknown"),
            Latest::Absent => detail["state"] = json!("absent"),
            Latest::Present(versioned) => {
                detail["state"] = json!("present");
                detail["value"] = serde_json::to_value(&versioned.value).unwrap_or(Value::Null);
                detail["revision"] = json!(versioned.revision);
            }
        }
        let status = &state.status;
        let optional = [
            ("node", status.node.as_ref().map(|n| json!(n))),
            ("connected_since", status.connected_since.map(|t| json!(t))),
            ("stale_since", status.stale_since.map(|t| json!(t))),
            ("last_error", status.last_error.as_ref().map(|e| json!(e))),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                detail[name] = value;
            }
        }
        if let Some(invalid) = &state.invalid {
            detail["invalid_value"] = json!({
                "revision": invalid.revision,
                "value": invalid.value,
                "reason": invalid.reason,
            });
        }
        detail
    }

    /// A `/readyz` check named `name` that is always ready (the service works on the last known value)
    /// and shows [`FollowedKey::detail`].
    pub fn readiness_check(&self, name: &'static str) -> ReadinessCheck
    where
        T: Serialize,
    {
        let key = self.clone();
        ReadinessCheck::with_detail(name, move || std::future::ready(Ok(key.detail())))
    }

    /// The key's value at `revision` (a read or a `put` event). A value the parser refuses is ignored and
    /// reported; one older than the value in force (from a node that lags behind) is ignored.
    pub(crate) fn apply_value(&self, revision: Revision, value: &Value) {
        let key = self.key();
        self.state.send_if_modified(|state| {
            if let Some(current) = state.latest.revision()
                && revision < current
            {
                tracing::debug!(key, revision, current, "ignoring an older value of a followed key");
                return false;
            }
            match (self.parse)(value) {
                Ok(parsed) => {
                    let changed = state.latest.revision() != Some(revision) || state.invalid.is_some();
                    if state.latest.revision() != Some(revision) {
                        tracing::info!(key, %value, revision, "followed key changed in the config service");
                    }
                    state.latest = Latest::Present(Versioned {
                        value: parsed,
                        revision,
                    });
                    state.invalid = None;
                    changed
                }
                Err(reason) => {
                    tracing::warn!(
                        key, revision, %value, %reason,
                        "ignoring an invalid value of a followed key; keeping the last good value"
                    );
                    state.invalid = Some(InvalidValue {
                        revision,
                        value: value.clone(),
                        reason,
                    });
                    true
                }
            }
        });
    }

    /// The key does not exist (a read answered 404, or a `delete` event).
    pub(crate) fn apply_absent(&self) {
        let key = self.key();
        self.state.send_if_modified(|state| {
            if matches!(state.latest, Latest::Present(_)) {
                tracing::info!(key, "followed key removed from the config service");
            }
            let changed = !matches!(state.latest, Latest::Absent) || state.invalid.is_some();
            state.latest = Latest::Absent;
            state.invalid = None;
            changed
        });
    }

    /// `node` answered and its watch is open.
    pub(crate) fn connected(&self, node: &str) {
        let key = self.key();
        self.state.send_modify(|state| {
            let status = &mut state.status;
            if status.stale_since.is_some() {
                tracing::info!(key, node, "following the config service again");
            } else if !status.following {
                tracing::info!(key, node, "following the config service");
            }
            if !status.following || status.node.as_deref() != Some(node) {
                status.connected_since = Some(Utc::now());
            }
            status.following = true;
            status.node = Some(node.to_owned());
            status.stale_since = None;
            status.last_error = None;
        });
    }

    /// Following `node` failed: the value in force stays. Warns once per outage, not on every retry.
    pub(crate) fn lost(&self, node: &str, error: &FollowError) {
        let key = self.key();
        self.state.send_modify(|state| {
            let status = &mut state.status;
            if status.stale_since.is_none() {
                tracing::warn!(
                    key, node, %error,
                    "config service unreachable; keeping the last known value of a followed key"
                );
                status.stale_since = Some(Utc::now());
            } else {
                tracing::debug!(key, node, %error, "config node still unreachable");
            }
            status.following = false;
            status.node = Some(node.to_owned());
            status.connected_since = None;
            status.last_error = Some(error.to_string());
        });
    }
}

impl<T: Clone + Send + Sync + 'static> FollowedKey<T> {
    /// The latest value (cloned).
    pub fn latest(&self) -> Latest<T> {
        self.state.borrow().latest.clone()
    }

    /// The latest value, when the key has one (cloned).
    pub fn value(&self) -> Option<T> {
        self.state.borrow().latest.value().cloned()
    }
}

/// What a [`Follower`](crate::Follower) does to its key, for tests of code that reads a [`FollowedKey`]
/// (feature `test-util`): no config node needed.
#[cfg(feature = "test-util")]
impl<T: Send + Sync + 'static> FollowedKey<T> {
    /// As if a node gave `value` at `revision` (a read or a `put` event).
    pub fn simulate_value(&self, revision: Revision, value: &Value) {
        self.apply_value(revision, value);
    }

    /// As if a node said the key does not exist.
    pub fn simulate_absent(&self) {
        self.apply_absent();
    }

    /// As if `node` answered and its watch opened.
    pub fn simulate_connected(&self, node: &str) {
        self.connected(node);
    }

    /// As if following `node` failed with `error`.
    pub fn simulate_lost(&self, node: &str, error: &FollowError) {
        self.lost(node, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the JSON strings "outbox" and "2pc", like the order service's default mode.
    fn mode_key() -> FollowedKey<String> {
        FollowedKey::parsed("distlab/order/default_mode", |value: &Value| match value {
            Value::String(text) if text == "outbox" || text == "2pc" => Ok(text.clone()),
            other => Err(format!("{other} is not a mode")),
        })
    }

    fn unreachable(node: &str) -> FollowError {
        FollowError::Unreachable {
            node: node.into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn values_are_parsed_invalid_ones_ignored_and_older_ones_too() {
        let key = mode_key();
        assert_eq!(key.latest(), Latest::Unknown);
        assert_eq!(key.detail()["state"], "unknown");

        key.apply_value(5, &json!("2pc"));
        key.apply_value(6, &json!({"mode": "outbox"}));
        assert_eq!(
            key.value().as_deref(),
            Some("2pc"),
            "the last good value stays"
        );
        let state = key.borrow().clone();
        assert_eq!(state.latest.revision(), Some(5));
        let invalid = state.invalid.expect("the refused value is reported");
        assert_eq!(
            (invalid.revision, invalid.value),
            (6, json!({"mode": "outbox"}))
        );
        assert_eq!(key.detail()["invalid_value"]["revision"], 6);

        // A lagging node's older value does not undo a newer one.
        key.apply_value(4, &json!("outbox"));
        assert_eq!(key.value().as_deref(), Some("2pc"));

        key.apply_absent();
        assert_eq!(key.latest(), Latest::Absent);
        assert!(key.borrow().invalid.is_none(), "a delete clears the report");
        assert_eq!(key.detail()["state"], "absent");
        key.apply_value(9, &json!("outbox"));
        assert_eq!(
            key.latest(),
            Latest::Present(Versioned {
                value: "outbox".to_owned(),
                revision: 9
            })
        );
    }

    #[test]
    fn the_status_says_since_when_and_the_first_failure_of_an_outage_counts() {
        let key = FollowedKey::new("k");
        key.apply_value(12, &json!({"max_items": 20}));
        key.connected("http://n1");
        let detail = key.detail();
        assert_eq!(detail["following"], true);
        assert_eq!(detail["state"], "present");
        assert_eq!(detail["value"], json!({"max_items": 20}));
        assert_eq!(detail["revision"], 12);
        assert_eq!(detail["node"], "http://n1");
        let connected_since = detail["connected_since"].clone();
        assert!(connected_since.is_string(), "{detail}");
        key.connected("http://n1");
        assert_eq!(
            key.detail()["connected_since"],
            connected_since,
            "a new watch on the same node keeps the time"
        );

        key.lost("http://n1", &unreachable("http://n1"));
        let since = key.status().stale_since;
        assert!(since.is_some());
        key.lost("http://n2", &unreachable("http://n2"));
        let status = key.status();
        assert_eq!(
            status.stale_since, since,
            "since the first failure, not the last retry"
        );
        assert!(!status.following && status.connected_since.is_none());
        assert!(status.last_error.is_some_and(|e| e.contains("http://n2")));
        assert_eq!(
            key.value(),
            Some(json!({"max_items": 20})),
            "the last value stays"
        );

        key.connected("http://n3");
        let status = key.status();
        assert!(status.following && status.stale_since.is_none() && status.last_error.is_none());
        assert_eq!(status.node.as_deref(), Some("http://n3"));
    }

    #[tokio::test]
    async fn readers_wake_on_changes_but_not_on_repeats() {
        let key = FollowedKey::new("k");
        let mut changes = key.subscribe();
        key.apply_value(3, &json!(1));
        assert!(changes.has_changed().unwrap_or(false));
        changes.mark_unchanged();
        key.apply_value(3, &json!(1));
        key.apply_value(2, &json!(0));
        assert!(
            !changes.has_changed().unwrap_or(true),
            "the same revision again, or an older one, changes nothing"
        );
        let readiness = key.readiness_check("flag");
        assert!(format!("{readiness:?}").contains("flag"));
    }
}
