//! Recovery and reconciliation: the part of the coordinator that makes a crash harmless.
//!
//! On start and every `RECOVERY_INTERVAL_MS`:
//! 1. **presumed abort** — a transaction still undecided past its deadline (its coordinator died in
//!    phase 1, or a participant never answered) is decided abort;
//! 2. **drive to the decision** — a decided transaction whose phase 2 is not done (the coordinator died
//!    after logging, a phase-2 message was lost, a participant was down) gets phase 2 again, with a capped
//!    exponential backoff per transaction; after a few rounds it is shown as stuck, and still retried;
//! 3. **reconcile** — every participant's prepared distlab transactions (`GET /2pc`, from
//!    `pg_prepared_xacts`) are checked against the log: one the log does not know is rolled back (nothing
//!    ever committed it), one the log calls done is finished as logged; undecided and undone ones are left
//!    to their deadline and to step 2.

use distlab_platform::trace::PropagateTrace;
use distlab_twopc::Gid;
use distlab_twopc::protocol::Decision;
use distlab_twopc::wire::{GidRequest, PreparedList};
use tokio_util::sync::CancellationToken;

use crate::driver::{Coordinator, CoordinatorError};
use crate::{log, machine};

/// Decided transactions driven per round.
const ROUND_LIMIT: i64 = 64;

/// Runs recovery until `shutdown` (or a crash fault) stops it; the first round runs at once.
pub async fn run(coordinator: Coordinator, shutdown: CancellationToken) {
    loop {
        if coordinator.faults.is_crashed() {
            break;
        }
        if let Err(error) = round(&coordinator).await {
            match error {
                CoordinatorError::Crashed(_) => break,
                CoordinatorError::Database(error) => {
                    tracing::warn!(%error, "recovery round failed")
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(coordinator.timeouts.recovery_interval) => {}
        }
    }
}

/// One round of recovery and reconciliation.
pub async fn round(coordinator: &Coordinator) -> Result<(), CoordinatorError> {
    let pool = &coordinator.pool;
    for gid in log::presume_aborts(pool).await? {
        metrics::counter!("twopc_presumed_aborts_total").increment(1);
        tracing::warn!(%gid, "undecided past its deadline: presumed abort");
    }
    for (gid, decision, rounds) in log::claim_undone(pool, ROUND_LIMIT).await? {
        let Ok(gid) = Gid::parse(&gid) else { continue };
        let complete = coordinator.phase2(&gid, decision).await?;
        if complete {
            tracing::info!(%gid, decision = decision.as_str(), "recovery completed the transaction");
        } else if rounds >= log::STUCK_ROUNDS {
            tracing::error!(%gid, decision = decision.as_str(), rounds, "transaction cannot complete; still retrying");
        }
    }
    reconcile(coordinator).await?;
    let (undone, stuck) = log::undone_counts(pool).await?;
    metrics::gauge!("twopc_undone_transactions").set(undone as f64);
    metrics::gauge!("twopc_stuck_transactions").set(stuck as f64);
    Ok(())
}

/// Finishes the prepared transactions of each participant as the log says.
async fn reconcile(coordinator: &Coordinator) -> Result<(), CoordinatorError> {
    let http = reqwest::Client::new();
    for endpoint in coordinator.endpoints.iter() {
        let listed = http
            .get(format!("{}/2pc", endpoint.url))
            .with_trace()
            .timeout(coordinator.timeouts.phase2)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let prepared: PreparedList = match listed {
            Ok(response) => match response.json().await {
                Ok(list) => list,
                Err(error) => {
                    tracing::warn!(participant = %endpoint.name, %error, "unreadable list of prepared transactions");
                    continue;
                }
            },
            Err(error) => {
                tracing::debug!(participant = %endpoint.name, %error, "participant unreachable; reconciling later");
                continue;
            }
        };
        for branch in prepared.prepared {
            let action = machine::reconcile(log::state_of(&coordinator.pool, &branch.gid).await?);
            let Some(decision) = action else { continue };
            let path = match decision {
                Decision::Commit => "commit",
                Decision::Abort => "rollback",
            };
            let sent = http
                .post(format!("{}/2pc/{path}", endpoint.url))
                .with_trace()
                .json(&GidRequest {
                    gid: branch.gid.clone(),
                })
                .timeout(coordinator.timeouts.phase2)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            match sent {
                Ok(_) => {
                    metrics::counter!("twopc_orphans_resolved_total", "decision" => decision.as_str()).increment(1);
                    tracing::warn!(gid = %branch.gid, participant = %endpoint.name, decision = decision.as_str(),
                        "reconciled a prepared transaction");
                }
                Err(error) => {
                    tracing::warn!(gid = %branch.gid, participant = %endpoint.name, %error, "cannot reconcile yet")
                }
            }
        }
    }
    Ok(())
}
