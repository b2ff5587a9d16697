//! The live console at `/console`: the running stack as it is, one snapshot every [`EVERY`] over
//! Server-Sent Events, and controls that go through the chaos sidecar.
//!
//! Each snapshot asks every source at once, each with its own short time-out: the config nodes
//! (`GET /v1/cluster`), the order service (`/metrics` and its PENDING orders), the coordinator (transactions
//! not yet complete), the lock service (`GET /locks`) and the sidecar (`/proxies`, `/partitions`,
//! `/switches`). A source that does not answer in time is shown as unreachable; it never holds up the others
//! or the page. The sidecar's admin token stays here: the page calls the gateway, the gateway the sidecar.

pub mod view;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use distlab_platform::{ApiError, ErrorBody, Path};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::Config;

/// How often the event stream sends a snapshot.
pub const EVERY: Duration = Duration::from_millis(500);
/// The most PENDING orders counted one by one (more shows as "500+").
pub const PENDING_PAGE: usize = 500;
/// How long a control may wait for the sidecar (a switch is a Raft write).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the console reads, and how.
#[derive(Debug, Clone)]
pub struct Console {
    http: reqwest::Client,
    config_nodes: Vec<String>,
    chaos: String,
    token: Option<String>,
    coordinator: String,
    lock: String,
    order: String,
    timeout: Duration,
    /// Cancelled when the gateway shuts down: it ends every open event stream, which graceful shutdown
    /// would otherwise wait for.
    shutdown: tokio_util::sync::CancellationToken,
}

fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

