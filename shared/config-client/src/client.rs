//! [`ConfigClient`]: reads and writes keys of the config service, trying its nodes in turn.
//!
//! Any node serves any request: a follower forwards writes and linearizable reads to the leader
//! (docs/raft-config.md), so the client needs no idea of who leads. It moves to the next node only when a
//! node could not serve the request — it could not be reached, did not answer in time, or answered 503
//! (`not_leader`, `no_quorum`, `partitioned`…) or another 5xx — and starts with the node that answered
//! last. An answer about the request itself (404, 409 `revision_mismatch`, 422…) is final.
//!
//! **Writes whose fate is unknown.** A write that was sent but got no answer, or a 503 `commit_timeout`,
//! `commit_unknown` or `forward_interrupted`, may still be applied. [`ConfigClient::put`] sets a value,
//! which is harmless to repeat, so it goes on with the next node; [`ConfigClient::put_if`] and
//! [`ConfigClient::delete`] stop there with [`ClientError::Indeterminate`] (repeating a compare-and-set
//! could fail on its own success). [`ClientError::may_have_applied`] says which errors leave that doubt.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use distlab_platform::ErrorBody;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire::{
    Consistency, DeleteParams, ErrorCode, KV_PATH, KeyError, KeyValue, PutRequest, REVISION_HEADER,
    ReadParams, Revision, Written, check_key,
};

/// How long one attempt on one node may take, answer included: longer than the time a node waits for a
/// majority (2 s by default) plus a forward to the leader, so that a node answers 503 before the client
/// gives up on it.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of an error body quoted in an error (or a follower's `last_error`).
const MAX_QUOTED_BODY: usize = 300;

/// The HTTP client could not be built (TLS back-end, system configuration).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// Why one node could not serve a request; the client then tried the next one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeFailure {
    /// Not connected: the request never reached the node.
    #[error("{node} could not be reached: {reason}")]
    Unreachable { node: String, reason: String },
    /// Sent, but no complete answer came back in time.
    #[error("{node} did not answer: {reason}")]
    NoAnswer { node: String, reason: String },
    /// A 5xx, e.g. 503 `no_quorum` on the minority side of a partition.
    #[error("{node} answered {status} `{code}`: {message}")]
    Unavailable {
        node: String,
        status: u16,
        /// The error body's `code` (empty when the body was not the shared error body).
        code: String,
        message: String,
    },
}

impl NodeFailure {
    /// The node's base URL.
    pub fn node(&self) -> &str {
        match self {
            Self::Unreachable { node, .. }
            | Self::NoAnswer { node, .. }
            | Self::Unavailable { node, .. } => node,
        }
    }

    /// Whether a write that failed so may still be applied: it reached the node and the answer does not
    /// say it was refused (an unknown 5xx code counts as "may").
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Unreachable { .. } => false,
            Self::NoAnswer { .. } => true,
            Self::Unavailable { code, .. } => {
                ErrorCode::parse(code).is_none_or(ErrorCode::may_have_applied)
            }
        }
    }
}

/// Why a [`ConfigClient`] request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client was built with no node.
    #[error("no config node is configured")]
    NoNodes,
    /// The key breaks the config service's rules, or cannot be carried in a URL; nothing was sent.
    #[error("the key {key:?} is refused: it {error}")]
    InvalidKey {
        key: String,
        #[source]
        error: KeyError,
    },
    /// A compare-and-set (or a conditional delete) found the key at another revision (0: absent).
    #[error("`{key}` is at revision {current}, not {expected}")]
    RevisionMismatch {
        key: String,
        expected: Revision,
        current: Revision,
    },
    /// A node answered the request itself with an error (4xx), e.g. 422 `validation_failed` or 413
    /// `value_too_large`: asking another node would not help.
    #[error("{node} refused the request with {status} `{code}`: {message}")]
    Rejected {
        node: String,
        status: u16,
        code: String,
        message: String,
        details: Option<Value>,
    },
    /// A node answered success with a body that is not the contract's.
    #[error("{node} answered something unreadable: {reason}")]
    Unreadable { node: String, reason: String },
    /// A compare-and-set or a delete may or may not have been applied; it was not repeated.
    #[error("the write may or may not have been applied: {failure}")]
    Indeterminate { failure: NodeFailure },
    /// Every node failed, each for the reason listed (in the order tried).
    #[error("no config node could serve the request: {}", Failures(failures))]
    Unavailable { failures: Vec<NodeFailure> },
}

