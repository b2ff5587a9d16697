//! A linearizability checker, in the manner of Jepsen's Knossos and Porcupine, for histories recorded
//! against a replicated key-value store with revisions.
//!
//! A history is *linearizable* when every operation can be given a single instant, its linearization
//! point, somewhere between its invocation and its response, such that applying all operations one at a
//! time in the order of those points to the sequential specification (below) produces exactly the
//! responses the clients saw. Informally: the store behaves like one copy of the data, and each
//! operation takes effect atomically at some moment while the client waits for it, so that an
//! operation that completed before another one started is ordered before it (a read that starts after a
//! write completed must see that write or a later one). Linearizability is *local*: a history is
//! linearizable iff its restriction to each key is, so [`check`] splits the history by key and checks
//! each key on its own, which keeps the search small.
//!
//! The search is Wing & Gong's, with Lowe's memoization, as in anishathalye/porcupine. The calls and
//! returns of a key's operations go into a doubly linked list sorted by time (a call before a return at
//! the same instant, so that operations that touch count as concurrent). A depth-first search, with an
//! explicit stack, walks the list from its head: an operation whose call comes before the first return
//! still in the list is a candidate to take effect next; if the specification allows it in the current
//! state, its call and return are unlinked ("lifted") from the list, the state advances, and the walk
//! restarts at the head. Reaching a return means the operation it belongs to cannot be put off any
//! longer, so the search backtracks: it pops the last lifted operation, links it back in ("unlifted"),
//! restores the state, and tries the next candidate. The history is linearizable when the list empties.
//! Lowe's cache remembers every (set of linearized operations, state) configuration reached — the set is
//! a bitset — and never explores one twice, since what can follow depends only on that pair. The problem
//! is NP-complete, so the worst case is exponential in the number of operations of a key; with the cache
//! it is bounded by (number of reachable subsets of operations) × (number of states), and for the
//! histories real clients produce — bounded concurrency, unique values that pin down which write a read
//! saw — the search is close to linear. A time budget bounds it anyway: exceeding it yields
//! [`CheckResult::Unknown`] rather than a verdict.
//!
//! Indeterminate operations — the client timed out or got a 5xx, so the operation may or may not have
//! taken effect — return at +∞ (Porcupine's trick): such an operation may be linearized anywhere after
//! its invocation, and linearizing it at the very end is the same as its never having happened. An
//! indeterminate read constrains nothing and is dropped. An indeterminate write or CAS did not tell the
//! client its revision, but since written values are unique, a read that observed its value (value,
//! revision) reveals it, and the checker fills it in before searching; such a write is then known to have
//! taken effect (a CAS, to have applied). A revision still unknown equals no CAS's expected revision
//! (those come from observed revisions) and no read observed it (else it would have been learned), but
//! it is known to lie above the revision it replaced, which still bounds the writes after it. An
//! indeterminate CAS that is linearized applies exactly when the current revision matches.
//!
//! The store's sequential specification, per key: the state is absent (revision 0) or a value with a
//! revision; a read returns the state; a write of a value returns a revision, legal iff above the
//! current one, and the value becomes the state with that revision; a CAS with an expected revision
//! either applies (legal iff the current revision is the expected one and the returned revision is above
//! it) or reports a mismatch (legal iff the current revision differs).
//!
//! Record operations with a [`Recorder`] (thread-safe, times measured from one start instant) or build a
//! [`History`] directly, then call [`check`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Identifies a client (one sequential process issuing operations one after the other).
pub type ClientId = u64;

/// What a client asked the store for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Read,
    Write {
        value: u64,
    },
    /// Compare-and-set: write `value` iff the key's revision is `expected_revision` (0: iff it is absent).
    Cas {
        expected_revision: u64,
        value: u64,
    },
}

/// What the store answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `None` if the key is absent, else `(value, revision)`.
    Read(Option<(u64, u64)>),
    Written {
        revision: u64,
    },
    CasApplied {
        revision: u64,
    },
    CasMismatch,
    /// No answer (time-out, 5xx): the operation may or may not have taken effect.
    Indeterminate,
}

/// One operation of a history.
#[derive(Debug, Clone)]
pub struct Operation {
    pub client: ClientId,
    pub key: String,
    pub input: Input,
    pub output: Output,
    /// When the client sent it, from the test's start instant.
    pub invoked: Duration,
    /// When the client got the answer; `None` iff the operation is indeterminate.
    ///
    /// An [`Output::Indeterminate`] with a time is treated as indeterminate all the same (the time is
    /// ignored); a known output without a time is kept, and may take effect any time after its
    /// invocation.
    pub returned: Option<Duration>,
}

impl Operation {
    /// Whether the operation may or may not have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        self.output == Output::Indeterminate
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Read => write!(f, "read"),
            Input::Write { value } => write!(f, "write {value}"),
            Input::Cas {
                expected_revision,
                value,
            } => write!(f, "cas {value} if revision {expected_revision}"),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Read(None) => write!(f, "absent"),
            Output::Read(Some((value, revision))) => write!(f, "{value} @ revision {revision}"),
            Output::Written { revision } => write!(f, "revision {revision}"),
            Output::CasApplied { revision } => write!(f, "applied, revision {revision}"),
            Output::CasMismatch => write!(f, "mismatch"),
            Output::Indeterminate => write!(f, "indeterminate"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} on {:?}: {} → {} (invoked {:?}, ",
            self.client, self.key, self.input, self.output, self.invoked
        )?;
        match self.returned {
            Some(returned) if !self.is_indeterminate() => write!(f, "returned {returned:?})"),
            _ => write!(f, "never returned)"),
        }
    }
}

