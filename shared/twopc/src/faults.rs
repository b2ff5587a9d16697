//! Fault switches: the seed's four 2PC problems, on demand.
//!
//! A service names the points of its protocol where something can go wrong (`before_decision`,
//! `phase2:inventory`, `prepare`…). An operator (or a test) arms a point through the token-protected admin
//! API — `POST /admin/faults {"point": "…", "action": "crash" | "delay" | "drop" | "vote_no", "ms"?, "times"?}`
//! — and the next time the code passes that point, [`Faults::hit`] acts:
//!
//! - `delay` waits `ms` milliseconds, then goes on (a slow participant, a stalled coordinator);
//! - `crash` stops the process dead, as `kill -9` would ([`CrashMode::Exit`]); in a test process, where that
//!   would kill the test, the service halts instead ([`CrashMode::Halt`]): it stops serving and every code
//!   path that reaches a fault point afterwards stops there;
//! - `drop` and `vote_no` are returned to the caller, which skips a message or votes no.
//!
//! `times` limits how often the rule fires (default: once); `DELETE /admin/faults` disarms everything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use distlab_platform::{ApiError, FieldError, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// What happens at an armed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    Crash,
    Delay,
    Drop,
    VoteNo,
}

/// An armed point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub point: String,
    pub action: FaultAction,
    /// For `delay`: how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// How many times the rule fires; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// How a `crash` stops the service.
#[derive(Clone)]
pub enum CrashMode {
    /// Exit the process at once with status 137, like `kill -9`: no cleanup, no reply.
    Exit,
    /// Run the callback (cancel the service's shutdown token) and fail every later fault point: for a
    /// service inside a test process.
    Halt(Arc<dyn Fn() + Send + Sync>),
}

impl std::fmt::Debug for CrashMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Exit => "Exit",
            Self::Halt(_) => "Halt",
        })
    }
}

/// How an injected `crash` stops a service, as configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrashStyle {
    /// Exit the process (status 137), like `kill -9`.
    Exit,
    /// Stop serving and fail every later fault point; for services running inside a test process.
    Halt,
}

/// Admin settings of a service, from flags or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Token of the admin API (`Authorization: Bearer <token>`); without one the admin API is off.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// What an injected `crash` fault does.
    #[arg(long, env = "CRASH_MODE", value_enum, default_value_t = CrashStyle::Exit)]
    pub crash_mode: CrashStyle,
}

impl AdminArgs {
    /// No admin API; a crash exits.
    pub fn off() -> Self {
        Self {
            admin_token: None,
            crash_mode: CrashStyle::Exit,
        }
    }

    /// Fault switches for `points`; a halting crash cancels `shutdown`.
    pub fn faults<P: Into<String>>(
        &self,
        points: impl IntoIterator<Item = P>,
        shutdown: &CancellationToken,
    ) -> Faults {
        let crash = match self.crash_mode {
            CrashStyle::Exit => CrashMode::Exit,
            CrashStyle::Halt => {
                let shutdown = shutdown.clone();
                CrashMode::Halt(Arc::new(move || shutdown.cancel()))
            }
        };
        Faults::new(points, crash)
    }

    /// `/admin/faults` for these switches.
    pub fn router(&self, faults: Faults) -> Router {
        admin_router(faults, self.admin_token.clone())
    }
}

/// The service crashed at a fault point; the caller must stop what it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("crashed at a fault point")]
pub struct Crashed;

/// What [`Faults::hit`] leaves for the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing armed (or a delay, already waited out): go on.
    Proceed,
    /// Do not send or apply this message.
    Drop,
    /// Vote no.
    VoteNo,
}

/// The armed points of one service.
#[derive(Clone)]
pub struct Faults {
    points: Arc<Vec<String>>,
    rules: Arc<Mutex<Vec<FaultRule>>>,
    crashed: Arc<AtomicBool>,
    crash: CrashMode,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("points", &self.points)
            .field("rules", &self.list())
            .field("crashed", &self.is_crashed())
            .finish()
    }
}

/// Why a fault rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFault {
    #[error("unknown point {point:?}; points: {known}")]
    UnknownPoint { point: String, known: String },
    #[error("a delay needs \"ms\"")]
    DelayWithoutMs,
    #[error("\"times\" must be at least 1")]
    ZeroTimes,
}

impl InvalidFault {
    /// The field of the rule at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::UnknownPoint { .. } => "point",
            Self::DelayWithoutMs => "ms",
            Self::ZeroTimes => "times",
        }
    }
}

impl Faults {
    /// Switches for the named `points` of a service.
    pub fn new<P: Into<String>>(points: impl IntoIterator<Item = P>, crash: CrashMode) -> Self {
        Self {
            points: Arc::new(points.into_iter().map(Into::into).collect()),
            rules: Arc::default(),
            crashed: Arc::default(),
            crash,
        }
    }

    pub fn points(&self) -> &[String] {
        &self.points
    }

    /// Arms a point (replacing an earlier rule for it).
    pub fn arm(&self, rule: FaultRule) -> Result<(), InvalidFault> {
        if !self.points.contains(&rule.point) {
            return Err(InvalidFault::UnknownPoint {
                point: rule.point,
                known: self.points.join(", "),
            });
        }
        if rule.action == FaultAction::Delay && rule.ms.is_none() {
            return Err(InvalidFault::DelayWithoutMs);
        }
        if rule.times == Some(0) {
            return Err(InvalidFault::ZeroTimes);
        }
        let mut rules = self.rules.lock().expect("fault rules lock");
        rules.retain(|r| r.point != rule.point);
        rules.push(rule);
        Ok(())
    }

