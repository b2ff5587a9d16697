//! Toxics: the faults a proxy applies to the bytes (or, on an HTTP proxy, the requests) of one direction of
//! its connections. The names, attributes and JSON shape are Toxiproxy's, so its clients work unchanged:
//!
//! ```json
//! {"name": "latency_downstream", "type": "latency", "stream": "downstream", "toxicity": 1.0,
//!  "attributes": {"latency": 300, "jitter": 50}}
//! ```
//!
//! | type | attributes | effect |
//! |---|---|---|
//! | `latency` | `latency`, `jitter` (ms) | every chunk waits `latency ± jitter` |
//! | `bandwidth` | `rate` (KB/s) | the direction carries at most `rate` KB per second |
//! | `slow_close` | `delay` (ms) | the end of the stream is passed on `delay` late |
//! | `timeout` | `timeout` (ms) | nothing passes; the connection closes after `timeout` (0: held until the toxic goes, then released) |
//! | `reset_peer` | `timeout` (ms) | the connection is reset (TCP RST) after `timeout` |
//! | `slicer` | `average_size`, `size_variation` (bytes), `delay` (µs) | chunks are cut into small writes |
//! | `limit_data` | `bytes` | the connection closes once `bytes` have passed |
//! | `http_error` | `status`, `body`, `path_prefix`, `method` | matching requests are answered by the proxy with `status` (HTTP proxies) |
//! | `http_latency` | `latency`, `jitter` (ms), `path_prefix`, `method` | matching requests wait before they are forwarded (HTTP proxies) |
//!
//! `stream` is `upstream` (client → server) or `downstream` (server → client, the default), `toxicity` the
//! probability (0..=1, default 1) that the toxic applies to a connection — or, for the HTTP toxics, to a
//! request. Parsing ([`ToxicSpec::parse`], [`Toxic::update`]) is pure and reports every problem at once.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Which direction of a connection a toxic acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client → server.
    Upstream,
    /// Server → client.
    Downstream,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "upstream" => Some(Stream::Upstream),
            "downstream" => Some(Stream::Downstream),
            _ => None,
        }
    }
}

/// Which requests an HTTP toxic matches: a path prefix and a method, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatch {
    pub path_prefix: Option<String>,
    pub method: Option<String>,
}

impl RequestMatch {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.path_prefix
            .as_deref()
            .is_none_or(|prefix| path.starts_with(prefix))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// A toxic's type and attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Latency {
        latency: Duration,
        jitter: Duration,
    },
    Bandwidth {
        /// KB (1,000 bytes) per second.
        rate_kb: u64,
    },
    SlowClose {
        delay: Duration,
    },
    Timeout {
        /// Zero: hold the data until the toxic is removed.
        timeout: Duration,
    },
    ResetPeer {
        timeout: Duration,
    },
    Slicer {
        average_size: u64,
        size_variation: u64,
        delay: Duration,
    },
    LimitData {
        bytes: u64,
    },
    HttpError {
        status: u16,
        body: Option<String>,
        matching: RequestMatch,
    },
    HttpLatency {
        latency: Duration,
        jitter: Duration,
        matching: RequestMatch,
    },
}

