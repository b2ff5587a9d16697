//! The coordinator of one global transaction as a state machine with no IO: an [`Event`] goes in, the next
//! [`Action`] comes out. [`crate::driver`] performs each action (an HTTP call, a log write, a fault point)
//! and feeds back what happened; [`crate::recovery`] starts a machine at phase 2 for a transaction a crash
//! or a lost message left undone, and asks [`reconcile`] what to do with a prepared branch it finds.
//!
//! ```text
//!  Prepare(all) ─votes─► LogVotes ─► Point(before_decision) ─► LogDecision ─logged─► Point(after_decision)
//!      ─► for each participant, in order: Point(phase2:<p>) ─► Tell ─ack─► [first ack: Point(after_first_ack)]
//!                                                        └dropped─► LogDropped
//!      ─► Complete
//! ```
//!
//! The order matters and is what the tests pin down: the decision is logged before anyone hears it, and
//! phase 2 tells the participants one after the other, so a crash between two of them leaves "only some
//! commit messages sent" (the seed's 数据不一致) until recovery finishes the job from the log.

use std::collections::VecDeque;
use std::fmt;

use distlab_twopc::protocol::{self, Ballot, Decision, TxState};
use distlab_twopc::wire::Vote;

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Phase 1: ask every participant to prepare, all at once (each through its `prepare:<name>` point).
    Prepare(Vec<String>),
    /// Record the votes (and why any is missing) in the log.
    LogVotes,
    /// Pass a fault point: it may delay, crash, or (at `phase2:<name>`) drop the message.
    Point(String),
    /// Make the decision durable; recovery may have logged one first (presumed abort), which stands.
    LogDecision {
        decision: Decision,
        reason: Option<String>,
    },
    /// Phase 2: send the decision to one participant (retried a few times).
    Tell {
        participant: String,
        decision: Decision,
    },
    /// Record that the fault switch dropped the phase-2 message to this participant.
    LogDropped(String),
    /// Mark the transaction complete if every branch has acknowledged (else recovery carries on).
    Complete,
}

/// What happened when the driver performed the last action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Answers to [`Action::Prepare`], in the participants' order: a vote and its reason, or `None` when
    /// the participant gave none (timeout, unreachable, dropped).
    Votes(Vec<Option<(Vote, Option<String>)>>),
    /// The decision the log holds after [`Action::LogDecision`].
    Decided(Decision),
    /// The fault point let the step through.
    Passed,
    /// The fault point dropped the message.
    Dropped,
    /// The participant acknowledged the decision.
    Acked,
    /// The participant did not acknowledge it (recovery will retry).
    NotAcked,
    /// A log write is done.
    Logged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Start,
    Preparing,
    LoggingVotes,
    BeforeDecision,
    Deciding,
    AfterDecision,
    /// Phase 2, at the point of the participant in front of the queue.
    AtPoint,
    Telling,
    AfterFirstAck,
    LoggingDrop,
    Completing,
    Done,
}

/// One global transaction's coordinator. See the module documentation.
#[derive(Debug, Clone)]
pub struct Machine {
    participants: Vec<String>,
    step: Step,
    ballots: Vec<Option<(Vote, Option<String>)>>,
    decision: Option<Decision>,
    /// Participants still to be told, in order.
    to_tell: VecDeque<String>,
    acknowledged: usize,
}

impl Machine {
    /// A new transaction over `participants` (in their configured order), already logged PREPARING.
    pub fn begin(participants: Vec<String>) -> Self {
        Self {
            participants,
            step: Step::Start,
            ballots: Vec::new(),
            decision: None,
            to_tell: VecDeque::new(),
            acknowledged: 0,
        }
    }

    /// A transaction whose `decision` is logged but whose phase 2 is not done: `pending` are the
    /// participants that have not acknowledged, in their configured order.
    pub fn phase2(decision: Decision, pending: Vec<String>) -> Self {
        Self {
            participants: pending.clone(),
            step: Step::AfterDecision,
            ballots: Vec::new(),
            decision: Some(decision),
            to_tell: pending.into(),
            acknowledged: 0,
        }
    }

