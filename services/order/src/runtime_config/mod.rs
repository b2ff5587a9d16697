//! The default order mode at run time: read from the config service (the Raft key-value store of
//! `services/config`) and followed through its watch, so that switching the order services between
//! `outbox` and `2pc` is one `PUT` of the key (default `distlab/order/default_mode`) — no restart.
//!
//! - [`DefaultMode`] is the value the handlers read (cheap to clone, never waits on the network) and what
//!   `/readyz` shows under `config` ([`DefaultMode::detail`], [`readiness_check`]);
//! - [`Follower`] keeps it up to date. It reads the key (`GET /v1/kv/{key}?consistency=stale`, which any
//!   node answers, even one cut off from the majority), then watches it from the index that node had
//!   applied (`GET /v1/watch`, Server-Sent Events, parsed by [`SseParser`]). When the node stops answering —
//!   refused, an error status, the stream ending, or not one byte for [`IDLE_TIMEOUT`] although nodes send a
//!   keep-alive every 5 s — it moves to the next node after a backoff and resumes the watch from the last
//!   revision it saw, so no change is missed; `410 compacted` (or an `event: compacted`) makes it read the
//!   key again.
//!
//! While no node answers, the last known value stays in force — availability over freshness: orders are
//! still placed, in the mode last decided — and `/readyz` says so; the `config` check never makes the
//! service unready. A missing key means the configured `DEFAULT_ORDER_MODE`; a value other than the JSON
//! string `"outbox"` or `"2pc"` is ignored (the last good value stays) and reported.
//!
//! A node on the minority side of a partition still answers stale reads and keeps its watch open, but sees
//! no new change: the value it gives is the last one it knew, which is the same promise as above.

mod follower;
mod sse;

pub use follower::{
    CONNECT_TIMEOUT, FollowError, Follower, IDLE_TIMEOUT, RECONNECT_BACKOFF, REQUEST_TIMEOUT,
};
pub use sse::{LineTooLong, MAX_LINE, SseEvent, SseParser};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use distlab_platform::http::ReadinessCheck;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::orders::Mode;

/// A revision of the config service (the index of the Raft log entry that made a change).
pub type Revision = u64;

/// Where the current default mode comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `DEFAULT_ORDER_MODE`: the config service is not followed, has no value for the key, or was never
    /// reached.
    Configuration,
    /// The config service's value of the key at this revision.
    ConfigService { revision: Revision },
}

/// A value of the key that is not a mode, ignored.
#[derive(Debug, Clone, PartialEq)]
struct Invalid {
    revision: Revision,
    value: Value,
    reason: String,
}

/// The state behind a [`DefaultMode`].
#[derive(Debug, Clone, PartialEq)]
struct State {
    mode: Mode,
    source: Source,
    /// The node answered and its watch is open.
    following: bool,
    /// The node followed now, or else the last one tried.
    node: Option<String>,
    /// When the config service was last lost (or first not reached); `None` while following.
    stale_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// The latest value of the key, when it is not a mode.
    invalid: Option<Invalid>,
}

/// The mode of an order whose request names none: cheap to clone, shared by the handlers, the
/// [`Follower`] and `/readyz`.
#[derive(Debug, Clone)]
pub struct DefaultMode {
    /// `DEFAULT_ORDER_MODE`.
    configured: Mode,
    /// The followed key; `None` when the config service is not followed.
    key: Option<Arc<str>>,
    state: Arc<watch::Sender<State>>,
}

impl DefaultMode {
    /// Always `mode`: the config service is not followed.
    pub fn fixed(mode: Mode) -> Self {
        Self::new(mode, None)
    }

    /// `configured` until the config service's value of `key` is known.
    pub fn following(configured: Mode, key: &str) -> Self {
        Self::new(configured, Some(key.into()))
    }

    fn new(configured: Mode, key: Option<Arc<str>>) -> Self {
        let (state, _) = watch::channel(State {
            mode: configured,
            source: Source::Configuration,
            following: false,
            node: None,
            stale_since: None,
            last_error: None,
            invalid: None,
        });
        Self {
            configured,
            key,
            state: Arc::new(state),
        }
    }

    /// The mode to use now.
    pub fn current(&self) -> Mode {
        self.state.borrow().mode
    }

    /// Where [`DefaultMode::current`] comes from.
    pub fn source(&self) -> Source {
        self.state.borrow().source
    }

    /// Whether a config node answers and its watch is open.
    pub fn is_following(&self) -> bool {
        self.state.borrow().following
    }