/// The toxic types, as named in the API.
pub const TYPES: [&str; 9] = [
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "http_error",
    "http_latency",
];

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Latency { .. } => "latency",
            Kind::Bandwidth { .. } => "bandwidth",
            Kind::SlowClose { .. } => "slow_close",
            Kind::Timeout { .. } => "timeout",
            Kind::ResetPeer { .. } => "reset_peer",
            Kind::Slicer { .. } => "slicer",
            Kind::LimitData { .. } => "limit_data",
            Kind::HttpError { .. } => "http_error",
            Kind::HttpLatency { .. } => "http_latency",
        }
    }

    /// HTTP toxics act per request and need a proxy with `"protocol": "http"`.
    pub fn is_http(&self) -> bool {
        matches!(self, Kind::HttpError { .. } | Kind::HttpLatency { .. })
    }

    /// The attributes in Toxiproxy's JSON form (durations in the unit of the table above).
    pub fn attributes(&self) -> Value {
        fn ms(d: &Duration) -> u64 {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        }
        fn matching_json(object: &mut Value, matching: &RequestMatch) {
            if let Some(prefix) = &matching.path_prefix {
                object["path_prefix"] = json!(prefix);
            }
            if let Some(method) = &matching.method {
                object["method"] = json!(method);
            }
        }
        match self {
            Kind::Latency { latency, jitter } => {
                json!({"latency": ms(latency), "jitter": ms(jitter)})
            }
            Kind::Bandwidth { rate_kb } => json!({"rate": rate_kb}),
            Kind::SlowClose { delay } => json!({"delay": ms(delay)}),
            Kind::Timeout { timeout } | Kind::ResetPeer { timeout } => {
                json!({"timeout": ms(timeout)})
            }
            Kind::Slicer {
                average_size,
                size_variation,
                delay,
            } => json!({
                "average_size": average_size,
                "size_variation": size_variation,
                "delay": u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            }),
            Kind::LimitData { bytes } => json!({"bytes": bytes}),
            Kind::HttpError {
                status,
                body,
                matching,
            } => {
                let mut object = json!({"status": status});
                if let Some(body) = body {
                    object["body"] = json!(body);
                }
                matching_json(&mut object, matching);
                object
            }
            Kind::HttpLatency {
                latency,
                jitter,
                matching,
            } => {
                let mut object = json!({"latency": ms(latency), "jitter": ms(jitter)});
                matching_json(&mut object, matching);
                object
            }
        }
    }

    /// Builds a kind from its type and attributes; `problems` collects what is wrong.
    fn from_attributes(
        type_name: &str,
        attributes: &Map<String, Value>,
        problems: &mut Vec<Problem>,
    ) -> Option<Kind> {
        let mut read = Attributes {
            map: attributes,
            problems,
        };
        let kind = match type_name {
            "latency" => Kind::Latency {
                latency: read.millis("latency"),
                jitter: read.millis("jitter"),
            },
            "bandwidth" => Kind::Bandwidth {
                rate_kb: read.count("rate"),
            },
            "slow_close" => Kind::SlowClose {
                delay: read.millis("delay"),
            },
            "timeout" => Kind::Timeout {
                timeout: read.millis("timeout"),
            },
            "reset_peer" => Kind::ResetPeer {
                timeout: read.millis("timeout"),
            },
            "slicer" => {
                let average_size = read.count("average_size");
                let size_variation = read.count("size_variation");
                let delay = Duration::from_micros(read.count("delay"));
                if average_size == 0 {
                    read.problem("attributes.average_size", "must be at least 1");
                }
                if size_variation >= average_size.max(1) {
                    read.problem(
                        "attributes.size_variation",
                        "must be smaller than average_size",
                    );
                }
                Kind::Slicer {
                    average_size,
                    size_variation,
                    delay,
                }
            }
            "limit_data" => Kind::LimitData {
                bytes: read.count("bytes"),
            },
            "http_error" => {
                let status = read.count("status");
                if !(100..=599).contains(&status) {
                    read.problem("attributes.status", "must be an HTTP status (100..=599)");
                }
                Kind::HttpError {
                    status: u16::try_from(status).unwrap_or(500),
                    body: read.text("body"),
                    matching: read.matching(),
                }
            }
            "http_latency" => Kind::HttpLatency {
                latency: read.millis("latency"),
                jitter: read.millis("jitter"),
                matching: read.matching(),
            },
            _ => return None,
        };
        Some(kind)
    }
}

/// Longest accepted duration attribute (one day): longer is a typo, and `Instant + d` must not overflow.
const MAX_MILLIS: u64 = 86_400_000;

struct Attributes<'a> {
    map: &'a Map<String, Value>,
    problems: &'a mut Vec<Problem>,
}