impl ClientError {
    /// For a write: whether it may have been applied despite the error (then read the key to know).
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Indeterminate { .. } => true,
            Self::Unavailable { failures } => failures.iter().any(NodeFailure::may_have_applied),
            // Applied, but the answer could not be read.
            Self::Unreadable { .. } => true,
            Self::NoNodes
            | Self::InvalidKey { .. }
            | Self::RevisionMismatch { .. }
            | Self::Rejected { .. } => false,
        }
    }
}

/// `a; b; c`.
struct Failures<'a>(&'a [NodeFailure]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

/// What may be repeated on the next node after a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// A read, or a write that is harmless to apply twice: go on whatever happened.
    Always,
    /// A write that must not be repeated once it may have been applied.
    UnlessMaybeApplied,
}

/// A client of the config service's key-value API (`/v1/kv/{key}`); see the module documentation.
/// Cheap to clone (the clones share their connections and the node that answered last).
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use distlab_config_client::{ConfigClient, Consistency};
/// use serde_json::json;
///
/// let client = ConfigClient::new(vec!["http://127.0.0.1:8091".into(), "http://127.0.0.1:8092".into()])?;
/// let written = client.put("distlab/limits", &json!({"max_items": 20})).await?;
/// let read = client.get("distlab/limits", Consistency::Linearizable).await?;
/// assert_eq!(read.map(|kv| kv.revision), Some(written.revision));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ConfigClient {
    nodes: Arc<[String]>,
    http: reqwest::Client,
    timeout: Duration,
    /// Index of the node that answered last: the next request starts there.
    preferred: Arc<AtomicUsize>,
}

impl ConfigClient {
    /// A client of the nodes at `nodes` (base URLs such as `http://127.0.0.1:8091`, tried in turn).
    pub fn new(nodes: Vec<String>) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            nodes: nodes
                .into_iter()
                .map(|node| node.trim_end_matches('/').to_owned())
                .collect(),
            http,
            timeout: ATTEMPT_TIMEOUT,
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The same client with another time limit per attempt (default [`ATTEMPT_TIMEOUT`]).
    #[must_use]
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The nodes, in the order given.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The key's value and revision, or `None` when the key does not exist. [`Consistency::Linearizable`]
    /// is served by the leader (any node forwards it); [`Consistency::Stale`] by the first node that
    /// answers, from its own copy, which may lag (its revision says how far).
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>, ClientError> {
        let params = ReadParams { consistency };
        let (node, response) = self
            .send(Method::GET, key, &params, None, Repeat::Always)
            .await?;
        match response.status() {
            StatusCode::OK => read_json(&node, response).await.map(Some),
            StatusCode::NOT_FOUND => match rejection(&node, response).await {
                error if is_code(&error, ErrorCode::KeyNotFound) => Ok(None),
                error => Err(error),
            },
            _ => Err(rejection(&node, response).await),
        }
    }

    /// Sets the key to `value` (any JSON value but `null` and `""`), whatever it was; returns the revision
    /// of the change. Repeated on the next node after any failure, since setting a value twice leaves the
    /// same value.
    pub async fn put(&self, key: &str, value: &Value) -> Result<Written, ClientError> {
        self.write(key, value, None, Repeat::Always).await
    }