    /// What `/readyz` shows under `config`, e.g.
    /// `{"default_mode":"2pc","source":"config_service","revision":12,"following":true,…}`, or while the
    /// config service is unreachable the same with `"following":false`, `stale_since`, `last_error` and a
    /// `note` saying the last known value is kept.
    pub fn detail(&self) -> Value {
        let state = self.state.borrow().clone();
        let mut detail = json!({
            "default_mode": state.mode.as_str(),
            "configured_mode": self.configured.as_str(),
            "following": state.following,
        });
        match state.source {
            Source::Configuration => detail["source"] = json!("configuration"),
            Source::ConfigService { revision } => {
                detail["source"] = json!("config_service");
                detail["revision"] = json!(revision);
            }
        }
        let Some(key) = &self.key else {
            detail["note"] = json!("not following the config service (CONFIG_URLS is empty)");
            return detail;
        };
        detail["key"] = json!(key.as_ref());
        if let Some(node) = &state.node {
            detail["node"] = json!(node);
        }
        let mut notes = Vec::new();
        if !state.following {
            if let Some(since) = state.stale_since {
                detail["stale_since"] = json!(since);
                notes.push("config service unreachable; keeping the last known value".to_owned());
            } else {
                notes.push("connecting to the config service".to_owned());
            }
            if let Some(error) = &state.last_error {
                detail["last_error"] = json!(error);
            }
        }
        if let Some(invalid) = &state.invalid {
            detail["invalid_value"] = json!({
                "revision": invalid.revision,
                "value": invalid.value,
                "reason": invalid.reason,
            });
            notes.push(format!(
                "the config value at revision {} is invalid ({}); keeping the last good value",
                invalid.revision, invalid.reason
            ));
        }
        if state.following && state.source == Source::Configuration && state.invalid.is_none() {
            notes.push(
                "the key is not set in the config service; DEFAULT_ORDER_MODE applies".into(),
            );
        }
        if !notes.is_empty() {
            detail["note"] = json!(notes.join("; "));
        }
        detail
    }

    /// The key's value at `revision` (a read or a `put` event). A value that is not a mode is ignored and
    /// reported; one older than the value in force (from a node that lags behind) is ignored.
    fn apply_value(&self, revision: Revision, value: &Value) {
        let key = self.key.as_deref().unwrap_or_default();
        self.state.send_if_modified(|state| {
            if let Source::ConfigService { revision: current } = state.source
                && revision < current
            {
                tracing::debug!(revision, current, "ignoring an older value of the default mode");
                return false;
            }
            match parse_mode(value) {
                Ok(mode) => {
                    if mode != state.mode {
                        tracing::info!(
                            key, from = %state.mode, to = %mode, revision,
                            "default order mode changed by the config service"
                        );
                    }
                    let changed = (state.mode, state.source) != (mode, Source::ConfigService { revision })
                        || state.invalid.is_some();
                    state.mode = mode;
                    state.source = Source::ConfigService { revision };
                    state.invalid = None;
                    changed
                }
                Err(reason) => {
                    tracing::warn!(
                        key, revision, %value, %reason, mode = %state.mode,
                        "ignoring an invalid default order mode from the config service; keeping the last good value"
                    );
                    state.invalid = Some(Invalid {
                        revision,
                        value: value.clone(),
                        reason,
                    });
                    true
                }
            }
        });
    }

    /// The key does not exist (a read answered 404, or a `delete` event): back to `DEFAULT_ORDER_MODE`.
    fn apply_absent(&self) {
        let key = self.key.as_deref().unwrap_or_default();
        let configured = self.configured;
        self.state.send_if_modified(|state| {
            if state.mode != configured {
                tracing::info!(
                    key, from = %state.mode, to = %configured,
                    "default order mode removed from the config service; back to DEFAULT_ORDER_MODE"
                );
            }
            let changed = (state.mode, state.source) != (configured, Source::Configuration)
                || state.invalid.is_some();
            state.mode = configured;
            state.source = Source::Configuration;
            state.invalid = None;
            changed
        });
    }

    /// `node` answered and its watch is open.
    fn connected(&self, node: &str) {
        self.state.send_modify(|state| {
            if state.stale_since.is_some() {
                tracing::info!(node, mode = %state.mode, "following the config service again");
            } else if !state.following {
                tracing::info!(node, mode = %state.mode, "following the config service");
            }
            state.following = true;
            state.node = Some(node.to_owned());
            state.stale_since = None;
            state.last_error = None;
        });
    }

    /// Following `node` failed: the value in force stays. Warns once per outage, not on every retry.
    fn lost(&self, node: &str, error: &FollowError) {
        self.state.send_modify(|state| {
            if state.stale_since.is_none() {
                tracing::warn!(
                    node, %error, mode = %state.mode,
                    "config service unreachable; keeping the last known default order mode"
                );
                state.stale_since = Some(Utc::now());
            } else {
                tracing::debug!(node, %error, "config node still unreachable");
            }
            state.following = false;
            state.node = Some(node.to_owned());
            state.last_error = Some(error.to_string());
        });
    }

