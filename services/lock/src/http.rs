//! HTTP resources of the lock service (contracts: docs/contracts.md and docs/locks.md).
//!
//! `POST /locks/{name}/acquire|renew|release`, `GET /locks/{name}?backend=` and `GET /locks[?backend=]`. Requests are parsed into
//! [`crate::lease`] types first; every problem with a request is reported at once, as a 422.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use distlab_platform::{ApiError, ErrorBody, FieldError, Json, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::backend::{LockError, Locks};
use crate::lease::{self, Backend, Holder, Lease, LockName, Ttl};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 16 * 1024;

pub fn router(locks: Locks) -> Router {
    Router::new()
        .route("/locks", get(list_held))
        .route("/locks/{name}", get(get_holder))
        .route("/locks/{name}/acquire", post(acquire))
        .route("/locks/{name}/renew", post(renew))
        .route("/locks/{name}/release", post(release))
        // An empty name never matches `{name}`; answer it as the bad input it is, not as a 404.
        .route("/locks/", get(empty_name))
        .route("/locks//acquire", post(empty_name))
        .route("/locks//renew", post(empty_name))
        .route("/locks//release", post(empty_name))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(locks))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distlab lock",
        description = "The seed's four distributed locks (pg, redis, redlock, zookeeper) with fencing tokens."
    ),
    paths(acquire, renew, release, get_holder, list_held),
    components(schemas(
        AcquireRequest,
        RenewRequest,
        ReleaseRequest,
        Released,
        LockState,
        HeldLocks,
        Unreadable,
        Lease,
        Holder,
        Backend,
        ErrorBody
    ))
)]
struct ApiDoc;

pub fn openapi() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises")
}

/// Body of `POST /locks/{name}/acquire`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AcquireRequest {
    /// `pg`, `redis`, `redlock` or `zookeeper`.
    #[schema(value_type = Backend)]
    backend: String,
    /// Who asks (reentrancy on pg is by owner): 1 to 128 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    owner: String,
    /// Lease length, 10 ms to 1 h.
    #[schema(minimum = 10, maximum = 3600000)]
    ttl_ms: i64,
    /// How long to wait for the lock, 0 (try once, the default) to 25 s.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 25000)]
    wait_ms: i64,
}

/// Body of `POST /locks/{name}/renew`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    #[schema(value_type = Backend)]
    backend: String,
    #[schema(value_type = uuid::Uuid)]
    lease_id: String,
    #[schema(minimum = 10, maximum = 3600000)]
    ttl_ms: i64,
}

/// Body of `POST /locks/{name}/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    #[schema(value_type = Backend)]
    backend: String,
    #[schema(value_type = uuid::Uuid)]
    lease_id: String,
}

/// Answer to a release.
#[derive(Debug, Serialize, ToSchema)]
struct Released {
    released: bool,
    /// Holds left on a reentrant (pg) lease; 0 means the lock is free.
    holds: u32,
}

/// Answer to `GET /locks/{name}`.
#[derive(Debug, Serialize, ToSchema)]
struct LockState {
    name: String,
    backend: Backend,
    /// `null` when nobody holds the lock.
    holder: Option<Holder>,
    /// Callers waiting for the lock through this service instance now.
    waiting: usize,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BackendQuery {
    #[param(value_type = Backend, required = true)]
    backend: Option<String>,
}

/// Collects every field problem, then fails with all of them or yields the parsed values.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn take<T>(&mut self, parsed: Result<T, FieldError>) -> Option<T> {
        parsed.map_err(|e| self.0.push(e)).ok()
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(
                "the lock request is not valid",
                &self.0,
            ))
        }
    }
}

fn error(e: LockError) -> ApiError {
    match e {
        LockError::Held { holder } => ApiError::new(
            StatusCode::CONFLICT,
            "lock_held",
            "the lock is held by someone else and was not released within wait_ms",
        )
        .with_details(serde_json::json!({ "holder": holder })),
        LockError::NotHolder(message) => ApiError::new(StatusCode::CONFLICT, "not_holder", message),
        LockError::NotFound(message) => {
            ApiError::new(StatusCode::NOT_FOUND, "lease_not_found", message)
        }
        LockError::Unavailable(message) => ApiError::unavailable(message),
        LockError::Internal(cause) => ApiError::internal(cause.as_ref()),
    }
}

