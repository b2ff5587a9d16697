//! The core under the `stateright` model checker: 2 proposers and 3 acceptors on a network that reorders
//! and duplicates messages (and, in one test, loses them), a proposer's retry a time-out that may fire at
//! any moment. The checker visits the reachable states and checks the `always` property **agreement**: a
//! learner that hears every acceptance (fed from each acceptor's log, a ghost variable of the model) never
//! sees two different values chosen.
//!
//! Three variants: the real thing (agreement holds), the planted bug [`ValueRule::AlwaysOwn`] (the checker
//! must find a counterexample), and the acceptor of the seed's wording, which records `[n, v]` when it
//! answers a prepare (the prepare then has to carry `v`, as the seed's "提议请求 [n, v]" does). Numbers are
//! in docs/paxos.md.

use std::borrow::Cow;
use std::fmt;
use std::time::Instant;

use stateright::actor::{Actor, ActorModel, ActorModelAction, Id, LossyNetwork, Network, Out};
use stateright::{Checker, Expectation, Model};

use super::*;

const PROPOSERS: usize = 2;
const ACCEPTORS: usize = 3;
/// The values of the two proposers, the seed's A and B.
const VALUES: [Value; PROPOSERS] = [8, 5];

/// What travels: a Paxos message, or the seed-literal prepare that carries a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Wire {
    Paxos(Message),
    SeedPrepare { n: ProposalNumber, v: Value },
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wire::Paxos(m) => write!(f, "{m}"),
            Wire::SeedPrepare { n, v } => write!(f, "prepare [n={n}, v={v}] (seed's wording)"),
        }
    }
}

/// Which acceptor the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AcceptorKind {
    /// [`Acceptor`]: records a value only when it accepts.
    Lamport,
    /// The seed's wording: records `[n, v]` when it answers a prepare too.
    SeedLiteral,
}

/// The seed's acceptor, taken at its word (model-only: distlab's acceptor is [`Acceptor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct SeedLiteralAcceptor {
    promised: Option<ProposalNumber>,
    recorded: Option<Proposal>,
}