/// The operations recorded by a test, in any order.
#[derive(Debug, Default, Clone)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, op: Operation) {
        self.operations.push(op);
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Records a completed operation.
    pub fn record(
        &mut self,
        client: ClientId,
        key: impl Into<String>,
        input: Input,
        output: Output,
        invoked: Duration,
        returned: Duration,
    ) {
        let returned = (output != Output::Indeterminate).then_some(returned);
        self.push(Operation {
            client,
            key: key.into(),
            input,
            output,
            invoked,
            returned,
        });
    }

    /// Records an operation that got no answer.
    pub fn record_indeterminate(
        &mut self,
        client: ClientId,
        key: impl Into<String>,
        input: Input,
        invoked: Duration,
    ) {
        self.push(Operation {
            client,
            key: key.into(),
            input,
            output: Output::Indeterminate,
            invoked,
            returned: None,
        });
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        Self {
            operations: iter.into_iter().collect(),
        }
    }
}

impl Extend<Operation> for History {
    fn extend<I: IntoIterator<Item = Operation>>(&mut self, iter: I) {
        self.operations.extend(iter);
    }
}

/// Records a history from concurrent clients (threads or tasks of one process), timing every operation
/// from one start instant: call [`Recorder::invoke`] just before sending a request and
/// [`Recorder::complete`] with its answer.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// An operation sent and not answered yet (see [`Recorder`]).
#[derive(Debug)]
#[must_use = "complete the invocation with its output, Output::Indeterminate if there was none"]
pub struct Invocation {
    pub client: ClientId,
    pub key: String,
    pub input: Input,
    pub invoked: Duration,
}

impl Recorder {
    /// A recorder whose times count from now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            history: Mutex::new(History::new()),
        }
    }

    /// The instant the times count from.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Notes that `client` is sending `input` on `key` now.
    pub fn invoke(&self, client: ClientId, key: impl Into<String>, input: Input) -> Invocation {
        Invocation {
            client,
            key: key.into(),
            input,
            invoked: self.start.elapsed(),
        }
    }

    /// Records the answer to `invocation`, received now ([`Output::Indeterminate`]: none came).
    pub fn complete(&self, invocation: Invocation, output: Output) {
        let returned = (output != Output::Indeterminate).then(|| self.start.elapsed());
        self.lock().push(Operation {
            client: invocation.client,
            key: invocation.key,
            input: invocation.input,
            output,
            invoked: invocation.invoked,
            returned,
        });
    }

    /// How many operations were recorded so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        self.lock().clone()
    }

    pub fn into_history(self) -> History {
        self.history
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The verdict of [`check`].
#[derive(Debug)]
#[must_use]
pub enum CheckResult {
    /// Every key's operations have a linearization. `operations` counts the operations checked
    /// (indeterminate reads are dropped), `keys` the keys they touch.
    Linearizable { keys: usize, operations: usize },
    /// A key whose operations have no linearization (the first such key in key order).
    Violation(Violation),
    /// The search exceeded its time budget before reaching a verdict.
    Unknown { reason: String },
    /// The history itself is invalid (an output that cannot answer its input, an operation returning
    /// before it was invoked, an indeterminate write of a value that another operation writes too).
    Malformed { reason: String },
}

impl CheckResult {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable { .. })
    }

    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckResult::Violation(violation) => Some(violation),
            _ => None,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable { keys, operations } => {
                write!(f, "linearizable: {operations} operations on {keys} keys")
            }
            CheckResult::Violation(violation) => write!(f, "not linearizable: {violation}"),
            CheckResult::Unknown { reason } => write!(f, "unknown: {reason}"),
            CheckResult::Malformed { reason } => write!(f, "malformed history: {reason}"),
        }
    }
}

/// Why a key's operations have no linearization.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    /// The operations around the point where the search got stuck, at the frontier of the longest
    /// linearizable prefix it found: the last (up to three) operations of that prefix, in linearization
    /// order, then the operations pending there — none of which can take effect next — by invocation.
    pub operations: Vec<Operation>,
    /// What the prefix leaves the key at, and why each pending operation cannot follow it.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

/// Checks that `history` is linearizable, key by key (in key order), giving up with
/// [`CheckResult::Unknown`] once the search has taken `budget` in all.
pub fn check(history: &History, budget: Duration) -> CheckResult {
    let deadline = Instant::now().checked_add(budget);
    let keys = match partition(history) {
        Ok(keys) => keys,
        Err(reason) => return CheckResult::Malformed { reason },
    };
    let mut operations = 0;
    for (key, ops) in &keys {
        match check_key(key, ops, deadline) {
            KeyOutcome::Linearizable => operations += ops.len(),
            KeyOutcome::Violation(violation) => return CheckResult::Violation(violation),
            KeyOutcome::OutOfBudget { explored } => {
                return CheckResult::Unknown {
                    reason: format!(
                        "the search budget of {budget:?} ran out on key {key:?} ({} operations) after \
                         exploring {explored} configurations; {operations} operations of other keys \
                         were linearizable",
                        ops.len()
                    ),
                };
            }
        }
    }
    CheckResult::Linearizable {
        keys: keys.len(),
        operations,
    }
}

/// A key's revision as far as the checker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Revision {
    Known(u64),
    /// Written by an indeterminate operation nobody observed: at least `at_least`.
    Unknown {
        at_least: u64,
    },
}

/// The state of one key in the sequential specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    Absent,
    Present { value: u64, revision: Revision },
}

impl State {
    /// A revision a new write must exceed: the current one, or a lower bound for an unknown one (the
    /// new revision exceeds the unknown one, which is at least the bound).
    fn floor(self) -> u64 {
        match self {
            State::Absent => 0,
            State::Present {
                revision: Revision::Known(revision),
                ..
            } => revision,
            State::Present {
                revision: Revision::Unknown { at_least },
                ..
            } => at_least,
        }
    }

    /// Whether a CAS expecting `expected` matches (an unknown revision matches nothing).
    fn has_revision(self, expected: u64) -> bool {
        match self {
            State::Absent => expected == 0,
            State::Present {
                revision: Revision::Known(revision),
                ..
            } => revision == expected,
            State::Present {
                revision: Revision::Unknown { .. },
                ..
            } => false,
        }
    }

