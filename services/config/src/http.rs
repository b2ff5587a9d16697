//! HTTP resources of a config node, on three routers as in openraft's examples:
//!
//! - **client API** — `PUT|GET|DELETE /v1/kv/{key}` (keys may contain `/`), `GET /v1/kv?prefix=`,
//!   `GET /v1/watch?prefix=&from_revision=` (Server-Sent Events);
//! - **management** — `GET /v1/cluster`, and with the admin token `POST /v1/cluster/init`,
//!   `POST /v1/cluster/learners`, `POST /v1/cluster/membership`, `GET|PUT /admin/partition`;
//! - **Raft RPC** — `POST /raft/{vote,append,snapshot}`, node to node.
//!
//! Writes, linearizable reads and membership changes need the leader. A follower **forwards** them to the
//! leader it knows and relays the answer (header `x-distlab-forwarded-to`), so a client may talk to any
//! node; a request that was already forwarded once is not forwarded again (503 `not_leader` instead).
//! Forwarding crosses the network like Raft's own messages, so a partition cuts it too.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use distlab_platform::{ApiError, ErrorBody, FieldError, Json, Path, Query};
use futures::Stream;
use openraft::BasicNode;
use openraft::error::InitializeError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::kv::{Command, Compacted, Outcome, Revision};
use crate::network::FROM_HEADER;
use crate::raft::{ClusterStatus, Node, NodeError, NodeId, TypeConfig};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes of JSON.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest client request body (a value plus its envelope).
pub const BODY_LIMIT: usize = MAX_VALUE_BYTES + 4 * 1024;
/// Largest Raft RPC body (a batch of entries or a snapshot chunk).
const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Set on a request a follower forwarded to the leader.
const FORWARDED_HEADER: &str = "x-distlab-forwarded-by";
/// Set on a response the leader gave to a forwarded request.
const FORWARDED_TO_HEADER: &str = "x-distlab-forwarded-to";
/// The store revision on the node that answered a read: watch from it to miss nothing after the read.
const REVISION_HEADER: &str = "x-distlab-revision";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub node: Node,
    pub admin_token: Arc<str>,
    pub initial_members: BTreeMap<NodeId, String>,
    pub shutdown: CancellationToken,
    pub client: reqwest::Client,
}

pub fn router(state: AppState) -> Router {
    let client = Router::new()
        .route("/v1/kv", get(list))
        .route("/v1/kv/", get(empty_key).put(empty_key).delete(empty_key))
        .route("/v1/kv/{*key}", get(read).put(write).delete(remove))
        .route("/v1/watch", get(watch))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT));
    let management = Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/init", post(init))
        .route("/v1/cluster/learners", post(add_learner))
        .route("/v1/cluster/membership", post(change_membership))
        .route("/admin/partition", get(partition).put(set_partition));
    let raft = Router::new()
        .route("/raft/vote", post(raft_vote))
        .route("/raft/append", post(raft_append))
        .route("/raft/snapshot", post(raft_snapshot))
        .layer(axum::extract::DefaultBodyLimit::max(RAFT_BODY_LIMIT));
    client
        .merge(management)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward_to_leader,
        ))
        .merge(raft)
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distlab config",
        description = "A Raft-replicated key-value store with revisions, compare-and-set and watches."
    ),
    paths(
        read,
        write,
        remove,
        list,
        watch,
        cluster,
        init,
        add_learner,
        change_membership,
        set_partition
    ),
    components(schemas(
        PutRequest,
        Written,
        KeyValue,
        KeyList,
        ClusterStatus,
        InitRequest,
        LearnerRequest,
        MembershipRequest,
        PartitionRequest,
        ErrorBody
    ))
)]
struct ApiDoc;

pub fn openapi() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises")
}

// ---------------------------------------------------------------------------------------------------------
// Forwarding

/// Whether this request must be served by the leader.
fn needs_leader(request: &Request) -> bool {
    let path = request.uri().path();
    let stale = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "consistency=stale"));
    match *request.method() {
        Method::GET => (path == "/v1/kv" || path.starts_with("/v1/kv/")) && !stale,
        Method::PUT | Method::DELETE => path.starts_with("/v1/kv/"),
        Method::POST => path == "/v1/cluster/learners" || path == "/v1/cluster/membership",
        _ => false,
    }
}

