//! Single-decree Paxos — seed section 五 — as three IO-free state machines: message in, messages out.
//!
//! - A [`Proposer`] asks every acceptor to **prepare** a numbered proposal (phase 1); once a majority has
//!   **promised**, it asks them to **accept** `[n, v]` (phase 2), where `v` is the value of the
//!   highest-numbered proposal any of those acceptors reported, or its own value if none reported one.
//! - An [`Acceptor`] promises never to accept a proposal numbered below the highest prepare it answered,
//!   reports the proposal it last accepted ("no previous" if none), and accepts `[n, v]` unless it promised
//!   a higher number; each acceptance is announced to the learners.
//! - A [`Learner`] counts the acceptances: a proposal accepted by a majority is **chosen**.
//!
//! Nothing here does IO, keeps time or picks at random: a transport (the model checker of the tests, the
//! HTTP acceptor of the `http` feature, `cargo xtask scenario paxos`) delivers [`Message`]s to `handle` and
//! routes the [`Outgoing`] messages it returns.
//!
//! **Where this differs from the seed's wording.** The seed has an acceptor *record* the proposal `[n, v]`
//! when it answers a prepare ("设置当前接收到的提议为 [n1, v1]"). In Lamport's Paxos — implemented here — a
//! prepare carries no value, and an acceptor records a value only when it *accepts* one in phase 2. The
//! model check in the tests shows what the seed's wording costs: with it, two different values can be
//! chosen (docs/paxos.md).

#[cfg(feature = "http")]
pub mod http;
#[cfg(test)]
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Who sent a message: an index the transport gives each node (acceptors must have distinct ids).
pub type NodeId = u32;

/// A proposed value (the seed's `v`).
pub type Value = u64;

/// A proposal number (the seed's `n`). Numbers are unique per proposer: see [`Numbering`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ProposalNumber(pub u64);

impl fmt::Display for ProposalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A proposal `[n, v]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Proposal {
    /// Its number.
    pub n: ProposalNumber,
    /// Its value.
    pub v: Value,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[n={}, v={}]", self.n, self.v)
    }
}

/// The four messages of single-decree Paxos. JSON: `{"type": "prepare", "n": 2}`,
/// `{"type": "promise", "n": 2, "accepted": null}`, `{"type": "accept", "n": 4, "v": 8}`,
/// `{"type": "accepted", "n": 4, "v": 8}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Phase 1a, proposer → acceptors: "promise me not to accept anything numbered below `n`".
    Prepare {
        /// The proposal number being prepared.
        n: ProposalNumber,
    },
    /// Phase 1b, acceptor → that proposer: the promise, with the proposal the acceptor accepted last
    /// (`None`: "no previous").
    Promise {
        /// The number promised (the prepare's).
        n: ProposalNumber,
        /// The proposal this acceptor accepted last, if any.
        accepted: Option<Proposal>,
    },
    /// Phase 2a, proposer → acceptors: "accept `[n, v]`".
    Accept {
        /// The proposal number, the one the majority promised.
        n: ProposalNumber,
        /// The value: the highest-numbered reported one, or the proposer's own.
        v: Value,
    },
    /// Phase 2b, acceptor → learners: "I accepted `[n, v]`".
    Accepted {
        /// The number accepted.
        n: ProposalNumber,
        /// The value accepted.
        v: Value,
    },
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Prepare { n } => write!(f, "prepare [n={n}]"),
            Message::Promise { n, accepted: None } => {
                write!(f, "promise [n={n}]: no previous")
            }
            Message::Promise {
                n,
                accepted: Some(p),
            } => write!(f, "promise [n={n}]: previously accepted {p}"),
            Message::Accept { n, v } => write!(f, "accept request [n={n}, v={v}]"),
            Message::Accepted { n, v } => write!(f, "accepted [n={n}, v={v}]"),
        }
    }
}

/// Where an outgoing message goes; the transport knows who the acceptors and learners are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Recipient {
    /// Every acceptor.
    Acceptors,
    /// Every learner.
    Learners,
    /// One node: the sender of the message being answered.
    Node(NodeId),
}

/// A message to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outgoing {
    /// Its recipients.
    pub to: Recipient,
    /// The message.
    pub message: Message,
}

/// The smallest number of acceptors that is a majority of `acceptors`.
pub fn majority(acceptors: usize) -> usize {
    acceptors / 2 + 1
}

/// An acceptor: the highest number it promised and the proposal it accepted last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Acceptor {
    promised: Option<ProposalNumber>,
    accepted: Option<Proposal>,
}

