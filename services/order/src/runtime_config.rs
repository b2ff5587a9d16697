//! The default order mode at run time: read from the config service (the Raft key-value store of
//! `services/config`) and followed through its watch, so that switching the order services between
//! `outbox` and `2pc` is one `PUT` of the key (default `distlab/order/default_mode`) — no restart.
//!
//! - [`DefaultMode`] is the value the handlers read (cheap to clone, never waits on the network) and what
//!   `/readyz` shows under `config` ([`DefaultMode::detail`], [`readiness_check`]);
//! - [`Follower`] keeps it up to date. It reads the key (`GET /v1/kv/{key}?consistency=stale`, which any
//!   node answers, even one cut off from the majority), then watches it from the index that node had
//!   applied (`GET /v1/watch`, Server-Sent Events, parsed by [`SseParser`]). When the node stops answering —
//!   refused, an error status, the stream ending, or not one byte for [`IDLE_TIMEOUT`] although nodes send a
//!   keep-alive every 5 s — it moves to the next node after a backoff and resumes the watch from the last
//!   revision it saw, so no change is missed; `410 compacted` (or an `event: compacted`) makes it read the
//!   key again.
//!
//! While no node answers, the last known value stays in force — availability over freshness: orders are
//! still placed, in the mode last decided — and `/readyz` says so; the `config` check never makes the
//! service unready. A missing key means the configured `DEFAULT_ORDER_MODE`; a value other than the JSON
//! string `"outbox"` or `"2pc"` is ignored (the last good value stays) and reported.
//!
//! A node on the minority side of a partition still answers stale reads and keeps its watch open, but sees
//! no new change: the value it gives is the last one it knew, which is the same promise as above.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use distlab_messaging::backoff::Backoff;
use distlab_platform::http::ReadinessCheck;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::orders::Mode;

/// A revision of the config service (the index of the Raft log entry that made a change).
pub type Revision = u64;

/// A node that sends nothing — not even its keep-alive, every 5 s — for this long is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long reading the key, or the headers of the watch, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay before trying the next node after a failure: 200 ms, doubling, at most 5 s.
pub const RECONNECT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
/// Longest line of an event stream accepted (a guard against a stream that never ends its line).
pub const MAX_LINE: usize = 1024 * 1024;
/// Most bytes of an error body quoted in `last_error`.
const MAX_QUOTED_BODY: usize = 300;

/// The store revision of the node that answered a read: watching from it misses nothing after the read.
const REVISION_HEADER: &str = "x-distlab-revision";

/// Where the current default mode comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `DEFAULT_ORDER_MODE`: the config service is not followed, has no value for the key, or was never
    /// reached.
    Configuration,
    /// The config service's value of the key at this revision.
    ConfigService { revision: Revision },
}

/// A value of the key that is not a mode, ignored.
#[derive(Debug, Clone, PartialEq)]
struct Invalid {
    revision: Revision,
    value: Value,
    reason: String,
}

/// The state behind a [`DefaultMode`].
#[derive(Debug, Clone, PartialEq)]
struct State {
    mode: Mode,
    source: Source,
    /// The node answered and its watch is open.
    following: bool,
    /// The node followed now, or else the last one tried.
    node: Option<String>,
    /// When the config service was last lost (or first not reached); `None` while following.
    stale_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// The latest value of the key, when it is not a mode.
    invalid: Option<Invalid>,
}

/// The mode of an order whose request names none: cheap to clone, shared by the handlers, the
/// [`Follower`] and `/readyz`.
#[derive(Debug, Clone)]
pub struct DefaultMode {
    /// `DEFAULT_ORDER_MODE`.
    configured: Mode,
    /// The followed key; `None` when the config service is not followed.
    key: Option<Arc<str>>,
    state: Arc<watch::Sender<State>>,
}

impl DefaultMode {
    /// Always `mode`: the config service is not followed.
    pub fn fixed(mode: Mode) -> Self {
        Self::new(mode, None)
    }

    /// `configured` until the config service's value of `key` is known.
    pub fn following(configured: Mode, key: &str) -> Self {
        Self::new(configured, Some(key.into()))
    }

    fn new(configured: Mode, key: Option<Arc<str>>) -> Self {
        let (state, _) = watch::channel(State {
            mode: configured,
            source: Source::Configuration,
            following: false,
            node: None,
            stale_since: None,
            last_error: None,
            invalid: None,
        });
        Self {
            configured,
            key,
            state: Arc::new(state),
        }
    }

