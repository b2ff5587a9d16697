//! The default order mode at run time: read from the config service (the Raft key-value store of
//! `services/config`) and followed through its watch, so that switching the order services between
//! `outbox` and `2pc` is one `PUT` of the key (default `distlab/order/default_mode`) — no restart.
//!
//! - [`DefaultMode`] is the value the handlers read (cheap to clone, never waits on the network) and what
//!   `/readyz` shows under `config` ([`DefaultMode::detail`], [`readiness_check`]);
//! - a [`Follower`](distlab_config_client::Follower) of the shared config client keeps it up to date
//!   (see `distlab_config_client`). It reads the key (`GET /v1/kv/{key}?consistency=stale`, which any node
//!   answers, even one cut off from the majority), then watches it from the index that node had applied
//!   (`GET /v1/watch`, Server-Sent Events). When the node stops answering — refused, an error status, the
//!   stream ending, or not one byte for [`IDLE_TIMEOUT`](distlab_config_client::IDLE_TIMEOUT) although
//!   nodes send a keep-alive every 5 s — it moves to the next node after a backoff and resumes the watch
//!   from the last revision it saw, so no change is missed; `410 compacted` (or an `event: compacted`)
//!   makes it read the key again.
//!
//! While no node answers, the last known value stays in force — availability over freshness: orders are
//! still placed, in the mode last decided — and `/readyz` says so; the `config` check never makes the
//! service unready. A missing key means the configured `DEFAULT_ORDER_MODE`; a value other than the JSON
//! string `"outbox"` or `"2pc"` is ignored (the last good value stays) and reported — [`parse_mode`] is the
//! followed key's parser ([`mode_key`]).
//!
//! A node on the minority side of a partition still answers stale reads and keeps its watch open, but sees
//! no new change: the value it gives is the last one it knew, which is the same promise as above.

use distlab_config_client::{FollowedKey, Latest};
use distlab_platform::http::ReadinessCheck;
use serde_json::{Value, json};

use crate::orders::Mode;

pub use distlab_config_client::Revision;

/// Where the current default mode comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `DEFAULT_ORDER_MODE`: the config service is not followed, has no value for the key, or was never
    /// reached.
    Configuration,
    /// The config service's value of the key at this revision.
    ConfigService { revision: Revision },
}

/// The followed key of the default mode: `key`, whose values are modes ([`parse_mode`]). Hand it to a
/// [`Follower`](distlab_config_client::Follower) and to [`DefaultMode::following`].
pub fn mode_key(key: &str) -> FollowedKey<Mode> {
    FollowedKey::parsed(key, parse_mode)
}

/// The mode of an order whose request names none: cheap to clone, shared by the handlers, the
/// follower and `/readyz`.
#[derive(Debug, Clone)]
pub struct DefaultMode {
    /// `DEFAULT_ORDER_MODE`.
    configured: Mode,
    /// The followed key; `None` when the config service is not followed.
    followed: Option<FollowedKey<Mode>>,
}

impl DefaultMode {
    /// Always `mode`: the config service is not followed.
    pub fn fixed(mode: Mode) -> Self {
        Self {
            configured: mode,
            followed: None,
        }
    }

    /// `configured` until (and whenever) the config service has no valid value of `followed`'s key.
    pub fn following(configured: Mode, followed: FollowedKey<Mode>) -> Self {
        Self {
            configured,
            followed: Some(followed),
        }
    }

    /// The mode to use now.
    pub fn current(&self) -> Mode {
        match &self.followed {
            Some(followed) => followed
                .borrow()
                .latest
                .value()
                .copied()
                .unwrap_or(self.configured),
            None => self.configured,
        }
    }

    /// Where [`DefaultMode::current`] comes from.
    pub fn source(&self) -> Source {
        let revision = self
            .followed
            .as_ref()
            .and_then(|followed| followed.borrow().latest.revision());
        match revision {
            Some(revision) => Source::ConfigService { revision },
            None => Source::Configuration,
        }
    }

    /// Whether a config node answers and its watch is open.
    pub fn is_following(&self) -> bool {
        self.followed
            .as_ref()
            .is_some_and(FollowedKey::is_following)
    }