    /// The decision, once logged.
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }

    /// The ballots of phase 1, for the log.
    pub fn ballots(&self) -> Vec<Ballot<'_>> {
        self.participants
            .iter()
            .zip(&self.ballots)
            .map(|(participant, vote)| Ballot {
                participant,
                vote: vote.clone(),
            })
            .collect()
    }

    /// The first action: feed `None`. Then feed what each action led to; `None` back means the
    /// transaction's run is over (complete, or left to recovery).
    pub fn step(&mut self, event: Option<Event>) -> Option<Action> {
        let event = match event {
            // Only a phase-2 message can be dropped; elsewhere a drop rule lets the step through.
            Some(Event::Dropped) if self.step != Step::AtPoint => Event::Passed,
            Some(event) => event,
            None => Event::Passed,
        };
        match (&self.step, event) {
            (Step::Start, _) => {
                self.step = Step::Preparing;
                Some(Action::Prepare(self.participants.clone()))
            }
            (Step::Preparing, Event::Votes(votes)) => {
                assert_eq!(votes.len(), self.participants.len(), "one answer each");
                self.ballots = votes;
                self.step = Step::LoggingVotes;
                Some(Action::LogVotes)
            }
            (Step::LoggingVotes, Event::Logged) => {
                self.step = Step::BeforeDecision;
                Some(Action::Point("before_decision".into()))
            }
            (Step::BeforeDecision, Event::Passed) => {
                let (decision, reason) = protocol::decide(&self.ballots());
                self.step = Step::Deciding;
                Some(Action::LogDecision { decision, reason })
            }
            (Step::Deciding, Event::Decided(decision)) => {
                self.decision = Some(decision);
                self.to_tell = self.participants.iter().cloned().collect();
                self.step = Step::AfterDecision;
                Some(Action::Point("after_decision".into()))
            }
            (Step::AfterDecision | Step::AfterFirstAck | Step::LoggingDrop, Event::Passed)
            | (Step::LoggingDrop, Event::Logged) => self.next_participant(),
            (Step::Telling, Event::NotAcked) => {
                self.to_tell.pop_front();
                self.next_participant()
            }
            (Step::AtPoint, Event::Passed) => {
                self.step = Step::Telling;
                Some(Action::Tell {
                    participant: self.to_tell[0].clone(),
                    decision: self.decision?,
                })
            }
            (Step::AtPoint, Event::Dropped) => {
                self.step = Step::LoggingDrop;
                self.to_tell.pop_front().map(Action::LogDropped)
            }
            (Step::Telling, Event::Acked) => {
                self.to_tell.pop_front();
                self.acknowledged += 1;
                if self.acknowledged == 1 {
                    self.step = Step::AfterFirstAck;
                    Some(Action::Point("after_first_ack".into()))
                } else {
                    self.next_participant()
                }
            }
            (Step::Completing, Event::Logged) | (Step::Done, _) => {
                self.step = Step::Done;
                None
            }
            (step, event) => panic!("event {event:?} does not follow step {step:?}"),
        }
    }

    fn next_participant(&mut self) -> Option<Action> {
        match self.to_tell.front() {
            Some(participant) => {
                self.step = Step::AtPoint;
                Some(Action::Point(format!("phase2:{participant}")))
            }
            None => {
                self.step = Step::Completing;
                Some(Action::Complete)
            }
        }
    }
}

