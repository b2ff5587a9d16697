//! Running a global transaction: phase 1 (准备阶段), the logged decision, phase 2 (提交阶段).
//!
//! ```text
//!  log PREPARING ─► prepare, every participant at once ─► decide ─► log COMMITTING/ABORTING ─► commit/
//!  (with a deadline)  (timeout: a missing vote is a no)              (before anyone hears it)  rollback each,
//!                                                                                             log each ack
//! ```
//!
//! The order of the steps is [`crate::machine`]'s, which has no IO; this module performs each step.
//! Phase 2 tells the participants one after the other, in their configured order (as the seed pictures
//! it: a crash can leave "only some Commit messages sent"), and retries each a few times; whatever is still
//! unacknowledged is left to recovery, which retries with backoff until every branch acknowledges.
//! The fault points of the seed's problems sit between these steps (`before_decision`, `after_decision`,
//! `after_first_ack`, and per participant `prepare:<name>`, `phase2:<name>`).

use std::sync::Arc;
use std::time::Duration;

use distlab_platform::trace::{self, PropagateTrace, SpanKind};
use distlab_twopc::Gid;
use distlab_twopc::faults::{Crashed, Faults, Outcome};
use distlab_twopc::protocol::Decision;
use distlab_twopc::wire::{
    GidRequest, OrderPayload, PrepareRequest, TransactionView, VoteResponse,
};
use futures::future::join_all;
use sqlx::PgPool;
use tracing::Instrument;

use crate::config::{Endpoint, Timeouts};
use crate::log;
use crate::machine::{Action, Event, Machine};

/// Phase-2 attempts per participant within one drive, and the pause after the first failure (doubling).
const PHASE2_TRIES: u32 = 3;
const PHASE2_PAUSE: Duration = Duration::from_millis(100);