    /// Compare-and-set: sets the key to `value` only if its revision is `prev_revision` (`0`: only if it
    /// does not exist), else [`ClientError::RevisionMismatch`]. Not repeated once it may have been applied
    /// ([`ClientError::Indeterminate`]).
    pub async fn put_if(
        &self,
        key: &str,
        value: &Value,
        prev_revision: Revision,
    ) -> Result<Written, ClientError> {
        self.write(key, value, Some(prev_revision), Repeat::UnlessMaybeApplied)
            .await
    }

    /// Deletes the key; returns the revision of the change, or `None` when the key did not exist. Not
    /// repeated once it may have been applied ([`ClientError::Indeterminate`]): a repeat would find the
    /// key gone and answer `None`.
    pub async fn delete(&self, key: &str) -> Result<Option<Written>, ClientError> {
        let params = DeleteParams {
            prev_revision: None,
        };
        let (node, response) = self
            .send(
                Method::DELETE,
                key,
                &params,
                None,
                Repeat::UnlessMaybeApplied,
            )
            .await?;
        match response.status() {
            StatusCode::OK => read_json(&node, response).await.map(Some),
            StatusCode::NOT_FOUND => match rejection(&node, response).await {
                error if is_code(&error, ErrorCode::KeyNotFound) => Ok(None),
                error => Err(error),
            },
            _ => Err(rejection(&node, response).await),
        }
    }

    async fn write(
        &self,
        key: &str,
        value: &Value,
        prev_revision: Option<Revision>,
        repeat: Repeat,
    ) -> Result<Written, ClientError> {
        let body = PutRequest {
            value: Some(value.clone()),
            prev_revision,
        };
        let (node, response) = self
            .send(Method::PUT, key, &(), Some(&body), repeat)
            .await?;
        if response.status() == StatusCode::OK {
            return read_json(&node, response).await;
        }
        match rejection(&node, response).await {
            ClientError::Rejected { code, details, .. }
                if code == ErrorCode::RevisionMismatch.as_str() =>
            {
                let current = details
                    .as_ref()
                    .and_then(|d| d["current_revision"].as_u64())
                    .unwrap_or_default();
                Err(ClientError::RevisionMismatch {
                    key: key.to_owned(),
                    expected: prev_revision.unwrap_or_default(),
                    current,
                })
            }
            error => Err(error),
        }
    }

    /// Sends the request to each node in turn, from the one that answered last, until one answers with
    /// something other than a 5xx; returns that node and its answer.
    async fn send(
        &self,
        method: Method,
        key: &str,
        query: &impl Serialize,
        body: Option<&PutRequest>,
        repeat: Repeat,
    ) -> Result<(String, reqwest::Response), ClientError> {
        if self.nodes.is_empty() {
            return Err(ClientError::NoNodes);
        }
        check_addressable(key).map_err(|error| ClientError::InvalidKey {
            key: key.to_owned(),
            error,
        })?;
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for offset in 0..self.nodes.len() {
            let index = (start + offset) % self.nodes.len();
            let node = &self.nodes[index];
            let failure = match key_url(node, key) {
                Err(KeyUrlError::Key(error)) => {
                    return Err(ClientError::InvalidKey {
                        key: key.to_owned(),
                        error,
                    });
                }
                Err(KeyUrlError::Node(reason)) => NodeFailure::Unreachable {
                    node: node.clone(),
                    reason,
                },
                Ok(url) => {
                    let mut request = self
                        .http
                        .request(method.clone(), url)
                        .query(query)
                        .timeout(self.timeout);
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    match request.send().await {
                        Ok(response) if !response.status().is_server_error() => {
                            self.preferred.store(index, Ordering::Relaxed);
                            return Ok((node.clone(), response));
                        }
                        Ok(response) => unavailable(node, response).await,
                        Err(error) if error.is_connect() => NodeFailure::Unreachable {
                            node: node.clone(),
                            reason: error_chain(&error),
                        },
                        Err(error) => NodeFailure::NoAnswer {
                            node: node.clone(),
                            reason: error_chain(&error),
                        },
                    }
                }
            };
            tracing::debug!(%failure, "config node could not serve the request; trying the next");
            if repeat == Repeat::UnlessMaybeApplied && failure.may_have_applied() {
                return Err(ClientError::Indeterminate { failure });
            }
            failures.push(failure);
        }
        Err(ClientError::Unavailable { failures })
    }
}