    fn written(self, value: u64, revision: Option<u64>) -> State {
        let revision = match revision {
            Some(revision) => Revision::Known(revision),
            None => Revision::Unknown {
                at_least: self.floor().saturating_add(1),
            },
        };
        State::Present { value, revision }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Absent => write!(f, "absent"),
            State::Present {
                value,
                revision: Revision::Known(revision),
            } => write!(f, "{value} @ revision {revision}"),
            State::Present {
                value,
                revision: Revision::Unknown { at_least },
            } => write!(
                f,
                "{value} @ an unknown revision (at least {at_least}; written by an indeterminate \
                 operation)"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CasOutcome {
    Applied(u64),
    Mismatch,
    /// Indeterminate, revision not learned: applies iff the revision matches when linearized.
    Unknown,
}

/// An operation as the specification sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Read(Option<(u64, u64)>),
    /// `revision`: `None` if indeterminate and not learned.
    Write {
        value: u64,
        revision: Option<u64>,
    },
    Cas {
        expected: u64,
        value: u64,
        outcome: CasOutcome,
    },
}

impl Step {
    /// The state after this operation, if it may take effect in `state`.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(None) => (state == State::Absent).then_some(state),
            Step::Read(Some((value, revision))) => {
                let observed = State::Present {
                    value,
                    revision: Revision::Known(revision),
                };
                (state == observed).then_some(state)
            }
            Step::Write {
                value,
                revision: Some(revision),
            } => (revision > state.floor()).then(|| state.written(value, Some(revision))),
            Step::Write {
                value,
                revision: None,
            } => Some(state.written(value, None)),
            Step::Cas {
                expected,
                value,
                outcome: CasOutcome::Applied(revision),
            } => (state.has_revision(expected) && revision > state.floor())
                .then(|| state.written(value, Some(revision))),
            Step::Cas {
                expected,
                outcome: CasOutcome::Mismatch,
                ..
            } => (!state.has_revision(expected)).then_some(state),
            Step::Cas {
                expected,
                value,
                outcome: CasOutcome::Unknown,
            } => Some(if state.has_revision(expected) {
                state.written(value, None)
            } else {
                state
            }),
        }
    }

    /// The value this operation tries to write, if any.
    fn value_written(self) -> Option<u64> {
        match self {
            Step::Read(_) => None,
            Step::Write { value, .. } | Step::Cas { value, .. } => Some(value),
        }
    }

    /// Why this operation cannot take effect in `state` (`None` if it can).
    fn refusal(self, state: State, written: &HashSet<u64>) -> Option<String> {
        if self.apply(state).is_some() {
            return None;
        }
        Some(match self {
            Step::Read(None) => format!("it read the key as absent, but it holds {state}"),
            Step::Read(Some((value, revision))) => {
                let mut why =
                    format!("it read {value} @ revision {revision}, but the key is {state}");
                if !written.contains(&value) {
                    why.push_str(&format!(
                        " — and no operation on this key ever wrote {value}"
                    ));
                }
                why
            }
            Step::Write {
                revision: Some(revision),
                ..
            }
            | Step::Cas {
                outcome: CasOutcome::Applied(revision),
                ..
            } if revision <= state.floor() => {
                format!("its revision {revision} is not above the key's current revision ({state})")
            }
            Step::Cas {
                expected,
                outcome: CasOutcome::Applied(_),
                ..
            } => format!("it applied expecting revision {expected}, but the key is {state}"),
            Step::Cas {
                expected,
                outcome: CasOutcome::Mismatch,
                ..
            } => format!(
                "it reported a mismatch, but the key's revision is the expected {expected} ({state})"
            ),
            Step::Write { .. } | Step::Cas { .. } => format!("the key is {state}"),
        })
    }
}

/// One operation of a key, ready for the search.
#[derive(Debug)]
struct KeyOp<'h> {
    op: &'h Operation,
    step: Step,
    /// `None`: +∞ (indeterminate, or an answer without a time).
    returned: Option<Duration>,
    /// An indeterminate write whose revision was learned from a read.
    learned: bool,
}

/// Validates the history, drops indeterminate reads, splits it by key and learns the revisions of
/// indeterminate writes from the reads that observed their values.
fn partition(history: &History) -> Result<BTreeMap<&str, Vec<KeyOp<'_>>>, String> {
    let mut keys: BTreeMap<&str, Vec<KeyOp<'_>>> = BTreeMap::new();
    for (index, op) in history.operations.iter().enumerate() {
        let indeterminate = op.is_indeterminate();
        let step = match (&op.input, &op.output) {
            (Input::Read, Output::Indeterminate) => continue,
            (Input::Read, Output::Read(observed)) => Step::Read(*observed),
            (Input::Write { value }, Output::Written { revision }) => Step::Write {
                value: *value,
                revision: Some(*revision),
            },
            (Input::Write { value }, Output::Indeterminate) => Step::Write {
                value: *value,
                revision: None,
            },
            (
                Input::Cas {
                    expected_revision,
                    value,
                },
                output @ (Output::CasApplied { .. } | Output::CasMismatch | Output::Indeterminate),
            ) => Step::Cas {
                expected: *expected_revision,
                value: *value,
                outcome: match output {
                    Output::CasApplied { revision } => CasOutcome::Applied(*revision),
                    Output::CasMismatch => CasOutcome::Mismatch,
                    _ => CasOutcome::Unknown,
                },
            },
            (input, output) => {
                return Err(format!(
                    "operation #{index} ({op}): the answer {output:?} cannot come from {input:?}"
                ));
            }
        };
        let returned = if indeterminate { None } else { op.returned };
        if let Some(returned) = returned
            && returned < op.invoked
        {
            return Err(format!(
                "operation #{index} ({op}) returned before it was invoked"
            ));
        }
        keys.entry(op.key.as_str()).or_default().push(KeyOp {
            op,
            step,
            returned,
            learned: false,
        });
    }
    for (key, ops) in &mut keys {
        learn_revisions(key, ops)?;
    }
    Ok(keys)
}