impl Console {
    /// The console of `config`'s sources.
    pub fn new(
        config: &Config,
        http: reqwest::Client,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            shutdown,
            http,
            config_nodes: config.config_urls().iter().map(|u| base(u)).collect(),
            chaos: base(&config.chaos_url),
            token: config.chaos_admin_token.clone().filter(|t| !t.is_empty()),
            coordinator: base(&config.coordinator_url),
            lock: base(&config.lock_url),
            order: base(&config.console_order_url),
            timeout: config.console_source_timeout(),
        }
    }

    fn to_chaos(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET url` as JSON within the source time-out; the error says why in a few words.
    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| unreachable_because(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        response
            .json()
            .await
            .map_err(|e| format!("unexpected answer: {e}"))
    }

    async fn text(&self, url: String) -> Result<String, String> {
        let response = self
            .http
            .get(url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| unreachable_because(&e))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        response.text().await.map_err(|e| unreachable_because(&e))
    }

    /// Every config node's view of the cluster.
    async fn raft_nodes(&self) -> Vec<Value> {
        futures::future::join_all(self.config_nodes.iter().enumerate().map(
            |(i, url)| async move {
                let position = i as u64 + 1;
                match self.json(self.http.get(format!("{url}/v1/cluster"))).await {
                    Ok(status) => {
                        let mut node = json!({"reachable": true, "url": url});
                        for field in [
                            "node_id",
                            "state",
                            "term",
                            "leader",
                            "commit_index",
                            "applied_index",
                            "last_log_index",
                            "partitioned_from",
                        ] {
                            node[field] = status[field].clone();
                        }
                        if node["node_id"].is_null() {
                            node["node_id"] = json!(position);
                        }
                        node
                    }
                    Err(error) => {
                        json!({"reachable": false, "url": url, "node_id": position, "error": error})
                    }
                }
            },
        ))
        .await
    }

    /// The nodes' views, the leader a majority agrees on, and the Raft links the sidecar cuts.
    fn raft(views: Vec<Value>, proxies: &Result<Value, String>) -> Value {
        let leader = view::agreed_leader(&views, views.len());
        json!({
            "nodes": views,
            "leader": leader,
            "cuts": match proxies {
                Ok(proxies) => view::raft_cuts(proxies),
                Err(_) => Value::Null,
            },
        })
    }

    async fn orders(&self) -> Value {
        let (metrics, pending) = tokio::join!(
            self.text(format!("{}/metrics", self.order)),
            self.json(self.http.get(format!(
                "{}/orders?status=PENDING&limit={PENDING_PAGE}",
                self.order
            )))
        );
        match (metrics, pending) {
            (Ok(metrics), Ok(pending)) => {
                let listed = pending["orders"].as_array().map_or(0, Vec::len);
                let more = !pending["next_cursor"].is_null();
                let mut flow = view::order_flow(&view::parse_metrics(&metrics), listed, more);
                flow["reachable"] = json!(true);
                flow
            }
            (Err(error), _) | (_, Err(error)) => json!({"reachable": false, "error": error}),
        }
    }

    /// Transactions the coordinator has not completed: undecided (PREPARING) or decided with phase 2 under
    /// way (COMMITTING, ABORTING).
    async fn twopc(&self) -> Value {
        let states = ["PREPARING", "COMMITTING", "ABORTING"];
        let lists = futures::future::join_all(states.iter().map(|state| {
            self.json(self.http.get(format!(
                "{}/transactions?state={state}&limit=100",
                self.coordinator
            )))
        }))
        .await;
        let mut in_doubt = Vec::new();
        for list in lists {
            match list {
                Ok(list) => in_doubt.extend(
                    list["transactions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| {
                            json!({"gid": t["gid"], "state": t["state"], "order": t["order"]["order_id"],
                                   "created_at": t["created_at"], "stuck": t["stuck"]})
                        }),
                ),
                Err(error) => return json!({"reachable": false, "error": error}),
            }
        }
        json!({"reachable": true, "in_doubt": in_doubt})
    }

    async fn locks(&self) -> Value {
        match self
            .json(self.http.get(format!("{}/locks", self.lock)))
            .await
        {
            Ok(mut locks) => {
                locks["reachable"] = json!(true);
                locks
            }
            Err(error) => json!({"reachable": false, "error": error}),
        }
    }

    /// One snapshot of the whole stack.
    pub async fn snapshot(&self) -> Value {
        let chaos_get =
            |path: &str| self.json(self.to_chaos(self.http.get(format!("{}{path}", self.chaos))));
        let (nodes, proxies, partitions, switches, orders, twopc, locks) = tokio::join!(
            self.raft_nodes(),
            chaos_get("/proxies"),
            chaos_get("/partitions"),
            chaos_get("/switches"),
            self.orders(),
            self.twopc(),
            self.locks(),
        );
        let raft = Self::raft(nodes, &proxies);
        let chaos = match (&proxies, &partitions) {
            (Ok(proxies), Ok(partitions)) => json!({
                "reachable": true,
                "faults": view::faults(proxies),
                "partitions": partitions["partitions"],
            }),
            (Err(error), _) | (_, Err(error)) => json!({"reachable": false, "error": error}),
        };
        let switches = match switches {
            Ok(switches) => json!({"reachable": true, "switches": switches["switches"]}),
            Err(error) => json!({"reachable": false, "error": error}),
        };
        json!({
            "at": chrono::Utc::now(),
            "raft": raft,
            "orders": orders,
            "twopc": twopc,
            "locks": locks,
            "chaos": chaos,
            "switches": switches,
        })
    }

    /// Sends `request` to the sidecar and answers what it answered (status and JSON body).
    async fn forward(&self, request: reqwest::RequestBuilder) -> Response {
        let sent = self.to_chaos(request).timeout(CONTROL_TIMEOUT).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                return ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "chaos_unavailable",
                    format!("the chaos sidecar: {}", unreachable_because(&error)),
                )
                .into_response();
            }
        };
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = response.bytes().await.unwrap_or_default();
        if body.is_empty() {
            return status.into_response();
        }
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn unreachable_because(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "unreachable (no answer in time)".into()
    } else if error.is_connect() {
        "unreachable (connection refused)".into()
    } else {
        format!("unreachable ({error})")
    }
}

/// The console's routes.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/events", get(events))
        .route("/console/snapshot", get(snapshot))
        .route("/console/partitions", post(isolate))
        .route("/console/partitions/{node}", delete(heal))
        .route("/console/switches/{name}", put(set_switch))
        .with_state(Arc::new(console))
}

#[derive(OpenApi)]
#[openapi(
    paths(snapshot, isolate, heal, set_switch),
    components(schemas(IsolateRequest, SwitchRequest, ErrorBody))
)]
pub(crate) struct ApiDoc;

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("../../static/console.html"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../static/console.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../static/console.css"),
    )
        .into_response()
}

/// `GET /console/events`: a snapshot (event `snapshot`, JSON) every [`EVERY`], for as long as the page
/// listens. Each connection gathers its own; a slow round delays the next instead of piling up.
async fn events(
    State(console): State<Arc<Console>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = console.shutdown.clone().cancelled_owned();
    let stream = futures::stream::unfold((console, ticks), |(console, mut ticks)| async move {
        ticks.tick().await;
        let snapshot = console.snapshot().await;
        let event = Event::default()
            .event("snapshot")
            .json_data(&snapshot)
            .unwrap_or_else(|_| Event::default().event("snapshot").data("{}"));
        Some((Ok(event), (console, ticks)))
    })
    .take_until(shutdown);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The stack as the console sees it now: the Raft cluster, the order flow, in-doubt 2PC transactions,
/// held locks, faults and switches. A source that does not answer in time has `"reachable": false`.
#[utoipa::path(get, path = "/console/snapshot",
    responses((status = 200, description = "one snapshot (the event stream's `snapshot` event)", body = Object)))]
async fn snapshot(State(console): State<Arc<Console>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(console.snapshot().await),
    )
        .into_response()
}

/// Body of `POST /console/partitions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct IsolateRequest {
    /// The config node to cut from the other two (its Raft links only).
    #[schema(minimum = 1, maximum = 3)]
    node: u64,
    /// `hold` (default: a pulled cable) or `reset`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    mode: Option<String>,
}

/// Body of `PUT /console/switches/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    /// One of the switch's values.
    value: String,
}