async fn forward_to_leader(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if !needs_leader(&request) {
        return next.run(request).await;
    }
    let Some((leader, addr)) = app.node.leader_elsewhere() else {
        // This node leads, or no leader is known: the handler answers (or says there is no leader).
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_HEADER) {
        return not_leader(Some((leader, addr))).into_response();
    }
    if app.node.partition.is_blocked(leader) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "partitioned",
            format!("the leader (node {leader}) is on the other side of a partition"),
        )
        .with_retry_after(1)
        .into_response();
    }
    match forward(&app, leader, &addr, request).await {
        Ok(response) => response,
        // Not connected: the request certainly did not reach the leader.
        Err(error) if error.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_connect) => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "leader_unreachable",
                format!("cannot connect to the leader (node {leader} at {addr}): {error}"),
            )
            .with_retry_after(1)
            .into_response()
        }
        // Sent, but no answer came back: the leader may have applied it.
        Err(error) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "forward_interrupted",
            format!("the leader (node {leader} at {addr}) did not answer the forwarded request; it may have been applied: {error}"),
        )
        .with_retry_after(1)
        .into_response(),
    }
}

async fn forward(
    app: &AppState,
    leader: NodeId,
    addr: &str,
    request: Request,
) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, BODY_LIMIT).await?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = app
        .client
        .request(parts.method.clone(), format!("http://{addr}{path}"))
        .header(FORWARDED_HEADER, app.node.id)
        .body(body);
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await?;
    let mut response = Response::builder().status(answer.status());
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        REVISION_HEADER.parse()?,
    ] {
        if let Some(value) = answer.headers().get(&name) {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await?;
    Ok(response
        .header(FORWARDED_TO_HEADER, leader)
        .body(axum::body::Body::from(bytes))?)
}

fn not_leader(leader: Option<(NodeId, String)>) -> ApiError {
    let details = match &leader {
        Some((id, addr)) => json!({"leader_id": id, "leader_addr": addr}),
        None => json!({"leader_id": null}),
    };
    let message = match leader {
        Some((id, _)) => format!("node {id} leads; ask it"),
        None => "no leader is known (an election may be under way)".to_owned(),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", message)
        .with_details(details)
        .with_retry_after(1)
}

impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::NotLeader { leader } => not_leader(leader),
            NodeError::NoQuorum(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_quorum",
                format!("{error}: this node may be on the minority side of a partition"),
            )
            .with_retry_after(1),
            NodeError::CommitTimeout(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "commit_timeout",
                error.to_string(),
            )
            .with_retry_after(1),
            NodeError::CommitUnknown(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "commit_unknown",
                error.to_string(),
            )
            .with_retry_after(1),
            NodeError::MembershipRefused(_) => ApiError::new(
                StatusCode::CONFLICT,
                "membership_change_refused",
                error.to_string(),
            ),
            NodeError::Stopped(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_stopped",
                error.to_string(),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Client API

/// Body of `PUT /v1/kv/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutRequest {
    /// Any JSON value except `null` and `""`.
    #[schema(value_type = Object)]
    value: Option<Value>,
    /// Compare-and-set: apply only if the key's current revision is this (0 = the key must not exist).
    prev_revision: Option<Revision>,
}

/// Answer to a write.
#[derive(Debug, Serialize, ToSchema)]
struct Written {
    key: String,
    /// The revision of the change.
    revision: Revision,
}

/// A key's value.
#[derive(Debug, Serialize, ToSchema)]
struct KeyValue {
    key: String,
    #[schema(value_type = Object)]
    value: Value,
    revision: Revision,
}

/// `GET /v1/kv?prefix=`.
#[derive(Debug, Serialize, ToSchema)]
struct KeyList {
    keys: Vec<KeyEntry>,
    /// The store revision on the node that answered.
    revision: Revision,
}

#[derive(Debug, Serialize, ToSchema)]
struct KeyEntry {
    key: String,
    revision: Revision,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Consistency {
    /// Served by the leader after it confirmed its leadership with a majority (ReadIndex).
    #[default]
    Linearizable,
    /// Served from this node's state machine, which may lag; the revision says how far.
    Stale,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    /// Delete only if the key's current revision is this.
    prev_revision: Option<Revision>,
}

fn check_key(key: &str, field: &str) -> Result<(), FieldError> {
    if key.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn validate(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation("the request is not valid", &errors))
    }
}

async fn empty_key() -> ApiError {
    ApiError::validation(
        "the request is not valid",
        &[FieldError::new("key", "must not be empty")],
    )
}

/// Writes a key (compare-and-set with `prev_revision`).
#[utoipa::path(put, path = "/v1/kv/{key}", request_body = PutRequest,
    params(("key" = String, Path, description = "The key; may contain `/`")),
    responses(
        (status = 200, body = Written),
        (status = 409, description = "revision_mismatch: the key's revision is not prev_revision", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "no leader, no quorum or not committed in time", body = ErrorBody),
    ))]