/// How long after a decision recovery leaves phase 2 to the request that took it.
const PHASE2_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Crashed(#[from] Crashed),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why a participant gave no vote; a missing vote counts as no, and this is logged with its branch.
#[derive(Debug, thiserror::Error)]
enum NoVote {
    #[error("prepare dropped (fault)")]
    Dropped,
    #[error("coordinator crashed")]
    Crashed,
    #[error("no vote in time")]
    Timeout,
    #[error("unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    #[error("prepare answered {0}")]
    Status(reqwest::StatusCode),
    #[error("unreadable vote: {0}")]
    Unreadable(#[source] reqwest::Error),
}

/// The fault points of a coordinator with these participants.
pub fn fault_points(endpoints: &[Endpoint]) -> Vec<String> {
    let mut points: Vec<String> = ["before_decision", "after_decision", "after_first_ack"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for endpoint in endpoints {
        points.push(format!("prepare:{}", endpoint.name));
        points.push(format!("phase2:{}", endpoint.name));
    }
    points
}

/// The participant's endpoint of a decision: `commit` or `rollback`.
fn path_of(decision: Decision) -> &'static str {
    match decision {
        Decision::Commit => "commit",
        Decision::Abort => "rollback",
    }
}

/// The span of one phase's message to one participant (`2pc.prepare order`, `2pc.commit inventory`…); the
/// participant's request span is its child.
fn participant_span(phase: &str, endpoint: &Endpoint, gid: &Gid) -> tracing::Span {
    let span = tracing::info_span!("2pc.participant", phase, participant = %endpoint.name, %gid,
        otel.name = tracing::field::Empty, otel.kind = tracing::field::Empty);
    trace::name_span(
        &span,
        format_args!("2pc.{phase} {}", endpoint.name),
        SpanKind::Client,
    );
    span
}

/// Drives global transactions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Coordinator {
    pub(crate) pool: PgPool,
    pub(crate) endpoints: Arc<Vec<Endpoint>>,
    http: reqwest::Client,
    pub(crate) timeouts: Timeouts,
    pub(crate) faults: Faults,
}

impl Coordinator {
    pub fn new(pool: PgPool, endpoints: Vec<Endpoint>, timeouts: Timeouts, faults: Faults) -> Self {
        Self {
            pool,
            endpoints: Arc::new(endpoints),
            http: reqwest::Client::new(),
            timeouts,
            faults,
        }
    }

    /// Runs one global transaction that places `order`, to its decision and (normally) its end. A gid the
    /// log already knows is not run again: its current state is returned.
    pub async fn run(
        &self,
        order: OrderPayload,
        gid: Option<Gid>,
    ) -> Result<TransactionView, CoordinatorError> {
        let gid = gid.unwrap_or_default();
        let new = log::begin(
            &self.pool,
            &gid,
            &order,
            &self.endpoints,
            self.timeouts.transaction,
        )
        .await?;
        if !new {
            return Ok(log::get(&self.pool, &gid)
                .await?
                .expect("a logged gid is in the log"));
        }

        let participants = self.endpoints.iter().map(|e| e.name.clone()).collect();
        self.drive(&gid, Some(&order), Machine::begin(participants))
            .await?;
        Ok(log::get(&self.pool, &gid)
            .await?
            .expect("a transaction this coordinator logged is in the log"))
    }

    /// Phase 2 of a decided transaction: tells every participant that has not acknowledged yet, in order;
    /// `true` when every branch has acknowledged and the transaction is complete.
    pub async fn phase2(&self, gid: &Gid, decision: Decision) -> Result<bool, CoordinatorError> {
        let pending = log::unacknowledged(&self.pool, gid).await?;
        let pending = self
            .endpoints
            .iter()
            .filter(|e| pending.contains(&e.name))
            .map(|e| e.name.clone())
            .collect();
        self.drive(gid, None, Machine::phase2(decision, pending))
            .await
    }

    /// Performs `machine`'s actions until it is done; `true` when the transaction completed. Phase 1
    /// needs the `order`.
    async fn drive(
        &self,
        gid: &Gid,
        order: Option<&OrderPayload>,
        mut machine: Machine,
    ) -> Result<bool, CoordinatorError> {
        let mut vote_errors: Vec<Option<String>> = Vec::new();
        let mut complete = false;
        let mut event = None;
        while let Some(action) = machine.step(event.take()) {
            event = Some(match action {
                Action::Prepare(_) => {
                    let order = order.expect("a machine that prepares runs with its order");
                    let answers = join_all(self.endpoints.iter().map(|endpoint| {
                        let span = participant_span("prepare", endpoint, gid);
                        self.ask_to_prepare(endpoint, gid, order).instrument(span)
                    }))
                    .await;
                    let votes = answers
                        .iter()
                        .map(|a| a.as_ref().ok().map(|v| (v.vote, v.reason.clone())))
                        .collect();
                    vote_errors = answers
                        .into_iter()
                        .map(|a| a.err().map(|e| e.to_string()))
                        .collect();
                    Event::Votes(votes)
                }
                Action::LogVotes => {
                    let errors: Vec<Option<&str>> =
                        vote_errors.iter().map(Option::as_deref).collect();
                    log::record_votes(&self.pool, gid, &machine.ballots(), &errors).await?;
                    Event::Logged
                }
                Action::Point(name) => match self.faults.hit(&name).await? {
                    Outcome::Drop => Event::Dropped,
                    _ => Event::Passed,
                },
                Action::LogDecision { decision, reason } => {
                    let (decision, _) =
                        log::decide(&self.pool, gid, decision, reason.as_deref(), PHASE2_GRACE)
                            .await?;
                    metrics::counter!("twopc_transactions_total", "decision" => decision.as_str())
                        .increment(1);
                    tracing::info!(%gid, decision = decision.as_str(), reason = reason.as_deref().unwrap_or(""), "decided");
                    Event::Decided(decision)
                }
                Action::Tell {
                    participant,
                    decision,
                } => {
                    let endpoint = self
                        .endpoints
                        .iter()
                        .find(|e| e.name == participant)
                        .expect("the machine tells configured participants only");
                    let span = participant_span(path_of(decision), endpoint, gid);
                    if self.tell(endpoint, gid, decision).instrument(span).await? {
                        Event::Acked
                    } else {
                        Event::NotAcked
                    }
                }
                Action::LogDropped(participant) => {
                    log::record_phase2(&self.pool, gid, &participant, Some("dropped (fault)"))
                        .await?;
                    Event::Logged
                }
                Action::Complete => {
                    complete = log::complete_if_acknowledged(&self.pool, gid).await?;
                    Event::Logged
                }
            });
        }
        Ok(complete)
    }

    async fn ask_to_prepare(
        &self,
        endpoint: &Endpoint,
        gid: &Gid,
        order: &OrderPayload,
    ) -> Result<VoteResponse, NoVote> {
        match self.faults.hit(&format!("prepare:{}", endpoint.name)).await {
            Ok(Outcome::Drop) => return Err(NoVote::Dropped),
            Ok(_) => {}
            Err(Crashed) => return Err(NoVote::Crashed),
        }
        let request = PrepareRequest {
            gid: gid.clone(),
            order: order.clone(),
        };
        let response = self
            .http
            .post(format!("{}/2pc/prepare", endpoint.url))
            .with_trace()
            .json(&request)
            .timeout(self.timeouts.prepare)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    NoVote::Timeout
                } else {
                    NoVote::Unreachable(e)
                }
            })?;
        if !response.status().is_success() {
            return Err(NoVote::Status(response.status()));
        }
        response.json().await.map_err(NoVote::Unreadable)
    }

    /// Sends the decision to one participant, a few times; `true` once it acknowledged.
    async fn tell(
        &self,
        endpoint: &Endpoint,
        gid: &Gid,
        decision: Decision,
    ) -> Result<bool, CoordinatorError> {
        let path = path_of(decision);
        let mut pause = PHASE2_PAUSE;
        for attempt in 1..=PHASE2_TRIES {
            let sent = self
                .http
                .post(format!("{}/2pc/{path}", endpoint.url))
                .with_trace()
                .json(&GidRequest { gid: gid.clone() })
                .timeout(self.timeouts.phase2)
                .send()
                .await;
            let error = match sent {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("{path} answered {}", response.status())),
                Err(error) => Some(format!("{path} failed: {error}")),
            };
            log::record_phase2(&self.pool, gid, &endpoint.name, error.as_deref()).await?;
            match error {
                None => return Ok(true),
                Some(error) => {
                    tracing::warn!(%gid, participant = %endpoint.name, attempt, %error, "phase 2 message not acknowledged");
                    if attempt < PHASE2_TRIES {
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                }
            }
        }
        Ok(false)
    }
}