impl Attributes<'_> {
    fn problem(&mut self, field: &str, message: &str) {
        self.problems.push(Problem::new(field, message));
    }

    /// A non-negative integer attribute; absent means 0, as in Toxiproxy.
    fn count(&mut self, name: &str) -> u64 {
        match self.map.get(name) {
            None | Some(Value::Null) => 0,
            Some(value) => match value.as_u64().or_else(|| integral(value)) {
                Some(n) => n,
                None => {
                    self.problem(
                        &format!("attributes.{name}"),
                        "must be a non-negative integer",
                    );
                    0
                }
            },
        }
    }

    fn millis(&mut self, name: &str) -> Duration {
        let n = self.count(name);
        if n > MAX_MILLIS {
            self.problem(
                &format!("attributes.{name}"),
                "must be at most 86400000 ms (one day)",
            );
        }
        Duration::from_millis(n.min(MAX_MILLIS))
    }

    fn text(&mut self, name: &str) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(&format!("attributes.{name}"), "must be a string");
                None
            }
        }
    }

    fn matching(&mut self) -> RequestMatch {
        let path_prefix = self.text("path_prefix");
        if path_prefix.as_deref().is_some_and(|p| !p.starts_with('/')) {
            self.problem("attributes.path_prefix", "must start with /");
        }
        let method = self.text("method");
        if method
            .as_deref()
            .is_some_and(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            self.problem("attributes.method", "must be an HTTP method such as GET");
        }
        RequestMatch {
            path_prefix,
            method: method.map(|m| m.to_ascii_uppercase()),
        }
    }
}

/// A float such as `300.0` is accepted as the integer 300 (some clients send numbers as floats).
fn integral(value: &Value) -> Option<u64> {
    let f = value.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= 9.0e15).then_some(f as u64)
}

/// One thing wrong with a toxic, by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    fn new(field: &str, message: &str) -> Self {
        Problem {
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// A toxic as stored on a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    pub name: String,
    pub stream: Stream,
    pub toxicity: f64,
    pub kind: Kind,
}

/// A toxic to create, parsed from the request body.
#[derive(Debug, Clone, PartialEq)]
pub struct ToxicSpec(pub Toxic);

impl ToxicSpec {
    /// Parses `{"name"?, "type", "stream"?, "toxicity"?, "attributes"?}`. An unknown type is reported alone
    /// (`Err(None)` means "invalid toxic type", as Toxiproxy calls it); other problems all together.
    pub fn parse(body: &Value) -> Result<ToxicSpec, Rejection> {
        let Some(object) = body.as_object() else {
            return Err(Rejection::Invalid(vec![Problem::new(
                "body",
                "must be a JSON object",
            )]));
        };
        let mut problems = Vec::new();
        let type_name = match object.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(Rejection::UnknownType(None)),
        };
        if !TYPES.contains(&type_name.as_str()) {
            return Err(Rejection::UnknownType(Some(type_name)));
        }
        let stream = match object.get("stream") {
            None | Some(Value::Null) => Some(Stream::Downstream),
            Some(Value::String(s)) if s.is_empty() => Some(Stream::Downstream),
            Some(Value::String(s)) => Stream::parse(s),
            Some(_) => None,
        };
        let stream = stream.unwrap_or_else(|| {
            problems.push(Problem::new(
                "stream",
                "must be either upstream or downstream",
            ));
            Stream::Downstream
        });
        let toxicity = parse_toxicity(object.get("toxicity"), 1.0, &mut problems);
        let empty = Map::new();
        let attributes = attributes_of(object, &empty, &mut problems);
        let kind = Kind::from_attributes(&type_name, attributes, &mut problems)
            .ok_or(Rejection::UnknownType(Some(type_name.clone())))?;
        let name = match object.get("name") {
            None | Some(Value::Null) => format!("{type_name}_{}", stream.as_str()),
            Some(Value::String(n)) if n.is_empty() => format!("{type_name}_{}", stream.as_str()),
            Some(Value::String(n)) => {
                check_name(n, "name", &mut problems);
                n.clone()
            }
            Some(_) => {
                problems.push(Problem::new("name", "must be a string"));
                String::new()
            }
        };
        if problems.is_empty() {
            Ok(ToxicSpec(Toxic {
                name,
                stream,
                toxicity,
                kind,
            }))
        } else {
            Err(Rejection::Invalid(problems))
        }
    }
}