async fn write(
    State(app): State<AppState>,
    Path(key): Path<String>,
    Json(request): Json<PutRequest>,
) -> Result<Json<Written>, ApiError> {
    let mut errors = Vec::new();
    if let Err(e) = check_key(&key, "key") {
        errors.push(e);
    }
    let value = match request.value {
        None => {
            errors.push(FieldError::new(
                "value",
                "is required and must not be null (DELETE removes a key)",
            ));
            Value::Null
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(FieldError::new("value", "must not be empty"));
            Value::Null
        }
        Some(value) => value,
    };
    validate(errors)?;
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
    if size > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("the value is {size} bytes of JSON; at most {MAX_VALUE_BYTES} are accepted"),
        ));
    }
    let outcome = app
        .node
        .write(Command::Put {
            key: key.clone(),
            value,
            prev_revision: request.prev_revision,
        })
        .await?;
    match outcome {
        Outcome::Written { revision } => Ok(Json(Written { key, revision })),
        Outcome::RevisionMismatch { current } => {
            Err(revision_mismatch(&key, request.prev_revision, current))
        }
        other => Err(unexpected(other)),
    }
}

fn revision_mismatch(key: &str, expected: Option<Revision>, current: Revision) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "revision_mismatch",
        format!(
            "`{key}` is at revision {current}, not {}",
            expected.unwrap_or_default()
        ),
    )
    .with_details(json!({"key": key, "current_revision": current, "prev_revision": expected}))
}

fn unexpected(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::RevisionMismatch { .. } | Outcome::NotFound => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("the command was not applied: {outcome:?}"),
        ),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the state machine answered a write with an unexpected outcome",
        ),
    }
}

/// Reads a key.
#[utoipa::path(get, path = "/v1/kv/{key}", params(("key" = String, Path), ReadParams),
    responses(
        (status = 200, body = KeyValue), (status = 404, body = ErrorBody),
        (status = 503, description = "linearizable read without a leader or a majority", body = ErrorBody),
    ))]
async fn read(
    State(app): State<AppState>,
    Path(key): Path<String>,
    Query(params): Query<ReadParams>,
) -> Result<Response, ApiError> {
    validate(check_key(&key, "key").err().into_iter().collect())?;
    if params.consistency == Consistency::Linearizable {
        app.node.read_barrier().await?;
    }
    let (found, revision) = app
        .node
        .state
        .read(|a| (a.kv.get(&key).cloned(), a.kv.revision()));
    let Some(found) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key `{key}`"),
        )
        .with_details(json!({"revision": revision})));
    };
    Ok(with_revision(
        revision,
        Json(KeyValue {
            key,
            value: found.value,
            revision: found.revision,
        }),
    ))
}

fn with_revision(revision: Revision, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(REVISION_HEADER, HeaderValue::from(revision));
    response
}

/// Deletes a key.
#[utoipa::path(delete, path = "/v1/kv/{key}", params(("key" = String, Path), DeleteParams),
    responses((status = 200, body = Written), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn remove(
    State(app): State<AppState>,
    Path(key): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<Json<Written>, ApiError> {
    validate(check_key(&key, "key").err().into_iter().collect())?;
    let outcome = app
        .node
        .write(Command::Delete {
            key: key.clone(),
            prev_revision: params.prev_revision,
        })
        .await?;
    match outcome {
        Outcome::Deleted { revision } => Ok(Json(Written { key, revision })),
        Outcome::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key `{key}`"),
        )),
        Outcome::RevisionMismatch { current } => {
            Err(revision_mismatch(&key, params.prev_revision, current))
        }
        other => Err(unexpected(other)),
    }
}