fn learn_revisions(key: &str, ops: &mut [KeyOp<'_>]) -> Result<(), String> {
    let mut writers: HashMap<u64, usize> = HashMap::new();
    // The revision each value was observed with, by the earliest read (should reads disagree, the
    // search rejects the history whichever one is taken).
    let mut observed: HashMap<u64, (Duration, u64)> = HashMap::new();
    for op in ops.iter() {
        match op.step {
            Step::Read(Some((value, revision))) => {
                let seen = observed.entry(value).or_insert((op.op.invoked, revision));
                if op.op.invoked < seen.0 {
                    *seen = (op.op.invoked, revision);
                }
            }
            step => {
                if let Some(value) = step.value_written() {
                    *writers.entry(value).or_default() += 1;
                }
            }
        }
    }
    for op in ops.iter_mut() {
        let Some(value) = op.step.value_written() else {
            continue;
        };
        if !op.op.is_indeterminate() {
            continue;
        }
        if writers.get(&value).copied().unwrap_or(0) > 1 {
            return Err(format!(
                "key {key:?}: the value {value} of an indeterminate operation ({}) is written by \
                 another operation too; the checker needs written values to be unique",
                op.op
            ));
        }
        let Some(&(_, revision)) = observed.get(&value) else {
            continue;
        };
        op.step = match op.step {
            Step::Write { value, .. } => Step::Write {
                value,
                revision: Some(revision),
            },
            Step::Cas {
                expected, value, ..
            } => Step::Cas {
                expected,
                value,
                outcome: CasOutcome::Applied(revision),
            },
            step @ Step::Read(_) => step,
        };
        op.learned = true;
    }
    Ok(())
}

/// A fixed-size set of operation indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(bits: usize) -> Self {
        Self(vec![0; bits.div_ceil(64)])
    }

    fn set(&mut self, bit: usize) {
        if let Some(word) = self.0.get_mut(bit / 64) {
            *word |= 1 << (bit % 64);
        }
    }

    fn clear(&mut self, bit: usize) {
        if let Some(word) = self.0.get_mut(bit / 64) {
            *word &= !(1 << (bit % 64));
        }
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// An entry of the doubly linked list: the call or the return of an operation.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    /// For a call, its return entry; `NIL` for a return (and the head).
    matching: usize,
    prev: usize,
    next: usize,
}

/// The calls and returns of a key's operations, sorted by time, with a head sentinel at [`HEAD`].
#[derive(Debug)]
struct Entries(Vec<Entry>);

impl Entries {
    fn new(ops: &[KeyOp<'_>]) -> Self {
        // (at +∞, time, 0 = call / 1 = return, operation)
        let mut events: Vec<(bool, Duration, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            events.push((false, op.op.invoked, 0, index));
            match op.returned {
                Some(returned) => events.push((false, returned, 1, index)),
                None => events.push((true, Duration::ZERO, 1, index)),
            }
        }
        events.sort_unstable();
        let mut entries = vec![
            Entry {
                op: NIL,
                matching: NIL,
                prev: NIL,
                next: NIL,
            };
            events.len() + 1
        ];
        let mut call_of = vec![NIL; ops.len()];
        for (position, &(_, _, kind, op)) in events.iter().enumerate() {
            let id = position + 1;
            entries[id] = Entry {
                op,
                matching: NIL,
                prev: id - 1,
                next: if id < events.len() { id + 1 } else { NIL },
            };
            if kind == 0 {
                call_of[op] = id;
            } else if let Some(&call) = call_of.get(op)
                && call != NIL
            {
                entries[call].matching = id;
            }
        }
        entries[HEAD].next = if events.is_empty() { NIL } else { 1 };
        Self(entries)
    }

    fn is_call(&self, id: usize) -> bool {
        self.0[id].matching != NIL
    }

    fn unlink(&mut self, id: usize) {
        let Entry { prev, next, .. } = self.0[id];
        self.0[prev].next = next;
        if next != NIL {
            self.0[next].prev = prev;
        }
    }

    fn relink(&mut self, id: usize) {
        let Entry { prev, next, .. } = self.0[id];
        self.0[prev].next = id;
        if next != NIL {
            self.0[next].prev = id;
        }
    }

    /// Takes an operation's call and return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.0[call].matching);
    }

    /// Undoes [`Entries::lift`] (dancing links: in reverse order).
    fn unlift(&mut self, call: usize) {
        self.relink(self.0[call].matching);
        self.relink(call);
    }
}

#[derive(Debug)]
enum KeyOutcome {
    Linearizable,
    Violation(Violation),
    OutOfBudget { explored: usize },
}

/// Where the search got stuck with the most operations linearized.
#[derive(Debug)]
struct Frontier {
    depth: usize,
    state: State,
    /// The last operations of the prefix, in linearization order.
    tail: Vec<usize>,
    /// The operations that could be next, all refused, by position in the list.
    pending: Vec<usize>,
    /// The operation whose return ended the candidates.
    blocking: usize,
}

/// How many loop turns between looks at the clock.
const CLOCK_EVERY: u64 = 1024;

