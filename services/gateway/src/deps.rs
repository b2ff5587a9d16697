//! The gateway's two dependencies, each behind a time-out and a [`Breaker`].
//!
//! With `degrade=off` neither guard is used: a call waits up to [`UNGUARDED_TIMEOUT`] (the time-out every
//! distlab service puts on a request), as a shop without BASE would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlab_platform::trace::PropagateTrace;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::breaker::{Admission, Breaker};

/// How long an unguarded call (`degrade=off`) may wait: under the 30 s every distlab request may take, so
/// that the page, not the platform's time-out, answers.
pub const UNGUARDED_TIMEOUT: Duration = Duration::from_secs(25);

/// Why a call to a dependency gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepError {
    #[error("{dependency}: the circuit breaker is open (not asked)")]
    BreakerOpen { dependency: &'static str },
    #[error("{dependency}: no answer within {after:?}")]
    Timeout {
        dependency: &'static str,
        after: Duration,
    },
    #[error("{dependency}: unreachable ({reason})")]
    Unreachable {
        dependency: &'static str,
        reason: String,
    },
    /// An answer that is not a success; `body` is the dependency's (JSON) body.
    #[error("{dependency}: answered {status}")]
    Status {
        dependency: &'static str,
        status: StatusCode,
        body: Value,
    },
}

impl DepError {
    /// Whether the dependency itself is in trouble (counts against its breaker). A 4xx answer is the
    /// caller's problem: the dependency works.
    pub fn is_failure(&self) -> bool {
        match self {
            Self::BreakerOpen { .. } | Self::Timeout { .. } | Self::Unreachable { .. } => true,
            Self::Status { status, .. } => status.is_server_error(),
        }
    }

    /// Whether the dependency did not answer in time (an overload signal for the concurrency limit).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// A half-open breaker's probe whose call is dropped before its outcome (the page's request was abandoned)
/// counts as failed: the breaker opens again for its usual time, instead of refusing every call until the
/// probe time-out gives up on the lost probe.
struct AbandonedProbe<'a> {
    breaker: &'a Mutex<Breaker>,
    armed: bool,
}

impl Drop for AbandonedProbe<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(Instant::now(), false);
        }
    }
}

/// How a call is made: guarded (`auto`, `on`) or not (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The dependency's own time-out and its breaker.
    Guarded,
    /// [`UNGUARDED_TIMEOUT`], no breaker.
    Unguarded,
}

/// One dependency: its base URL, time-out and breaker.
#[derive(Debug, Clone)]
pub struct Dependency {
    name: &'static str,
    base_url: String,
    timeout: Duration,
    http: reqwest::Client,
    breaker: Arc<Mutex<Breaker>>,
}

impl Dependency {
    pub fn new(
        name: &'static str,
        base_url: &str,
        timeout: Duration,
        http: reqwest::Client,
    ) -> Self {
        // Exported from the start (a series appears only once touched), for the dashboards.
        metrics::counter!("gateway_breaker_refusals_total", "dependency" => name).increment(0);
        metrics::gauge!("gateway_breaker_open", "dependency" => name).increment(0.0);
        Self {
            name,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
            http,
            breaker: Arc::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `GET {base}{path}`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, guard: Guard) -> Result<T, DepError> {
        let request = self.http.get(format!("{}{path}", self.base_url));
        self.call(request, guard).await
    }

    /// `POST {base}{path}` with a JSON body and extra headers, decoded; a 4xx answer is an error that
    /// carries the dependency's body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
        guard: Guard,
    ) -> Result<T, DepError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.call(request, guard).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        guard: Guard,
    ) -> Result<T, DepError> {
        let mut probe = AbandonedProbe {
            breaker: &self.breaker,
            armed: false,
        };
        let timeout = match guard {
            Guard::Guarded => {
                let admission = self.lock().admit(Instant::now());
                probe.armed = admission == Admission::Probe;
                if let Admission::Refused { .. } = admission {
                    metrics::counter!("gateway_breaker_refusals_total", "dependency" => self.name)
                        .increment(1);
                    return Err(DepError::BreakerOpen {
                        dependency: self.name,
                    });
                }
                self.timeout
            }
            Guard::Unguarded => UNGUARDED_TIMEOUT,
        };
        let result = self.send(request.timeout(timeout), timeout).await;
        probe.armed = false;
        if guard == Guard::Guarded {
            let failed = result.as_ref().err().is_some_and(DepError::is_failure);
            let mut breaker = self.lock();
            let was_open = breaker.is_open();
            breaker.record(Instant::now(), !failed);
            let open = breaker.is_open();
            drop(breaker);
            if open != was_open {
                tracing::warn!(
                    dependency = self.name,
                    open,
                    "circuit breaker {}",
                    if open { "opened" } else { "closed" }
                );
            }
            metrics::gauge!("gateway_breaker_open", "dependency" => self.name).set(if open {
                1.0
            } else {
                0.0
            });
        }
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, DepError> {
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                DepError::Timeout {
                    dependency: self.name,
                    after: timeout,
                }
            } else {
                DepError::Unreachable {
                    dependency: self.name,
                    reason: error.to_string(),
                }
            }
        };
        let response = request.with_trace().send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            return Err(DepError::Status {
                dependency: self.name,
                status,
                body,
            });
        }
        response.json::<T>().await.map_err(failed)
    }

    /// Whether the breaker would refuse a call now (open and not yet due for its probe).
    pub fn refuses_now(&self) -> bool {
        self.lock().refuses(Instant::now())
    }

    /// `/readyz` detail of this dependency.
    pub fn detail(&self) -> Value {
        let breaker = self.lock();
        json!({
            "url": self.base_url,
            "timeout_ms": self.timeout.as_millis(),
            "breaker": breaker.state_name(),
            "open_for_ms": breaker.opened_at().map(|at| at.elapsed().as_millis()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic while holding this lock cannot leave the breaker half-updated: take it anyway.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and never answers.
    async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_probe_dropped_before_its_answer_opens_the_breaker_again_instead_of_leaving_it_half_open()
     {
        let (url, server) = silent_server().await;
        let dependency = Dependency::new(
            "silent",
            &url,
            Duration::from_millis(30),
            reqwest::Client::new(),
        );
        for _ in 0..crate::breaker::FAILURES_TO_OPEN {
            let answer = dependency.get::<Value>("/", Guard::Guarded).await;
            assert!(
                matches!(answer, Err(DepError::Timeout { .. })),
                "{answer:?}"
            );
        }
        assert_eq!(dependency.detail()["breaker"], "open");
        // Until the breaker is due for its probe (OPEN_FOR).
        distlab_testkit::eventually(
            "the breaker to be due for a probe",
            crate::breaker::OPEN_FOR * 3,
            || async { (!dependency.refuses_now()).then_some(()) },
        )
        .await;
        // The probe goes, and its caller gives up before any answer: the call is dropped.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(5),
            dependency.get::<Value>("/", Guard::Guarded),
        )
        .await;
        assert!(abandoned.is_err(), "the probe was abandoned");
        assert_eq!(dependency.detail()["breaker"], "open", "not left half-open");
        server.abort();
    }
}