    /// What `/readyz` shows under `config`, e.g.
    /// `{"default_mode":"2pc","source":"config_service","revision":12,"following":true,…}`, or while the
    /// config service is unreachable the same with `"following":false`, `stale_since`, `last_error` and a
    /// `note` saying the last known value is kept.
    pub fn detail(&self) -> Value {
        let Some(followed) = &self.followed else {
            return json!({
                "default_mode": self.configured.as_str(),
                "configured_mode": self.configured.as_str(),
                "following": false,
                "source": "configuration",
                "note": "not following the config service (CONFIG_URLS is empty)",
            });
        };
        let state = followed.borrow().clone();
        let status = &state.status;
        let mode = state.latest.value().copied().unwrap_or(self.configured);
        let mut detail = json!({
            "default_mode": mode.as_str(),
            "configured_mode": self.configured.as_str(),
            "following": status.following,
            "key": followed.key(),
        });
        match &state.latest {
            Latest::Present(versioned) => {
                detail["source"] = json!("config_service");
                detail["revision"] = json!(versioned.revision);
            }
            Latest::Unknown | Latest::Absent => detail["source"] = json!("configuration"),
        }
        if let Some(node) = &status.node {
            detail["node"] = json!(node);
        }
        let mut notes = Vec::new();
        if !status.following {
            if let Some(since) = status.stale_since {
                detail["stale_since"] = json!(since);
                notes.push("config service unreachable; keeping the last known value".to_owned());
            } else {
                notes.push("connecting to the config service".to_owned());
            }
            if let Some(error) = &status.last_error {
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
        let from_configuration = !matches!(state.latest, Latest::Present(_));
        if status.following && from_configuration && state.invalid.is_none() {
            notes.push(
                "the key is not set in the config service; DEFAULT_ORDER_MODE applies".into(),
            );
        }
        if !notes.is_empty() {
            detail["note"] = json!(notes.join("; "));
        }
        detail
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
    use distlab_config_client::FollowError;

    use super::*;

    const KEY: &str = "distlab/order/default_mode";

    /// A default mode following [`KEY`], and its key, which the tests drive as a follower would.
    fn following(configured: Mode) -> (DefaultMode, FollowedKey<Mode>) {
        let followed = mode_key(KEY);
        (
            DefaultMode::following(configured, followed.clone()),
            followed,
        )
    }

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
        let (mode, key) = following(Mode::Outbox);
        assert_eq!(mode.current(), Mode::Outbox);
        assert_eq!(mode.detail()["note"], "connecting to the config service");

        key.simulate_value(12, &json!("2pc"));
        key.simulate_connected("http://n1");
        let detail = mode.detail();
        assert_eq!(
            detail,
            json!({"default_mode": "2pc", "configured_mode": "outbox", "source": "config_service",
                   "revision": 12, "following": true, "key": KEY, "node": "http://n1"})
        );

        key.simulate_lost("http://n1", &unreachable("http://n1"));
        let since = mode.detail()["stale_since"].clone();
        key.simulate_lost("http://n2", &unreachable("http://n2"));
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

        key.simulate_connected("http://n3");
        let detail = mode.detail();
        assert_eq!(detail["following"], true);
        assert!(detail.get("stale_since").is_none() && detail.get("last_error").is_none());
    }

    #[test]
    fn an_invalid_value_keeps_the_last_good_one_and_a_delete_goes_back_to_the_configured_mode() {
        let (mode, key) = following(Mode::Outbox);
        key.simulate_connected("http://n1");
        assert!(
            mode.detail()["note"].as_str().unwrap().contains("not set"),
            "{}",
            mode.detail()
        );
        key.simulate_value(5, &json!("2pc"));
        key.simulate_value(6, &json!({"mode": "outbox"}));
        assert_eq!(mode.current(), Mode::TwoPhaseCommit);
        let detail = mode.detail();
        assert_eq!(detail["revision"], 5);
        assert_eq!(detail["invalid_value"]["revision"], 6);
        assert!(
            detail["note"].as_str().unwrap().contains("invalid"),
            "{detail}"
        );

        // A lagging node's older value does not undo a newer one.
        key.simulate_value(4, &json!("outbox"));
        assert_eq!(mode.current(), Mode::TwoPhaseCommit);

        key.simulate_absent();
        assert_eq!(mode.current(), Mode::Outbox);
        assert_eq!(mode.source(), Source::Configuration);
        assert!(mode.detail().get("invalid_value").is_none());
        key.simulate_value(9, &json!("2pc"));
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