fn check_key(key: &str, ops: &[KeyOp<'_>], deadline: Option<Instant>) -> KeyOutcome {
    let mut entries = Entries::new(ops);
    let mut linearized = Bitset::new(ops.len());
    let mut cache: HashSet<(Bitset, State)> = HashSet::new();
    let mut calls: Vec<(usize, State)> = Vec::new();
    let mut state = State::Absent;
    let mut frontier: Option<Frontier> = None;
    let mut turns: u64 = 0;
    let mut entry = entries.0[HEAD].next;
    while entries.0[HEAD].next != NIL {
        if turns.is_multiple_of(CLOCK_EVERY)
            && deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            return KeyOutcome::OutOfBudget {
                explored: cache.len(),
            };
        }
        turns += 1;
        if entry != NIL && entries.is_call(entry) {
            let op = entries.0[entry].op;
            if let Some(next) = ops[op].step.apply(state) {
                linearized.set(op);
                if cache.insert((linearized.clone(), next)) {
                    calls.push((entry, state));
                    state = next;
                    entries.lift(entry);
                    entry = entries.0[HEAD].next;
                    continue;
                }
                linearized.clear(op);
            }
            entry = entries.0[entry].next;
        } else {
            // A return: its operation had to be linearized by now. Backtrack.
            if frontier.as_ref().is_none_or(|f| calls.len() > f.depth) {
                frontier = Some(stuck_at(&entries, &calls, state, entry));
            }
            let Some((call, previous)) = calls.pop() else {
                return KeyOutcome::Violation(violation(key, ops, frontier));
            };
            state = previous;
            linearized.clear(entries.0[call].op);
            entries.unlift(call);
            entry = entries.0[call].next;
        }
    }
    KeyOutcome::Linearizable
}

fn stuck_at(entries: &Entries, calls: &[(usize, State)], state: State, ret: usize) -> Frontier {
    let tail = calls
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|&(call, _)| entries.0[call].op)
        .collect();
    let mut pending = Vec::new();
    let mut id = entries.0[HEAD].next;
    while id != NIL && entries.is_call(id) {
        pending.push(entries.0[id].op);
        id = entries.0[id].next;
    }
    let blocking = if ret != NIL { entries.0[ret].op } else { NIL };
    Frontier {
        depth: calls.len(),
        state,
        tail,
        pending,
        blocking,
    }
}

fn describe(op: &KeyOp<'_>) -> String {
    let mut text = op.op.to_string();
    if op.learned {
        let revision = match op.step {
            Step::Write {
                revision: Some(revision),
                ..
            }
            | Step::Cas {
                outcome: CasOutcome::Applied(revision),
                ..
            } => revision,
            _ => 0,
        };
        text.push_str(&format!(
            " [a read saw its value: it took effect, at revision {revision}]"
        ));
    }
    text
}

