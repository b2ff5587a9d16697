//! The switchboard: named runtime switches that change how the whole stack behaves, stored in the Raft
//! config service under `distlab/switches/{name}` so that every replica of every service follows the same
//! value (they follow the key with `distlab-config-client`).
//!
//! | switch | values | read by | what it changes |
//! |---|---|---|---|
//! | `cap_mode` | `CP`, `AP` | order service | CP refuses what it cannot prove current; AP answers and reconciles |
//! | `degrade` | `off`, `auto`, `on` | storefront gateway | BASE degradation: never, under pressure, always |
//!
//! The table ([`SWITCHES`]) is the one place a later switch is added. Values are checked here (a typo
//! would otherwise be followed by every replica) and stored as JSON strings.

use std::time::Duration;

use distlab_config_client::{
    BuildError, ClientError, ConfigClient, Consistency, parse_switch, switch_key,
};
use serde::Serialize;

/// A switch and the values it takes.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct SwitchDef {
    pub name: &'static str,
    pub values: &'static [&'static str],
    /// What services assume while the key has never been set.
    pub default: &'static str,
    pub description: &'static str,
}

/// Every switch.
pub const SWITCHES: [SwitchDef; 2] = [
    SwitchDef {
        name: "cap_mode",
        values: &["CP", "AP"],
        default: "CP",
        description: "CAP choice of the order service's stock replica under a partition",
    },
    SwitchDef {
        name: "degrade",
        values: &["off", "auto", "on"],
        default: "auto",
        description: "BASE degradation of the storefront: off, under pressure (auto), or forced on",
    },
];

pub fn find(name: &str) -> Option<&'static SwitchDef> {
    SWITCHES.iter().find(|s| s.name == name)
}

impl SwitchDef {
    /// The canonical spelling of `value` (case does not matter), if the switch takes it.
    pub fn normalise(&self, value: &str) -> Option<&'static str> {
        self.values
            .iter()
            .copied()
            .find(|v| v.eq_ignore_ascii_case(value.trim()))
    }
}

/// Reads and writes switches in the config service.
#[derive(Debug)]
pub struct Switchboard {
    client: ConfigClient,
}

/// A switch's current value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SwitchState {
    pub name: &'static str,
    /// Absent while the key was never set (services then use `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub default: &'static str,
    pub values: &'static [&'static str],
    /// The config service's key.
    pub key: String,
    /// The revision (Raft log index) of the value, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// Why a switch could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// No config node could serve the request (down, or no majority).
    #[error("the config service cannot serve the switch now: {0}")]
    Unavailable(#[source] ClientError),
    /// A write that may or may not have been applied (read the switch to know).
    #[error("the config service may or may not have stored the switch: {0}")]
    Indeterminate(#[source] ClientError),
    /// The config service refused the request or answered something unreadable.
    #[error("the config service refused the switch: {0}")]
    Refused(#[source] ClientError),
}

impl From<ClientError> for SwitchError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Unavailable { .. } | ClientError::NoNodes if error.may_have_applied() => {
                SwitchError::Indeterminate(error)
            }
            ClientError::Unavailable { .. } | ClientError::NoNodes => {
                SwitchError::Unavailable(error)
            }
            ClientError::Indeterminate { .. } => SwitchError::Indeterminate(error),
            _ => SwitchError::Refused(error),
        }
    }
}

impl Switchboard {
    /// A switchboard on the config nodes at `nodes` (base URLs).
    pub fn new(nodes: Vec<String>) -> Result<Self, BuildError> {
        Ok(Switchboard {
            client: ConfigClient::new(nodes)?.with_attempt_timeout(Duration::from_secs(2)),
        })
    }

    /// The switch's value, read linearizably (the leader's, confirmed by a majority).
    pub async fn get(&self, switch: &'static SwitchDef) -> Result<SwitchState, SwitchError> {
        let key = switch_key(switch.name);
        let stored = self.client.get(&key, Consistency::Linearizable).await?;
        let (value, revision) = match stored {
            // A value set by hand that is no string shows as it is; services ignore it.
            Some(kv) => (
                Some(parse_switch(&kv.value).unwrap_or_else(|_| kv.value.to_string())),
                Some(kv.revision),
            ),
            None => (None, None),
        };
        Ok(self.state(switch, value, revision))
    }

    /// Stores the switch's new value; every follower sees it within its watch's latency.
    pub async fn set(
        &self,
        switch: &'static SwitchDef,
        value: &'static str,
    ) -> Result<SwitchState, SwitchError> {
        let written = self.client.put_switch(switch.name, value).await?;
        tracing::info!(
            switch = switch.name,
            value,
            revision = written.revision,
            "switch set"
        );
        Ok(self.state(switch, Some(value.to_owned()), Some(written.revision)))
    }

    fn state(
        &self,
        switch: &'static SwitchDef,
        value: Option<String>,
        revision: Option<u64>,
    ) -> SwitchState {
        SwitchState {
            name: switch.name,
            value,
            default: switch.default,
            values: switch.values,
            key: switch_key(switch.name),
            revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_normalised() {
        let cap = find("cap_mode").expect("known");
        assert_eq!(cap.normalise("ap"), Some("AP"));
        assert_eq!(cap.normalise(" CP "), Some("CP"));
        assert_eq!(cap.normalise("BASE"), None);
        let degrade = find("degrade").expect("known");
        assert_eq!(degrade.normalise("AUTO"), Some("auto"));
        assert!(find("nope").is_none());
        for switch in SWITCHES {
            assert!(switch.values.contains(&switch.default), "{}", switch.name);
        }
    }
}
