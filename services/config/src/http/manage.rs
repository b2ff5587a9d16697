//! Management: `GET /v1/cluster`, and with the admin token `POST /v1/cluster/init`, `/v1/cluster/learners`,
//! `/v1/cluster/membership`, `GET|PUT /admin/partition`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use distlab_platform::{ApiError, ErrorBody, FieldError, Json};
use openraft::BasicNode;
use openraft::error::InitializeError;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::raft::{ClusterStatus, NodeError, NodeId};

use super::AppState;
use super::kv::validate;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/init", post(init))
        .route("/v1/cluster/learners", post(add_learner))
        .route("/v1/cluster/membership", post(change_membership))
        .route("/admin/partition", get(partition).put(set_partition))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        cluster,
        init,
        add_learner,
        change_membership,
        partition,
        set_partition
    ),
    components(schemas(
        ClusterStatus,
        InitRequest,
        LearnerRequest,
        MembershipRequest,
        PartitionRequest
    ))
)]
pub(super) struct ApiDoc;

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
    responses((status = 200, body = ClusterStatus), (status = 409, description = "already initialised", body = ErrorBody),
        (status = 401, description = "no admin token", body = ErrorBody), (status = 403, description = "a wrong admin token", body = ErrorBody)))]
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
    responses((status = 200, body = ClusterStatus), (status = 503, body = ErrorBody),
        (status = 401, description = "no admin token", body = ErrorBody), (status = 403, description = "a wrong admin token", body = ErrorBody)))]
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
    responses((status = 200, body = ClusterStatus), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 409, description = "openraft refused the change", body = ErrorBody), (status = 401, description = "no admin token", body = ErrorBody), (status = 403, description = "a wrong admin token", body = ErrorBody)))]
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

/// The peers this node is cut off from (`{"node_id", "blocked": [ids]}`).
#[utoipa::path(get, path = "/admin/partition", responses((status = 200, description = "this node's id and the peers it drops")))]
async fn partition(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"node_id": app.node.id, "blocked": app.node.partition.blocked()}))
}

/// Cuts this node off from chosen peers (a test and chaos switch, until the chaos sidecar exists).
#[utoipa::path(put, path = "/admin/partition", request_body = PartitionRequest,
    responses((status = 200), (status = 401, description = "no admin token", body = ErrorBody), (status = 403, description = "a wrong admin token", body = ErrorBody)))]
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
