//! The decision log, in the coordinator's own database (`migrations/coordinator`).
//!
//! Every change of a transaction's state is one conditional `UPDATE`, so that the request that runs a
//! transaction and recovery (of this or another coordinator instance) can never take different decisions:
//! whoever decides first wins, and the other one reads and follows the logged decision.

use std::time::Duration;

use chrono::{DateTime, Utc};
use distlab_twopc::Gid;
use distlab_twopc::protocol::{Ballot, Decision, TxState};
use distlab_twopc::wire::{BranchView, OrderPayload, TransactionView, Vote};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::config::Endpoint;

/// Phase-2 rounds of recovery after which a transaction is shown as stuck (it is still retried).
pub const STUCK_ROUNDS: i32 = 5;

/// Logs a new transaction, PREPARING, with a branch per participant; `false` if the log has the gid already.
pub async fn begin(
    pool: &PgPool,
    gid: &Gid,
    order: &OrderPayload,
    participants: &[Endpoint],
    timeout: Duration,
) -> sqlx::Result<bool> {
    let names: Vec<&str> = participants.iter().map(|p| p.name.as_str()).collect();
    let inserted = sqlx::query(
        "WITH t AS (
            INSERT INTO transactions (gid, state, payload, deadline)
            VALUES ($1, 'PREPARING', $2, now() + make_interval(secs => $3))
            ON CONFLICT (gid) DO NOTHING
            RETURNING gid)
         INSERT INTO branches (gid, participant) SELECT t.gid, p FROM t, unnest($4::text[]) AS p",
    )
    .bind(gid.as_str())
    .bind(Json(order))
    .bind(timeout.as_secs_f64())
    .bind(&names)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

/// Records every participant's vote, or why there is none, in one statement.
pub async fn record_votes(
    pool: &PgPool,
    gid: &Gid,
    ballots: &[Ballot<'_>],
    errors: &[Option<&str>],
) -> sqlx::Result<()> {
    let participants: Vec<&str> = ballots.iter().map(|b| b.participant).collect();
    let votes: Vec<Option<&str>> = ballots
        .iter()
        .map(|b| {
            b.vote.as_ref().map(|(vote, _)| match vote {
                Vote::Yes => "yes",
                Vote::No => "no",
            })
        })
        .collect();
    let reasons: Vec<Option<&str>> = ballots
        .iter()
        .map(|b| b.vote.as_ref().and_then(|(_, r)| r.as_deref()))
        .collect();
    sqlx::query(
        "UPDATE branches AS b
         SET vote = v.vote, vote_reason = v.reason, last_error = v.error,
             voted_at = CASE WHEN v.vote IS NULL THEN NULL ELSE now() END
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS v(participant, vote, reason, error)
         WHERE b.gid = $1 AND b.participant = v.participant",
    )
    .bind(gid.as_str())
    .bind(&participants)
    .bind(&votes)
    .bind(&reasons)
    .bind(errors)
    .execute(pool)
    .await?;
    Ok(())
}

/// Logs the decision if the transaction is still PREPARING; returns the decision that stands — ours, or
/// the one recovery logged first (a presumed abort).
pub async fn decide(
    pool: &PgPool,
    gid: &Gid,
    decision: Decision,
    reason: Option<&str>,
    grace: Duration,
) -> sqlx::Result<(Decision, Option<String>)> {
    let logged: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE transactions
         SET state = $2, decision = $3, reason = $4, decided_at = now(),
             next_attempt_at = now() + make_interval(secs => $5)
         WHERE gid = $1 AND state = 'PREPARING'
         RETURNING decision, reason",
    )
    .bind(gid.as_str())
    .bind(decision.deciding_state().as_str())
    .bind(decision.as_str())
    .bind(reason)
    .bind(grace.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let (text, reason) =
        match logged {
            Some(row) => row,
            None => sqlx::query_as(
                "SELECT decision, reason FROM transactions WHERE gid = $1 AND decision IS NOT NULL",
            )
            .bind(gid.as_str())
            .fetch_one(pool)
            .await?,
        };
    Ok((parse_decision(&text), reason))
}

fn parse_decision(text: &str) -> Decision {
    if text == "commit" {
        Decision::Commit
    } else {
        Decision::Abort
    }
}

/// The participants that have not acknowledged the decision yet.
pub async fn unacknowledged(pool: &PgPool, gid: &Gid) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT participant FROM branches WHERE gid = $1 AND acked_at IS NULL")
        .bind(gid.as_str())
        .fetch_all(pool)
        .await
}

/// Records a phase-2 message: acknowledged, or failed with `error`.
pub async fn record_phase2(
    pool: &PgPool,
    gid: &Gid,
    participant: &str,
    error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE branches
         SET attempts = attempts + 1, last_error = $3,
             acked_at = CASE WHEN $3 IS NULL THEN coalesce(acked_at, now()) ELSE acked_at END
         WHERE gid = $1 AND participant = $2",
    )
    .bind(gid.as_str())
    .bind(participant)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Completes a decided transaction whose every branch acknowledged; `true` if it is complete now.