/// Lists the keys under a prefix.
#[utoipa::path(get, path = "/v1/kv", params(ListParams), responses((status = 200, body = KeyList), (status = 503, body = ErrorBody)))]
async fn list(
    State(app): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    if params.prefix.len() > MAX_KEY_BYTES {
        validate(vec![FieldError::new(
            "prefix",
            format!("must be at most {MAX_KEY_BYTES} bytes"),
        )])?;
    }
    if params.consistency == Consistency::Linearizable {
        app.node.read_barrier().await?;
    }
    let (keys, revision) = app
        .node
        .state
        .read(|a| (a.kv.keys(&params.prefix), a.kv.revision()));
    let keys = keys
        .into_iter()
        .map(|(key, revision)| KeyEntry { key, revision })
        .collect();
    Ok(with_revision(revision, Json(KeyList { keys, revision })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct WatchParams {
    /// Only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// Deliver every change after this revision; without it, only changes from now on. A reconnecting
    /// client passes the last revision it received (or sends `Last-Event-ID`).
    from_revision: Option<Revision>,
}

/// Streams changes under a prefix as Server-Sent Events, in revision order, without gaps.
///
/// Each event is `id: <revision>`, `event: put|delete`, `data: {"revision","key","value"?}`. When the node's
/// history no longer reaches back far enough the answer is 410 `compacted` (or, mid-stream, an
/// `event: compacted` before the stream ends). Any node serves watches from its own state machine.
#[utoipa::path(get, path = "/v1/watch", params(WatchParams),
    responses((status = 200, description = "text/event-stream"), (status = 410, body = ErrorBody)))]
async fn watch(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<WatchParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if params.prefix.len() > MAX_KEY_BYTES {
        validate(vec![FieldError::new(
            "prefix",
            format!("must be at most {MAX_KEY_BYTES} bytes"),
        )])?;
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Revision>().ok());
    // Subscribe before reading the history: a change applied in between then wakes the stream once more,
    // and is never missed.
    let mut changes = app.node.state.subscribe();
    changes.mark_unchanged();
    let after = match params.from_revision.or(last_event_id) {
        Some(revision) => revision,
        None => app.node.state.read(|a| a.kv.revision()),
    };
    if let Err(Compacted { compacted }) = app
        .node
        .state
        .read(|a| a.kv.changes_after(after, &params.prefix).map(|_| ()))
    {
        return Err(compacted_error(after, compacted));
    }
    let stream = WatchStream {
        node: app.node.clone(),
        prefix: params.prefix,
        after,
        changes,
        shutdown: app.shutdown.clone(),
    };
    Ok(
        Sse::new(stream.into_stream())
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(5))),
    )
}

fn compacted_error(after: Revision, compacted: Revision) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "compacted",
        format!("changes after revision {after} are no longer kept here (compacted up to {compacted}); read the current values and watch from there"),
    )
    .with_details(json!({"from_revision": after, "compacted_revision": compacted}))
}

/// One watcher: a cursor into the node's change history, woken whenever the state machine changes.
struct WatchStream {
    node: Node,
    prefix: String,
    /// Every change under the prefix up to this revision has been sent.
    after: Revision,
    changes: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
}

impl WatchStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(
            (self, std::collections::VecDeque::<Event>::new(), false),
            |(mut watch, mut pending, mut ended)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(event), (watch, pending, ended)));
                    }
                    if ended {
                        return None;
                    }
                    let (prefix, after) = (&watch.prefix, watch.after);
                    // The changes and how far the state machine got, under one lock: the cursor may then move
                    // to the store revision even when nothing under this prefix changed (so a quiet prefix is
                    // never reported as compacted).
                    let read = watch.node.state.read(|a| {
                        a.kv.changes_after(after, prefix)
                            .map(|c| (c, a.kv.revision()))
                    });
                    match read {
                        Err(Compacted { compacted }) => {
                            let body = compacted_error(after, compacted).body();
                            let data = serde_json::to_string(&body).unwrap_or_default();
                            pending.push_back(Event::default().event("compacted").data(data));
                            ended = true;
                        }
                        Ok((changes, revision)) => {
                            for change in &changes {
                                let kind = if change.value.is_some() {
                                    "put"
                                } else {
                                    "delete"
                                };
                                let data = serde_json::to_string(&**change).unwrap_or_default();
                                pending.push_back(
                                    Event::default()
                                        .id(change.revision.to_string())
                                        .event(kind)
                                        .data(data),
                                );
                            }
                            watch.after = watch.after.max(revision);
                            if changes.is_empty() {
                                tokio::select! {
                                    changed = watch.changes.changed() => {
                                        if changed.is_err() {
                                            return None; // the node is going away
                                        }
                                    }
                                    () = watch.shutdown.cancelled() => return None,
                                }
                            }
                        }
                    }
                }
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// Management

fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = format!("Bearer {}", app.admin_token);
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(given) if given == expected => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong admin token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <admin token>` (ADMIN_TOKEN)",
        )),
    }
}

/// This node's view of the cluster.
#[utoipa::path(get, path = "/v1/cluster", responses((status = 200, body = ClusterStatus)))]
async fn cluster(State(app): State<AppState>) -> Json<ClusterStatus> {
    Json(app.node.status())
}

/// Body of `POST /v1/cluster/init`; without one, the node's `INITIAL_MEMBERS`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InitRequest {
    /// Voters: node id → `host:port`.
    members: BTreeMap<NodeId, String>,
}

/// Initialises a new cluster (once, on one node).
#[utoipa::path(post, path = "/v1/cluster/init", request_body = Option<InitRequest>,
    responses((status = 200, body = ClusterStatus), (status = 409, description = "already initialised", body = ErrorBody)))]
async fn init(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ClusterStatus>, ApiError> {
    authorize(&app, &headers)?;
    let members = if body.is_empty() {
        app.initial_members.clone()
    } else {
        let request: InitRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))?;
        request.members
    };
    let mut errors = Vec::new();
    if members.is_empty() {
        errors.push(FieldError::new("members", "must name at least one node"));
    }
    if !members.contains_key(&app.node.id) {
        errors.push(FieldError::new(
            "members",
            format!("must include this node ({})", app.node.id),
        ));
    }
    validate(errors)?;
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .into_iter()
        .map(|(id, addr)| (id, BasicNode { addr }))
        .collect();
    match app.node.raft.initialize(nodes).await {
        Ok(()) => Ok(Json(app.node.status())),
        Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(e))) => {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_initialized",
                format!("the cluster is already initialised: {e}"),
            ))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "init_failed",
            e.to_string(),
        )),
    }
}

/// Body of `POST /v1/cluster/learners`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LearnerRequest {
    node_id: NodeId,
    /// `host:port` of the new node.
    addr: String,
}

/// Adds a non-voting member and waits until it has caught up with the log.
#[utoipa::path(post, path = "/v1/cluster/learners", request_body = LearnerRequest,
    responses((status = 200, body = ClusterStatus), (status = 503, body = ErrorBody)))]
async fn add_learner(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<LearnerRequest>,
) -> Result<Json<ClusterStatus>, ApiError> {
    authorize(&app, &headers)?;
    if request.addr.trim().is_empty() {
        validate(vec![FieldError::new("addr", "must not be empty")])?;
    }
    let adding = app
        .node
        .raft
        .add_learner(request.node_id, BasicNode { addr: request.addr }, true);
    match tokio::time::timeout(Duration::from_secs(10), adding).await {
        Ok(Ok(_)) => Ok(Json(app.node.status())),
        Ok(Err(e)) => Err(NodeError::from(e).into()),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "learner_timeout",
            "the learner was added but has not caught up within 10 s",
        )),
    }
}

/// Body of `POST /v1/cluster/membership`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MembershipRequest {
    /// The new set of voters; each must already be a member (add learners first).
    voters: BTreeSet<NodeId>,
}

/// Changes the voters (joint consensus); nodes dropped from the voters leave the cluster.
#[utoipa::path(post, path = "/v1/cluster/membership", request_body = MembershipRequest,
    responses((status = 200, body = ClusterStatus), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn change_membership(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<MembershipRequest>,
) -> Result<Json<ClusterStatus>, ApiError> {
    authorize(&app, &headers)?;
    if request.voters.is_empty() {
        validate(vec![FieldError::new(
            "voters",
            "must name at least one node",
        )])?;
    }
    let known = app.node.status();
    let unknown: Vec<_> = request
        .voters
        .iter()
        .filter(|id| !known.members.contains_key(id) && !known.learners.contains_key(id))
        .collect();
    if !unknown.is_empty() {
        validate(vec![FieldError::new(
            "voters",
            format!("nodes {unknown:?} are not members; add them as learners first"),
        )])?;
    }
    let changing = app.node.raft.change_membership(request.voters, false);
    match tokio::time::timeout(Duration::from_secs(10), changing).await {
        Ok(Ok(_)) => Ok(Json(app.node.status())),
        Ok(Err(e)) => Err(NodeError::from(e).into()),
        Err(_) => Err(NodeError::CommitTimeout(Duration::from_secs(10)).into()),
    }
}

/// Body of `PUT /admin/partition`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PartitionRequest {
    /// Peers whose Raft messages (and forwarded requests) this node drops, both ways. Empty heals.
    blocked: BTreeSet<NodeId>,
}

async fn partition(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"node_id": app.node.id, "blocked": app.node.partition.blocked()}))
}

/// Cuts this node off from chosen peers (a test and chaos switch, until the chaos sidecar exists).
#[utoipa::path(put, path = "/admin/partition", request_body = PartitionRequest,
    responses((status = 200), (status = 401, body = ErrorBody)))]
async fn set_partition(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<PartitionRequest>,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    if request.blocked.contains(&app.node.id) {
        validate(vec![FieldError::new(
            "blocked",
            "a node cannot be partitioned from itself",
        )])?;
    }
    tracing::warn!(blocked = ?request.blocked, "partition switch set");
    app.node.partition.set(request.blocked);
    Ok(partition(State(app)).await)
}

// ---------------------------------------------------------------------------------------------------------
// Raft RPC

/// The refusal, when the sender is on the other side of a partition.
fn refuse_partitioned(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    let from = headers
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<NodeId>().ok());
    match from {
        Some(peer) if app.node.partition.is_blocked(peer) => Some(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "partitioned",
                format!("node {peer} is partitioned away from this node"),
            )
            .into_response(),
        ),
        _ => None,
    }
}

async fn raft_vote(
    State(app): State<AppState>,
    headers: HeaderMap,
    axum::Json(rpc): axum::Json<VoteRequest<NodeId>>,
) -> Response {
    if let Some(refused) = refuse_partitioned(&app, &headers) {
        return refused;
    }
    axum::Json(app.node.raft.vote(rpc).await).into_response()
}

async fn raft_append(
    State(app): State<AppState>,
    headers: HeaderMap,
    axum::Json(rpc): axum::Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    if let Some(refused) = refuse_partitioned(&app, &headers) {
        return refused;
    }
    axum::Json(app.node.raft.append_entries(rpc).await).into_response()
}

async fn raft_snapshot(
    State(app): State<AppState>,
    headers: HeaderMap,
    axum::Json(rpc): axum::Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    if let Some(refused) = refuse_partitioned(&app, &headers) {
        return refused;
    }
    axum::Json(app.node.raft.install_snapshot(rpc).await).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn writes_and_linearizable_reads_need_the_leader_stale_reads_and_watches_do_not() {
        assert!(needs_leader(&request(Method::PUT, "/v1/kv/a/b")));
        assert!(needs_leader(&request(Method::DELETE, "/v1/kv/a")));
        assert!(needs_leader(&request(Method::GET, "/v1/kv/a")));
        assert!(needs_leader(&request(Method::GET, "/v1/kv?prefix=a")));
        assert!(needs_leader(&request(
            Method::POST,
            "/v1/cluster/membership"
        )));
        assert!(!needs_leader(&request(
            Method::GET,
            "/v1/kv/a?consistency=stale"
        )));
        assert!(!needs_leader(&request(Method::GET, "/v1/watch?prefix=a")));
        assert!(!needs_leader(&request(Method::GET, "/v1/cluster")));
        assert!(!needs_leader(&request(Method::POST, "/v1/cluster/init")));
        assert!(!needs_leader(&request(Method::POST, "/raft/append")));
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("distlab/order/default_mode", "key").is_ok());
        assert!(check_key("", "key").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1), "key").is_err());
        assert!(check_key("a\nb", "key").is_err());
    }
}