/// A control's body: JSON only — a form of another site cannot send it without the browser asking first.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the control as application/json",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::unprocessable("invalid_body", format!("not a valid control: {e}")))
}

/// Isolates a config node: the sidecar partitions its Raft links from the other nodes' (partition
/// `console-isolate-config-{node}`). The sidecar's answer is passed on.
#[utoipa::path(post, path = "/console/partitions", request_body = IsolateRequest,
    responses((status = 201, description = "the sidecar's partition", body = Object),
        (status = 409, body = ErrorBody, description = "already isolated"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "the sidecar cannot be reached")))]
async fn isolate(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: IsolateRequest = match json_body(&headers, &body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let nodes: Vec<u64> = (1..=console.config_nodes.len() as u64).collect();
    let mode = request.mode.as_deref().unwrap_or("hold");
    if !nodes.contains(&request.node) || !matches!(mode, "hold" | "reset") {
        return ApiError::unprocessable(
            "invalid_body",
            format!(
                "node is 1 to {}, mode hold or reset",
                console.config_nodes.len()
            ),
        )
        .into_response();
    }
    let partition = view::isolation(request.node, &nodes, mode);
    console
        .forward(
            console
                .http
                .post(format!("{}/partitions", console.chaos))
                .json(&partition),
        )
        .await
}

/// Heals the console's isolation of a config node (204; 404 when there is none).
#[utoipa::path(delete, path = "/console/partitions/{node}",
    params(("node" = u64, Path, minimum = 1, maximum = 3)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
async fn heal(State(console): State<Arc<Console>>, Path(node): Path<String>) -> Response {
    let Ok(node) = node.parse::<u64>() else {
        return ApiError::bad_request("invalid_node", "a config node is its number")
            .into_response();
    };
    console
        .forward(console.http.delete(format!(
            "{}/partitions/{}",
            console.chaos,
            view::isolation_name(node)
        )))
        .await
}

/// Sets a switch of the switchboard (`cap_mode`, `degrade`) through the sidecar; its answer is passed on.
#[utoipa::path(put, path = "/console/switches/{name}", request_body = SwitchRequest,
    params(("name" = String, Path)),
    responses((status = 200, description = "the switch's new state", body = Object),
        (status = 404, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn set_switch(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: SwitchRequest = match json_body(&headers, &body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || name.is_empty() {
        return ApiError::not_found(format!("no switch {name}")).into_response();
    }
    console
        .forward(
            console
                .http
                .put(format!("{}/switches/{name}", console.chaos))
                .json(&json!({"value": request.value})),
        )
        .await
}