impl Toxic {
    /// Applies an update body (`toxicity` and/or `attributes`, merged over the current ones; Toxiproxy
    /// allows neither the type nor the stream to change).
    pub fn update(&self, body: &Value) -> Result<Toxic, Rejection> {
        let Some(object) = body.as_object() else {
            return Err(Rejection::Invalid(vec![Problem::new(
                "body",
                "must be a JSON object",
            )]));
        };
        let mut problems = Vec::new();
        let toxicity = parse_toxicity(object.get("toxicity"), self.toxicity, &mut problems);
        let mut merged = self
            .kind
            .attributes()
            .as_object()
            .cloned()
            .unwrap_or_default();
        let empty = Map::new();
        for (key, value) in attributes_of(object, &empty, &mut problems) {
            merged.insert(key.clone(), value.clone());
        }
        let kind = Kind::from_attributes(self.kind.type_name(), &merged, &mut problems)
            .unwrap_or_else(|| self.kind.clone());
        if let Some(Value::String(t)) = object.get("type")
            && t != self.kind.type_name()
        {
            problems.push(Problem::new("type", "a toxic's type cannot change"));
        }
        if problems.is_empty() {
            Ok(Toxic {
                name: self.name.clone(),
                stream: self.stream,
                toxicity,
                kind,
            })
        } else {
            Err(Rejection::Invalid(problems))
        }
    }

    /// Toxiproxy's JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind.type_name(),
            "stream": self.stream.as_str(),
            "toxicity": self.toxicity,
            "attributes": self.kind.attributes(),
        })
    }
}

fn attributes_of<'a>(
    object: &'a Map<String, Value>,
    empty: &'a Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> &'a Map<String, Value> {
    match object.get("attributes") {
        None | Some(Value::Null) => empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            problems.push(Problem::new("attributes", "must be a JSON object"));
            empty
        }
    }
}

fn parse_toxicity(value: Option<&Value>, default: f64, problems: &mut Vec<Problem>) -> f64 {
    match value {
        None | Some(Value::Null) => default,
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) => t,
            _ => {
                problems.push(Problem::new("toxicity", "must be a number from 0 to 1"));
                default
            }
        },
    }
}

/// Names (of proxies, toxics, partitions) are 1..=128 characters without `/` or control characters, so
/// they fit in a URL path segment and a log line.
pub fn check_name(name: &str, field: &str, problems: &mut Vec<Problem>) {
    if name.is_empty() || name.chars().count() > 128 {
        problems.push(Problem::new(field, "must be 1 to 128 characters"));
    } else if name.chars().any(|c| c == '/' || c.is_control()) {
        problems.push(Problem::new(
            field,
            "must not contain / or control characters",
        ));
    }
}