pub async fn complete_if_acknowledged(pool: &PgPool, gid: &Gid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE transactions AS t
         SET state = CASE t.decision WHEN 'commit' THEN 'COMMITTED' ELSE 'ABORTED' END,
             completed_at = now(), next_attempt_at = NULL
         WHERE t.gid = $1 AND t.state IN ('COMMITTING', 'ABORTING')
           AND NOT EXISTS (SELECT 1 FROM branches b WHERE b.gid = t.gid AND b.acked_at IS NULL)",
    )
    .bind(gid.as_str())
    .execute(pool)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(true);
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM transactions WHERE gid = $1")
        .bind(gid.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(state
        .and_then(|s| TxState::parse(&s))
        .is_some_and(TxState::is_final))
}

/// Presumed abort: every transaction still undecided past its deadline is decided abort (`timeout`).
pub async fn presume_aborts(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "UPDATE transactions
         SET state = 'ABORTING', decision = 'abort', reason = 'timeout', decided_at = now(), next_attempt_at = now()
         WHERE state = 'PREPARING' AND deadline < now()
         RETURNING gid",
    )
    .fetch_all(pool)
    .await
}

/// Claims up to `limit` decided transactions whose phase 2 is due, pushing each one's next attempt back
/// by a capped exponential delay, so that concurrent recoveries do not all drive the same one.
pub async fn claim_undone(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<(String, Decision, i32)>> {
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "UPDATE transactions AS t
         SET phase2_rounds = t.phase2_rounds + 1,
             next_attempt_at = now() + make_interval(secs => least(30, 0.5 * power(2, least(t.phase2_rounds, 10))))
         WHERE t.gid IN (
             SELECT gid FROM transactions
             WHERE state IN ('COMMITTING', 'ABORTING') AND next_attempt_at <= now()
             ORDER BY next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING t.gid, t.decision, t.phase2_rounds",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(gid, decision, rounds)| (gid, parse_decision(&decision), rounds))
        .collect())
}

/// The logged state of `gid`, if the log knows it.
pub async fn state_of(pool: &PgPool, gid: &Gid) -> sqlx::Result<Option<TxState>> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM transactions WHERE gid = $1")
        .bind(gid.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(state.and_then(|s| TxState::parse(&s)))
}

/// Counts of transactions that are not done, and of those shown as stuck.
pub async fn undone_counts(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE phase2_rounds >= $1)
         FROM transactions WHERE state IN ('PREPARING', 'COMMITTING', 'ABORTING')",
    )
    .bind(STUCK_ROUNDS)
    .fetch_one(pool)
    .await
}

#[derive(sqlx::FromRow)]
struct TransactionRow {
    gid: String,
    state: String,
    decision: Option<String>,
    reason: Option<String>,
    payload: Json<OrderPayload>,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    phase2_rounds: i32,
}

#[derive(sqlx::FromRow)]
struct BranchRow {
    gid: String,
    participant: String,
    vote: Option<String>,
    vote_reason: Option<String>,
    voted_at: Option<DateTime<Utc>>,
    acked_at: Option<DateTime<Utc>>,
    attempts: i32,
    last_error: Option<String>,
}

const TRANSACTION_COLUMNS: &str =
    "gid, state, decision, reason, payload, created_at, decided_at, completed_at, phase2_rounds";

/// One transaction with its branches.
pub async fn get(pool: &PgPool, gid: &Gid) -> sqlx::Result<Option<TransactionView>> {
    let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE gid = $1");
    let row: Option<TransactionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(gid.as_str())
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => Ok(views(pool, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// Transactions newest first, optionally in one state.
pub async fn list(
    pool: &PgPool,
    state: Option<TxState>,
    limit: i64,
) -> sqlx::Result<Vec<TransactionView>> {
    let sql = format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions
         WHERE ($1::text IS NULL OR state = $1) ORDER BY created_at DESC LIMIT $2"
    );
    let rows: Vec<TransactionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(state.map(TxState::as_str))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    views(pool, rows).await
}

async fn views(pool: &PgPool, rows: Vec<TransactionRow>) -> sqlx::Result<Vec<TransactionView>> {
    let gids: Vec<&str> = rows.iter().map(|r| r.gid.as_str()).collect();
    let branches: Vec<BranchRow> = sqlx::query_as(
        "SELECT gid, participant, vote, vote_reason, voted_at, acked_at, attempts, last_error
         FROM branches WHERE gid = ANY($1) ORDER BY participant",
    )
    .bind(&gids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let state = TxState::parse(&row.state)?;
            Some(TransactionView {
                gid: Gid::parse(&row.gid).ok()?,
                state,
                decision: row.decision.as_deref().map(parse_decision),
                reason: row.reason,
                order: row.payload.0,
                created_at: row.created_at,
                decided_at: row.decided_at,
                completed_at: row.completed_at,
                stuck: !state.is_final() && row.phase2_rounds >= STUCK_ROUNDS,
                branches: branches
                    .iter()
                    .filter(|b| b.gid == row.gid)
                    .map(|b| BranchView {
                        participant: b.participant.clone(),
                        vote: b
                            .vote
                            .as_deref()
                            .map(|v| if v == "yes" { Vote::Yes } else { Vote::No }),
                        vote_reason: b.vote_reason.clone(),
                        voted_at: b.voted_at,
                        acked_at: b.acked_at,
                        attempts: b.attempts,
                        last_error: b.last_error.clone(),
                    })
                    .collect(),
            })
        })
        .collect())
}
