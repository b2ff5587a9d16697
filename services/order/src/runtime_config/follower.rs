//! [`Follower`]: keeps a [`DefaultMode`] equal to the config service's value of its key — reads it from
//! any node, watches it, moves to the next node when one stops answering and resumes without a gap.

use std::time::Duration;

use distlab_messaging::backoff::Backoff;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::sse::{SseEvent, SseParser};
use super::{DefaultMode, Revision};

/// A node that sends nothing — not even its keep-alive, every 5 s — for this long is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long reading the key, or the headers of the watch, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay before trying the next node after a failure: 200 ms, doubling, at most 5 s.
pub const RECONNECT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
/// Most bytes of an error body quoted in `last_error`.
const MAX_QUOTED_BODY: usize = 300;

/// The store revision of the node that answered a read: watching from it misses nothing after the read.
const REVISION_HEADER: &str = "x-distlab-revision";

/// Why following a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{node} did not answer: {reason}")]
    Unreachable { node: String, reason: String },
    #[error("{node} did not answer within {after:?}")]
    Timeout { node: String, after: Duration },
    #[error("{node} answered {status}: {body}")]
    Status {
        node: String,
        status: u16,
        body: String,
    },
    #[error("{node} answered something unreadable: {reason}")]
    Unreadable { node: String, reason: String },
    #[error("the watch stream of {node} ended")]
    StreamEnded { node: String },
    #[error("{node} sent nothing, not even a keep-alive, for {after:?}")]
    Idle { node: String, after: Duration },
    #[error("{node} answers `compacted` even to a watch from its own store revision")]
    Compacted { node: String },
}

/// A request error with its causes ("error sending request …: tcp connect error: Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `data` of a watch event.
#[derive(Debug, Deserialize)]
struct WatchData {
    revision: Revision,
    key: String,
    #[serde(default)]
    value: Option<Value>,
}

/// What a watch event means to the follower of `key`.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// `key` was set.
    Put { revision: Revision, value: Value },
    /// `key` was deleted.
    Delete { revision: Revision },
    /// Another key under the prefix changed: only the revision counts.
    Elsewhere { revision: Revision },
    /// The node no longer has the history asked for: read the key again.
    Compacted,
    /// Not a change (an unknown event type, an unreadable one): skipped.
    Ignored(String),
}

fn interpret(event: &SseEvent, key: &str) -> Change {
    let kind = event.event.as_str();
    match kind {
        "compacted" => return Change::Compacted,
        "put" | "delete" => {}
        other => return Change::Ignored(format!("event type `{other}`")),
    }
    let data: WatchData = match serde_json::from_str(&event.data) {
        Ok(data) => data,
        Err(error) => return Change::Ignored(format!("unreadable {kind} event: {error}")),
    };
    let revision = data.revision;
    if data.key != key {
        Change::Elsewhere { revision }
    } else if kind == "put" {
        Change::Put {
            revision,
            value: data.value.unwrap_or(Value::Null),
        }
    } else {
        Change::Delete { revision }
    }
}

/// Body of `GET /v1/kv/{key}`.
#[derive(Debug, Deserialize)]
struct KeyValue {
    value: Value,
    revision: Revision,
}

/// How a watch ended.
#[derive(Debug)]
enum WatchEnd {
    /// Read the key again and watch from there.
    Compacted,
    Failed(FollowError),
}

/// Timeouts and backoff of a [`Follower`] (shorter in tests).
#[derive(Debug, Clone, Copy)]
struct Timing {
    idle: Duration,
    backoff: Backoff,
}

/// Keeps a [`DefaultMode`] equal to the config service's value of its key; see the module documentation.
#[derive(Debug)]
pub struct Follower {
    mode: DefaultMode,
    key: String,
    nodes: Vec<String>,
    http: reqwest::Client,
    timing: Timing,
}