    /// The mode to use now.
    pub fn current(&self) -> Mode {
        self.state.borrow().mode
    }

    /// Where [`DefaultMode::current`] comes from.
    pub fn source(&self) -> Source {
        self.state.borrow().source
    }

    /// Whether a config node answers and its watch is open.
    pub fn is_following(&self) -> bool {
        self.state.borrow().following
    }

    /// What `/readyz` shows under `config`, e.g.
    /// `{"default_mode":"2pc","source":"config_service","revision":12,"following":true,…}`, or while the
    /// config service is unreachable the same with `"following":false`, `stale_since`, `last_error` and a
    /// `note` saying the last known value is kept.
    pub fn detail(&self) -> Value {
        let state = self.state.borrow().clone();
        let mut detail = json!({
            "default_mode": state.mode.as_str(),
            "configured_mode": self.configured.as_str(),
            "following": state.following,
        });
        match state.source {
            Source::Configuration => detail["source"] = json!("configuration"),
            Source::ConfigService { revision } => {
                detail["source"] = json!("config_service");
                detail["revision"] = json!(revision);
            }
        }
        let Some(key) = &self.key else {
            detail["note"] = json!("not following the config service (CONFIG_URLS is empty)");
            return detail;
        };
        detail["key"] = json!(key.as_ref());
        if let Some(node) = &state.node {
            detail["node"] = json!(node);
        }
        let mut notes = Vec::new();
        if !state.following {
            if let Some(since) = state.stale_since {
                detail["stale_since"] = json!(since);
                notes.push("config service unreachable; keeping the last known value".to_owned());
            } else {
                notes.push("connecting to the config service".to_owned());
            }
            if let Some(error) = &state.last_error {
                detail["last_error"] = json!(error);
            }
        }
        if let Some(invalid) = &state.invalid {
            detail["invalid_value"] = json!({
                "revision": invalid.revision,
                "value": invalid.value,
                "reason": invalid.reason,
            });
            notes.push(format!(
                "the config value at revision {} is invalid ({}); keeping the last good value",
                invalid.revision, invalid.reason
            ));
        }
        if state.following && state.source == Source::Configuration && state.invalid.is_none() {
            notes.push(
                "the key is not set in the config service; DEFAULT_ORDER_MODE applies".into(),
            );
        }
        if !notes.is_empty() {
            detail["note"] = json!(notes.join("; "));
        }
        detail
    }

    /// The key's value at `revision` (a read or a `put` event). A value that is not a mode is ignored and
    /// reported; one older than the value in force (from a node that lags behind) is ignored.
    fn apply_value(&self, revision: Revision, value: &Value) {
        let key = self.key.as_deref().unwrap_or_default();
        self.state.send_if_modified(|state| {
            if let Source::ConfigService { revision: current } = state.source
                && revision < current
            {
                tracing::debug!(revision, current, "ignoring an older value of the default mode");
                return false;
            }
            match parse_mode(value) {
                Ok(mode) => {
                    if mode != state.mode {
                        tracing::info!(
                            key, from = %state.mode, to = %mode, revision,
                            "default order mode changed by the config service"
                        );
                    }
                    let changed = (state.mode, state.source) != (mode, Source::ConfigService { revision })
                        || state.invalid.is_some();
                    state.mode = mode;
                    state.source = Source::ConfigService { revision };
                    state.invalid = None;
                    changed
                }
                Err(reason) => {
                    tracing::warn!(
                        key, revision, %value, %reason, mode = %state.mode,
                        "ignoring an invalid default order mode from the config service; keeping the last good value"
                    );
                    state.invalid = Some(Invalid {
                        revision,
                        value: value.clone(),
                        reason,
                    });
                    true
                }
            }
        });
    }

    /// The key does not exist (a read answered 404, or a `delete` event): back to `DEFAULT_ORDER_MODE`.
    fn apply_absent(&self) {
        let key = self.key.as_deref().unwrap_or_default();
        let configured = self.configured;
        self.state.send_if_modified(|state| {
            if state.mode != configured {
                tracing::info!(
                    key, from = %state.mode, to = %configured,
                    "default order mode removed from the config service; back to DEFAULT_ORDER_MODE"
                );
            }
            let changed = (state.mode, state.source) != (configured, Source::Configuration)
                || state.invalid.is_some();
            state.mode = configured;
            state.source = Source::Configuration;
            state.invalid = None;
            changed
        });
    }