fn is_code(error: &ClientError, expected: ErrorCode) -> bool {
    matches!(error, ClientError::Rejected { code, .. } if code == expected.as_str())
}

async fn read_json<T: DeserializeOwned>(
    node: &str,
    response: reqwest::Response,
) -> Result<T, ClientError> {
    response
        .json()
        .await
        .map_err(|error| ClientError::Unreadable {
            node: node.to_owned(),
            reason: error_chain(&error),
        })
}

/// The status and error body of an answer (a body that is not the shared error body is quoted as the
/// message, with an empty code).
async fn error_answer(response: reqwest::Response) -> (u16, String, String, Option<Value>) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(ErrorBody { error }) => (status, error.code, error.message, error.details),
        Err(_) => (status, String::new(), quote(&text), None),
    }
}

async fn rejection(node: &str, response: reqwest::Response) -> ClientError {
    let (status, code, message, details) = error_answer(response).await;
    ClientError::Rejected {
        node: node.to_owned(),
        status,
        code,
        message,
        details,
    }
}

async fn unavailable(node: &str, response: reqwest::Response) -> NodeFailure {
    let (status, code, message, _) = error_answer(response).await;
    NodeFailure::Unavailable {
        node: node.to_owned(),
        status,
        code,
        message,
    }
}

/// Why a key's URL could not be made.
#[derive(Debug)]
pub(crate) enum KeyUrlError {
    Key(KeyError),
    /// The node's base URL is not one.
    Node(String),
}

/// The config service's rules for a key ([`check_key`]), plus what a URL can carry.
fn check_addressable(key: &str) -> Result<(), KeyError> {
    check_key(key)?;
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(KeyError::DotSegment);
    }
    Ok(())
}

/// `{node}/v1/kv/{key}`, each segment of the key percent-encoded (a key may contain `/`, `?`, `%`, `#`…).
pub(crate) fn key_url(node: &str, key: &str) -> Result<Url, KeyUrlError> {
    check_addressable(key).map_err(KeyUrlError::Key)?;
    let mut url =
        Url::parse(node).map_err(|error| KeyUrlError::Node(format!("not a URL: {error}")))?;
    url.path_segments_mut()
        .map_err(|()| KeyUrlError::Node("not a base URL".to_owned()))?
        .pop_if_empty()
        .extend(KV_PATH.split('/').filter(|segment| !segment.is_empty()))
        .extend(key.split('/'));
    Ok(url)
}

