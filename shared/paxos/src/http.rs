//! An [`Acceptor`] over HTTP (feature `http`), one per port — the design reserves 8101–8103 for three of
//! them. Each Paxos instance (a single decree) has an acceptor of its own, by number in the path, so runs
//! of the scenario do not see each other's promises and a message delayed from an earlier run lands in its
//! own instance.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /paxos/{instance}/prepare` | `{"type": "prepare", "n": 2}` | 200 [`Reply`]: `replies` holds the promise, or is empty when the prepare was dropped |
//! | `POST /paxos/{instance}/accept` | `{"type": "accept", "n": 4, "v": 8}` | 200 [`Reply`]: `replies` holds the acceptance meant for the learners, or is empty when it was dropped |
//! | `GET /paxos/{instance}/state` | — | 200 [`InstanceState`] |
//! | `GET /healthz` | — | 200 `{"status": "ok"}` |
//!
//! A dropped message is still answered (HTTP answers every request), with no reply and the acceptor's
//! promise, which the proposer may use to retry above it — information the seed's silent drop withholds,
//! and harmless: it only makes a proposer skip numbers. Bad input gets distlab's error body
//! (docs/contracts.md): malformed JSON 400 `malformed_json`, a body of the wrong shape 422 `invalid_body`,
//! a message of the wrong type for the route 422 `wrong_message_type`, an instance that is not a number
//! 400 `invalid_path`, an unknown route 404 `not_found`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use distlab_platform::error::{ApiError, Json, Path};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{Acceptor, Message, NodeId, Proposal, ProposalNumber};

/// The answer to a prepare or an accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// What the acceptor sends in return: a promise (to the proposer), an acceptance (to the learners), or
    /// nothing when it dropped the message.
    pub replies: Vec<Message>,
    /// Its promise after handling the message.
    pub promised: Option<ProposalNumber>,
}

/// What an acceptor holds for one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// The highest number promised.
    pub promised: Option<ProposalNumber>,
    /// The proposal accepted last.
    pub accepted: Option<Proposal>,
    /// Every proposal accepted, in order (for checking what was chosen; an acceptor itself needs only the
    /// last one).
    pub accepted_log: Vec<Proposal>,
}

#[derive(Debug, Default)]
struct Instance {
    acceptor: Acceptor,
    log: Vec<Proposal>,
}

/// The acceptors of one HTTP server, by instance.
#[derive(Debug, Default, Clone)]
pub struct AcceptorNode {
    instances: Arc<Mutex<BTreeMap<u64, Instance>>>,
}

/// The id an HTTP acceptor gives every proposer: the answer goes back on the request's connection.
const CALLER: NodeId = 0;

impl AcceptorNode {
    /// A node with no instance yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn handle(&self, instance: u64, message: Message) -> Reply {
        let mut instances = self
            .instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = instances.entry(instance).or_default();
        let replies: Vec<Message> = entry
            .acceptor
            .handle(CALLER, message)
            .into_iter()
            .map(|o| o.message)
            .collect();
        for reply in &replies {
            if let Message::Accepted { n, v } = *reply {
                entry.log.push(Proposal { n, v });
            }
        }
        Reply {
            replies,
            promised: entry.acceptor.promised(),
        }
    }

    fn state(&self, instance: u64) -> InstanceState {
        let instances = self
            .instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        instances
            .get(&instance)
            .map(|i| InstanceState {
                promised: i.acceptor.promised(),
                accepted: i.acceptor.accepted(),
                accepted_log: i.log.clone(),
            })
            .unwrap_or_default()
    }
}

fn wrong_type(route: &str, message: &Message) -> ApiError {
    ApiError::unprocessable(
        "wrong_message_type",
        format!("{route} takes a message of that type, not `{message}`"),
    )
}

async fn prepare(
    axum::extract::State(node): axum::extract::State<AcceptorNode>,
    Path(instance): Path<u64>,
    Json(message): Json<Message>,
) -> Result<Json<Reply>, ApiError> {
    match message {
        Message::Prepare { .. } => Ok(Json(node.handle(instance, message))),
        other => Err(wrong_type("/prepare (prepare)", &other)),
    }
}