    pub fn clear(&self) {
        self.rules.lock().expect("fault rules lock").clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().expect("fault rules lock").clone()
    }

    pub fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Crashes now, as if a `crash` rule had fired (a test's `kill -9`).
    pub fn crash_now(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        match &self.crash {
            CrashMode::Exit => std::process::exit(137),
            CrashMode::Halt(halt) => halt(),
        }
    }

    /// `Err(Crashed)` once the service has crashed: for code paths that have no fault point of their own.
    pub fn alive(&self) -> Result<(), Crashed> {
        if self.is_crashed() {
            Err(Crashed)
        } else {
            Ok(())
        }
    }

    /// Takes the rule armed at `point`, if any, counting it down.
    fn take(&self, point: &str) -> Option<FaultRule> {
        let mut rules = self.rules.lock().expect("fault rules lock");
        let index = rules.iter().position(|r| r.point == point)?;
        let rule = rules[index].clone();
        match rule.times {
            Some(n) if n > 1 => rules[index].times = Some(n - 1),
            _ => {
                rules.remove(index);
            }
        }
        Some(rule)
    }

    /// Passes `point`: waits out a delay, crashes on a crash, and returns what is left for the caller.
    pub async fn hit(&self, point: &str) -> Result<Outcome, Crashed> {
        if self.is_crashed() {
            return Err(Crashed);
        }
        let Some(rule) = self.take(point) else {
            return Ok(Outcome::Proceed);
        };
        tracing::warn!(point, action = ?rule.action, ms = ?rule.ms, "fault injected");
        metrics::counter!("faults_injected_total", "point" => point.to_owned()).increment(1);
        match rule.action {
            FaultAction::Delay => {
                tokio::time::sleep(Duration::from_millis(rule.ms.unwrap_or(0))).await;
                if self.is_crashed() {
                    Err(Crashed)
                } else {
                    Ok(Outcome::Proceed)
                }
            }
            FaultAction::Drop => Ok(Outcome::Drop),
            FaultAction::VoteNo => Ok(Outcome::VoteNo),
            FaultAction::Crash => {
                tracing::error!(point, "fault: crashing");
                self.crash_now();
                Err(Crashed)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    faults: Faults,
    token: Option<String>,
}

/// `GET/POST/DELETE /admin/faults`, protected by `Authorization: Bearer <token>`. Without a token the admin
/// API is off (403).
pub fn admin_router(faults: Faults, token: Option<String>) -> Router {
    Router::new()
        .route(
            "/admin/faults",
            get(list_faults).post(arm_fault).delete(clear_faults),
        )
        .with_state(AdminState { faults, token })
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is off: start the service with ADMIN_TOKEN set",
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(expected) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <ADMIN_TOKEN>` is needed",
        ))
    }
}

async fn list_faults(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(axum::Json(
        json!({"faults": state.faults.list(), "points": state.faults.points()}),
    ))
}

async fn arm_fault(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Json(rule): Json<FaultRule>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    state.faults.arm(rule).map_err(|invalid| {
        ApiError::validation(
            "the fault is not valid",
            &[FieldError::new(invalid.field(), invalid.to_string())],
        )
    })?;
    Ok(axum::Json(json!({"faults": state.faults.list()})))
}

async fn clear_faults(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    state.faults.clear();
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> (Faults, Arc<AtomicBool>) {
        let halted = Arc::new(AtomicBool::new(false));
        let flag = halted.clone();
        let faults = Faults::new(
            ["a", "b"],
            CrashMode::Halt(Arc::new(move || flag.store(true, Ordering::SeqCst))),
        );
        (faults, halted)
    }

    fn rule(point: &str, action: FaultAction, times: Option<u32>) -> FaultRule {
        FaultRule {
            point: point.into(),
            action,
            ms: None,
            times,
        }
    }

    #[tokio::test]
    async fn a_rule_fires_as_often_as_asked_then_disarms() {
        let (faults, _) = faults();
        faults.arm(rule("a", FaultAction::Drop, Some(2))).unwrap();
        assert_eq!(faults.hit("b").await, Ok(Outcome::Proceed));
        assert_eq!(faults.hit("a").await, Ok(Outcome::Drop));
        assert_eq!(faults.hit("a").await, Ok(Outcome::Drop));
        assert_eq!(faults.hit("a").await, Ok(Outcome::Proceed));
    }

    #[tokio::test]
    async fn a_crash_halts_and_every_later_point_fails() {
        let (faults, halted) = faults();
        faults.arm(rule("a", FaultAction::Crash, None)).unwrap();
        assert_eq!(faults.hit("a").await, Err(Crashed));
        assert!(halted.load(Ordering::SeqCst));
        assert_eq!(faults.hit("b").await, Err(Crashed));
    }

    #[test]
    fn unknown_points_and_incomplete_rules_are_refused() {
        let (faults, _) = faults();
        let unknown = faults
            .arm(rule("nope", FaultAction::Drop, None))
            .unwrap_err();
        assert_eq!(unknown.field(), "point");
        assert!(unknown.to_string().contains("\"nope\""), "{unknown}");
        assert_eq!(
            faults.arm(rule("a", FaultAction::Delay, None)),
            Err(InvalidFault::DelayWithoutMs)
        );
        assert_eq!(
            faults.arm(rule("a", FaultAction::Drop, Some(0))),
            Err(InvalidFault::ZeroTimes)
        );
        assert_eq!(InvalidFault::ZeroTimes.field(), "times");
    }
}