impl Acceptor {
    /// An acceptor that has promised and accepted nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest number it promised (or accepted).
    pub fn promised(&self) -> Option<ProposalNumber> {
        self.promised
    }

    /// The proposal it accepted last.
    pub fn accepted(&self) -> Option<Proposal> {
        self.accepted
    }

    /// Handles one message. A prepare numbered below the promise, or an accept numbered below it, is
    /// dropped: nothing is answered (as in the seed). A prepare at or above it is promised and answered
    /// with the proposal accepted last; an accept at or above it is accepted and announced to the learners.
    /// Answering a repeated prepare again, or accepting a repeated accept again, changes nothing, so
    /// duplicated messages are harmless. Promises and acceptances are ignored.
    pub fn handle(&mut self, from: NodeId, message: Message) -> Vec<Outgoing> {
        match message {
            Message::Prepare { n } => {
                if self.promised.is_some_and(|promised| n < promised) {
                    return Vec::new();
                }
                self.promised = Some(n);
                vec![Outgoing {
                    to: Recipient::Node(from),
                    message: Message::Promise {
                        n,
                        accepted: self.accepted,
                    },
                }]
            }
            Message::Accept { n, v } => {
                if self.promised.is_some_and(|promised| n < promised) {
                    return Vec::new();
                }
                self.promised = Some(n);
                self.accepted = Some(Proposal { n, v });
                vec![Outgoing {
                    to: Recipient::Learners,
                    message: Message::Accepted { n, v },
                }]
            }
            Message::Promise { .. } | Message::Accepted { .. } => Vec::new(),
        }
    }
}

/// The numbers a proposer uses: `first`, `first + step`, `first + 2·step`, … Proposers that share one
/// `step` and whose `first`s differ modulo it never use the same number — the seed's A (2, 12, 22, …) and
/// B (4, 14, 24, …) with step 10, or [`Numbering::for_proposer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Numbering {
    /// The first number.
    pub first: u64,
    /// The distance between two numbers; at least 1.
    pub step: u64,
}

impl Numbering {
    /// Proposer `index` (0-based) of `proposers`: numbers `index + 1`, `index + 1 + proposers`, …
    pub fn for_proposer(index: u64, proposers: u64) -> Self {
        Self {
            first: index + 1,
            step: proposers.max(1),
        }
    }

    /// This proposer's smallest number above `floor`.
    pub fn above(&self, floor: ProposalNumber) -> ProposalNumber {
        let step = self.step.max(1);
        if floor.0 < self.first {
            return ProposalNumber(self.first);
        }
        let k = (floor.0 - self.first) / step + 1;
        ProposalNumber(self.first + k * step)
    }
}

/// How a proposer picks the value of its accept request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ValueRule {
    /// Paxos: the value of the highest-numbered proposal the promises reported, else its own.
    #[default]
    HighestAccepted,
    /// A planted bug for the model checker: always its own value, ignoring what the promises reported.
    AlwaysOwn,
}

/// Where a proposer is in its current attempt.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProposerPhase {
    /// Not started.
    Idle,
    /// Phase 1: waiting for promises to the current number; those received so far, by acceptor.
    Preparing {
        /// The promises received, by acceptor: the proposal each reported.
        promises: BTreeMap<NodeId, Option<Proposal>>,
    },
    /// Phase 2: the accept request `[n, v]` was sent.
    Accepting {
        /// The proposal sent.
        proposal: Proposal,
    },
}

/// A proposer with a value of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proposer {
    value: Value,
    numbering: Numbering,
    acceptors: usize,
    rule: ValueRule,
    n: ProposalNumber,
    highest_seen: ProposalNumber,
    phase: ProposerPhase,
}

impl Proposer {
    /// A proposer of `value` to `acceptors` acceptors, numbering its proposals with `numbering`.
    pub fn new(value: Value, numbering: Numbering, acceptors: usize) -> Self {
        Self {
            value,
            numbering,
            acceptors,
            rule: ValueRule::HighestAccepted,
            n: ProposalNumber(0),
            highest_seen: ProposalNumber(0),
            phase: ProposerPhase::Idle,
        }
    }

    /// The same with another rule for the value (the model checker's planted bug).
    pub fn with_rule(mut self, rule: ValueRule) -> Self {
        self.rule = rule;
        self
    }

    /// Its own value.
    pub fn value(&self) -> Value {
        self.value
    }

