//! Runtime switches: the keys under [`SWITCH_PREFIX`] (`distlab/switches/{name}`), each holding a JSON
//! string — `"CP"` / `"AP"` for the CAP demonstration, `"off"` / `"auto"` / `"on"` for a degradation
//! switch, and so on.
//!
//! The chaos sidecar (or an operator with curl) sets a switch with [`ConfigClient::put_switch`]; a service
//! that obeys it follows it with [`Follower::switch`](crate::Follower::switch) and reads it on every
//! request through the [`FollowedKey`] it hands out, which never waits on the network:
//!
//! ```no_run
//! # async fn example(nodes: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
//! use distlab_config_client::{ConfigClient, Follower};
//! use tokio_util::sync::CancellationToken;
//!
//! // The setter (e.g. the chaos sidecar):
//! ConfigClient::new(nodes.clone())?.put_switch("cap_mode", "AP").await?;
//!
//! // The service that obeys it (its readers clone `cap_mode`):
//! let follower = Follower::switch(nodes, "cap_mode")?;
//! let cap_mode = follower.followed().clone();
//! tokio::spawn(follower.run(CancellationToken::new()));
//! let available = cap_mode.value().as_deref() == Some("AP");
//! # Ok(()) }
//! ```
//!
//! What a switch's values mean is up to the services that read it: this module only knows that they are
//! JSON strings. A value that is not one is ignored by the followers (the last good value stays) and shown
//! as `invalid_value` in their `/readyz` detail; a missing key is [`Latest::Absent`](crate::Latest::Absent),
//! which each reader maps to its own default.

use serde_json::Value;

use crate::client::{ClientError, ConfigClient};
use crate::followed::FollowedKey;
use crate::wire::Written;

/// Where the switches live in the config service.
pub const SWITCH_PREFIX: &str = "distlab/switches/";

/// The key of the switch `name`: `distlab/switches/{name}`.
pub fn switch_key(name: &str) -> String {
    format!("{SWITCH_PREFIX}{name}")
}

/// A switch's value: a JSON string, nothing else.
pub fn parse_switch(value: &Value) -> Result<String, SwitchValueError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(SwitchValueError(other.clone())),
    }
}

/// A switch holds a value that is not a JSON string.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0} is not a switch value; expected a JSON string such as \"AP\" or \"off\"")]
pub struct SwitchValueError(pub Value);

impl FollowedKey<String> {
    /// The switch `name` (key [`switch_key`]`(name)`, values parsed by [`parse_switch`]), for a
    /// [`Follower`](crate::Follower) to keep up to date.
    pub fn switch(name: &str) -> Self {
        Self::parsed(switch_key(name), parse_switch)
    }
}

impl ConfigClient {
    /// Sets the switch `name` to the JSON string `value` (see [`ConfigClient::put`]).
    pub async fn put_switch(&self, name: &str, value: &str) -> Result<Written, ClientError> {
        self.put(&switch_key(name), &Value::String(value.to_owned()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_switch_is_a_json_string_under_the_prefix() {
        assert_eq!(switch_key("cap_mode"), "distlab/switches/cap_mode");
        assert_eq!(parse_switch(&json!("AP")), Ok("AP".to_owned()));
        assert!(parse_switch(&json!({"mode": "AP"})).is_err());
        assert!(parse_switch(&json!(true)).is_err());

        let followed = FollowedKey::switch("degrade");
        assert_eq!(followed.key(), "distlab/switches/degrade");
        followed.apply_value(3, &json!("auto"));
        followed.apply_value(4, &json!(1));
        assert_eq!(followed.value().as_deref(), Some("auto"));
        let detail = followed.detail();
        assert_eq!(detail["value"], "auto");
        assert!(
            detail["invalid_value"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not a switch value")),
            "{detail}"
        );
    }
}