impl Follower {
    /// Follows `key` on `nodes` (base URLs, tried in turn) into `mode`.
    pub fn new(mode: DefaultMode, key: &str, nodes: Vec<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            mode,
            key: key.to_owned(),
            nodes,
            http,
            timing: Timing {
                idle: IDLE_TIMEOUT,
                backoff: RECONNECT_BACKOFF,
            },
        })
    }

    /// Follows until `shutdown` is cancelled (a background task of the service).
    pub async fn run(self, shutdown: CancellationToken) {
        // The revision the watch resumes after; `None`: read the key first.
        let mut cursor: Option<Revision> = None;
        let mut failures = 0;
        for node in self.nodes.iter().cycle() {
            let mut connected = false;
            let error = tokio::select! {
                error = self.follow(node, &mut cursor, &mut connected) => error,
                () = shutdown.cancelled() => return,
            };
            self.mode.lost(node, &error);
            failures = if connected { 1 } else { failures + 1 };
            tokio::select! {
                () = tokio::time::sleep(self.timing.backoff.delay(failures)) => {}
                () = shutdown.cancelled() => return,
            }
        }
        // No node at all: nothing to follow.
        shutdown.cancelled().await;
    }

    /// Reads the key when `cursor` is unknown, then watches from `cursor`, until something fails.
    async fn follow(
        &self,
        node: &str,
        cursor: &mut Option<Revision>,
        connected: &mut bool,
    ) -> FollowError {
        let mut compactions = 0;
        loop {
            let from = match *cursor {
                Some(revision) => revision,
                None => match self.read(node).await {
                    Ok(applied) => *cursor.insert(applied),
                    Err(error) => return error,
                },
            };
            match self.watch(node, from, cursor, connected).await {
                WatchEnd::Failed(error) => return error,
                WatchEnd::Compacted => {
                    tracing::info!(node, from, "watch history compacted; reading the key again");
                    *cursor = None;
                    compactions += 1;
                    if compactions > 1 {
                        return FollowError::Compacted {
                            node: node.to_owned(),
                        };
                    }
                }
            }
        }
    }

    /// Reads the key (a stale read: any node answers) and applies it; returns the node's store revision,
    /// which the watch starts after.
    async fn read(&self, node: &str) -> Result<Revision, FollowError> {
        let response = self
            .http
            .get(format!("{node}/v1/kv/{}", self.key))
            .query(&[("consistency", "stale")])
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|error| request_error(node, &error))?;
        let applied = response
            .headers()
            .get(REVISION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Revision>().ok());
        let status = response.status();
        let unreadable = |error: reqwest::Error| FollowError::Unreadable {
            node: node.to_owned(),
            reason: error_chain(&error),
        };
        if status == reqwest::StatusCode::OK {
            let found: KeyValue = response.json().await.map_err(unreadable)?;
            self.mode.apply_value(found.revision, &found.value);
            Ok(applied.unwrap_or(found.revision))
        } else if status == reqwest::StatusCode::NOT_FOUND {
            let body: Value = response.json().await.map_err(unreadable)?;
            if body["error"]["code"] != "key_not_found" {
                return Err(FollowError::Status {
                    node: node.to_owned(),
                    status: status.as_u16(),
                    body: quote(&body.to_string()),
                });
            }
            self.mode.apply_absent();
            let applied = applied.or(body["error"]["details"]["revision"].as_u64());
            Ok(applied.unwrap_or(0))
        } else {
            Err(status_error(node, response).await)
        }
    }

    /// Watches the key from `from`, applying each change and moving `cursor` past it.
    async fn watch(
        &self,
        node: &str,
        from: Revision,
        cursor: &mut Option<Revision>,
        connected: &mut bool,
    ) -> WatchEnd {
        let request = self
            .http
            .get(format!("{node}/v1/watch"))
            .query(&[
                ("prefix", self.key.as_str()),
                ("from_revision", &from.to_string()),
            ])
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send();
        let mut response = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Err(_) => {
                return WatchEnd::Failed(FollowError::Timeout {
                    node: node.to_owned(),
                    after: REQUEST_TIMEOUT,
                });
            }
            Ok(Err(error)) => return WatchEnd::Failed(request_error(node, &error)),
            Ok(Ok(response)) => response,
        };
        match response.status() {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::GONE => return WatchEnd::Compacted,
            _ => return WatchEnd::Failed(status_error(node, response).await),
        }
        *connected = true;
        self.mode.connected(node);
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(self.timing.idle, response.chunk()).await {
                Err(_) => {
                    return WatchEnd::Failed(FollowError::Idle {
                        node: node.to_owned(),
                        after: self.timing.idle,
                    });
                }
                Ok(Err(error)) => return WatchEnd::Failed(request_error(node, &error)),
                Ok(Ok(None)) => {
                    return WatchEnd::Failed(FollowError::StreamEnded {
                        node: node.to_owned(),
                    });
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(error) => {
                    return WatchEnd::Failed(FollowError::Unreadable {
                        node: node.to_owned(),
                        reason: error.to_string(),
                    });
                }
            };
            for event in events {
                let revision = match interpret(&event, &self.key) {
                    Change::Put { revision, value } => {
                        self.mode.apply_value(revision, &value);
                        revision
                    }
                    Change::Delete { revision } => {
                        self.mode.apply_absent();
                        revision
                    }
                    Change::Elsewhere { revision } => revision,
                    Change::Compacted => return WatchEnd::Compacted,
                    Change::Ignored(why) => {
                        tracing::warn!(node, %why, "skipping a watch event");
                        continue;
                    }
                };
                *cursor = Some(cursor.map_or(revision, |c| c.max(revision)));
            }
        }
    }
}

