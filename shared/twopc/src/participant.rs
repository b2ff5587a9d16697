//! The participant side of 2PC on a PostgreSQL database.
//!
//! A branch is an ordinary local transaction that ends in `PREPARE TRANSACTION '<gid>'` instead of
//! `COMMIT`: from then on it is durable (it survives a crash of this service and of PostgreSQL), holds its
//! row locks, and waits for `COMMIT PREPARED` or `ROLLBACK PREPARED` — from any session.
//!
//! Every operation is idempotent, because the coordinator retries and messages cross:
//! - **prepare** of a gid that is prepared or committed answers yes again; of a gid that was refused or
//!   rolled back answers no — also when the rollback arrived *before* the prepare (a prepare that timed out
//!   at the coordinator but was still on its way);
//! - **commit** of a committed gid succeeds; **rollback** of a rolled-back gid succeeds; the opposite is a
//!   conflict (409), which only a broken coordinator would cause.
//!
//! Two tables make that exact (see `migrations/twopc`): `twopc_commits` gets the gid's row *inside* the
//! branch, so it is visible exactly when the branch committed, and its primary key is the gid's lock (a
//! second prepare, or a rollback's probe, waits on it with a short lock timeout); `twopc_refusals` is
//! written and committed before any `ROLLBACK PREPARED`, and every prepare checks it after taking the lock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use distlab_platform::trace::{self, SpanKind};
use distlab_platform::{ApiError, Json, Path};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tracing::Instrument;

use crate::faults::{Crashed, Faults, Outcome};
use crate::gid::Gid;
use crate::wire::{
    BranchState, BranchStatus, GidRequest, OrderPayload, PrepareRequest, PreparedList, Vote,
    VoteResponse,
};

/// The fault points of every participant.
pub const FAULT_POINTS: &[&str] = &["prepare", "commit", "rollback"];

/// Name of the migrations table of the participant tables.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations_twopc";

/// How long a prepare waits for the gid's lock before it looks again (another prepare or a rollback holds
/// it for a moment).
const GID_LOCK_TIMEOUT: &str = "200ms";

/// How long a branch's own statements may wait for row locks — e.g. behind another prepared branch that
/// holds them (the seed's 同步阻塞) — before the branch votes no with `lock_timeout`. Below the
/// coordinator's default prepare timeout (5 s), so that a vote usually arrives while it still counts.
const WORK_LOCK_TIMEOUT: &str = "4s";

/// Pause between two looks at a busy gid, and how many looks at most.
const BUSY_PAUSE: Duration = Duration::from_millis(50);
const BUSY_LOOKS: u32 = 200;

