//! Forwarding: a follower sends writes, linearizable reads and membership changes to the leader it knows
//! and relays the answer; a request already forwarded once is not forwarded again.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use distlab_config_client::wire::{
    ErrorCode, FORWARDED_BY_HEADER, FORWARDED_TO_HEADER, KV_PATH, REVISION_HEADER,
};
use distlab_platform::ApiError;
use serde_json::json;

use crate::raft::NodeId;

use super::{AppState, BODY_LIMIT};

/// Whether this request must be served by the leader.
fn needs_leader(request: &Request) -> bool {
    let path = request.uri().path();
    let stale = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "consistency=stale"));
    let key_path = path
        .strip_prefix(KV_PATH)
        .is_some_and(|rest| rest.starts_with('/'));
    match *request.method() {
        Method::GET => (path == KV_PATH || key_path) && !stale,
        Method::PUT | Method::DELETE => key_path,
        Method::POST => path == "/v1/cluster/learners" || path == "/v1/cluster/membership",
        _ => false,
    }
}

pub(super) async fn forward_to_leader(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !needs_leader(&request) {
        return next.run(request).await;
    }
    let Some((leader, addr)) = app.node.leader_elsewhere() else {
        // This node leads, or no leader is known: the handler answers (or says there is no leader).
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_BY_HEADER) {
        return not_leader(Some((leader, addr))).into_response();
    }
    if app.node.partition.is_blocked(leader) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Partitioned.as_str(),
            format!("the leader (node {leader}) is on the other side of a partition"),
        )
        .with_retry_after(1)
        .into_response();
    }
    // Through this node's route to the leader (PEER_ROUTES), if it has one.
    let addr = app.node.route_to(leader, &addr);
    match forward(&app, leader, &addr, request).await {
        Ok(response) => response,
        // Not connected: the request certainly did not reach the leader.
        Err(error) if error.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_connect) => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::LeaderUnreachable.as_str(),
                format!("cannot connect to the leader (node {leader} at {addr}): {error}"),
            )
            .with_retry_after(1)
            .into_response()
        }
        // Sent, but no answer came back: the leader may have applied it.
        Err(error) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ForwardInterrupted.as_str(),
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
        .header(FORWARDED_BY_HEADER, app.node.id)
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

pub(super) fn not_leader(leader: Option<(NodeId, String)>) -> ApiError {
    let details = match &leader {
        Some((id, addr)) => json!({"leader_id": id, "leader_addr": addr}),
        None => json!({"leader_id": null}),
    };
    let message = match leader {
        Some((id, _)) => format!("node {id} leads; ask it"),
        None => "no leader is known (an election may be under way)".to_owned(),
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::NotLeader.as_str(),
        message,
    )
    .with_details(details)
    .with_retry_after(1)
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
}
