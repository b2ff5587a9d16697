//! One test per rule of the seed's section 五, on the IO-free core.

use super::*;

const A: NodeId = 0;
const B: NodeId = 1;
const X: NodeId = 10;
const Y: NodeId = 11;
const Z: NodeId = 12;

fn n(n: u64) -> ProposalNumber {
    ProposalNumber(n)
}

fn seed_a() -> Proposer {
    Proposer::new(8, Numbering { first: 2, step: 10 }, 3)
}

fn seed_b() -> Proposer {
    Proposer::new(5, Numbering { first: 4, step: 10 }, 3)
}

fn to(to: Recipient, message: Message) -> Vec<Outgoing> {
    vec![Outgoing { to, message }]
}

#[test]
fn an_acceptor_answers_a_first_prepare_with_no_previous_and_promises_it() {
    let mut x = Acceptor::new();
    let out = x.handle(A, Message::Prepare { n: n(2) });
    assert_eq!(
        out,
        to(
            Recipient::Node(A),
            Message::Promise {
                n: n(2),
                accepted: None
            }
        )
    );
    assert_eq!(x.promised(), Some(n(2)));
    assert_eq!(
        x.accepted(),
        None,
        "a prepare records no value (real Paxos)"
    );
}

#[test]
fn an_acceptor_drops_a_prepare_numbered_below_its_promise() {
    let mut z = Acceptor::new();
    z.handle(B, Message::Prepare { n: n(4) });
    assert_eq!(z.handle(A, Message::Prepare { n: n(2) }), Vec::new());
    assert_eq!(z.promised(), Some(n(4)), "the promise is unchanged");
}

#[test]
fn an_acceptor_answers_a_higher_prepare_with_the_proposal_it_accepted_before() {
    let mut x = Acceptor::new();
    x.handle(A, Message::Prepare { n: n(2) });
    x.handle(A, Message::Accept { n: n(2), v: 8 });
    let out = x.handle(B, Message::Prepare { n: n(4) });
    assert_eq!(
        out,
        to(
            Recipient::Node(B),
            Message::Promise {
                n: n(4),
                accepted: Some(Proposal { n: n(2), v: 8 })
            }
        )
    );
    assert_eq!(x.promised(), Some(n(4)));
}

#[test]
fn an_acceptor_accepts_an_accept_at_its_promise_and_tells_the_learners() {
    let mut y = Acceptor::new();
    y.handle(B, Message::Prepare { n: n(4) });
    let out = y.handle(B, Message::Accept { n: n(4), v: 8 });
    assert_eq!(
        out,
        to(Recipient::Learners, Message::Accepted { n: n(4), v: 8 })
    );
    assert_eq!(y.accepted(), Some(Proposal { n: n(4), v: 8 }));
}

#[test]
fn an_acceptor_drops_an_accept_numbered_below_its_promise() {
    let mut y = Acceptor::new();
    y.handle(A, Message::Prepare { n: n(2) });
    y.handle(B, Message::Prepare { n: n(4) });
    assert_eq!(y.handle(A, Message::Accept { n: n(2), v: 8 }), Vec::new());
    assert_eq!(y.accepted(), None);
}

#[test]
fn a_proposer_hearing_from_a_majority_sends_the_value_of_the_highest_numbered_accepted_proposal() {
    let mut b = Proposer::new(5, Numbering { first: 6, step: 10 }, 3);
    assert_eq!(
        b.start(),
        to(Recipient::Acceptors, Message::Prepare { n: n(6) })
    );
    let promise = |accepted| Message::Promise { n: n(6), accepted };
    // One promise is not a majority of three.
    assert_eq!(
        b.handle(X, promise(Some(Proposal { n: n(2), v: 8 }))),
        Vec::new()
    );
    let out = b.handle(Y, promise(Some(Proposal { n: n(4), v: 7 })));
    assert_eq!(
        out,
        to(Recipient::Acceptors, Message::Accept { n: n(6), v: 7 }),
        "the value of [n=4] (the highest number reported), not of [n=2] nor B's own 5"
    );
    // A third promise after the accept request changes nothing.
    assert_eq!(b.handle(Z, promise(None)), Vec::new());
}

#[test]
fn a_proposer_told_of_no_previous_proposal_sends_its_own_value() {
    let mut a = seed_a();
    a.start();
    let promise = Message::Promise {
        n: n(2),
        accepted: None,
    };
    assert_eq!(a.handle(X, promise), Vec::new());
    assert_eq!(
        a.handle(X, promise),
        Vec::new(),
        "a duplicate is one promise"
    );
    assert_eq!(
        a.handle(Y, promise),
        to(Recipient::Acceptors, Message::Accept { n: n(2), v: 8 })
    );
}