async fn accept(
    axum::extract::State(node): axum::extract::State<AcceptorNode>,
    Path(instance): Path<u64>,
    Json(message): Json<Message>,
) -> Result<Json<Reply>, ApiError> {
    match message {
        Message::Accept { .. } => Ok(Json(node.handle(instance, message))),
        other => Err(wrong_type("/accept (accept)", &other)),
    }
}

async fn state(
    axum::extract::State(node): axum::extract::State<AcceptorNode>,
    Path(instance): Path<u64>,
) -> Json<InstanceState> {
    Json(node.state(instance))
}

/// The acceptor's routes.
pub fn router(node: AcceptorNode) -> Router {
    Router::new()
        .route("/paxos/{instance}/prepare", post(prepare))
        .route("/paxos/{instance}/accept", post(accept))
        .route("/paxos/{instance}/state", get(state))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(node)
}

/// A running acceptor server; dropping it (or [`Running::stop`]) stops it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it and waits until it has.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or(Ok(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts an acceptor server on `addr` (on the current tokio runtime).
pub async fn spawn(addr: SocketAddr) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(AcceptorNode::new());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running {
        addr,
        stop: Some(stop),
        task,
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    #[tokio::test]
    async fn prepare_accept_and_state_over_http() {
        let app = router(AcceptorNode::new());
        let (status, body) = call(
            &app,
            "POST",
            "/paxos/1/prepare",
            r#"{"type":"prepare","n":2}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"replies": [{"type": "promise", "n": 2, "accepted": null}], "promised": 2})
        );
        let (_, body) = call(
            &app,
            "POST",
            "/paxos/1/accept",
            r#"{"type":"accept","n":2,"v":8}"#,
        )
        .await;
        assert_eq!(
            body["replies"][0],
            serde_json::json!({"type": "accepted", "n": 2, "v": 8})
        );
        let (_, body) = call(
            &app,
            "POST",
            "/paxos/1/prepare",
            r#"{"type":"prepare","n":1}"#,
        )
        .await;
        assert_eq!(
            body,
            serde_json::json!({"replies": [], "promised": 2}),
            "a dropped prepare: no promise, the acceptor's own"
        );
        let (status, body) = call(&app, "GET", "/paxos/1/state", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"promised": 2, "accepted": {"n": 2, "v": 8}, "accepted_log": [{"n": 2, "v": 8}]})
        );
        let (_, body) = call(&app, "GET", "/paxos/2/state", "").await;
        assert_eq!(
            body,
            serde_json::json!({"promised": null, "accepted": null, "accepted_log": []}),
            "instances are apart"
        );
    }

    #[tokio::test]
    async fn bad_input_is_a_4xx_with_the_shared_error_body() {
        let app = router(AcceptorNode::new());
        let cases = [
            (
                "POST",
                "/paxos/1/prepare",
                "{not json",
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                "POST",
                "/paxos/1/prepare",
                r#"{"type":"prepare","n":-1}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                "POST",
                "/paxos/1/prepare",
                r#"{"type":"propose","n":1}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                "POST",
                "/paxos/1/prepare",
                r#"{"type":"accept","n":1,"v":3}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_message_type",
            ),
            (
                "POST",
                "/paxos/1/accept",
                r#"{"type":"prepare","n":1}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_message_type",
            ),
            (
                "POST",
                "/paxos/x/accept",
                r#"{"type":"accept","n":1,"v":3}"#,
                StatusCode::BAD_REQUEST,
                "invalid_path",
            ),
            ("GET", "/paxos", "", StatusCode::NOT_FOUND, "not_found"),
        ];
        for (method, uri, body, status, code) in cases {
            let (got, json) = call(&app, method, uri, body).await;
            assert_eq!(got, status, "{method} {uri} {body}");
            assert_eq!(json["error"]["code"], code, "{method} {uri} {body}: {json}");
            assert!(json["error"]["message"].is_string());
        }
        let (_, state) = call(&app, "GET", "/paxos/1/state", "").await;
        assert_eq!(
            state["promised"],
            serde_json::Value::Null,
            "bad input changed nothing"
        );
    }

    #[tokio::test]
    async fn a_spawned_acceptor_answers_on_its_port_and_stops() {
        let running = spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = running.addr();
        let stream = tokio::net::TcpStream::connect(addr).await;
        assert!(stream.is_ok(), "it listens on {addr}");
        running.stop().await.unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "it stopped"
        );
    }
}