/// The node's store revision, from [`REVISION_HEADER`].
pub(crate) fn store_revision(response: &reqwest::Response) -> Option<Revision> {
    response
        .headers()
        .get(REVISION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A request error with its causes ("error sending request …: tcp connect error: Connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most [`MAX_QUOTED_BODY`] bytes of `text`, cut at a character boundary.
pub(crate) fn quote(text: &str) -> String {
    let mut end = text.len().min(MAX_QUOTED_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use axum::extract::{Path, Query, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use distlab_platform::ApiError;
    use serde_json::json;

    use super::*;

    /// A config node in memory: the keys, the store revision and how many requests it got.
    #[derive(Clone, Default)]
    struct Node {
        store: Arc<Mutex<(Revision, BTreeMap<String, KeyValue>)>>,
        hits: Arc<AtomicUsize>,
    }

    impl Node {
        fn hits(&self) -> usize {
            self.hits.load(Ordering::Relaxed)
        }
    }

    fn not_found(key: &str) -> Response {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            ErrorCode::KeyNotFound.as_str(),
            format!("no key `{key}`"),
        )
        .into_response()
    }

    async fn read(State(node): State<Node>, Path(key): Path<String>) -> Response {
        node.hits.fetch_add(1, Ordering::Relaxed);
        let store = node.store.lock().expect("not poisoned");
        match store.1.get(&key) {
            Some(found) => axum::Json(found.clone()).into_response(),
            None => not_found(&key),
        }
    }

    async fn write(
        State(node): State<Node>,
        Path(key): Path<String>,
        axum::Json(request): axum::Json<PutRequest>,
    ) -> Response {
        node.hits.fetch_add(1, Ordering::Relaxed);
        let mut store = node.store.lock().expect("not poisoned");
        let value = match request.value {
            Some(Value::String(s)) if s.is_empty() => {
                return ApiError::validation("the request is not valid", &[]).into_response();
            }
            Some(value) => value,
            None => return ApiError::validation("value missing", &[]).into_response(),
        };
        let current = store.1.get(&key).map_or(0, |kv| kv.revision);
        if let Some(expected) = request.prev_revision
            && expected != current
        {
            return ApiError::new(
                axum::http::StatusCode::CONFLICT,
                ErrorCode::RevisionMismatch.as_str(),
                "mismatch",
            )
            .with_details(
                json!({"key": key, "current_revision": current, "prev_revision": expected}),
            )
            .into_response();
        }
        store.0 += 1;
        let revision = store.0;
        store.1.insert(
            key.clone(),
            KeyValue {
                key: key.clone(),
                value,
                revision,
            },
        );
        axum::Json(Written { key, revision }).into_response()
    }

    async fn remove(
        State(node): State<Node>,
        Path(key): Path<String>,
        Query(_): Query<DeleteParams>,
    ) -> Response {
        node.hits.fetch_add(1, Ordering::Relaxed);
        let mut store = node.store.lock().expect("not poisoned");
        if store.1.remove(&key).is_none() {
            return not_found(&key);
        }
        store.0 += 1;
        let revision = store.0;
        axum::Json(Written { key, revision }).into_response()
    }

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    async fn good_node() -> (String, Node) {
        let node = Node::default();
        let router = axum::Router::new()
            .route("/v1/kv/{*key}", get(read).put(write).delete(remove))
            .with_state(node.clone());
        (serve(router).await, node)
    }

    /// A node that answers everything with a 503 of `code`.
    async fn refusing_node(code: ErrorCode) -> (String, Node) {
        let node = Node::default();
        let refuse = move |State(node): State<Node>| async move {
            node.hits.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                code.as_str(),
                "not now",
            )
        };
        let router = axum::Router::new()
            .route("/v1/kv/{*key}", get(refuse).put(refuse).delete(refuse))
            .with_state(node.clone());
        (serve(router).await, node)
    }

    /// A loopback URL nothing listens on.
    fn dead_node() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn key_urls_encode_each_segment() {
        let url = key_url("http://n:1/", "a b/c?d%e#f").expect("a URL");
        assert_eq!(url.as_str(), "http://n:1/v1/kv/a%20b/c%3Fd%25e%23f");
        let url = key_url("http://n:1/base", "distlab/order/default_mode").expect("a URL");
        assert_eq!(
            url.as_str(),
            "http://n:1/base/v1/kv/distlab/order/default_mode"
        );
        assert!(matches!(
            key_url("http://n:1", "a/../b"),
            Err(KeyUrlError::Key(KeyError::DotSegment))
        ));
        assert!(matches!(key_url("n:1", "a"), Err(KeyUrlError::Node(_))));
    }

    #[tokio::test]
    async fn requests_go_to_the_first_node_that_can_serve_them() {
        let (minority, minority_node) = refusing_node(ErrorCode::NoQuorum).await;
        let (good, _) = good_node().await;
        let client =
            ConfigClient::new(vec![dead_node(), minority, format!("{good}/")]).expect("a client");
        let key = "distlab/switches/cap_mode";

        assert_eq!(
            client.get(key, Consistency::Linearizable).await.ok(),
            Some(None)
        );
        assert_eq!(minority_node.hits(), 1);
        let written = client.put(key, &json!("CP")).await.expect("written");
        assert_eq!(written.key, key);
        assert_eq!(
            minority_node.hits(),
            1,
            "the next request starts with the node that answered last"
        );
        let read = client
            .get(key, Consistency::Stale)
            .await
            .expect("read")
            .expect("present");
        assert_eq!((read.value, read.revision), (json!("CP"), written.revision));

        // Compare-and-set.
        match client.put_if(key, &json!("AP"), 0).await {
            Err(ClientError::RevisionMismatch {
                expected: 0,
                current,
                ..
            }) => assert_eq!(current, written.revision),
            other => panic!("expected a revision mismatch, got {other:?}"),
        }
        let swapped = client
            .put_if(key, &json!("AP"), written.revision)
            .await
            .expect("swapped");
        assert!(swapped.revision > written.revision);

        // Delete, twice.
        let deleted = client.delete(key).await.expect("deleted");
        assert!(deleted.is_some_and(|d| d.revision > swapped.revision));
        assert_eq!(client.delete(key).await.ok(), Some(None));

        // Any character a key may hold reaches the node intact.
        let odd = "odd/a b?c%d#e";
        client.put(odd, &json!({"x": 1})).await.expect("written");
        let read = client
            .get(odd, Consistency::Linearizable)
            .await
            .expect("read");
        assert_eq!(read.map(|kv| kv.key), Some(odd.to_owned()));

        // An answer about the request itself is final.
        match client.put(key, &json!("")).await {
            Err(error @ ClientError::Rejected { status: 422, .. }) => {
                assert!(!error.may_have_applied());
                assert!(error.to_string().contains("validation_failed"), "{error}");
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_write_that_may_have_applied_is_repeated_only_when_harmless() {
        let (slow, slow_node) = refusing_node(ErrorCode::CommitTimeout).await;
        let (good, good_node) = good_node().await;
        let nodes = vec![slow, good];

        let client = ConfigClient::new(nodes.clone()).expect("a client");
        client
            .put("k", &json!(1))
            .await
            .expect("set on the next node");
        assert_eq!((slow_node.hits(), good_node.hits()), (1, 1));

        for attempt in ["put_if", "delete"] {
            let client = ConfigClient::new(nodes.clone()).expect("a client");
            let result = match attempt {
                "put_if" => client.put_if("k", &json!(2), 1).await.map(|_| ()),
                _ => client.delete("k").await.map(|_| ()),
            };
            match result {
                Err(error @ ClientError::Indeterminate { .. }) => {
                    assert!(error.may_have_applied(), "{error}");
                    assert!(error.to_string().contains("commit_timeout"), "{error}");
                }
                other => panic!("{attempt}: expected an indeterminate write, got {other:?}"),
            }
        }
        assert_eq!(good_node.hits(), 1, "not repeated on the next node");
    }

    #[tokio::test]
    async fn nothing_is_sent_for_a_bad_key_and_every_failure_is_listed() {
        let client = ConfigClient::new(vec![dead_node(), dead_node()]).expect("a client");
        match client.get("k", Consistency::Stale).await {
            Err(error @ ClientError::Unavailable { .. }) => {
                let ClientError::Unavailable { failures } = &error else {
                    unreachable!()
                };
                assert_eq!(failures.len(), 2);
                assert!(
                    failures
                        .iter()
                        .all(|f| matches!(f, NodeFailure::Unreachable { .. }))
                );
                assert!(!error.may_have_applied(), "never sent");
                assert!(error.to_string().contains(failures[1].node()), "{error}");
            }
            other => panic!("expected every node to fail, got {other:?}"),
        }
        for key in ["", "a/./b", "a\u{7}"] {
            assert!(
                matches!(
                    client.put(key, &json!(1)).await,
                    Err(ClientError::InvalidKey { .. })
                ),
                "{key:?}"
            );
        }
        let nobody = ConfigClient::new(Vec::new()).expect("a client");
        assert!(matches!(
            nobody.get("k", Consistency::Stale).await,
            Err(ClientError::NoNodes)
        ));
    }
}