    /// `node` answered and its watch is open.
    fn connected(&self, node: &str) {
        self.state.send_modify(|state| {
            if state.stale_since.is_some() {
                tracing::info!(node, mode = %state.mode, "following the config service again");
            } else if !state.following {
                tracing::info!(node, mode = %state.mode, "following the config service");
            }
            state.following = true;
            state.node = Some(node.to_owned());
            state.stale_since = None;
            state.last_error = None;
        });
    }

    /// Following `node` failed: the value in force stays. Warns once per outage, not on every retry.
    fn lost(&self, node: &str, error: &FollowError) {
        self.state.send_modify(|state| {
            if state.stale_since.is_none() {
                tracing::warn!(
                    node, %error, mode = %state.mode,
                    "config service unreachable; keeping the last known default order mode"
                );
                state.stale_since = Some(Utc::now());
            } else {
                tracing::debug!(node, %error, "config node still unreachable");
            }
            state.following = false;
            state.node = Some(node.to_owned());
            state.last_error = Some(error.to_string());
        });
    }

    #[cfg(test)]
    fn changes(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }
}

/// The `/readyz` check `config`: always ready (the service works on the last known value), with
/// [`DefaultMode::detail`].
pub fn readiness_check(mode: DefaultMode) -> ReadinessCheck {
    ReadinessCheck::with_detail("config", move || std::future::ready(Ok(mode.detail())))
}

/// The mode a value of the key names: the JSON string `"outbox"` or `"2pc"`, nothing else.
pub fn parse_mode(value: &Value) -> Result<Mode, String> {
    match value {
        Value::String(text) => text
            .parse()
            .map_err(|_| format!("{value} is not a mode; expected \"outbox\" or \"2pc\"")),
        other => Err(format!(
            "{other} is not a mode; expected the JSON string \"outbox\" or \"2pc\""
        )),
    }
}

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