/// The participant tables (`twopc_commits`, `twopc_refusals`): `migrations/twopc`.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../../migrations/twopc");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// Why a branch will not prepare.
#[derive(Debug, thiserror::Error)]
pub enum BranchError {
    /// A business refusal (e.g. `insufficient_stock`): the vote is no, with this reason.
    #[error("refused: {0}")]
    Refuse(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<sqlx::Error> for BranchError {
    fn from(error: sqlx::Error) -> Self {
        if sql_state(&error).as_deref() == Some(LOCK_NOT_AVAILABLE) {
            Self::Refuse("lock_timeout".into())
        } else {
            Self::Failed(error.into())
        }
    }
}

/// A participant's part of a global transaction.
pub trait BranchWork: Send + Sync + 'static {
    /// Does the branch's part of `order` inside the open transaction, which is then prepared.
    fn execute(
        &self,
        conn: &mut PgConnection,
        order: &OrderPayload,
    ) -> impl Future<Output = Result<(), BranchError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    #[error("the branch cannot be {wanted}: it is {state:?}")]
    Conflict {
        wanted: &'static str,
        state: BranchState,
    },
    #[error("the message was dropped by an injected fault")]
    Dropped,
    #[error(transparent)]
    Crashed(#[from] Crashed),
    #[error("the gid stayed busy; try again")]
    Busy,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Failed(anyhow::Error),
}

impl From<ParticipantError> for ApiError {
    fn from(error: ParticipantError) -> Self {
        match &error {
            ParticipantError::Conflict { state, .. } => {
                ApiError::new(StatusCode::CONFLICT, "branch_conflict", error.to_string())
                    .with_details(json!({ "state": state }))
            }
            ParticipantError::Dropped | ParticipantError::Crashed(_) | ParticipantError::Busy => {
                ApiError::unavailable(error.to_string())
            }
            ParticipantError::Database(db) if distlab_platform::db::is_unavailable(db) => {
                ApiError::unavailable("the participant's database is not answering")
            }
            ParticipantError::Database(db) => ApiError::internal(db),
            ParticipantError::Failed(cause) => ApiError::internal(cause.as_ref()),
        }
    }
}

const UNIQUE_VIOLATION: &str = "23505";
const LOCK_NOT_AVAILABLE: &str = "55P03";
const UNDEFINED_OBJECT: &str = "42704";
/// "prepared transaction with identifier … is busy": another session is finishing it right now.
const PREPARED_BUSY: &str = "55000";

fn sql_state(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// What one attempt to prepare came to.
enum Attempt {
    Voted(VoteResponse),
    /// Someone else holds the gid's lock: look again.
    Busy,
}

/// Connections kept for phase 2 and status queries, apart from the branches' own.
const CONTROL_CONNECTIONS: u32 = 4;

/// One participant: its database, its branch's work and its fault switches.
#[derive(Debug)]
pub struct Participant<W> {
    /// Runs the branches: a branch holds its connection while it waits for row locks.
    pool: PgPool,
    /// Runs everything else — status, commit, rollback. Kept apart so that phase 2, which releases the row
    /// locks, never waits for a connection behind the very branches that wait for those locks.
    control: PgPool,
    work: W,
    faults: Faults,
}

impl<W: BranchWork> Participant<W> {
    pub fn new(pool: PgPool, work: W, faults: Faults) -> Self {
        let control = sqlx::postgres::PgPoolOptions::new()
            .max_connections(CONTROL_CONNECTIONS)
            .acquire_timeout(distlab_platform::db::ACQUIRE_TIMEOUT)
            .connect_lazy_with((*pool.connect_options()).clone());
        Self {
            pool,
            control,
            work,
            faults,
        }
    }

    /// This participant's fault switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Where the branch is. `pg_prepared_xacts` is asked first: a branch leaves it when it commits, and
    /// its `twopc_commits` row is visible from that moment, so asking in this order never misses it.
    pub async fn status(&self, gid: &Gid) -> sqlx::Result<BranchStatus> {
        let prepared: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT prepared FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()",
        )
        .bind(gid.as_str())
        .fetch_optional(&self.control)
        .await?;
        let mut status = BranchStatus {
            gid: gid.clone(),
            state: BranchState::Unknown,
            reason: None,
            prepared_at: prepared,
        };
        if prepared.is_some() {
            status.state = BranchState::Prepared;
            return Ok(status);
        }
        let (committed, refusal): (bool, Option<String>) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM twopc_commits WHERE gid = $1),
                    (SELECT reason FROM twopc_refusals WHERE gid = $1)",
        )
        .bind(gid.as_str())
        .fetch_one(&self.control)
        .await?;
        if committed {
            status.state = BranchState::Committed;
        } else if refusal.is_some() {
            status.state = BranchState::Aborted;
            status.reason = refusal;
        }
        Ok(status)
    }