impl SeedLiteralAcceptor {
    fn handle(&mut self, from: Id, wire: Wire, o: &mut Out<Node>, log: &mut AcceptedLog) {
        let below = |n| self.promised.is_some_and(|p| n < p);
        match wire {
            Wire::SeedPrepare { n, v } if !below(n) => {
                o.send(
                    from,
                    Wire::Paxos(Message::Promise {
                        n,
                        accepted: self.recorded,
                    }),
                );
                // "设置当前接收到的提议为 [n, v]": the value is recorded at the prepare.
                self.recorded = Some(Proposal { n, v });
                self.promised = Some(n);
            }
            Wire::Paxos(Message::Accept { n, v }) if !below(n) => {
                self.recorded = Some(Proposal { n, v });
                self.promised = Some(n);
                log.insert(Proposal { n, v });
            }
            _ => {}
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Proposer {
        index: usize,
        rule: ValueRule,
        seed_prepare: bool,
        retries: u8,
    },
    Acceptor(AcceptorKind),
}

impl Node {
    /// The value a proposer of the seed's wording sends with its prepare (`None` for real Paxos).
    fn seed_prepare(&self) -> Option<Value> {
        match self {
            Node::Proposer {
                seed_prepare: true,
                index,
                ..
            } => Some(VALUES[*index]),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeState {
    Proposer {
        proposer: Proposer,
        retries_left: u8,
    },
    Acceptor(Acceptor, AcceptedLog),
    SeedAcceptor(SeedLiteralAcceptor, AcceptedLog),
}

/// Every proposal an acceptor accepted: a ghost variable of the model (the acceptor itself keeps only the
/// last), from which the property decides what was chosen.
type AcceptedLog = BTreeSet<Proposal>;

/// Notes the acceptances among an acceptor's outgoing messages in its ghost log.
fn log_acceptances(out: &[Outgoing], log: &mut AcceptedLog) {
    for o in out {
        if let Message::Accepted { n, v } = o.message {
            log.insert(Proposal { n, v });
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Retry;

fn node_id(id: Id) -> NodeId {
    NodeId::try_from(usize::from(id)).unwrap_or(NodeId::MAX)
}

/// Sends the core's outgoing messages on the model's network.
fn route(outgoing: Vec<Outgoing>, seed_prepare: Option<Value>, o: &mut Out<Node>) {
    for Outgoing { to, message } in outgoing {
        let wire = match (message, seed_prepare) {
            (Message::Prepare { n }, Some(v)) => Wire::SeedPrepare { n, v },
            (m, _) => Wire::Paxos(m),
        };
        match to {
            Recipient::Acceptors => {
                for a in PROPOSERS..PROPOSERS + ACCEPTORS {
                    o.send(a.into(), wire);
                }
            }
            // The learner is not on the network: the property learns from the acceptors' logs (below).
            Recipient::Learners => {}
            Recipient::Node(id) => o.send(Id::from(id as usize), wire),
        }
    }
}

impl Actor for Node {
    type Msg = Wire;
    type Timer = Retry;
    type State = NodeState;
    type Storage = ();
    type Random = ();

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> NodeState {
        match self {
            Node::Proposer {
                index,
                rule,
                seed_prepare,
                retries,
            } => {
                let numbering = Numbering::for_proposer(*index as u64, PROPOSERS as u64);
                let mut proposer =
                    Proposer::new(VALUES[*index], numbering, ACCEPTORS).with_rule(*rule);
                let out = proposer.start();
                route(out, seed_prepare.then_some(proposer.value()), o);
                if *retries > 0 {
                    o.set_timer(Retry, stateright::actor::model_timeout());
                }
                NodeState::Proposer {
                    proposer,
                    retries_left: *retries,
                }
            }
            Node::Acceptor(AcceptorKind::Lamport) => {
                NodeState::Acceptor(Acceptor::new(), AcceptedLog::new())
            }
            Node::Acceptor(AcceptorKind::SeedLiteral) => {
                NodeState::SeedAcceptor(SeedLiteralAcceptor::default(), AcceptedLog::new())
            }
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<'_, NodeState>,
        src: Id,
        msg: Wire,
        o: &mut Out<Self>,
    ) {
        let seed_prepare = self.seed_prepare();
        match (state.to_mut(), msg) {
            (NodeState::Proposer { proposer, .. }, Wire::Paxos(m)) => {
                let out = proposer.handle(node_id(src), m);
                route(out, seed_prepare, o);
            }
            (NodeState::Acceptor(acceptor, log), Wire::Paxos(m)) => {
                let out = acceptor.handle(node_id(src), m);
                log_acceptances(&out, log);
                route(out, None, o);
            }
            (NodeState::SeedAcceptor(acceptor, log), wire) => acceptor.handle(src, wire, o, log),
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<'_, NodeState>, _: &Retry, o: &mut Out<Self>) {
        let seed_prepare = self.seed_prepare();
        if let NodeState::Proposer {
            proposer,
            retries_left,
        } = state.to_mut()
            && *retries_left > 0
        {
            *retries_left -= 1;
            let out = proposer.retry();
            route(out, seed_prepare, o);
            if *retries_left > 0 {
                o.set_timer(Retry, stateright::actor::model_timeout());
            }
        }
    }
}

/// One variant of the model.
#[derive(Clone, Copy, Debug)]
struct Variant {
    rule: ValueRule,
    acceptor: AcceptorKind,
    /// Retries of A and of B.
    retries: [u8; PROPOSERS],
    lossy: bool,
    /// Stop at the first counterexample (the variants expected to fail).
    stop_at_violation: bool,
    /// Explore only this many steps from the start.
    max_depth: Option<usize>,
    /// Depth first (finds a deep counterexample sooner; breadth first finds the shortest).
    depth_first: bool,
}

fn model(variant: Variant) -> ActorModel<Node> {
    let proposers = (0..PROPOSERS).map(|index| Node::Proposer {
        index,
        rule: variant.rule,
        seed_prepare: variant.acceptor == AcceptorKind::SeedLiteral,
        retries: variant.retries[index],
    });
    ActorModel::new((), ())
        .actors(proposers)
        .actors((0..ACCEPTORS).map(|_| Node::Acceptor(variant.acceptor)))
        .init_network(Network::new_unordered_duplicating([]))
        .lossy_network(if variant.lossy {
            LossyNetwork::Yes
        } else {
            LossyNetwork::No
        })
        .property(Expectation::Always, "agreement", |_, state| {
            learner(state).chosen_values().len() <= 1
        })
        .property(Expectation::Sometimes, "a value is chosen", |_, state| {
            learner(state).chosen().is_some()
        })
}

/// A learner that heard every acceptance the acceptors made so far.
fn learner(state: &stateright::actor::ActorModelState<Node>) -> Learner {
    let mut learner = Learner::new(ACCEPTORS);
    for (i, s) in state.actor_states.iter().enumerate() {
        let log = match &**s {
            NodeState::Acceptor(_, log) | NodeState::SeedAcceptor(_, log) => log,
            NodeState::Proposer { .. } => continue,
        };
        let from = NodeId::try_from(i).unwrap_or(NodeId::MAX);
        for p in log {
            learner.handle(from, Message::Accepted { n: p.n, v: p.v });
        }
    }
    learner
}

fn name(id: Id) -> &'static str {
    ["A", "B", "X", "Y", "Z"]
        .get(usize::from(id))
        .copied()
        .unwrap_or("?")
}

/// A counterexample in the seed's terms, one action per line.
fn explain(actions: &[ActorModelAction<Wire, Retry, ()>]) -> String {
    let mut out = String::new();
    for (i, action) in actions.iter().enumerate() {
        let line = match action {
            ActorModelAction::Deliver { src, dst, msg } => {
                format!("{} → {}: {msg}", name(*src), name(*dst))
            }
            ActorModelAction::Drop(envelope) => format!(
                "lost: {} → {}: {}",
                name(envelope.src),
                name(envelope.dst),
                envelope.msg
            ),
            ActorModelAction::Timeout(id, _) => {
                format!("{} times out and retries with a higher number", name(*id))
            }
            other => format!("{other:?}"),
        };
        out.push_str(&format!("{:>3}. {line}\n", i + 1));
    }
    out
}

struct Run {
    states: usize,
    unique: usize,
    seconds: f64,
    counterexample: Option<Vec<ActorModelAction<Wire, Retry, ()>>>,
    chosen_somewhere: bool,
}

fn check(variant: Variant) -> Run {
    let started = Instant::now();
    let mut checker = model(variant).checker().threads(2);
    if variant.stop_at_violation {
        checker = checker.finish_when(stateright::HasDiscoveries::AllOf(
            ["agreement"].into_iter().collect(),
        ));
    }
    if let Some(depth) = variant.max_depth {
        checker = checker.target_max_depth(depth);
    }
    if variant.depth_first {
        summarise(variant, started, checker.spawn_dfs().join())
    } else {
        summarise(variant, started, checker.spawn_bfs().join())
    }
}

fn summarise(variant: Variant, started: Instant, checker: impl Checker<ActorModel<Node>>) -> Run {
    let run = Run {
        states: checker.state_count(),
        unique: checker.unique_state_count(),
        seconds: started.elapsed().as_secs_f64(),
        counterexample: checker.discovery("agreement").map(|p| p.into_actions()),
        chosen_somewhere: checker.discovery("a value is chosen").is_some(),
    };
    println!(
        "{variant:?}: {} states ({} unique) in {:.2} s, max depth {}",
        run.states,
        run.unique,
        run.seconds,
        checker.max_depth()
    );
    run
}

const REAL: Variant = Variant {
    rule: ValueRule::HighestAccepted,
    acceptor: AcceptorKind::Lamport,
    retries: [0, 0],
    lossy: false,
    stop_at_violation: false,
    max_depth: None,
    depth_first: false,
};

/// Every reachable state of two competing proposals (one ballot each) on a duplicating network. Loss is
/// left out here: on a duplicating network a lost message is one never delivered, which the checker
/// already explores, so loss reaches no other state of the nodes (stateright's documentation says the
/// same); the next test has it.
#[test]
fn agreement_holds_over_every_reachable_state() {
    let run = check(REAL);
    assert!(
        run.counterexample.is_none(),
        "two values chosen:\n{}",
        explain(&run.counterexample.unwrap_or_default())
    );
    assert!(run.chosen_somewhere, "the model never chooses a value");
    assert!(
        run.unique > 100_000,
        "the state space is suspiciously small"
    );
}

/// The same on a lossy network, with a retry each, as far as a few seconds take the checker.
#[test]
fn agreement_holds_on_a_lossy_network_with_retries_within_8_steps() {
    let run = check(Variant {
        retries: [1, 1],
        lossy: true,
        max_depth: Some(8),
        ..REAL
    });
    assert!(
        run.counterexample.is_none(),
        "two values chosen:\n{}",
        explain(&run.counterexample.unwrap_or_default())
    );
    assert!(run.chosen_somewhere, "no value is chosen within 8 steps");
}

#[test]
fn the_planted_bug_is_found_with_a_counterexample() {
    let run = check(Variant {
        rule: ValueRule::AlwaysOwn,
        stop_at_violation: true,
        ..REAL
    });
    let actions = run
        .counterexample
        .expect("the checker finds two values chosen when a proposer ignores what it was told");
    println!(
        "counterexample (a proposer that always proposes its own value), {} steps:\n{}",
        actions.len(),
        explain(&actions)
    );
}

#[test]
fn the_seeds_wording_records_at_prepare_and_breaks_agreement() {
    let run = check(Variant {
        acceptor: AcceptorKind::SeedLiteral,
        retries: [1, 0],
        stop_at_violation: true,
        depth_first: true,
        ..REAL
    });
    let actions = run
        .counterexample
        .expect("the checker finds two values chosen when acceptors record a value at prepare");
    println!(
        "counterexample (acceptors record [n, v] at the prepare, as the seed words it), {} steps:\n{}",
        actions.len(),
        explain(&actions)
    );
}