/// One Server-Sent Event: its `id`, its type (`event`, empty for the default `message`) and its `data`
/// lines joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An event stream is not readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line is longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Parses a `text/event-stream` body fed in chunks of any size (lines end with `\n` or `\r\n`), after the
/// WHATWG rules: `field: value` lines, `:` comments (keep-alives) ignored, an event dispatched at a blank
/// line when it has data.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    pending: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// The events `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                events.extend(self.end_line(&line));
            } else if self.line.len() >= MAX_LINE {
                return Err(LineTooLong);
            } else {
                self.line.push(byte);
            }
        }
        Ok(events)
    }

    fn end_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.pending);
            return std::mem::take(&mut self.has_data).then_some(event);
        }
        if line.starts_with(b":") {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.pending.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.pending.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields
        }
        None
    }
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

    use super::*;

    const KEY: &str = "distlab/order/default_mode";

    fn parse_all(chunks: &[&str]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        chunks
            .iter()
            .flat_map(|c| parser.push(c.as_bytes()).unwrap())
            .collect()
    }

    fn event(id: &str, kind: &str, data: &str) -> SseEvent {
        SseEvent {
            id: Some(id.into()),
            event: kind.into(),
            data: data.into(),
        }
    }

    #[test]
    fn sse_events_are_split_at_blank_lines_whatever_the_chunks() {
        let stream = "id: 3\nevent: put\ndata: {\"revision\":3}\n\n:\n\nid: 4\r\nevent: delete\r\ndata: {\"revision\":4}\r\n\r\n";
        let expected = vec![
            event("3", "put", "{\"revision\":3}"),
            event("4", "delete", "{\"revision\":4}"),
        ];
        assert_eq!(parse_all(&[stream]), expected);
        // Byte by byte, and cut in the middle of a CRLF.
        let bytes: Vec<String> = stream.chars().map(String::from).collect();
        let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(parse_all(&bytes), expected);
        assert_eq!(parse_all(&["id: 3\nevent: put\ndata: {}\n", "\n"]).len(), 1);
        assert!(
            parse_all(&["id: 3\nevent: put\ndata: {}\n"]).is_empty(),
            "not ended yet"
        );
    }

    #[test]
    fn sse_comments_fields_and_multi_line_data() {
        let events = parse_all(&[
            ": keep-alive\n\n",
            "event: compacted\ndata:{\"a\":1,\ndata:  \"b\":2}\nretry: 10\nunknown\n\n",
            "event: put\n\n",
        ]);
        assert_eq!(
            events,
            [SseEvent {
                id: None,
                event: "compacted".into(),
                data: "{\"a\":1,\n \"b\":2}".into(),
            }],
            "comments and data-less events are not dispatched; one space after the colon is dropped"
        );
    }

    #[test]
    fn an_endless_sse_line_is_refused() {
        let mut parser = SseParser::default();
        assert_eq!(parser.push(&vec![b'x'; MAX_LINE + 1]), Err(LineTooLong));
    }

    #[test]
    fn only_the_json_strings_outbox_and_2pc_are_modes() {
        assert_eq!(parse_mode(&json!("2pc")), Ok(Mode::TwoPhaseCommit));
        assert_eq!(parse_mode(&json!("outbox")), Ok(Mode::Outbox));
        for bad in [
            json!("3pc"),
            json!("2PC"),
            json!({"mode": "2pc"}),
            json!(2),
            json!(null),
        ] {
            assert!(parse_mode(&bad).is_err(), "{bad}");
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

    fn unreachable(node: &str) -> FollowError {
        FollowError::Unreachable {
            node: node.into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn the_last_known_value_is_kept_and_reported_while_the_service_is_unreachable() {
        let mode = DefaultMode::following(Mode::Outbox, KEY);
        assert_eq!(mode.current(), Mode::Outbox);
        assert_eq!(mode.detail()["note"], "connecting to the config service");

        mode.apply_value(12, &json!("2pc"));
        mode.connected("http://n1");
        let detail = mode.detail();
        assert_eq!(
            detail,
            json!({"default_mode": "2pc", "configured_mode": "outbox", "source": "config_service",
                   "revision": 12, "following": true, "key": KEY, "node": "http://n1"})
        );

        mode.lost("http://n1", &unreachable("http://n1"));
        let since = mode.detail()["stale_since"].clone();
        mode.lost("http://n2", &unreachable("http://n2"));
        let detail = mode.detail();
        assert_eq!(mode.current(), Mode::TwoPhaseCommit, "the last value stays");
        assert_eq!(detail["following"], false);
        assert_eq!(detail["revision"], 12);
        assert_eq!(
            detail["stale_since"], since,
            "since the first failure, not the last retry"
        );
        assert!(detail["last_error"].as_str().unwrap().contains("http://n2"));
        assert_eq!(
            detail["note"],
            "config service unreachable; keeping the last known value"
        );

        mode.connected("http://n3");
        let detail = mode.detail();
        assert_eq!(detail["following"], true);
        assert!(detail.get("stale_since").is_none() && detail.get("last_error").is_none());
    }

    #[test]
    fn an_invalid_value_keeps_the_last_good_one_and_a_delete_goes_back_to_the_configured_mode() {
        let mode = DefaultMode::following(Mode::Outbox, KEY);
        mode.connected("http://n1");
        assert!(
            mode.detail()["note"].as_str().unwrap().contains("not set"),
            "{}",
            mode.detail()
        );
        mode.apply_value(5, &json!("2pc"));
        mode.apply_value(6, &json!({"mode": "outbox"}));
        assert_eq!(mode.current(), Mode::TwoPhaseCommit);
        let detail = mode.detail();
        assert_eq!(detail["revision"], 5);
        assert_eq!(detail["invalid_value"]["revision"], 6);
        assert!(
            detail["note"].as_str().unwrap().contains("invalid"),
            "{detail}"
        );

        // A lagging node's older value does not undo a newer one.
        mode.apply_value(4, &json!("outbox"));
        assert_eq!(mode.current(), Mode::TwoPhaseCommit);

        mode.apply_absent();
        assert_eq!(mode.current(), Mode::Outbox);
        assert_eq!(mode.source(), Source::Configuration);
        assert!(mode.detail().get("invalid_value").is_none());
        mode.apply_value(9, &json!("2pc"));
        assert_eq!(mode.source(), Source::ConfigService { revision: 9 });
    }

    #[test]
    fn a_fixed_mode_says_it_does_not_follow() {
        let mode = DefaultMode::fixed(Mode::TwoPhaseCommit);
        let detail = mode.detail();
        assert_eq!(detail["default_mode"], "2pc");
        assert_eq!(detail["source"], "configuration");
        assert_eq!(detail["following"], false);
        assert!(detail["note"].as_str().unwrap().contains("CONFIG_URLS"));
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