    /// Phase 1: do the branch and vote. See the module documentation for the idempotency rules.
    ///
    /// The work runs in a task of its own: if the caller goes away (a coordinator that timed out, a client
    /// that hung up), the branch still ends cleanly — prepared, or rolled back — instead of leaving its
    /// connection in the pool half-way through a transaction.
    pub async fn prepare(
        self: &Arc<Self>,
        gid: &Gid,
        order: &OrderPayload,
    ) -> Result<VoteResponse, ParticipantError> {
        let span = branch_span("prepare", gid);
        let (this, gid, order) = (self.clone(), gid.clone(), order.clone());
        detached(async move { this.prepare_now(&gid, &order).await }.instrument(span)).await
    }

    /// Phase 2, commit. Idempotent. Runs to its end even if the caller goes away.
    pub async fn commit(self: &Arc<Self>, gid: &Gid) -> Result<BranchStatus, ParticipantError> {
        let span = branch_span("commit", gid);
        let (this, gid) = (self.clone(), gid.clone());
        detached(async move { this.commit_now(&gid).await }.instrument(span)).await
    }

    /// Phase 2, rollback (also of a branch that is not prepared yet: it will never be). Idempotent. Runs
    /// to its end even if the caller goes away.
    pub async fn rollback(
        self: &Arc<Self>,
        gid: &Gid,
        reason: &str,
    ) -> Result<BranchStatus, ParticipantError> {
        let span = branch_span("rollback", gid);
        let (this, gid, reason) = (self.clone(), gid.clone(), reason.to_owned());
        detached(async move { this.rollback_now(&gid, &reason).await }.instrument(span)).await
    }

    async fn prepare_now(
        &self,
        gid: &Gid,
        order: &OrderPayload,
    ) -> Result<VoteResponse, ParticipantError> {
        let fault = self.faults.hit("prepare").await?;
        if fault == Outcome::Drop {
            return Err(ParticipantError::Dropped);
        }
        for _ in 0..BUSY_LOOKS {
            let status = self.status(gid).await?;
            match status.state {
                BranchState::Prepared | BranchState::Committed => {
                    return Ok(vote(gid, Vote::Yes, None));
                }
                BranchState::Aborted => return Ok(vote(gid, Vote::No, status.reason)),
                BranchState::Unknown => {}
            }
            if fault == Outcome::VoteNo {
                self.record_refusal(gid, "vote_no_fault").await?;
                return Ok(vote(gid, Vote::No, Some("vote_no_fault".into())));
            }
            match self.try_prepare(gid, order).await? {
                Attempt::Voted(voted) => {
                    metrics::counter!("twopc_votes_total", "vote" => match voted.vote { Vote::Yes => "yes", Vote::No => "no" })
                        .increment(1);
                    return Ok(voted);
                }
                Attempt::Busy => tokio::time::sleep(BUSY_PAUSE).await,
            }
        }
        Err(ParticipantError::Busy)
    }