/// Why a toxic body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The type is missing or not one of [`TYPES`].
    UnknownType(Option<String>),
    /// The type is known but fields are wrong.
    Invalid(Vec<Problem>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Toxic, Rejection> {
        ToxicSpec::parse(&body).map(|s| s.0)
    }

    #[test]
    fn defaults_are_toxiproxys() {
        let toxic =
            parse(json!({"type": "latency", "attributes": {"latency": 300}})).expect("valid");
        assert_eq!(toxic.name, "latency_downstream");
        assert_eq!(toxic.stream, Stream::Downstream);
        assert_eq!(toxic.toxicity, 1.0);
        assert_eq!(
            toxic.kind,
            Kind::Latency {
                latency: Duration::from_millis(300),
                jitter: Duration::ZERO
            }
        );
        assert_eq!(
            toxic.to_json(),
            json!({"name": "latency_downstream", "type": "latency", "stream": "downstream",
                   "toxicity": 1.0, "attributes": {"latency": 300, "jitter": 0}})
        );
    }

    #[test]
    fn every_type_round_trips_through_its_json() {
        let bodies = [
            json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 5, "jitter": 2}}),
            json!({"type": "bandwidth", "attributes": {"rate": 64}}),
            json!({"type": "slow_close", "attributes": {"delay": 100}}),
            json!({"type": "timeout", "attributes": {"timeout": 0}}),
            json!({"type": "reset_peer", "attributes": {"timeout": 10}}),
            json!({"type": "slicer", "attributes": {"average_size": 10, "size_variation": 3, "delay": 50}}),
            json!({"type": "limit_data", "attributes": {"bytes": 1000}}),
            json!({"type": "http_error", "stream": "upstream", "attributes": {"status": 503, "body": "no", "path_prefix": "/orders", "method": "post"}}),
            json!({"type": "http_latency", "stream": "upstream", "attributes": {"latency": 50, "jitter": 0, "path_prefix": "/p"}}),
        ];
        for body in bodies {
            let toxic = parse(body.clone()).expect("valid");
            let again = parse(toxic.to_json()).expect("its own JSON parses");
            assert_eq!(toxic, again, "{body}");
        }
    }

    #[test]
    fn unknown_types_are_named() {
        assert_eq!(
            parse(json!({"type": "gremlin"})),
            Err(Rejection::UnknownType(Some("gremlin".into())))
        );
        assert_eq!(
            parse(json!({"name": "x"})),
            Err(Rejection::UnknownType(None))
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let Err(Rejection::Invalid(problems)) = parse(json!({
            "type": "latency", "stream": "sideways", "toxicity": 1.5,
            "attributes": {"latency": -1, "jitter": "a lot"}
        })) else {
            panic!("must be refused");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "stream",
                "toxicity",
                "attributes.latency",
                "attributes.jitter"
            ]
        );
    }

    #[test]
    fn slicer_and_http_error_check_their_ranges() {
        assert!(parse(json!({"type": "slicer", "attributes": {"average_size": 0}})).is_err());
        assert!(
            parse(
                json!({"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}})
            )
            .is_err()
        );
        assert!(parse(json!({"type": "http_error", "attributes": {"status": 42}})).is_err());
        assert!(
            parse(json!({"type": "http_error", "attributes": {"status": 503, "path_prefix": "x"}}))
                .is_err()
        );
        assert!(parse(json!({"type": "latency", "attributes": {"latency": 86_400_001}})).is_err());
    }

    #[test]
    fn floats_that_are_integers_are_accepted() {
        let toxic =
            parse(json!({"type": "bandwidth", "attributes": {"rate": 100.0}})).expect("valid");
        assert_eq!(toxic.kind, Kind::Bandwidth { rate_kb: 100 });
        assert!(parse(json!({"type": "bandwidth", "attributes": {"rate": 1.5}})).is_err());
    }

    #[test]
    fn update_merges_attributes_and_keeps_type_and_stream() {
        let toxic = parse(json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 5, "jitter": 2}}))
            .expect("valid");
        let updated = toxic
            .update(&json!({"attributes": {"latency": 50}, "toxicity": 0.5}))
            .expect("valid update");
        assert_eq!(updated.stream, Stream::Upstream);
        assert_eq!(updated.toxicity, 0.5);
        assert_eq!(
            updated.kind,
            Kind::Latency {
                latency: Duration::from_millis(50),
                jitter: Duration::from_millis(2)
            }
        );
        assert!(toxic.update(&json!({"type": "bandwidth"})).is_err());
        assert!(toxic.update(&json!({"toxicity": -0.1})).is_err());
    }

    #[test]
    fn request_matching_uses_prefix_and_method() {
        let m = RequestMatch {
            path_prefix: Some("/orders".into()),
            method: Some("POST".into()),
        };
        assert!(m.matches("POST", "/orders/1"));
        assert!(m.matches("post", "/orders"));
        assert!(!m.matches("GET", "/orders"));
        assert!(!m.matches("POST", "/stock"));
        assert!(RequestMatch::default().matches("DELETE", "/"));
    }
}
