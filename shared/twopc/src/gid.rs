//! Global transaction ids.
//!
//! `PREPARE TRANSACTION`, `COMMIT PREPARED` and `ROLLBACK PREPARED` take the gid as a string *literal*, not a
//! bind parameter. So gids are made by distlab only, and every gid that arrives from outside is parsed into
//! [`Gid`] first: the prefix `distlab_` and 32 lower-case hex digits — nothing that could end the literal.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Prefix of every distlab gid; the reconciler only touches prepared transactions that carry it.
pub const PREFIX: &str = "distlab_";

/// A validated global transaction id, safe to put in a SQL literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Gid(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a gid is \"{PREFIX}\" followed by 32 lower-case hex digits")]
pub struct InvalidGid;

impl Gid {
    /// A new, unique gid.
    pub fn new() -> Self {
        Self(format!("{PREFIX}{}", Uuid::new_v4().simple()))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidGid> {
        let hex = text.strip_prefix(PREFIX).ok_or(InvalidGid)?;
        if hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidGid)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The gid as a SQL string literal. Safe because of the parse rules above.
    pub fn literal(&self) -> String {
        format!("'{}'", self.0)
    }
}

impl Default for Gid {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Gid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_gids_parse_and_hostile_ones_do_not() {
        let gid = Gid::new();
        assert_eq!(Gid::parse(gid.as_str()), Ok(gid.clone()));
        assert_eq!(gid.literal(), format!("'{gid}'"));
        for bad in [
            "",
            "distlab_",
            "other_0123456789abcdef0123456789abcdef",
            "distlab_0123456789ABCDEF0123456789ABCDEF",
            "distlab_0123456789abcdef0123456789abcde'",
            "distlab_0123456789abcdef0123456789abcdef0",
            "distlab_0123456789abcdef'; DROP TABLE x; --",
        ] {
            assert_eq!(Gid::parse(bad), Err(InvalidGid), "{bad}");
        }
        assert!(serde_json::from_str::<Gid>("\"distlab_x\"").is_err());
    }
}