    async fn try_prepare(
        &self,
        gid: &Gid,
        order: &OrderPayload,
    ) -> Result<Attempt, ParticipantError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::raw_sql("BEGIN").execute(&mut *conn).await?;
        match self.prepare_branch(&mut conn, gid, order).await {
            // PREPARE TRANSACTION ended the session's transaction: the connection is clean.
            Ok(Step::Prepared) => Ok(Attempt::Voted(vote(gid, Vote::Yes, None))),
            Ok(Step::Busy) => {
                abandon(conn).await;
                Ok(Attempt::Busy)
            }
            Ok(Step::Refused(reason)) => {
                abandon(conn).await;
                self.record_refusal(gid, &reason).await?;
                Ok(Attempt::Voted(vote(gid, Vote::No, Some(reason))))
            }
            Err(error) => {
                abandon(conn).await;
                Err(error)
            }
        }
    }

    /// Runs the branch in the open transaction on `conn` and prepares it.
    async fn prepare_branch(
        &self,
        conn: &mut PgConnection,
        gid: &Gid,
        order: &OrderPayload,
    ) -> Result<Step, ParticipantError> {
        // Take the gid: a concurrent prepare of it, or a rollback probing it, makes us look again.
        set_lock_timeout(conn, GID_LOCK_TIMEOUT).await?;
        if let Err(error) = sqlx::query("INSERT INTO twopc_commits (gid) VALUES ($1)")
            .bind(gid.as_str())
            .execute(&mut *conn)
            .await
        {
            return match sql_state(&error).as_deref() {
                Some(UNIQUE_VIOLATION | LOCK_NOT_AVAILABLE) => Ok(Step::Busy),
                _ => Err(error.into()),
            };
        }
        let refused: Option<String> =
            sqlx::query_scalar("SELECT reason FROM twopc_refusals WHERE gid = $1")
                .bind(gid.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(reason) = refused {
            return Ok(Step::Refused(reason));
        }
        set_lock_timeout(conn, WORK_LOCK_TIMEOUT).await?;
        match self.work.execute(conn, order).await {
            Ok(()) => {}
            Err(BranchError::Refuse(reason)) => return Ok(Step::Refused(reason)),
            Err(BranchError::Failed(error)) => return Err(ParticipantError::Failed(error)),
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE TRANSACTION {}",
            gid.literal()
        )))
        .execute(&mut *conn)
        .await?;
        tracing::info!(%gid, "branch prepared");
        Ok(Step::Prepared)
    }

    /// Records that `gid` must never commit (committed at once, outside any branch).
    async fn record_refusal(&self, gid: &Gid, reason: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO twopc_refusals (gid, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(gid.as_str())
        .bind(reason)
        .execute(&self.control)
        .await?;
        Ok(())
    }

    async fn commit_now(&self, gid: &Gid) -> Result<BranchStatus, ParticipantError> {
        if self.faults.hit("commit").await? == Outcome::Drop {
            return Err(ParticipantError::Dropped);
        }
        let status = self.status(gid).await?;
        match status.state {
            BranchState::Committed => Ok(status),
            BranchState::Prepared => {
                self.finish_prepared(gid, "COMMIT PREPARED").await?;
                let after = self.status(gid).await?;
                match after.state {
                    BranchState::Committed => {
                        metrics::counter!("twopc_phase2_total", "decision" => "commit")
                            .increment(1);
                        Ok(after)
                    }
                    state => Err(ParticipantError::Conflict {
                        wanted: "committed",
                        state,
                    }),
                }
            }
            state => Err(ParticipantError::Conflict {
                wanted: "committed",
                state,
            }),
        }
    }

    async fn rollback_now(
        &self,
        gid: &Gid,
        reason: &str,
    ) -> Result<BranchStatus, ParticipantError> {
        if self.faults.hit("rollback").await? == Outcome::Drop {
            return Err(ParticipantError::Dropped);
        }
        for _ in 0..BUSY_LOOKS {
            let status = self.status(gid).await?;
            if status.state == BranchState::Committed {
                return Err(ParticipantError::Conflict {
                    wanted: "rolled back",
                    state: status.state,
                });
            }
            // First the refusal, committed: from now on no prepare of this gid can succeed.
            self.record_refusal(gid, reason).await?;
            if status.state == BranchState::Prepared {
                self.finish_prepared(gid, "ROLLBACK PREPARED").await?;
                metrics::counter!("twopc_phase2_total", "decision" => "rollback").increment(1);
                return self.expect_aborted(gid).await;
            }
            // Not prepared: make sure no prepare is half-way (it holds the gid's lock until it prepares).
            match self.probe_gid_lock(gid).await? {
                GidLock::Free => return self.expect_aborted(gid).await,
                GidLock::Committed => {
                    return Err(ParticipantError::Conflict {
                        wanted: "rolled back",
                        state: BranchState::Committed,
                    });
                }
                GidLock::Held => tokio::time::sleep(BUSY_PAUSE).await,
            }
        }
        Err(ParticipantError::Busy)
    }

    /// `COMMIT PREPARED` / `ROLLBACK PREPARED`; a gid that is no longer prepared (someone finished it
    /// meanwhile) is not an error here: the caller looks at the status afterwards.
    ///
    /// A prepared transaction that another session is finishing at this very moment answers "busy"; that
    /// is retried a few times, then left to the status check too.
    async fn finish_prepared(&self, gid: &Gid, command: &str) -> sqlx::Result<()> {
        let sql = format!("{command} {}", gid.literal());
        for _ in 0..20 {
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&self.control)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if sql_state(&error).as_deref() == Some(UNDEFINED_OBJECT) => {
                    return Ok(());
                }
                Err(error) if sql_state(&error).as_deref() == Some(PREPARED_BUSY) => {
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The status after a rollback: aborted, or a conflict (a concurrent commit won).
    async fn expect_aborted(&self, gid: &Gid) -> Result<BranchStatus, ParticipantError> {
        let status = self.status(gid).await?;
        match status.state {
            BranchState::Aborted => Ok(status),
            state => Err(ParticipantError::Conflict {
                wanted: "rolled back",
                state,
            }),
        }
    }

    /// Tries to take the gid's lock in a transaction that is then rolled back.
    async fn probe_gid_lock(&self, gid: &Gid) -> sqlx::Result<GidLock> {
        let mut conn = self.control.acquire().await?;
        sqlx::raw_sql("BEGIN").execute(&mut *conn).await?;
        let probe = async {
            set_lock_timeout(&mut conn, GID_LOCK_TIMEOUT).await?;
            sqlx::query("INSERT INTO twopc_commits (gid) VALUES ($1)")
                .bind(gid.as_str())
                .execute(&mut *conn)
                .await
        }
        .await;
        abandon(conn).await;
        match probe {
            Ok(_) => Ok(GidLock::Free),
            Err(error) => match sql_state(&error).as_deref() {
                Some(UNIQUE_VIOLATION) => Ok(GidLock::Committed),
                Some(LOCK_NOT_AVAILABLE) => Ok(GidLock::Held),
                _ => Err(error),
            },
        }
    }

    /// This database's prepared distlab transactions, oldest first. Also refreshes the gauges
    /// `twopc_prepared_transactions` and `twopc_oldest_prepared_seconds` (the coordinator's reconciler reads
    /// this list every recovery interval, `/readyz` on every probe).
    pub async fn prepared(&self) -> sqlx::Result<Vec<BranchStatus>> {
        let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT gid, prepared FROM pg_prepared_xacts
             WHERE database = current_database() AND gid LIKE 'distlab\\_%'
             ORDER BY prepared",
        )
        .fetch_all(&self.control)
        .await?;
        let prepared: Vec<BranchStatus> = rows
            .into_iter()
            .filter_map(|(gid, prepared_at)| {
                Some(BranchStatus {
                    gid: Gid::parse(&gid).ok()?,
                    state: BranchState::Prepared,
                    reason: None,
                    prepared_at: Some(prepared_at),
                })
            })
            .collect();
        metrics::gauge!("twopc_prepared_transactions").set(prepared.len() as f64);
        metrics::gauge!("twopc_oldest_prepared_seconds").set(oldest_age(&prepared));
        Ok(prepared)
    }

    /// The number of prepared transactions and the age of the oldest, in seconds: a detail of `/readyz` —
    /// a prepared transaction that stays is a blocked one (the seed's 同步阻塞).
    pub async fn prepared_summary(&self) -> sqlx::Result<(usize, f64)> {
        let prepared = self.prepared().await?;
        Ok((prepared.len(), oldest_age(&prepared)))
    }
}

fn oldest_age(prepared: &[BranchStatus]) -> f64 {
    prepared
        .first()
        .and_then(|p| p.prepared_at)
        .map(|at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// The span of one phase on this participant's branch (`2pc.prepare`, `2pc.commit`, `2pc.rollback`), a child
/// of the current one (the coordinator's request, when traced).
fn branch_span(phase: &str, gid: &Gid) -> tracing::Span {
    let span = tracing::info_span!("2pc.branch", phase, %gid,
        otel.name = tracing::field::Empty, otel.kind = tracing::field::Empty);
    trace::name_span(&span, format_args!("2pc.{phase}"), SpanKind::Internal);
    span
}

/// Runs `work` in a task of its own and waits for it: dropping the waiter does not cancel the work.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ParticipantError>> + Send + 'static,
) -> Result<T, ParticipantError> {
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(error) => Err(ParticipantError::Failed(anyhow::anyhow!(
            "participant task failed: {error}"
        ))),
    }
}

/// How one run of a branch ended.
enum Step {
    Prepared,
    /// Another transaction holds the gid.
    Busy,
    /// The vote is no.
    Refused(String),
}

async fn set_lock_timeout(conn: &mut PgConnection, timeout: &str) -> sqlx::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{timeout}'"
    )))
    .execute(conn)
    .await
    .map(|_| ())
}