fn record(operation: &'static str, backend: Backend, outcome: &'static str, started: Instant) {
    let labels = [
        ("operation", operation),
        ("backend", backend.as_str()),
        ("outcome", outcome),
    ];
    metrics::counter!("lock_operations_total", &labels).increment(1);
    metrics::histogram!("lock_operation_seconds", &labels).record(started.elapsed().as_secs_f64());
}

fn outcome<T>(result: &Result<T, LockError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(LockError::Held { .. }) => "held",
        Err(LockError::NotHolder(_)) => "not_holder",
        Err(LockError::NotFound(_)) => "not_found",
        Err(LockError::Unavailable(_)) => "unavailable",
        Err(LockError::Internal(_)) => "error",
    }
}

/// Takes the lock, waiting up to `wait_ms` for it.
#[utoipa::path(post, path = "/locks/{name}/acquire", request_body = AcquireRequest,
    params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$", description = "1–128 characters of A-Z a-z 0-9 . _ -")),
    responses((status = 200, body = Lease), (status = 409, body = ErrorBody, description = "lock_held"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn acquire(
    State(locks): State<Arc<Locks>>,
    Path(name): Path<String>,
    Json(request): Json<AcquireRequest>,
) -> Result<Json<Lease>, ApiError> {
    let mut problems = Problems::default();
    let name = problems.take(LockName::parse(&name));
    let backend = problems.take(Backend::parse(&request.backend));
    let owner = problems.take(lease::parse_owner(&request.owner));
    let ttl = problems.take(Ttl::from_millis(request.ttl_ms));
    let wait = problems.take(lease::parse_wait(request.wait_ms));
    problems.finish()?;
    let (Some(name), Some(backend), Some(owner), Some(ttl), Some(wait)) =
        (name, backend, owner, ttl, wait)
    else {
        unreachable!("every field parsed when there are no problems")
    };
    let started = Instant::now();
    let result = locks.get(backend).acquire(&name, &owner, ttl, wait).await;
    record("acquire", backend, outcome(&result), started);
    if result.is_ok() {
        locks.recent.note(backend, &name);
    }
    result.map(Json).map_err(error)
}

/// Extends a lease the caller still holds.
#[utoipa::path(post, path = "/locks/{name}/renew", request_body = RenewRequest,
    params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 200, body = Lease), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn renew(
    State(locks): State<Arc<Locks>>,
    Path(name): Path<String>,
    Json(request): Json<RenewRequest>,
) -> Result<Json<Lease>, ApiError> {
    let mut problems = Problems::default();
    let name = problems.take(LockName::parse(&name));
    let backend = problems.take(Backend::parse(&request.backend));
    let lease_id = problems.take(lease::parse_lease_id(&request.lease_id));
    let ttl = problems.take(Ttl::from_millis(request.ttl_ms));
    problems.finish()?;
    let (Some(name), Some(backend), Some(lease_id), Some(ttl)) = (name, backend, lease_id, ttl)
    else {
        unreachable!("every field parsed when there are no problems")
    };
    let started = Instant::now();
    let result = locks.get(backend).renew(&name, lease_id, ttl).await;
    record("renew", backend, outcome(&result), started);
    if result.is_ok() {
        locks.recent.note(backend, &name);
    }
    result.map(Json).map_err(error)
}

/// Gives a lease back. A lease that is not the current holder's changes nothing.
#[utoipa::path(post, path = "/locks/{name}/release", request_body = ReleaseRequest,
    params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 200, body = Released), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn release(
    State(locks): State<Arc<Locks>>,
    Path(name): Path<String>,
    Json(request): Json<ReleaseRequest>,
) -> Result<Json<Released>, ApiError> {
    let mut problems = Problems::default();
    let name = problems.take(LockName::parse(&name));
    let backend = problems.take(Backend::parse(&request.backend));
    let lease_id = problems.take(lease::parse_lease_id(&request.lease_id));
    problems.finish()?;
    let (Some(name), Some(backend), Some(lease_id)) = (name, backend, lease_id) else {
        unreachable!("every field parsed when there are no problems")
    };
    let started = Instant::now();
    let result = locks.get(backend).release(&name, lease_id).await;
    record("release", backend, outcome(&result), started);
    let holds = result.map_err(error)?;
    Ok(Json(Released {
        released: true,
        holds,
    }))
}

