//! The rules of a global transaction, with no IO: how votes become a decision and which states follow.
//!
//! ```text
//!   PREPARING ──all yes──► COMMITTING ──every branch acknowledged──► COMMITTED
//!       │
//!       └──a no, a missing vote, or the timeout (presumed abort)──► ABORTING ──acknowledged──► ABORTED
//! ```
//!
//! The decision is logged (COMMITTING/ABORTING) before any participant hears it; from then on it never
//! changes, whoever drives phase 2 (the request, or recovery after a crash).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::wire::Vote;

/// Where a global transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxState {
    /// Phase 1: votes are being collected; nothing is decided.
    Preparing,
    /// Decided commit (logged); phase 2 under way.
    Committing,
    /// Decided abort (logged); phase 2 under way.
    Aborting,
    /// Every branch committed.
    Committed,
    /// Every branch rolled back (or never prepared).
    Aborted,
}

impl TxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "PREPARING",
            Self::Committing => "COMMITTING",
            Self::Aborting => "ABORTING",
            Self::Committed => "COMMITTED",
            Self::Aborted => "ABORTED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Preparing,
            Self::Committing,
            Self::Aborting,
            Self::Committed,
            Self::Aborted,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The decision this state carries, if it is decided.
    pub fn decision(self) -> Option<Decision> {
        match self {
            Self::Preparing => None,
            Self::Committing | Self::Committed => Some(Decision::Commit),
            Self::Aborting | Self::Aborted => Some(Decision::Abort),
        }
    }

    /// Whether phase 2 is done.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Committed | Self::Aborted)
    }
}

/// What the coordinator decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Commit,
    Abort,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Abort => "abort",
        }
    }

    /// The state logged when this decision is taken.
    pub fn deciding_state(self) -> TxState {
        match self {
            Self::Commit => TxState::Committing,
            Self::Abort => TxState::Aborting,
        }
    }

    /// The state once every branch acknowledged it.
    pub fn final_state(self) -> TxState {
        match self {
            Self::Commit => TxState::Committed,
            Self::Abort => TxState::Aborted,
        }
    }
}

/// One participant's answer to prepare: its vote and reason, or `None` when it did not answer in time (a
/// missing vote counts as no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot<'a> {
    pub participant: &'a str,
    pub vote: Option<(Vote, Option<String>)>,
}

/// Commit iff every participant voted yes. The reason of an abort is the first no's reason, else the first
/// missing vote's participant.
pub fn decide(ballots: &[Ballot<'_>]) -> (Decision, Option<String>) {
    for ballot in ballots {
        match &ballot.vote {
            Some((Vote::Yes, _)) => {}
            Some((Vote::No, reason)) => {
                let reason = reason
                    .clone()
                    .unwrap_or_else(|| format!("{} voted no", ballot.participant));
                return (Decision::Abort, Some(reason));
            }
            None => {}
        }
    }
    match ballots.iter().find(|b| b.vote.is_none()) {
        Some(missing) => (
            Decision::Abort,
            Some(format!("{}_unavailable", missing.participant)),
        ),
        None => (Decision::Commit, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot<'a>(participant: &'a str, vote: Option<Vote>, reason: Option<&str>) -> Ballot<'a> {
        Ballot {
            participant,
            vote: vote.map(|v| (v, reason.map(str::to_owned))),
        }
    }

    #[test]
    fn all_yes_commits() {
        let ballots = [
            ballot("order", Some(Vote::Yes), None),
            ballot("inventory", Some(Vote::Yes), None),
        ];
        assert_eq!(decide(&ballots), (Decision::Commit, None));
    }

    #[test]
    fn a_no_aborts_with_its_reason_even_when_another_is_missing() {
        let ballots = [
            ballot("order", None, None),
            ballot("inventory", Some(Vote::No), Some("insufficient_stock")),
        ];
        assert_eq!(
            decide(&ballots),
            (Decision::Abort, Some("insufficient_stock".into()))
        );
    }

    #[test]
    fn a_missing_vote_is_a_no() {
        let ballots = [
            ballot("order", Some(Vote::Yes), None),
            ballot("inventory", None, None),
        ];
        assert_eq!(
            decide(&ballots),
            (Decision::Abort, Some("inventory_unavailable".into()))
        );
    }

    #[test]
    fn states_carry_their_decision() {
        for state in [
            TxState::Preparing,
            TxState::Committing,
            TxState::Aborting,
            TxState::Committed,
            TxState::Aborted,
        ] {
            assert_eq!(TxState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TxState::Preparing.decision(), None);
        assert_eq!(TxState::Committed.decision(), Some(Decision::Commit));
        assert_eq!(Decision::Abort.deciding_state(), TxState::Aborting);
        assert!(Decision::Abort.final_state().is_final());
        assert!(!TxState::Committing.is_final());
    }
}