enum GidLock {
    Free,
    Held,
    Committed,
}

fn vote(gid: &Gid, vote: Vote, reason: Option<String>) -> VoteResponse {
    VoteResponse {
        gid: gid.clone(),
        vote,
        reason,
    }
}

/// Rolls back whatever transaction `conn` is in; a connection that cannot even do that is closed rather
/// than returned to the pool.
async fn abandon(mut conn: PoolConnection<Postgres>) {
    if sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.is_err() {
        let _ = conn.close().await;
    }
}

/// `POST /2pc/prepare`, `POST /2pc/commit`, `POST /2pc/rollback`, `GET /2pc/{gid}`, `GET /2pc`.
pub fn router<W: BranchWork>(participant: Arc<Participant<W>>) -> Router {
    Router::new()
        .route("/2pc", get(list_prepared::<W>))
        .route("/2pc/prepare", post(prepare::<W>))
        .route("/2pc/commit", post(commit::<W>))
        .route("/2pc/rollback", post(rollback::<W>))
        .route("/2pc/{gid}", get(branch::<W>))
        .with_state(participant)
}

async fn prepare<W: BranchWork>(
    State(participant): State<Arc<Participant<W>>>,
    Json(request): Json<PrepareRequest>,
) -> Result<axum::Json<VoteResponse>, ApiError> {
    if !request.order.is_storable() {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "the order's texts must not contain the NUL character",
        ));
    }
    Ok(axum::Json(
        participant.prepare(&request.gid, &request.order).await?,
    ))
}

