//! [`Follower`]: keeps a [`FollowedKey`] equal to the config service's value of its key — reads it from
//! any node, watches it, moves to the next node when one stops answering and resumes without a gap.
//!
//! It reads the key (`GET /v1/kv/{key}?consistency=stale`, which any node answers, even one cut off from
//! the majority), then watches it from the store revision that node had applied (`GET /v1/watch`,
//! Server-Sent Events, parsed by [`SseParser`]). When the node stops answering — refused, an error status,
//! the stream ending, or not one byte for [`IDLE_TIMEOUT`] although nodes send a keep-alive every 5 s — it
//! moves to the next node after a backoff and resumes the watch from the last revision it saw, so no
//! change is missed; `410 compacted` (or an `event: compacted`) makes it read the key again.
//!
//! While no node answers, the last known value stays in force — availability over freshness — and the
//! key's [`FollowStatus`](crate::FollowStatus) says so (`following: false`, `stale_since`, `last_error`).
//! A node on the minority side of a partition still answers stale reads and keeps its watch open, but sees
//! no new change: the value it gives is the last one it knew, which is the same promise.

use std::time::Duration;

use distlab_platform::backoff::Backoff;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::client::{
    BuildError, CONNECT_TIMEOUT, KeyUrlError, error_chain, key_url, quote, store_revision,
};
use crate::followed::FollowedKey;
use crate::sse::{SseEvent, SseParser};
use crate::wire::{
    Consistency, ErrorCode, KeyError, KeyValue, ReadParams, Revision, WATCH_PATH, WatchEvent,
    WatchEventKind, WatchParams,
};

/// A node that sends nothing — not even its keep-alive, every 5 s — for this long is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long reading the key, or the headers of the watch, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay before trying the next node after a failure: 200 ms, doubling, at most 5 s.
pub const RECONNECT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

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
    #[error("the key {key:?} cannot be followed: it {error}")]
    InvalidKey {
        key: String,
        #[source]
        error: KeyError,
    },
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
    let kind = match WatchEventKind::parse(&event.event) {
        Some(WatchEventKind::Compacted) => return Change::Compacted,
        Some(kind) => kind,
        None => return Change::Ignored(format!("event type `{}`", event.event)),
    };
    let data: WatchEvent = match serde_json::from_str(&event.data) {
        Ok(data) => data,
        Err(error) => {
            return Change::Ignored(format!("unreadable {} event: {error}", kind.as_str()));
        }
    };
    let revision = data.revision;
    if data.key != key {
        Change::Elsewhere { revision }
    } else if kind == WatchEventKind::Put {
        Change::Put {
            revision,
            value: data.value.unwrap_or(Value::Null),
        }
    } else {
        Change::Delete { revision }
    }
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

/// Keeps a [`FollowedKey`] equal to the config service's value of its key; see the module documentation.
///
/// ```no_run
/// # async fn example() -> Result<(), distlab_config_client::BuildError> {
/// use distlab_config_client::{FollowedKey, Follower};
/// use tokio_util::sync::CancellationToken;
///
/// let nodes = vec!["http://127.0.0.1:8091".to_owned(), "http://127.0.0.1:8092".to_owned()];
/// let limits = FollowedKey::new("distlab/limits");
/// let follower = Follower::new(limits.clone(), nodes)?;
/// let shutdown = CancellationToken::new();
/// tokio::spawn(follower.run(shutdown.clone()));
/// // Anywhere, at any time, without waiting on the network:
/// let max_items = limits.value().and_then(|v| v["max_items"].as_u64());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Follower<T = Value> {
    followed: FollowedKey<T>,
    nodes: Vec<String>,
    http: reqwest::Client,
    timing: Timing,
}