fn request_error(node: &str, error: &reqwest::Error) -> FollowError {
    if error.is_timeout() {
        FollowError::Timeout {
            node: node.to_owned(),
            after: REQUEST_TIMEOUT,
        }
    } else {
        FollowError::Unreachable {
            node: node.to_owned(),
            reason: error_chain(error),
        }
    }
}

async fn status_error(node: &str, response: reqwest::Response) -> FollowError {
    let status = response.status().as_u16();
    let body = match tokio::time::timeout(REQUEST_TIMEOUT, response.text()).await {
        Ok(Ok(body)) => quote(&body),
        _ => String::new(),
    };
    FollowError::Status {
        node: node.to_owned(),
        status,
        body,
    }
}

/// At most [`MAX_QUOTED_BODY`] bytes of `text`, cut at a character boundary.
fn quote(text: &str) -> String {
    let mut end = text.len().min(MAX_QUOTED_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::extract::{Path, Query, State as AxumState};
    use axum::response::IntoResponse;
    use tokio::sync::mpsc;

    use serde_json::json;

    use super::*;
    use crate::orders::Mode;
    use crate::runtime_config::{Source, State};

    const KEY: &str = "distlab/order/default_mode";

    fn event(id: &str, kind: &str, data: &str) -> SseEvent {
        SseEvent {
            id: Some(id.into()),
            event: kind.into(),
            data: data.into(),
        }
    }

    #[test]
    fn watch_events_are_changes_of_the_key_or_only_revisions() {
        let put = event(
            "7",
            "put",
            &json!({"revision": 7, "key": KEY, "value": "2pc"}).to_string(),
        );
        assert_eq!(
            interpret(&put, KEY),
            Change::Put {
                revision: 7,
                value: json!("2pc")
            }
        );
        let delete = event(
            "8",
            "delete",
            &json!({"revision": 8, "key": KEY}).to_string(),
        );
        assert_eq!(interpret(&delete, KEY), Change::Delete { revision: 8 });
        let delete_null = event(
            "8",
            "delete",
            &json!({"revision": 8, "key": KEY, "value": null}).to_string(),
        );
        assert_eq!(interpret(&delete_null, KEY), Change::Delete { revision: 8 });
        // The watch is by prefix: a longer key is someone else's.
        let longer = json!({"revision": 9, "key": format!("{KEY}_old"), "value": "2pc"});
        assert_eq!(
            interpret(&event("9", "put", &longer.to_string()), KEY),
            Change::Elsewhere { revision: 9 }
        );
        let compacted = SseEvent {
            event: "compacted".into(),
            data: "{}".into(),
            ..SseEvent::default()
        };
        assert_eq!(interpret(&compacted, KEY), Change::Compacted);
        assert!(matches!(
            interpret(&event("1", "put", "not json"), KEY),
            Change::Ignored(_)
        ));
        assert!(matches!(
            interpret(&event("1", "", "{}"), KEY),
            Change::Ignored(_)
        ));
    }

    #[test]
    fn reconnects_back_off_from_200_ms_to_5_s() {
        let delays: Vec<u128> = (1..=7)
            .map(|n| RECONNECT_BACKOFF.delay(n).as_millis())
            .collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    // --- The follower against a fake config node -------------------------------------------------------

    /// A watch the fake node serves: its `from_revision`, and where the test writes its stream (dropped:
    /// the stream ends).
    type Watch = (Option<String>, mpsc::UnboundedSender<String>);

    /// A config node that answers the key with `2pc` at revision 5 (its store revision: 7) and hands each
    /// watch to the test.
    async fn fake_node() -> (String, mpsc::UnboundedReceiver<Watch>) {
        async fn read_key(Path(key): Path<String>) -> axum::response::Response {
            let mut response =
                axum::Json(json!({"key": key, "value": "2pc", "revision": 5})).into_response();
            response.headers_mut().insert(REVISION_HEADER, 7.into());
            response
        }
        async fn watch_key(
            AxumState(watches): AxumState<mpsc::UnboundedSender<Watch>>,
            Query(query): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let (stream, chunks) = mpsc::unbounded_channel::<String>();
            let _ = watches.send((query.get("from_revision").cloned(), stream));
            let body = futures::stream::unfold(chunks, |mut chunks| async move {
                let chunk = chunks.recv().await?;
                Some((Ok::<_, std::io::Error>(chunk), chunks))
            });
            (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
        let (watches, watched) = mpsc::unbounded_channel();
        let router = axum::Router::new()
            .route("/v1/kv/{*key}", axum::routing::get(read_key))
            .route("/v1/watch", axum::routing::get(watch_key))
            .with_state(watches);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (url, watched)
    }

    /// A loopback URL nothing listens on.
    fn dead_node() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    }

    async fn wait_for(mode: &DefaultMode, what: &str, check: impl FnMut(&State) -> bool) {
        let mut changes = mode.changes();
        let waited = tokio::time::timeout(Duration::from_secs(10), changes.wait_for(check)).await;
        assert!(
            waited.is_ok_and(|r| r.is_ok()),
            "timed out waiting for {what}: {}",
            mode.detail()
        );
    }

    async fn next_watch(watched: &mut mpsc::UnboundedReceiver<Watch>) -> Watch {
        tokio::time::timeout(Duration::from_secs(10), watched.recv())
            .await
            .expect("the follower watches again")
            .unwrap()
    }

    fn put(revision: Revision, key: &str, value: &str) -> String {
        let data = json!({"revision": revision, "key": key, "value": value});
        format!("id: {revision}\nevent: put\ndata: {data}\n\n")
    }

    #[tokio::test]
    async fn the_follower_reads_watches_resumes_after_failures_and_rereads_after_compaction() {
        let (node, mut watched) = fake_node().await;
        let mode = DefaultMode::following(Mode::Outbox, KEY);
        let mut follower = Follower::new(mode.clone(), KEY, vec![dead_node(), node]).unwrap();
        follower.timing = Timing {
            idle: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
        };
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(follower.run(shutdown.clone()));

        // The dead node first, then the live one: the key is read, the watch starts at its store revision.
        let (from, stream) = next_watch(&mut watched).await;
        assert_eq!(from.as_deref(), Some("7"));
        wait_for(&mode, "2pc from the read", |s| {
            s.following && s.mode == Mode::TwoPhaseCommit
        })
        .await;
        assert_eq!(mode.source(), Source::ConfigService { revision: 5 });

        // A change of the key applies; a keep-alive and another key under the prefix change nothing.
        stream.send(put(8, KEY, "outbox")).unwrap();
        stream.send(": keep-alive\n\n".into()).unwrap();
        stream.send(put(9, &format!("{KEY}_other"), "2pc")).unwrap();
        wait_for(&mode, "outbox from the watch", |s| s.mode == Mode::Outbox).await;

        // The stream ends: the value stays, and the watch resumes after the last revision seen, unread.
        drop(stream);
        let (from, stream) = next_watch(&mut watched).await;
        assert_eq!(
            from.as_deref(),
            Some("9"),
            "resumes after the last revision"
        );
        assert_eq!(mode.current(), Mode::Outbox);
        assert_eq!(mode.source(), Source::ConfigService { revision: 8 });

        // A silent stream is given up.
        wait_for(&mode, "an idle stream to be given up", |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("keep-alive"))
        })
        .await;
        drop(stream);
        assert_eq!(mode.current(), Mode::Outbox);

        // Compacted: the key is read again (an older value than the one in force: ignored) and the watch
        // starts from the node's store revision.
        let (from, stream) = next_watch(&mut watched).await;
        assert_eq!(from.as_deref(), Some("9"));
        stream
            .send("event: compacted\ndata: {}\n\n".into())
            .unwrap();
        let (from, _stream) = next_watch(&mut watched).await;
        assert_eq!(
            from.as_deref(),
            Some("7"),
            "watches from the re-read's store revision"
        );
        assert_eq!(mode.current(), Mode::Outbox);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the follower stops on shutdown")
            .unwrap();
    }
}