fn violation(key: &str, ops: &[KeyOp<'_>], frontier: Option<Frontier>) -> Violation {
    let Some(frontier) = frontier else {
        return Violation {
            key: key.to_owned(),
            operations: ops.iter().map(|op| op.op.clone()).collect(),
            explanation: format!(
                "key {key:?}: its {} operations have no linearization",
                ops.len()
            ),
        };
    };
    let written: HashSet<u64> = ops
        .iter()
        .filter_map(|op| op.step.value_written())
        .collect();
    let mut pending = frontier.pending.clone();
    pending.sort_by_key(|&op| (ops[op].op.invoked, op));
    let mut explanation = format!(
        "key {key:?}: its {} operations have no linearization. The longest linearizable prefix found \
         has {} of them and leaves the key {}.",
        ops.len(),
        frontier.depth,
        frontier.state
    );
    if let Some(blocking) = ops.get(frontier.blocking) {
        explanation.push_str(&format!(
            " After it, none of the {} operations pending can take effect next, yet {} must take \
             effect before it returned:",
            pending.len(),
            describe(blocking)
        ));
    }
    for &op in &pending {
        let why = ops[op]
            .step
            .refusal(frontier.state, &written)
            .unwrap_or_else(|| {
                "it could take effect there, but no way of going on from there works".to_owned()
            });
        explanation.push_str(&format!("\n  - {}: {why}", describe(&ops[op])));
    }
    if !frontier.tail.is_empty() {
        explanation.push_str("\nThe prefix ends with:");
        for &op in &frontier.tail {
            explanation.push_str(&format!("\n  - {}", describe(&ops[op])));
        }
    }
    let operations = frontier
        .tail
        .iter()
        .chain(&pending)
        .map(|&op| ops[op].op.clone())
        .collect();
    Violation {
        key: key.to_owned(),
        operations,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(10);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn op(
        client: ClientId,
        key: &str,
        input: Input,
        output: Output,
        invoked: u64,
        returned: u64,
    ) -> Operation {
        Operation {
            client,
            key: key.to_owned(),
            input,
            output,
            invoked: ms(invoked),
            returned: Some(ms(returned)),
        }
    }

    fn write(
        client: ClientId,
        key: &str,
        value: u64,
        revision: u64,
        from: u64,
        to: u64,
    ) -> Operation {
        op(
            client,
            key,
            Input::Write { value },
            Output::Written { revision },
            from,
            to,
        )
    }

    fn read(
        client: ClientId,
        key: &str,
        observed: Option<(u64, u64)>,
        from: u64,
        to: u64,
    ) -> Operation {
        op(client, key, Input::Read, Output::Read(observed), from, to)
    }

    fn cas(
        client: ClientId,
        key: &str,
        expected_revision: u64,
        value: u64,
        output: Output,
        from: u64,
        to: u64,
    ) -> Operation {
        op(
            client,
            key,
            Input::Cas {
                expected_revision,
                value,
            },
            output,
            from,
            to,
        )
    }

    fn indeterminate(client: ClientId, key: &str, input: Input, from: u64) -> Operation {
        Operation {
            client,
            key: key.to_owned(),
            input,
            output: Output::Indeterminate,
            invoked: ms(from),
            returned: None,
        }
    }

    fn history(ops: impl IntoIterator<Item = Operation>) -> History {
        ops.into_iter().collect()
    }

    #[track_caller]
    fn assert_linearizable(history: &History) {
        let result = check(history, BUDGET);
        assert!(result.is_linearizable(), "{result}");
    }

    #[track_caller]
    fn assert_violation(history: &History, key: &str) -> Violation {
        match check(history, BUDGET) {
            CheckResult::Violation(violation) => {
                assert_eq!(violation.key, key, "{violation}");
                assert!(
                    violation.explanation.contains(&format!("{key:?}")),
                    "{violation}"
                );
                assert!(!violation.operations.is_empty(), "{violation}");
                violation
            }
            other => panic!("expected a violation on {key:?}, got {other}"),
        }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let history = history([
            read(1, "k", None, 0, 1),
            write(1, "k", 10, 3, 2, 3),
            read(2, "k", Some((10, 3)), 4, 5),
            cas(2, "k", 3, 11, Output::CasApplied { revision: 7 }, 6, 7),
            cas(1, "k", 3, 12, Output::CasMismatch, 8, 9),
            read(1, "k", Some((11, 7)), 10, 11),
            write(3, "k", 13, 8, 12, 13),
            read(3, "k", Some((13, 8)), 14, 15),
        ]);
        match check(&history, BUDGET) {
            CheckResult::Linearizable { keys, operations } => {
                assert_eq!((keys, operations), (1, 8));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert!(check(&History::new(), BUDGET).is_linearizable());
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_the_old_or_the_new_value() {
        for observed in [Some((1, 1)), Some((2, 2))] {
            let history = history([
                write(1, "k", 1, 1, 0, 1),
                write(1, "k", 2, 2, 2, 10),
                read(2, "k", observed, 3, 8),
                read(2, "k", Some((2, 2)), 11, 12),
            ]);
            assert_linearizable(&history);
        }
        // Even the first write, from absent.
        for observed in [None, Some((5, 4))] {
            assert_linearizable(&history([
                write(1, "k", 5, 4, 0, 10),
                read(2, "k", observed, 1, 2),
            ]));
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation_naming_the_key() {
        let history = history([
            write(1, "a", 1, 1, 0, 1),
            write(9, "b", 100, 2, 0, 1),
            write(1, "a", 2, 3, 2, 3),
            read(9, "b", Some((100, 2)), 2, 3),
            // Starts after the second write completed, yet sees the first.
            read(2, "a", Some((1, 1)), 4, 5),
        ]);
        let violation = assert_violation(&history, "a");
        assert!(
            violation
                .operations
                .iter()
                .any(|op| op.output == Output::Read(Some((1, 1)))),
            "{violation}"
        );
        assert!(violation.operations.iter().all(|op| op.key == "a"));
        assert!(
            violation.explanation.contains("it read 1 @ revision 1"),
            "{violation}"
        );
    }

    #[test]
    fn a_read_reporting_a_different_revision_than_the_write_returned_is_a_violation() {
        let history = history([write(1, "k", 7, 4, 0, 1), read(2, "k", Some((7, 5)), 2, 3)]);
        assert_violation(&history, "k");
    }

    #[test]
    fn writes_must_get_increasing_revisions() {
        let history = history([write(1, "k", 1, 5, 0, 1), write(1, "k", 2, 5, 2, 3)]);
        let violation = assert_violation(&history, "k");
        assert!(violation.explanation.contains("not above"), "{violation}");
    }

    #[test]
    fn two_concurrent_cas_with_the_same_expected_revision_cannot_both_apply() {
        let history = history([
            write(1, "k", 1, 1, 0, 1),
            cas(2, "k", 1, 2, Output::CasApplied { revision: 2 }, 2, 10),
            cas(3, "k", 1, 3, Output::CasApplied { revision: 3 }, 3, 9),
        ]);
        assert_violation(&history, "k");
    }

    #[test]
    fn concurrent_cas_with_one_applied_and_one_mismatch_is_linearizable() {
        let history = history([
            write(1, "k", 1, 1, 0, 1),
            cas(2, "k", 1, 2, Output::CasApplied { revision: 2 }, 2, 10),
            cas(3, "k", 1, 3, Output::CasMismatch, 3, 9),
            read(1, "k", Some((2, 2)), 11, 12),
        ]);
        assert_linearizable(&history);
        // A CAS on an absent key expects revision 0.
        assert_linearizable(&history_of_cas_on_absent(Output::CasApplied {
            revision: 1,
        }));
        assert_violation(&history_of_cas_on_absent(Output::CasMismatch), "k");
    }

    fn history_of_cas_on_absent(output: Output) -> History {
        history([cas(1, "k", 0, 1, output, 0, 1)])
    }

    #[test]
    fn an_indeterminate_write_whose_value_is_read_later_is_linearizable_and_its_revision_learned() {
        let history = history([
            write(1, "k", 1, 1, 0, 1),
            indeterminate(2, "k", Input::Write { value: 2 }, 2),
            read(3, "k", Some((1, 1)), 3, 4),
            read(3, "k", Some((2, 6)), 20, 21),
            cas(3, "k", 6, 3, Output::CasApplied { revision: 9 }, 22, 23),
        ]);
        assert_linearizable(&history);

        let keys = partition(&history).unwrap_or_else(|e| panic!("{e}"));
        let learned: Vec<_> = keys["k"].iter().filter(|op| op.learned).collect();
        assert_eq!(learned.len(), 1);
        assert_eq!(
            learned[0].step,
            Step::Write {
                value: 2,
                revision: Some(6)
            }
        );

        // Learned, it took effect: a later read may not see the older value again.
        let mut stale = history.clone();
        stale.push(read(4, "k", Some((1, 1)), 30, 31));
        assert_violation(&stale, "k");
    }

    #[test]
    fn an_indeterminate_write_never_observed_is_linearizable() {
        let history = history([
            write(1, "k", 1, 1, 0, 1),
            indeterminate(2, "k", Input::Write { value: 2 }, 2),
            indeterminate(3, "k", Input::Read, 2),
            read(1, "k", Some((1, 1)), 5, 6),
            cas(1, "k", 1, 3, Output::CasApplied { revision: 4 }, 7, 8),
            read(1, "k", Some((3, 4)), 9, 10),
        ]);
        match check(&history, BUDGET) {
            // The indeterminate read is dropped.
            CheckResult::Linearizable { operations, .. } => assert_eq!(operations, 5),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn an_unobserved_indeterminate_write_can_explain_a_cas_mismatch() {
        let base = [
            write(1, "k", 1, 1, 0, 1),
            cas(2, "k", 1, 3, Output::CasMismatch, 5, 6),
            write(1, "k", 4, 8, 7, 8),
            read(1, "k", Some((4, 8)), 9, 10),
        ];
        // Without a concurrent writer, the mismatch is impossible...
        assert_violation(&history(base.clone()), "k");
        // ...with an indeterminate one, it may have landed in between.
        let mut with_hidden = history(base);
        with_hidden.push(indeterminate(3, "k", Input::Write { value: 2 }, 2));
        assert_linearizable(&with_hidden);
        // Likewise an indeterminate CAS, which applies iff its expected revision matches.
        let mut with_cas = history([
            write(1, "k", 1, 1, 0, 1),
            cas(2, "k", 1, 3, Output::CasMismatch, 5, 6),
        ]);
        with_cas.push(indeterminate(
            3,
            "k",
            Input::Cas {
                expected_revision: 1,
                value: 2,
            },
            2,
        ));
        assert_linearizable(&with_cas);
        with_cas.push(indeterminate(
            4,
            "k",
            Input::Cas {
                expected_revision: 7,
                value: 5,
            },
            2,
        ));
        assert_linearizable(&with_cas);
    }

    #[test]
    fn a_write_after_an_unobserved_indeterminate_write_needs_a_revision_above_the_hidden_one() {
        // The mismatch forces the indeterminate write in before it, at a revision of at least 6.
        let base = [
            write(1, "k", 1, 5, 0, 1),
            indeterminate(2, "k", Input::Write { value: 2 }, 2),
            cas(3, "k", 5, 4, Output::CasMismatch, 3, 4),
        ];
        let mut above = history(base.clone());
        above.push(write(1, "k", 3, 7, 10, 11));
        assert_linearizable(&above);
        let mut too_low = history(base);
        too_low.push(write(1, "k", 3, 6, 10, 11));
        assert_violation(&too_low, "k");
        // Without the mismatch nothing forces the hidden write to have happened.
        assert_linearizable(&history([
            write(1, "k", 1, 5, 0, 1),
            indeterminate(2, "k", Input::Write { value: 2 }, 2),
            write(1, "k", 3, 6, 10, 11),
        ]));
    }

    #[test]
    fn an_indeterminate_output_with_a_return_time_is_still_treated_as_indeterminate() {
        let history = history([
            write(1, "k", 1, 1, 0, 1),
            // Claims to have returned at 3 ms, but there was no answer: it may take effect later.
            op(
                2,
                "k",
                Input::Write { value: 2 },
                Output::Indeterminate,
                2,
                3,
            ),
            read(3, "k", Some((1, 1)), 10, 11),
            read(3, "k", Some((2, 4)), 20, 21),
        ]);
        assert_linearizable(&history);
        // An answer without a time still counts, but may take effect any time after its invocation.
        let mut untimed = read(4, "k", Some((1, 1)), 12, 0);
        untimed.returned = None;
        let mut history = history;
        history.push(untimed);
        assert_linearizable(&history);
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_a_violation() {
        let history = history([
            write(1, "k", 1, 1, 0, 1),
            write(1, "other", 42, 2, 0, 1),
            read(2, "k", Some((42, 2)), 2, 3),
        ]);
        let violation = assert_violation(&history, "k");
        assert!(
            violation
                .explanation
                .contains("no operation on this key ever wrote 42"),
            "{violation}"
        );
    }

    #[test]
    fn a_read_of_an_absent_key_after_a_write_is_a_violation() {
        let history = history([write(1, "k", 1, 1, 0, 1), read(2, "k", None, 2, 3)]);
        assert_violation(&history, "k");
    }

    #[test]
    fn malformed_histories_are_reported_as_such() {
        let mismatched = history([op(
            1,
            "k",
            Input::Read,
            Output::Written { revision: 1 },
            0,
            1,
        )]);
        assert!(matches!(
            check(&mismatched, BUDGET),
            CheckResult::Malformed { .. }
        ));
        let backwards = history([write(1, "k", 1, 1, 5, 4)]);
        assert!(matches!(
            check(&backwards, BUDGET),
            CheckResult::Malformed { .. }
        ));
        let ambiguous = history([
            write(1, "k", 1, 1, 0, 1),
            indeterminate(2, "k", Input::Write { value: 1 }, 0),
        ]);
        assert!(matches!(
            check(&ambiguous, BUDGET),
            CheckResult::Malformed { .. }
        ));
    }

    #[test]
    fn an_exhausted_budget_gives_unknown() {
        let history = history([write(1, "k", 1, 1, 0, 1)]);
        let result = check(&history, Duration::ZERO);
        assert!(
            matches!(&result, CheckResult::Unknown { reason } if reason.contains("\"k\"")),
            "{result}"
        );
    }

    #[test]
    fn the_recorder_times_operations_from_its_start() {
        let recorder = Recorder::new();
        let first = recorder.invoke(1, "k", Input::Write { value: 1 });
        recorder.complete(first, Output::Written { revision: 1 });
        let lost = recorder.invoke(2, "k", Input::Write { value: 2 });
        recorder.complete(lost, Output::Indeterminate);
        let history = recorder.into_history();
        assert_eq!(history.len(), 2);
        let ops = history.operations();
        assert!(
            ops[0]
                .returned
                .is_some_and(|returned| returned >= ops[0].invoked)
        );
        assert_eq!(ops[1].returned, None);
        assert!(check(&history, BUDGET).is_linearizable());
    }

    /// xorshift64*: small, deterministic.
    #[derive(Debug)]
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A version of a key in the simulation, and when the write replacing it returned (if it did).
    #[derive(Debug)]
    struct Version {
        key: String,
        value: u64,
        revision: u64,
        replaced_by_return: Option<Duration>,
    }

    /// A history of `per_client` operations from each of `clients` concurrent clients on `keys` keys,
    /// played against a real (atomic) register: each operation takes effect at a random instant within
    /// its random interval. About 1% of the operations are indeterminate and may take effect (even after
    /// the client gave up) or not.
    fn simulate(seed: u64, clients: u64, keys: u64, per_client: u64) -> (History, Vec<Version>) {
        #[derive(Debug)]
        struct Planned {
            client: ClientId,
            key: u64,
            kind: u64,
            invoked: Duration,
            effect: Duration,
            returned: Option<Duration>,
            takes_effect: bool,
        }
        let mut rng = Rng(seed);
        let mut planned = Vec::new();
        for client in 0..clients {
            let mut now = rng.below(100);
            for _ in 0..per_client {
                let invoked = now + rng.below(20);
                let duration = 1 + rng.below(800);
                let indeterminate = rng.below(100) == 0;
                let effect = invoked
                    + rng.below(if indeterminate {
                        3 * duration
                    } else {
                        duration
                    });
                now = invoked + duration;
                planned.push(Planned {
                    client,
                    key: rng.below(keys),
                    kind: rng.below(4),
                    invoked: Duration::from_micros(invoked),
                    effect: Duration::from_micros(effect),
                    returned: (!indeterminate).then(|| Duration::from_micros(now)),
                    takes_effect: !indeterminate || rng.below(2) == 0,
                });
            }
        }
        planned.sort_by_key(|p| (p.effect, p.client));

        let mut register: Vec<Option<(u64, u64)>> = vec![None; keys as usize];
        let mut current_version: Vec<Option<usize>> = vec![None; keys as usize];
        let mut known_revision = vec![vec![0u64; keys as usize]; clients as usize];
        let mut versions: Vec<Version> = Vec::new();
        let mut log_index = 0;
        let mut next_value = 1;
        let mut history = History::new();
        for p in planned {
            let k = p.key as usize;
            let key = format!("key-{k}");
            let current = register[k];
            let current_revision = current.map_or(0, |(_, revision)| revision);
            let mut apply = |value: u64,
                             register: &mut Vec<Option<(u64, u64)>>,
                             versions: &mut Vec<Version>| {
                log_index += 1 + rng.below(3); // other keys' entries in the log
                register[k] = Some((value, log_index));
                if let Some(previous) = current_version[k] {
                    versions[previous].replaced_by_return = p.returned;
                }
                current_version[k] = Some(versions.len());
                versions.push(Version {
                    key: key.clone(),
                    value,
                    revision: log_index,
                    replaced_by_return: None,
                });
                log_index
            };
            let (input, output) = match p.kind {
                0 | 1 => (Input::Read, Output::Read(current)),
                2 => {
                    let value = next_value;
                    next_value += 1;
                    let output = if p.takes_effect {
                        let revision = apply(value, &mut register, &mut versions);
                        Output::Written { revision }
                    } else {
                        Output::Indeterminate
                    };
                    (Input::Write { value }, output)
                }
                _ => {
                    let value = next_value;
                    next_value += 1;
                    let expected_revision = known_revision[p.client as usize][k];
                    let output = if !p.takes_effect {
                        Output::Indeterminate
                    } else if current_revision == expected_revision {
                        let revision = apply(value, &mut register, &mut versions);
                        Output::CasApplied { revision }
                    } else {
                        Output::CasMismatch
                    };
                    (
                        Input::Cas {
                            expected_revision,
                            value,
                        },
                        output,
                    )
                }
            };
            let Some(returned) = p.returned else {
                history.record_indeterminate(p.client, key, input, p.invoked);
                continue;
            };
            match output {
                Output::Read(Some((_, revision)))
                | Output::Written { revision }
                | Output::CasApplied { revision } => {
                    known_revision[p.client as usize][k] = revision;
                }
                _ => {}
            }
            history.record(p.client, key, input, output, p.invoked, returned);
        }
        (history, versions)
    }

    #[test]
    fn a_generated_history_of_2000_operations_from_10_clients_on_3_keys_is_linearizable_quickly() {
        let (history, _) = simulate(0x5eed_1234_abcd_0001, 10, 3, 200);
        assert_eq!(history.len(), 2000);
        let indeterminate = history
            .operations()
            .iter()
            .filter(|op| op.is_indeterminate())
            .count();
        assert!(
            indeterminate > 0,
            "the history has indeterminate operations"
        );
        let started = Instant::now();
        let result = check(&history, Duration::from_secs(5));
        let elapsed = started.elapsed();
        match result {
            CheckResult::Linearizable { keys, operations } => {
                assert_eq!(keys, 3);
                assert!(operations > 1900, "{operations}");
            }
            other => panic!("{other}"),
        }
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    }

    #[test]
    fn the_generated_history_with_one_read_made_stale_is_a_violation() {
        let (history, versions) = simulate(0x5eed_1234_abcd_0001, 10, 3, 200);
        let mut ops = history.operations().to_vec();
        // A read in the second half, corrupted to a version of its key that a write which had returned
        // before the read was invoked had already replaced.
        let (index, stale) = ops
            .iter()
            .enumerate()
            .skip(ops.len() / 2)
            .filter(|(_, op)| matches!(op.output, Output::Read(Some(_))))
            .find_map(|(index, op)| {
                versions
                    .iter()
                    .rev()
                    .filter(|v| {
                        v.key == op.key && Output::Read(Some((v.value, v.revision))) != op.output
                    })
                    .find(|v| v.replaced_by_return.is_some_and(|at| at < op.invoked))
                    .map(|v| (index, (v.value, v.revision)))
            })
            .unwrap_or_else(|| panic!("no read to corrupt"));
        ops[index].output = Output::Read(Some(stale));
        let key = ops[index].key.clone();
        let corrupted: History = ops.into_iter().collect();
        let violation = assert_violation(&corrupted, &key);
        assert!(
            violation.explanation.contains("no linearization"),
            "{violation}"
        );
    }
}