impl<T: Send + Sync + 'static> Follower<T> {
    /// Follows `followed`'s key on `nodes` (base URLs, tried in turn, e.g. `http://127.0.0.1:8091`). With
    /// no node at all, [`Follower::run`] only waits for its shutdown.
    pub fn new(followed: FollowedKey<T>, nodes: Vec<String>) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            followed,
            nodes,
            http,
            timing: Timing {
                idle: IDLE_TIMEOUT,
                backoff: RECONNECT_BACKOFF,
            },
        })
    }

    /// The handle this follower keeps up to date (clone it for the readers).
    pub fn followed(&self) -> &FollowedKey<T> {
        &self.followed
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
            self.followed.lost(node, &error);
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
        let key = self.followed.key();
        let url = key_url(node, key).map_err(|error| match error {
            KeyUrlError::Key(error) => FollowError::InvalidKey {
                key: key.to_owned(),
                error,
            },
            KeyUrlError::Node(reason) => FollowError::Unreachable {
                node: node.to_owned(),
                reason,
            },
        })?;
        let response = self
            .http
            .get(url)
            .query(&ReadParams {
                consistency: Consistency::Stale,
            })
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|error| request_error(node, &error))?;
        let applied = store_revision(&response);
        let status = response.status();
        let unreadable = |error: reqwest::Error| FollowError::Unreadable {
            node: node.to_owned(),
            reason: error_chain(&error),
        };
        if status == reqwest::StatusCode::OK {
            let found: KeyValue = response.json().await.map_err(unreadable)?;
            self.followed.apply_value(found.revision, &found.value);
            Ok(applied.unwrap_or(found.revision))
        } else if status == reqwest::StatusCode::NOT_FOUND {
            let body: Value = response.json().await.map_err(unreadable)?;
            if body["error"]["code"] != ErrorCode::KeyNotFound.as_str() {
                return Err(FollowError::Status {
                    node: node.to_owned(),
                    status: status.as_u16(),
                    body: quote(&body.to_string()),
                });
            }
            self.followed.apply_absent();
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
        let key = self.followed.key();
        let request = self
            .http
            .get(format!("{node}{WATCH_PATH}"))
            .query(&WatchParams {
                prefix: key.to_owned(),
                from_revision: Some(from),
            })
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
        self.followed.connected(node);
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
                let revision = match interpret(&event, key) {
                    Change::Put { revision, value } => {
                        self.followed.apply_value(revision, &value);
                        revision
                    }
                    Change::Delete { revision } => {
                        self.followed.apply_absent();
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

impl Follower<String> {
    /// Follows the switch `name` (the key [`switch_key`](crate::switch_key)`(name)`) on `nodes`; its values are JSON strings
    /// (see [`crate::switches`]). Read it through [`Follower::followed`].
    pub fn switch(nodes: Vec<String>, name: &str) -> Result<Self, BuildError> {
        Self::new(FollowedKey::switch(name), nodes)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::extract::{Path, Query, State as AxumState};
    use axum::response::IntoResponse;
    use tokio::sync::mpsc;

    use serde_json::json;

    use super::*;
    use crate::followed::{KeyState, Latest, Versioned};
    use crate::wire::REVISION_HEADER;

    const KEY: &str = "distlab/order/default_mode";

    /// The order service's default mode: only the JSON strings "outbox" and "2pc".
    fn mode_key() -> FollowedKey<String> {
        FollowedKey::parsed(KEY, |value: &Value| match value {
            Value::String(text) if text == "outbox" || text == "2pc" => Ok(text.clone()),
            other => Err(format!("{other} is not a mode")),
        })
    }

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

    async fn wait_for(
        key: &FollowedKey<String>,
        what: &str,
        check: impl FnMut(&KeyState<String>) -> bool,
    ) {
        let mut changes = key.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(10), changes.wait_for(check)).await;
        assert!(
            waited.is_ok_and(|r| r.is_ok()),
            "timed out waiting for {what}: {}",
            key.detail()
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
        let mode = mode_key();
        let mut follower = Follower::new(mode.clone(), vec![dead_node(), node]).unwrap();
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
            s.status.following && s.latest.value().is_some_and(|v| v == "2pc")
        })
        .await;
        assert_eq!(mode.latest().revision(), Some(5));

        // A change of the key applies; a keep-alive and another key under the prefix change nothing.
        stream.send(put(8, KEY, "outbox")).unwrap();
        stream.send(": keep-alive\n\n".into()).unwrap();
        stream.send(put(9, &format!("{KEY}_other"), "2pc")).unwrap();
        wait_for(&mode, "outbox from the watch", |s| {
            s.latest.value().is_some_and(|v| v == "outbox")
        })
        .await;

        // The stream ends: the value stays, and the watch resumes after the last revision seen, unread.
        drop(stream);
        let (from, stream) = next_watch(&mut watched).await;
        assert_eq!(
            from.as_deref(),
            Some("9"),
            "resumes after the last revision"
        );
        assert_eq!(
            mode.latest(),
            Latest::Present(Versioned {
                value: "outbox".to_owned(),
                revision: 8
            })
        );

        // A silent stream is given up.
        wait_for(&mode, "an idle stream to be given up", |s| {
            s.status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("keep-alive"))
        })
        .await;
        drop(stream);
        assert_eq!(mode.value().as_deref(), Some("outbox"));

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
        assert_eq!(mode.value().as_deref(), Some("outbox"));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the follower stops on shutdown")
            .unwrap();
    }
}