/// What recovery does with a prepared branch it finds at a participant, given the log's state of its gid:
/// finish it as logged when the log says done; roll it back when the log never had it (nothing can have
/// decided commit); leave it alone while it is undecided (its deadline decides) or decided and still being
/// driven (phase 2 has its own schedule).
pub fn reconcile(logged: Option<TxState>) -> Option<Decision> {
    match logged {
        None => Some(Decision::Abort),
        Some(TxState::Preparing | TxState::Committing | TxState::Aborting) => None,
        Some(done @ (TxState::Committed | TxState::Aborted)) => done.decision(),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prepare(participants) => write!(f, "prepare {}", participants.join(", ")),
            Self::LogVotes => f.write_str("log votes"),
            Self::Point(name) => write!(f, "point {name}"),
            Self::LogDecision { decision, reason } => match reason {
                Some(reason) => write!(f, "log decision {} ({reason})", decision.as_str()),
                None => write!(f, "log decision {}", decision.as_str()),
            },
            Self::Tell {
                participant,
                decision,
            } => write!(f, "tell {participant} {}", decision.as_str()),
            Self::LogDropped(participant) => write!(f, "log dropped {participant}"),
            Self::Complete => f.write_str("complete"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Golden traces: each scenario runs a machine against scripted answers and compares the whole
    //! exchange, action by action (`→`) and answer by answer (`←`), with the expected text. A crash at a
    //! fault point ends the trace there (`✗`), and the recovery that follows is traced the same way.

    use super::*;

    const PARTICIPANTS: [&str; 2] = ["order", "inventory"];

    /// How the world answers, and where the coordinator crashes.
    #[derive(Default)]
    struct World {
        votes: Vec<Option<(Vote, Option<String>)>>,
        /// A decision recovery logged first (presumed abort).
        logged_first: Option<Decision>,
        /// Participants whose phase-2 message the fault switch drops.
        dropped: Vec<&'static str>,
        /// Participants that do not acknowledge.
        silent: Vec<&'static str>,
        crash_at: Option<&'static str>,
    }

    fn yes() -> Option<(Vote, Option<String>)> {
        Some((Vote::Yes, None))
    }

    fn no(reason: &str) -> Option<(Vote, Option<String>)> {
        Some((Vote::No, Some(reason.into())))
    }

    fn all_yes() -> World {
        World {
            votes: vec![yes(), yes()],
            ..World::default()
        }
    }

    fn render(event: &Event) -> String {
        match event {
            Event::Votes(votes) => {
                let votes: Vec<String> = PARTICIPANTS
                    .iter()
                    .zip(votes)
                    .map(|(p, v)| match v {
                        Some((Vote::Yes, _)) => format!("{p} yes"),
                        Some((Vote::No, reason)) => {
                            format!("{p} no ({})", reason.as_deref().unwrap_or(""))
                        }
                        None => format!("{p} none"),
                    })
                    .collect();
                format!("votes {}", votes.join(", "))
            }
            Event::Decided(decision) => format!("logged {}", decision.as_str()),
            other => format!("{other:?}").to_lowercase(),
        }
    }

    /// Runs `machine` against `world` and returns the trace, one line per action and answer.
    fn trace(mut machine: Machine, world: &World) -> String {
        let mut lines = Vec::new();
        let mut event = None;
        while let Some(action) = machine.step(event.take()) {
            lines.push(format!("→ {action}"));
            let answer = match &action {
                Action::Prepare(_) => Event::Votes(world.votes.clone()),
                Action::LogVotes | Action::LogDropped(_) | Action::Complete => Event::Logged,
                Action::Point(name) if world.crash_at == Some(name.as_str()) => {
                    lines.push("✗ crash".into());
                    break;
                }
                Action::Point(name) => match name.strip_prefix("phase2:") {
                    Some(p) if world.dropped.contains(&p) => Event::Dropped,
                    _ => Event::Passed,
                },
                Action::LogDecision { decision, .. } => {
                    Event::Decided(world.logged_first.unwrap_or(*decision))
                }
                Action::Tell { participant, .. }
                    if world.silent.contains(&participant.as_str()) =>
                {
                    Event::NotAcked
                }
                Action::Tell { .. } => Event::Acked,
            };
            if !matches!(answer, Event::Passed | Event::Logged) {
                lines.push(format!("← {}", render(&answer)));
            }
            event = Some(answer);
        }
        lines.join("\n")
    }

    fn begin() -> Machine {
        Machine::begin(PARTICIPANTS.map(String::from).to_vec())
    }

    fn recovery(decision: Decision, pending: &[&str]) -> Machine {
        Machine::phase2(decision, pending.iter().map(|p| p.to_string()).collect())
    }

    fn golden(actual: String, expected: &str) {
        let expected: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(actual, expected.join("\n"), "\n--- actual ---\n{actual}\n");
    }

    #[test]
    fn all_yes_logs_the_decision_before_anyone_hears_it_and_tells_one_after_the_other() {
        golden(
            trace(begin(), &all_yes()),
            "→ prepare order, inventory
             ← votes order yes, inventory yes
             → log votes
             → point before_decision
             → log decision commit
             ← logged commit
             → point after_decision
             → point phase2:order
             → tell order commit
             ← acked
             → point after_first_ack
             → point phase2:inventory
             → tell inventory commit
             ← acked
             → complete",
        );
    }

    #[test]
    fn one_no_aborts_everyone_with_its_reason() {
        let world = World {
            votes: vec![yes(), no("insufficient_stock")],
            ..World::default()
        };
        golden(
            trace(begin(), &world),
            "→ prepare order, inventory
             ← votes order yes, inventory no (insufficient_stock)
             → log votes
             → point before_decision
             → log decision abort (insufficient_stock)
             ← logged abort
             → point after_decision
             → point phase2:order
             → tell order abort
             ← acked
             → point after_first_ack
             → point phase2:inventory
             → tell inventory abort
             ← acked
             → complete",
        );
    }

    #[test]
    fn a_missing_vote_aborts_naming_the_participant() {
        let world = World {
            votes: vec![yes(), None],
            ..World::default()
        };
        let trace = trace(begin(), &world);
        assert!(
            trace.contains("→ log decision abort (inventory_unavailable)"),
            "{trace}"
        );
    }

    #[test]
    fn a_presumed_abort_logged_first_stands_over_an_all_yes() {
        let world = World {
            logged_first: Some(Decision::Abort),
            ..all_yes()
        };
        let trace = trace(begin(), &world);
        assert!(
            trace.contains("→ log decision commit\n← logged abort"),
            "{trace}"
        );
        assert!(trace.contains("→ tell order abort") && trace.contains("→ tell inventory abort"));
    }

    #[test]
    fn crash_before_the_decision_leaves_it_to_the_deadline() {
        let world = World {
            crash_at: Some("before_decision"),
            ..all_yes()
        };
        golden(
            trace(begin(), &world),
            "→ prepare order, inventory
             ← votes order yes, inventory yes
             → log votes
             → point before_decision
             ✗ crash",
        );
        // Nothing was decided: recovery presumes abort once the deadline passes, then drives it.
        golden(
            trace(recovery(Decision::Abort, &PARTICIPANTS), &World::default()),
            "→ point phase2:order
             → tell order abort
             ← acked
             → point after_first_ack
             → point phase2:inventory
             → tell inventory abort
             ← acked
             → complete",
        );
    }

    #[test]
    fn crash_after_the_decision_is_finished_by_recovery_as_logged() {
        let world = World {
            crash_at: Some("after_decision"),
            ..all_yes()
        };
        let crashed = trace(begin(), &world);
        assert!(
            crashed.ends_with(
                "→ log decision commit\n← logged commit\n→ point after_decision\n✗ crash"
            ),
            "{crashed}"
        );
        assert!(!crashed.contains("tell"), "nobody heard it");
        let recovered = trace(recovery(Decision::Commit, &PARTICIPANTS), &World::default());
        assert!(
            recovered.contains("→ tell order commit")
                && recovered.contains("→ tell inventory commit")
        );
        assert!(recovered.ends_with("→ complete"));
    }

    #[test]
    fn crash_after_the_first_ack_leaves_only_some_commits_sent_until_recovery() {
        let world = World {
            crash_at: Some("after_first_ack"),
            ..all_yes()
        };
        let crashed = trace(begin(), &world);
        assert!(
            crashed.contains("→ tell order commit\n← acked"),
            "{crashed}"
        );
        assert!(
            !crashed.contains("tell inventory"),
            "the seed's inconsistency: {crashed}"
        );
        golden(
            trace(
                recovery(Decision::Commit, &["inventory"]),
                &World::default(),
            ),
            "→ point phase2:inventory
             → tell inventory commit
             ← acked
             → point after_first_ack
             → complete",
        );
    }

    #[test]
    fn a_dropped_or_unacknowledged_phase2_message_is_logged_and_left_to_recovery() {
        let world = World {
            dropped: vec!["inventory"],
            ..all_yes()
        };
        let trace_dropped = trace(begin(), &world);
        assert!(
            trace_dropped.ends_with(
                "→ point phase2:inventory\n← dropped\n→ log dropped inventory\n→ complete"
            ),
            "{trace_dropped}"
        );
        // A participant killed while prepared does not acknowledge; the next participant is still told.
        let world = World {
            silent: vec!["order"],
            ..all_yes()
        };
        golden(
            trace(begin(), &world)
                .lines()
                .skip_while(|l| *l != "→ point after_decision")
                .collect::<Vec<_>>()
                .join("\n"),
            "→ point after_decision
             → point phase2:order
             → tell order commit
             ← notacked
             → point phase2:inventory
             → tell inventory commit
             ← acked
             → point after_first_ack
             → complete",
        );
    }

    #[test]
    fn a_drop_rule_outside_phase_2_lets_the_step_through() {
        let mut machine = begin();
        machine.step(None);
        machine.step(Some(Event::Votes(vec![yes(), yes()])));
        assert_eq!(
            machine.step(Some(Event::Logged)),
            Some(Action::Point("before_decision".into()))
        );
        assert!(matches!(
            machine.step(Some(Event::Dropped)),
            Some(Action::LogDecision {
                decision: Decision::Commit,
                ..
            })
        ));
    }

    #[test]
    fn reconciliation_finishes_what_the_log_finished_and_rolls_back_what_it_never_had() {
        assert_eq!(reconcile(None), Some(Decision::Abort));
        assert_eq!(reconcile(Some(TxState::Committed)), Some(Decision::Commit));
        assert_eq!(reconcile(Some(TxState::Aborted)), Some(Decision::Abort));
        for undecided_or_driven in [TxState::Preparing, TxState::Committing, TxState::Aborting] {
            assert_eq!(reconcile(Some(undecided_or_driven)), None);
        }
    }
}
