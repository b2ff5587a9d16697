//! Raft RPC, node to node: `POST /raft/{vote,append,snapshot}`; refused from the far side of a partition.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use distlab_platform::ApiError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::network::FROM_HEADER;
use crate::raft::{NodeId, TypeConfig};

use super::{AppState, RAFT_BODY_LIMIT};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/raft/vote", post(raft_vote))
        .route("/raft/append", post(raft_append))
        .route("/raft/snapshot", post(raft_snapshot))
        .layer(axum::extract::DefaultBodyLimit::max(RAFT_BODY_LIMIT))
}

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
