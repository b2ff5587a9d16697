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
//!
//! The wire contract of the client API — paths, headers, bodies, watch events, error codes, limits — is
//! declared in `distlab_config_client::wire`, which the clients of the service link too.

mod forward;
mod kv;
mod manage;
mod raft_rpc;

use forward::not_leader;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::{self};
use distlab_config_client::wire::ErrorCode;
use distlab_platform::{ApiError, ErrorBody};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::raft::{Node, NodeError, NodeId};

pub use distlab_config_client::wire::{MAX_KEY_CHARS, MAX_VALUE_BYTES};

/// Largest client request body (a value plus its envelope).
pub const BODY_LIMIT: usize = MAX_VALUE_BYTES + 4 * 1024;
/// Largest Raft RPC body (a batch of entries or a snapshot chunk).
const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;

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
    kv::routes()
        .merge(manage::routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::forward_to_leader,
        ))
        .merge(raft_rpc::routes())
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distlab config",
        description = "A Raft-replicated key-value store with revisions, compare-and-set and watches."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

pub fn openapi() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(kv::ApiDoc::openapi());
    doc.merge(manage::ApiDoc::openapi());
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    // What utoipa cannot say: a value is any JSON but `null` or `""`, and it is required.
    let put = &mut doc["components"]["schemas"]["PutRequest"];
    put["properties"]["value"] = serde_json::json!({
        "description": "Any JSON value except `null` and `\"\"`.",
        "not": {"enum": [null, ""]}
    });
    put["required"] = serde_json::json!(["value"]);
    doc
}

impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::NotLeader { leader } => not_leader(leader),
            NodeError::NoQuorum(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NoQuorum.as_str(),
                format!("{error}: this node may be on the minority side of a partition"),
            )
            .with_retry_after(1),
            NodeError::CommitTimeout(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::CommitTimeout.as_str(),
                error.to_string(),
            )
            .with_retry_after(1),
            NodeError::CommitUnknown(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::CommitUnknown.as_str(),
                error.to_string(),
            )
            .with_retry_after(1),
            NodeError::MembershipRefused(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::MembershipChangeRefused.as_str(),
                error.to_string(),
            ),
            NodeError::Stopped(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NodeStopped.as_str(),
                error.to_string(),
            ),
        }
    }
}