/// Who holds the lock now.
#[utoipa::path(get, path = "/locks/{name}",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$"), BackendQuery),
    responses((status = 200, body = LockState), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn get_holder(
    State(locks): State<Arc<Locks>>,
    Path(name): Path<String>,
    Query(query): Query<BackendQuery>,
) -> Result<Json<LockState>, ApiError> {
    let mut problems = Problems::default();
    let name = problems.take(LockName::parse(&name));
    let backend = problems.take(match query.backend.as_deref() {
        Some(text) => Backend::parse(text),
        None => Err(FieldError::new(
            "backend",
            "the backend query parameter is required",
        )),
    });
    problems.finish()?;
    let (Some(name), Some(backend)) = (name, backend) else {
        unreachable!("every field parsed when there are no problems")
    };
    let holder = locks.get(backend).holder(&name).await.map_err(error)?;
    Ok(Json(LockState {
        waiting: locks.get(backend).waiters().count(name.as_str()),
        name: name.to_string(),
        backend,
        holder,
    }))
}

/// Answer to `GET /locks`.
#[derive(Debug, Serialize, ToSchema)]
struct HeldLocks {
    /// The held locks among those granted lately through this instance, most recently granted first; each
    /// holder is the backend's answer now.
    locks: Vec<LockState>,
    /// Names whose backend did not answer.
    unreadable: Vec<Unreadable>,
}

/// A lock whose holder could not be read.
#[derive(Debug, Serialize, ToSchema)]
struct Unreadable {
    name: String,
    backend: Backend,
    message: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this backend's locks.
    #[param(value_type = Option<Backend>)]
    backend: Option<String>,
}

/// The locks held now among the last 256 names granted through this service instance (a lock taken only
/// through another instance is not listed), with their holders and fencing tokens.
#[utoipa::path(get, path = "/locks", params(ListQuery),
    responses((status = 200, body = HeldLocks), (status = 422, body = ErrorBody)))]
async fn list_held(
    State(locks): State<Arc<Locks>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<HeldLocks>, ApiError> {
    let backend = match query.backend.as_deref() {
        None => None,
        Some(text) => Some(
            Backend::parse(text)
                .map_err(|e| ApiError::validation("the lock request is not valid", &[e]))?,
        ),
    };
    let noted = locks.recent.list(backend);
    let holders =
        futures::future::join_all(noted.iter().map(|n| locks.get(n.backend).holder(&n.name))).await;
    let mut answer = HeldLocks {
        locks: Vec::new(),
        unreadable: Vec::new(),
    };
    for (noted, holder) in noted.iter().zip(holders) {
        match holder {
            Ok(Some(holder)) => answer.locks.push(LockState {
                name: noted.name.to_string(),
                backend: noted.backend,
                holder: Some(holder),
                waiting: locks
                    .get(noted.backend)
                    .waiters()
                    .count(noted.name.as_str()),
            }),
            Ok(None) => locks.recent.forget(noted),
            Err(e) => answer.unreadable.push(Unreadable {
                name: noted.name.to_string(),
                backend: noted.backend,
                message: e.to_string(),
            }),
        }
    }
    Ok(Json(answer))
}

async fn empty_name() -> ApiError {
    ApiError::validation(
        "the lock request is not valid",
        &[FieldError::new("name", "must not be empty")],
    )
}