async fn commit<W: BranchWork>(
    State(participant): State<Arc<Participant<W>>>,
    Json(request): Json<GidRequest>,
) -> Result<axum::Json<BranchStatus>, ApiError> {
    Ok(axum::Json(participant.commit(&request.gid).await?))
}

async fn rollback<W: BranchWork>(
    State(participant): State<Arc<Participant<W>>>,
    Json(request): Json<GidRequest>,
) -> Result<axum::Json<BranchStatus>, ApiError> {
    Ok(axum::Json(
        participant.rollback(&request.gid, "rolled_back").await?,
    ))
}

async fn branch<W: BranchWork>(
    State(participant): State<Arc<Participant<W>>>,
    Path(gid): Path<String>,
) -> Result<axum::Json<BranchStatus>, ApiError> {
    let gid = Gid::parse(&gid).map_err(|e| ApiError::bad_request("invalid_gid", e.to_string()))?;
    Ok(axum::Json(
        participant
            .status(&gid)
            .await
            .map_err(ParticipantError::from)?,
    ))
}

async fn list_prepared<W: BranchWork>(
    State(participant): State<Arc<Participant<W>>>,
) -> Result<axum::Json<PreparedList>, ApiError> {
    let prepared = participant
        .prepared()
        .await
        .map_err(ParticipantError::from)?;
    Ok(axum::Json(PreparedList { prepared }))
}