#[test]
fn a_proposer_ignores_promises_to_another_number_and_retries_above_what_it_heard() {
    let mut a = seed_a();
    a.start();
    let stale = Message::Promise {
        n: n(1),
        accepted: Some(Proposal { n: n(14), v: 5 }),
    };
    assert_eq!(a.handle(X, stale), Vec::new());
    assert_eq!(
        a.retry(),
        to(Recipient::Acceptors, Message::Prepare { n: n(22) }),
        "A's numbers are 2, 12, 22: the first above the 14 it heard of"
    );
    a.observe(n(40));
    assert_eq!(
        a.retry(),
        to(Recipient::Acceptors, Message::Prepare { n: n(42) })
    );
}

#[test]
fn the_planted_bug_proposes_its_own_value_whatever_it_was_told() {
    let mut a = seed_a().with_rule(ValueRule::AlwaysOwn);
    a.start();
    let promise = Message::Promise {
        n: n(2),
        accepted: Some(Proposal { n: n(1), v: 5 }),
    };
    a.handle(X, promise);
    assert_eq!(
        a.handle(Y, promise),
        to(Recipient::Acceptors, Message::Accept { n: n(2), v: 8 })
    );
}

#[test]
fn a_learner_learns_a_value_accepted_by_a_majority_and_not_before() {
    let mut learner = Learner::new(3);
    let accepted = Message::Accepted { n: n(4), v: 8 };
    learner.handle(X, accepted);
    learner.handle(X, accepted);
    assert_eq!(
        learner.chosen(),
        None,
        "one acceptor, even twice, is not a majority"
    );
    // Another proposal with the same value does not add up with it.
    learner.handle(Y, Message::Accepted { n: n(2), v: 8 });
    assert_eq!(learner.chosen(), None);
    learner.handle(Y, accepted);
    assert_eq!(learner.chosen(), Some(8));
    learner.handle(Z, accepted);
    assert_eq!(learner.chosen_proposals(), &[Proposal { n: n(4), v: 8 }]);
}

#[test]
fn numbers_of_the_seeds_two_proposers_never_collide() {
    let (a, b) = (seed_a(), seed_b());
    let numbers = |p: &Proposer| {
        let mut p = p.clone();
        let mut out = vec![p.start()];
        out.extend((0..20).map(|_| p.retry()));
        out.iter()
            .map(|o| match o[0].message {
                Message::Prepare { n } => n,
                _ => unreachable!(),
            })
            .collect::<BTreeSet<_>>()
    };
    assert!(numbers(&a).is_disjoint(&numbers(&b)));
    assert_eq!(Numbering::for_proposer(1, 2).above(n(4)), n(6));
}

/// The seed's run with real Paxos: acceptor X accepts A's `[n=2, v=8]` before B's prepare reaches it, so B
/// is told of it and proposes 8 (the seed's pictures have A's accept dropped by all three, which under real
/// Paxos would leave B proposing its own 5).
#[test]
fn the_seeds_example_ends_with_v_8() {
    let (mut a, mut b) = (seed_a(), seed_b());
    let (mut x, mut y, mut z) = (Acceptor::new(), Acceptor::new(), Acceptor::new());
    let mut learner = Learner::new(3);
    let prepare_a = a.start()[0].message;
    let prepare_b = b.start()[0].message;
    let px = x.handle(A, prepare_a)[0].message;
    let py = y.handle(A, prepare_a)[0].message;
    let pz = z.handle(B, prepare_b)[0].message;
    assert_eq!(z.handle(A, prepare_a), Vec::new(), "Z promised 4: drops 2");
    a.handle(X, px);
    let accept_a = a.handle(Y, py)[0].message;
    assert_eq!(accept_a, Message::Accept { n: n(2), v: 8 });
    for m in x.handle(A, accept_a) {
        learner.handle(X, m.message);
    }
    b.handle(Z, pz);
    let bx = x.handle(B, prepare_b)[0].message;
    let accept_b = b.handle(X, bx)[0].message;
    assert_eq!(accept_b, Message::Accept { n: n(4), v: 8 }, "B adopts 8");
    y.handle(B, prepare_b);
    assert_eq!(y.handle(A, accept_a), Vec::new());
    assert_eq!(z.handle(A, accept_a), Vec::new());
    for (id, acceptor) in [(X, &mut x), (Y, &mut y), (Z, &mut z)] {
        for m in acceptor.handle(B, accept_b) {
            learner.handle(id, m.message);
        }
    }
    assert_eq!(learner.chosen(), Some(8));
    assert_eq!(learner.chosen_values().len(), 1);
}

#[test]
fn messages_are_json_with_a_type_tag() {
    let promise = Message::Promise {
        n: n(4),
        accepted: Some(Proposal { n: n(2), v: 8 }),
    };
    assert_eq!(
        serde_json::to_value(promise).ok(),
        Some(serde_json::json!({"type": "promise", "n": 4, "accepted": {"n": 2, "v": 8}}))
    );
    let none: Message = serde_json::from_str(r#"{"type":"promise","n":2,"accepted":null}"#)
        .unwrap_or(Message::Prepare { n: n(0) });
    assert_eq!(
        none,
        Message::Promise {
            n: n(2),
            accepted: None
        }
    );
    assert_eq!(none.to_string(), "promise [n=2]: no previous");
}
