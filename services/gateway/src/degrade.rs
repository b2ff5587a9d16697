//! The BASE switch `degrade` (seed section 四, 基本可用): how the storefront gives up part of its service
//! rather than all of it.
//!
//! | value | what the gateway does |
//! |---|---|
//! | `off` | never degrades: every page waits for its dependencies (long time-outs, no breakers, no shedding) — the shop without BASE, for comparison |
//! | `auto` | degrades when it must: over the adaptive concurrency limit ([`crate::shed`]), or when a dependency is slow or cut off ([`crate::breaker`]) |
//! | `on` | always serves the degraded page (a planned promotion); checkout still works |
//!
//! The gateway follows `distlab/switches/degrade` in the config service (set through the chaos sidecar's
//! `PUT /switches/degrade`) and falls back to `DEGRADE` until the switch holds a valid value. The mode in
//! force is in every response (`x-distlab-degrade-mode`), on every page, in `/readyz` (`degrade`) and in
//! the `gateway_degrade_mode` gauge.

use distlab_config_client::{FollowedKey, Latest, switch_key};
use distlab_platform::http::ReadinessCheck;
use serde_json::{Value, json};

/// The header that names the mode a response was served in.
pub const HEADER: &str = "x-distlab-degrade-mode";

/// The name of the switch in the switchboard.
pub const SWITCH: &str = "degrade";

/// How the storefront degrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DegradeMode {
    Off,
    Auto,
    On,
}

impl DegradeMode {
    pub const ALL: [DegradeMode; 3] = [DegradeMode::Off, DegradeMode::Auto, DegradeMode::On];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::On => "on",
        }
    }
}

/// A value of the switch: the JSON string `"off"`, `"auto"` or `"on"` (any case), nothing else.
pub fn parse_degrade_mode(value: &Value) -> Result<DegradeMode, String> {
    let text = value.as_str().map(str::trim).unwrap_or_default();
    DegradeMode::ALL
        .into_iter()
        .find(|mode| text.eq_ignore_ascii_case(mode.as_str()))
        .ok_or_else(|| {
            format!("{value} is not a degrade mode; expected the JSON string \"off\", \"auto\" or \"on\"")
        })
}

/// The followed switch (hand it to a [`Follower`](distlab_config_client::Follower)).
pub fn followed_switch() -> FollowedKey<DegradeMode> {
    FollowedKey::parsed(switch_key(SWITCH), parse_degrade_mode)
}

/// The degrade mode in force: cheap to clone, never waits on the network.
#[derive(Debug, Clone)]
pub struct DegradeSwitch {
    configured: DegradeMode,
    followed: Option<FollowedKey<DegradeMode>>,
}

impl DegradeSwitch {
    /// Always `mode` (the config service is not followed).
    pub fn fixed(mode: DegradeMode) -> Self {
        Self {
            configured: mode,
            followed: None,
        }
    }

    /// `configured` until the switch holds a valid value; then that value.
    pub fn following(configured: DegradeMode, followed: FollowedKey<DegradeMode>) -> Self {
        Self {
            configured,
            followed: Some(followed),
        }
    }

    /// The mode in force.
    pub fn current(&self) -> DegradeMode {
        self.followed
            .as_ref()
            .and_then(|followed| followed.borrow().latest.value().copied())
            .unwrap_or(self.configured)
    }

    /// `/readyz` detail: the mode, where it comes from, and the follower's state.
    pub fn detail(&self) -> Value {
        let mut detail = json!({
            "mode": self.current().as_str(),
            "configured": self.configured.as_str(),
        });
        match &self.followed {
            None => detail["source"] = json!("configuration"),
            Some(followed) => {
                detail["source"] = json!(match followed.borrow().latest {
                    Latest::Present(_) => "config_service",
                    Latest::Unknown | Latest::Absent => "configuration",
                });
                detail["switch"] = followed.detail();
            }
        }
        detail
    }

    /// The `/readyz` check `degrade` (always ready; it reports the mode).
    pub fn readiness_check(&self) -> ReadinessCheck {
        let switch = self.clone();
        ReadinessCheck::with_detail("degrade", move || std::future::ready(Ok(switch.detail())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_json_strings_are_modes() {
        assert_eq!(parse_degrade_mode(&json!("auto")), Ok(DegradeMode::Auto));
        assert_eq!(parse_degrade_mode(&json!(" ON ")), Ok(DegradeMode::On));
        assert_eq!(parse_degrade_mode(&json!("off")), Ok(DegradeMode::Off));
        for bad in [
            json!("maybe"),
            json!(true),
            json!(null),
            json!({"mode": "on"}),
        ] {
            assert!(parse_degrade_mode(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_configured_mode_holds_until_the_switch_has_a_valid_value() {
        let followed = followed_switch();
        let switch = DegradeSwitch::following(DegradeMode::Auto, followed.clone());
        assert_eq!(switch.current(), DegradeMode::Auto);
        assert_eq!(switch.detail()["source"], "configuration");
        followed.simulate_value(2, &json!("off"));
        assert_eq!(switch.current(), DegradeMode::Off);
        // A malformed value is ignored: the last good one stays.
        followed.simulate_value(3, &json!("sometimes"));
        assert_eq!(switch.current(), DegradeMode::Off);
        assert_eq!(switch.detail()["source"], "config_service");
        assert_eq!(
            DegradeSwitch::fixed(DegradeMode::On).current(),
            DegradeMode::On
        );
    }
}
