//! The CAP switch (seed section 三): what the order side does when it cannot reach the inventory side.
//!
//! The order service keeps a replica of the inventory's stock ([`crate::replica`], fed by the stock feed)
//! and follows the switch `cap_mode` (`distlab/switches/cap_mode` in the config service, set through the
//! chaos sidecar's `/switches/cap_mode`) on every replica:
//!
//! | | CP | AP |
//! |---|---|---|
//! | `GET /stock/{sku}` | read through to the inventory within [`CP_DEADLINE`]; else 503 `cp_unavailable` | the replica, with its version and age |
//! | an order naming no mode | 2PC (the inventory reserves it before the answer), within [`CP_DEADLINE`]; else 503 `cp_unavailable` | outbox, admitted only if the replica covers it; 409 if not |
//!
//! So CP never answers from state it cannot prove current and never promises stock the inventory has not
//! reserved; AP always answers and promises on the replica's word, and an order the real stock cannot cover
//! ends REJECTED with `oversold_during_partition` once the two sides talk again.
//!
//! Until the switch has been **set** (to either value), orders are placed as before — in the mode their
//! request names, or the default order mode ([`crate::runtime_config`]) — and only stock reads follow
//! `CAP_MODE` (CP). That keeps the outbox and 2PC walkthroughs what they were; setting the switch makes the
//! whole order path obey it. The mode in force is in `/readyz` (`cap`), in the `x-distlab-cap-mode` header
//! of every response, and in the `order_cap_mode` gauge.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use distlab_config_client::{FollowedKey, Latest, switch_key};
use distlab_platform::http::ReadinessCheck;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The longest a CP request waits for the inventory side before it answers 503 (the bound is 1 s).
pub const CP_DEADLINE: Duration = Duration::from_millis(800);

/// The header that names the mode a response was served in.
pub const HEADER: &str = "x-distlab-cap-mode";

/// The name of the switch in the switchboard.
pub const SWITCH: &str = "cap_mode";

/// Consistency or availability under a partition.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
pub enum CapMode {
    #[serde(rename = "CP")]
    #[value(name = "CP")]
    Cp,
    #[serde(rename = "AP")]
    #[value(name = "AP")]
    Ap,
}

impl CapMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cp => "CP",
            Self::Ap => "AP",
        }
    }
}

/// A value of the switch: the JSON string `"CP"` or `"AP"` (any case), nothing else.
pub fn parse_cap_mode(value: &Value) -> Result<CapMode, String> {
    match value.as_str().map(str::trim) {
        Some(text) if text.eq_ignore_ascii_case("CP") => Ok(CapMode::Cp),
        Some(text) if text.eq_ignore_ascii_case("AP") => Ok(CapMode::Ap),
        _ => Err(format!(
            "{value} is not a CAP mode; expected the JSON string \"CP\" or \"AP\""
        )),
    }
}

/// The followed switch (hand it to a [`Follower`](distlab_config_client::Follower)).
pub fn followed_switch() -> FollowedKey<CapMode> {
    FollowedKey::parsed(switch_key(SWITCH), parse_cap_mode)
}

/// The CAP mode in force: cheap to clone, never waits on the network.
#[derive(Debug, Clone)]
pub struct CapSwitch {
    configured: CapMode,
    followed: Option<FollowedKey<CapMode>>,
}

impl CapSwitch {
    /// Always `mode` (the config service is not followed).
    pub fn fixed(mode: CapMode) -> Self {
        Self {
            configured: mode,
            followed: None,
        }
    }

    /// `configured` until the switch holds a valid value; then that value.
    pub fn following(configured: CapMode, followed: FollowedKey<CapMode>) -> Self {
        Self {
            configured,
            followed: Some(followed),
        }
    }

    /// The mode in force, and whether the switch was set (only then does it govern orders).
    pub fn current(&self) -> (CapMode, bool) {
        match self
            .followed
            .as_ref()
            .and_then(|followed| followed.borrow().latest.value().copied())
        {
            Some(mode) => (mode, true),
            None => (self.configured, false),
        }
    }

    /// `/readyz` detail: `{"cap_mode":"AP","source":"config_service","revision":…,"following":…}`.
    pub fn detail(&self) -> Value {
        let (mode, set) = self.current();
        let mut detail = json!({
            "cap_mode": mode.as_str(),
            "configured": self.configured.as_str(),
            "governs_orders": set,
        });
        match &self.followed {
            None => detail["source"] = json!("configuration"),
            Some(followed) => {
                let following = followed.detail();
                detail["source"] = json!(match followed.borrow().latest {
                    Latest::Present(_) => "config_service",
                    Latest::Unknown | Latest::Absent => "configuration",
                });
                detail["switch"] = following;
            }
        }
        detail
    }

    /// The `/readyz` check `cap` (always ready; it reports the mode).
    pub fn readiness_check(&self) -> ReadinessCheck {
        let switch = self.clone();
        ReadinessCheck::with_detail("cap", move || std::future::ready(Ok(switch.detail())))
    }
}

/// Middleware: names the mode in force on every response (`x-distlab-cap-mode`) and keeps the
/// `order_cap_mode{mode}` gauge current.
pub async fn mark_responses(
    State(switch): State<CapSwitch>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let (mode, _) = switch.current();
    response
        .headers_mut()
        .insert(HEADER, HeaderValue::from_static(mode.as_str()));
    for candidate in [CapMode::Cp, CapMode::Ap] {
        metrics::gauge!("order_cap_mode", "mode" => candidate.as_str()).set(if candidate == mode {
            1.0
        } else {
            0.0
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_json_strings_are_modes() {
        assert_eq!(parse_cap_mode(&json!("AP")), Ok(CapMode::Ap));
        assert_eq!(parse_cap_mode(&json!(" cp ")), Ok(CapMode::Cp));
        for bad in [json!("AC"), json!(1), json!(null), json!({"mode": "AP"})] {
            assert!(parse_cap_mode(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_configured_mode_holds_until_the_switch_has_a_valid_value() {
        let followed = followed_switch();
        let switch = CapSwitch::following(CapMode::Cp, followed.clone());
        assert_eq!(switch.current(), (CapMode::Cp, false));
        followed.simulate_value(3, &json!("AP"));
        assert_eq!(switch.current(), (CapMode::Ap, true));
        // A malformed value is ignored: the last good one stays.
        followed.simulate_value(4, &json!("maybe"));
        assert_eq!(switch.current(), (CapMode::Ap, true));
        assert_eq!(switch.detail()["source"], "config_service");
        followed.simulate_value(5, &json!("CP"));
        assert_eq!(switch.current(), (CapMode::Cp, true));
        assert_eq!(
            CapSwitch::fixed(CapMode::Ap).current(),
            (CapMode::Ap, false)
        );
    }
}