/// `/readyz` check `twopc`: how many distlab transactions are prepared here and how old the oldest is.
pub fn readiness_check<W: BranchWork>(
    participant: Arc<Participant<W>>,
) -> distlab_platform::http::ReadinessCheck {
    distlab_platform::http::ReadinessCheck::with_detail("twopc", move || {
        let participant = participant.clone();
        async move {
            let (prepared, oldest) = participant
                .prepared_summary()
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"prepared": prepared, "oldest_prepared_seconds": oldest}))
        }
    })
}

/// The participant endpoints for a service's OpenAPI document (the handlers are generic over the branch,
/// so the paths are described on these stand-ins).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    docs::ParticipantApi::openapi()
}

#[allow(dead_code)]
mod docs {
    use distlab_platform::ErrorBody;
    use utoipa::OpenApi;

    use crate::wire::{
        BranchState, BranchStatus, GidRequest, OrderPayload, PrepareRequest, PreparedList, Vote,
        VoteResponse,
    };

    #[derive(OpenApi)]
    #[openapi(
        paths(prepare, commit, rollback, branch, list_prepared),
        components(schemas(
            PrepareRequest,
            OrderPayload,
            VoteResponse,
            Vote,
            GidRequest,
            BranchStatus,
            BranchState,
            PreparedList,
            ErrorBody
        ))
    )]
    pub(super) struct ParticipantApi;

    /// 2PC phase 1: do this participant's part and vote; a yes is a prepared transaction.
    #[utoipa::path(post, path = "/2pc/prepare", tag = "2pc", request_body = PrepareRequest,
        responses((status = 200, body = VoteResponse), (status = 503, body = ErrorBody)))]
    fn prepare() {}

    /// 2PC phase 2: commit the prepared branch (idempotent).
    #[utoipa::path(post, path = "/2pc/commit", tag = "2pc", request_body = GidRequest,
        responses((status = 200, body = BranchStatus), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
    fn commit() {}

    /// 2PC phase 2: roll the branch back, prepared or not yet (idempotent).
    #[utoipa::path(post, path = "/2pc/rollback", tag = "2pc", request_body = GidRequest,
        responses((status = 200, body = BranchStatus), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
    fn rollback() {}

    /// Where a branch is: prepared, committed, aborted or unknown.
    #[utoipa::path(get, path = "/2pc/{gid}", tag = "2pc",
        params(("gid" = String, Path, pattern = "^distlab_[0-9a-f]{32}$")),
        responses((status = 200, body = BranchStatus), (status = 400, body = ErrorBody)))]
    fn branch() {}

    /// This participant's prepared distlab transactions, oldest first.
    #[utoipa::path(get, path = "/2pc", tag = "2pc", responses((status = 200, body = PreparedList)))]
    fn list_prepared() {}
}

/// What a service needs to take part in 2PC, made by [`setup`].
#[derive(Debug)]
pub struct Setup<W> {
    pub participant: Arc<Participant<W>>,
    /// `/2pc/*` and `/admin/faults`.
    pub routes: Router,
    /// `/readyz` check `twopc`.
    pub readiness: distlab_platform::http::ReadinessCheck,
    pub faults: Faults,
}

/// Migrates the participant tables on `pool` and builds the participant with its routes, its readiness
/// check and its fault switches (a halting crash cancels `shutdown`).
pub async fn setup<W: BranchWork>(
    pool: PgPool,
    work: W,
    admin: &crate::faults::AdminArgs,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Setup<W>> {
    use anyhow::Context;
    migrator()
        .run(&pool)
        .await
        .context("cannot migrate the 2PC participant tables")?;
    let faults = admin.faults(FAULT_POINTS.iter().copied(), shutdown);
    let participant = Arc::new(Participant::new(pool, work, faults.clone()));
    Ok(Setup {
        routes: router(participant.clone()).merge(admin.router(faults.clone())),
        readiness: readiness_check(participant.clone()),
        participant,
        faults,
    })
}