    #[cfg(test)]
    fn changes(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }
}

/// The `/readyz` check `config`: always ready (the service works on the last known value), with
/// [`DefaultMode::detail`].
pub fn readiness_check(mode: DefaultMode) -> ReadinessCheck {
    ReadinessCheck::with_detail("config", move || std::future::ready(Ok(mode.detail())))
}

/// The mode a value of the key names: the JSON string `"outbox"` or `"2pc"`, nothing else.
pub fn parse_mode(value: &Value) -> Result<Mode, String> {
    match value {
        Value::String(text) => text
            .parse()
            .map_err(|_| format!("{value} is not a mode; expected \"outbox\" or \"2pc\"")),
        other => Err(format!(
            "{other} is not a mode; expected the JSON string \"outbox\" or \"2pc\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "distlab/order/default_mode";

    #[test]
    fn only_the_json_strings_outbox_and_2pc_are_modes() {
        assert_eq!(parse_mode(&json!("2pc")), Ok(Mode::TwoPhaseCommit));
        assert_eq!(parse_mode(&json!("outbox")), Ok(Mode::Outbox));
        for bad in [
            json!("3pc"),
            json!("2PC"),
            json!({"mode": "2pc"}),
            json!(2),
            json!(null),
        ] {
            assert!(parse_mode(&bad).is_err(), "{bad}");
        }
    }

    fn unreachable(node: &str) -> FollowError {
        FollowError::Unreachable {
            node: node.into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn the_last_known_value_is_kept_and_reported_while_the_service_is_unreachable() {
        let mode = DefaultMode::following(Mode::Outbox, KEY);
        assert_eq!(mode.current(), Mode::Outbox);
        assert_eq!(mode.detail()["note"], "connecting to the config service");

        mode.apply_value(12, &json!("2pc"));
        mode.connected("http://n1");
        let detail = mode.detail();
        assert_eq!(
            detail,
            json!({"default_mode": "2pc", "configured_mode": "outbox", "source": "config_service",
                   "revision": 12, "following": true, "key": KEY, "node": "http://n1"})
        );

        mode.lost("http://n1", &unreachable("http://n1"));
        let since = mode.detail()["stale_since"].clone();
        mode.lost("http://n2", &unreachable("http://n2"));
        let detail = mode.detail();
        assert_eq!(mode.current(), Mode::TwoPhaseCommit, "the last value stays");
        assert_eq!(detail["following"], false);
        assert_eq!(detail["revision"], 12);
        assert_eq!(
            detail["stale_since"], since,
            "since the first failure, not the last retry"
        );
        assert!(detail["last_error"].as_str().unwrap().contains("http://n2"));
        assert_eq!(
            detail["note"],
            "config service unreachable; keeping the last known value"
        );

        mode.connected("http://n3");
        let detail = mode.detail();
        assert_eq!(detail["following"], true);
        assert!(detail.get("stale_since").is_none() && detail.get("last_error").is_none());
    }

    #[test]
    fn an_invalid_value_keeps_the_last_good_one_and_a_delete_goes_back_to_the_configured_mode() {
        let mode = DefaultMode::following(Mode::Outbox, KEY);
        mode.connected("http://n1");
        assert!(
            mode.detail()["note"].as_str().unwrap().contains("not set"),
            "{}",
            mode.detail()
        );
        mode.apply_value(5, &json!("2pc"));
        mode.apply_value(6, &json!({"mode": "outbox"}));
        assert_eq!(mode.current(), Mode::TwoPhaseCommit);
        let detail = mode.detail();
        assert_eq!(detail["revision"], 5);
        assert_eq!(detail["invalid_value"]["revision"], 6);
        assert!(
            detail["note"].as_str().unwrap().contains("invalid"),
            "{detail}"
        );

        // A lagging node's older value does not undo a newer one.
        mode.apply_value(4, &json!("outbox"));
        assert_eq!(mode.current(), Mode::TwoPhaseCommit);

        mode.apply_absent();
        assert_eq!(mode.current(), Mode::Outbox);
        assert_eq!(mode.source(), Source::Configuration);
        assert!(mode.detail().get("invalid_value").is_none());
        mode.apply_value(9, &json!("2pc"));
        assert_eq!(mode.source(), Source::ConfigService { revision: 9 });
    }

    #[test]
    fn a_fixed_mode_says_it_does_not_follow() {
        let mode = DefaultMode::fixed(Mode::TwoPhaseCommit);
        let detail = mode.detail();
        assert_eq!(detail["default_mode"], "2pc");
        assert_eq!(detail["source"], "configuration");
        assert_eq!(detail["following"], false);
        assert!(detail["note"].as_str().unwrap().contains("CONFIG_URLS"));
    }
}