    /// The number of its current attempt (0 before [`Proposer::start`]).
    pub fn number(&self) -> ProposalNumber {
        self.n
    }

    /// Where it is.
    pub fn phase(&self) -> &ProposerPhase {
        &self.phase
    }

    /// Phase 1 with its first number: a prepare to every acceptor.
    pub fn start(&mut self) -> Vec<Outgoing> {
        self.n = self.numbering.above(ProposalNumber(0));
        self.prepare()
    }

    /// A new attempt (after a time-out): its smallest number above every number it used or heard of.
    pub fn retry(&mut self) -> Vec<Outgoing> {
        self.n = self.numbering.above(self.n.max(self.highest_seen));
        self.prepare()
    }

    /// Notes a number some acceptor promised (a transport that answers a dropped prepare with the
    /// acceptor's promise, as the HTTP acceptor does), so the next [`Proposer::retry`] goes above it.
    pub fn observe(&mut self, n: ProposalNumber) {
        self.highest_seen = self.highest_seen.max(n);
    }

    fn prepare(&mut self) -> Vec<Outgoing> {
        self.phase = ProposerPhase::Preparing {
            promises: BTreeMap::new(),
        };
        vec![Outgoing {
            to: Recipient::Acceptors,
            message: Message::Prepare { n: self.n },
        }]
    }

    /// Handles a promise: once promises to the current number came from a majority, sends the accept
    /// request. A promise to another number, or one arriving after the accept request went out, is
    /// ignored (its reported proposal still raises the floor of the next retry).
    pub fn handle(&mut self, from: NodeId, message: Message) -> Vec<Outgoing> {
        let Message::Promise { n, accepted } = message else {
            return Vec::new();
        };
        if let Some(p) = accepted {
            self.observe(p.n);
        }
        if n != self.n {
            return Vec::new();
        }
        let ProposerPhase::Preparing { promises } = &mut self.phase else {
            return Vec::new();
        };
        promises.insert(from, accepted);
        if promises.len() < majority(self.acceptors) {
            return Vec::new();
        }
        let reported = promises.values().flatten().max_by_key(|p| p.n);
        let v = match (self.rule, reported) {
            (ValueRule::HighestAccepted, Some(p)) => p.v,
            (ValueRule::HighestAccepted, None) | (ValueRule::AlwaysOwn, _) => self.value,
        };
        let proposal = Proposal { n: self.n, v };
        self.phase = ProposerPhase::Accepting { proposal };
        vec![Outgoing {
            to: Recipient::Acceptors,
            message: Message::Accept { n: self.n, v },
        }]
    }
}

/// A learner: which acceptors announced accepting which proposal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Learner {
    acceptors: usize,
    votes: BTreeMap<Proposal, BTreeSet<NodeId>>,
    chosen: Vec<Proposal>,
}

impl Learner {
    /// A learner of a cluster of `acceptors` acceptors.
    pub fn new(acceptors: usize) -> Self {
        Self {
            acceptors,
            votes: BTreeMap::new(),
            chosen: Vec::new(),
        }
    }

    /// Handles an acceptance (anything else is ignored). A learner sends nothing.
    pub fn handle(&mut self, from: NodeId, message: Message) -> Vec<Outgoing> {
        if let Message::Accepted { n, v } = message {
            let proposal = Proposal { n, v };
            let voters = self.votes.entry(proposal).or_default();
            if voters.insert(from)
                && voters.len() == majority(self.acceptors)
                && !self.chosen.contains(&proposal)
            {
                self.chosen.push(proposal);
            }
        }
        Vec::new()
    }

    /// The chosen value: that of the first proposal a majority accepted.
    pub fn chosen(&self) -> Option<Value> {
        self.chosen.first().map(|p| p.v)
    }

    /// Every proposal a majority accepted, in the order they reached it: several, all with one value, is
    /// fine (a later proposer re-proposed the chosen value); two values mean Paxos was broken.
    pub fn chosen_proposals(&self) -> &[Proposal] {
        &self.chosen
    }

    /// The distinct values among [`Learner::chosen_proposals`]: at most one, or Paxos was broken.
    pub fn chosen_values(&self) -> BTreeSet<Value> {
        self.chosen.iter().map(|p| p.v).collect()
    }

    /// How many acceptors announced accepting `proposal`.
    pub fn votes(&self, proposal: Proposal) -> usize {
        self.votes.get(&proposal).map_or(0, BTreeSet::len)
    }
}

#[cfg(test)]
mod tests;
