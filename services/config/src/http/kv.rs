//! The client API: `PUT|GET|DELETE /v1/kv/{key}`, `GET /v1/kv?prefix=`, `GET /v1/watch` (Server-Sent Events).

use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use distlab_config_client::wire::{
    Consistency, DeleteParams, ErrorCode, KeyEntry, KeyError, KeyList, KeyValue,
    LAST_EVENT_ID_HEADER, ListParams, MAX_WATCH_REVISION, PutRequest, REVISION_HEADER, ReadParams,
    WATCH_KEEP_ALIVE, WatchEventKind, WatchParams, Written, check_key as check_key_rules,
};
use distlab_platform::{ApiError, ErrorBody, FieldError, Json, Path, Query};
use futures::Stream;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::kv::{Command, Compacted, Outcome, Revision};
use crate::raft::Node;

use super::{AppState, BODY_LIMIT, MAX_KEY_CHARS, MAX_VALUE_BYTES};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/kv", get(list))
        .route("/v1/kv/", get(empty_key).put(empty_key).delete(empty_key))
        .route("/v1/kv/{*key}", get(read).put(write).delete(remove))
        .route("/v1/watch", get(watch))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

#[derive(OpenApi)]
#[openapi(
    paths(read, write, remove, list, watch),
    components(schemas(PutRequest, Written, KeyValue, KeyList, Consistency))
)]
pub(super) struct ApiDoc;

// The bodies and queries are the wire contract, declared in `distlab_config_client::wire`.

fn check_key(key: &str, field: &str) -> Result<(), FieldError> {
    check_key_rules(key).map_err(|error| FieldError::new(field, error.to_string()))
}

pub(super) fn validate(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation("the request is not valid", &errors))
    }
}

async fn empty_key() -> ApiError {
    ApiError::validation(
        "the request is not valid",
        &[FieldError::new("key", KeyError::Empty.to_string())],
    )
}

/// Writes a key (compare-and-set with `prev_revision`).
#[utoipa::path(put, path = "/v1/kv/{key}", request_body = PutRequest,
    params(("key" = String, Path, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$", min_length = 1, max_length = 512,
        description = "The key: 1 to 512 characters, no control characters; may contain `/`")),
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
        ErrorCode::RevisionMismatch.as_str(),
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
#[utoipa::path(get, path = "/v1/kv/{key}", params(("key" = String, Path, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$", min_length = 1, max_length = 512), ReadParams),
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
            ErrorCode::KeyNotFound.as_str(),
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
#[utoipa::path(delete, path = "/v1/kv/{key}", params(("key" = String, Path, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$", min_length = 1, max_length = 512), DeleteParams),
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
            ErrorCode::KeyNotFound.as_str(),
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
    if params.prefix.chars().count() > MAX_KEY_CHARS {
        validate(vec![FieldError::new(
            "prefix",
            format!("must be at most {MAX_KEY_CHARS} characters"),
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
    if params.prefix.chars().count() > MAX_KEY_CHARS {
        validate(vec![FieldError::new(
            "prefix",
            format!("must be at most {MAX_KEY_CHARS} characters"),
        )])?;
    }
    if params.from_revision.is_some_and(|r| r > MAX_WATCH_REVISION) {
        validate(vec![FieldError::new(
            "from_revision",
            format!("must be at most {MAX_WATCH_REVISION}"),
        )])?;
    }
    let last_event_id = headers
        .get(LAST_EVENT_ID_HEADER)
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
    Ok(Sse::new(stream.into_stream()).keep_alive(KeepAlive::new().interval(WATCH_KEEP_ALIVE)))
}

fn compacted_error(after: Revision, compacted: Revision) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        ErrorCode::Compacted.as_str(),
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
                            pending.push_back(
                                Event::default()
                                    .event(WatchEventKind::Compacted.as_str())
                                    .data(data),
                            );
                            ended = true;
                        }
                        Ok((changes, revision)) => {
                            for change in &changes {
                                let data = serde_json::to_string(&**change).unwrap_or_default();
                                pending.push_back(
                                    Event::default()
                                        .id(change.revision.to_string())
                                        .event(change.kind().as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("distlab/order/default_mode", "key").is_ok());
        assert!(check_key("", "key").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_CHARS + 1), "key").is_err());
        assert!(check_key("a\nb", "key").is_err());
    }
}
