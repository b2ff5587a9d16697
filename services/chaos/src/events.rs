//! The fault log: which fault was active on which link, when, and how many connections or requests it
//! touched (`GET /events`). One [`FaultEvent`] per fault per link: adding a toxic opens one, removing it
//! (or a reset) closes it; a partition opens one per link it cuts. The counters are shared with the
//! connections that apply the fault, so the log is exact without any lock on the data path. Besides the
//! log, every hit is a tracing event (`fault hit`, with the link, the fault, the connection id and — for
//! HTTP toxics — the request's method, path and `x-request-id`) and a Prometheus counter
//! (`chaos_fault_hits_total{link, fault}`). The faults active now are the gauge `chaos_active_faults{link,
//! kind}`: opening an event adds one, its first end takes one away.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many events the log keeps (the oldest go first).
pub const CAPACITY: usize = 1_000;

/// Every [`FaultRef::kind`].
pub const KINDS: [&str; 3] = ["toxic", "partition", "disabled"];

fn active_gauge(link: &str, kind: &'static str) -> metrics::Gauge {
    metrics::gauge!("chaos_active_faults", "link" => link.to_owned(), "kind" => kind)
}

/// What kind of fault an event is about.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FaultRef {
    /// `toxic`, `partition` or `disabled`.
    pub kind: &'static str,
    /// The toxic's or partition's name.
    pub name: String,
    /// The toxic's type, or the partition's cut mode.
    #[serde(rename = "type")]
    pub fault_type: String,
}

/// One fault on one link.
#[derive(Debug)]
pub struct FaultEvent {
    pub id: u64,
    pub link: String,
    pub fault: FaultRef,
    pub started_at: DateTime<Utc>,
    ended_at: Mutex<Option<DateTime<Utc>>>,
    connections: AtomicU64,
    requests: AtomicU64,
    hits: metrics::Counter,
    /// `chaos_active_faults` of this event's link and kind.
    active: metrics::Gauge,
}

impl FaultEvent {
    /// A connection the fault applies to.
    pub fn hit_connection(&self, connection: u64) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.hits.increment(1);
        tracing::info!(link = %self.link, fault = %self.fault.name, fault_type = %self.fault.fault_type,
            connection, "fault hit");
    }

    /// A request an HTTP toxic applies to.
    pub fn hit_request(&self, connection: u64, method: &str, path: &str, request_id: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.hits.increment(1);
        tracing::info!(link = %self.link, fault = %self.fault.name, fault_type = %self.fault.fault_type,
            connection, method, path, request_id, "fault hit");
    }

    pub fn end(&self) {
        let mut ended = self.ended_at.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_none() {
            *ended = Some(Utc::now());
            self.active.decrement(1.0);
            tracing::info!(link = %self.link, fault = %self.fault.name, "fault ended");
        }
    }

    pub fn view(&self) -> EventView {
        EventView {
            id: self.id,
            link: self.link.clone(),
            fault: self.fault.clone(),
            started_at: self.started_at,
            ended_at: *self.ended_at.lock().unwrap_or_else(|e| e.into_inner()),
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// An event as `GET /events` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: u64,
    pub link: String,
    pub fault: FaultRef,
    pub started_at: DateTime<Utc>,
    /// Absent while the fault is active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Connections the fault applied to (byte toxics, cuts).
    pub connections: u64,
    /// Requests the fault applied to (HTTP toxics).
    pub requests: u64,
}

/// The log itself.
#[derive(Debug, Default)]
pub struct FaultLog {
    next_id: AtomicU64,
    events: Mutex<VecDeque<Arc<FaultEvent>>>,
}

impl FaultLog {
    /// Makes the link's `chaos_active_faults` series exist, at 0, before its first fault (a series is only
    /// exported once it was touched).
    pub fn register_link(&self, link: &str) {
        for kind in KINDS {
            active_gauge(link, kind).increment(0.0);
        }
    }

    pub fn open(&self, link: &str, fault: FaultRef) -> Arc<FaultEvent> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let labels = [
            ("link", link.to_owned()),
            ("fault", fault.fault_type.clone()),
        ];
        tracing::info!(link, fault = %fault.name, fault_type = %fault.fault_type, "fault started");
        let active = active_gauge(link, fault.kind);
        active.increment(1.0);
        let event = Arc::new(FaultEvent {
            id,
            link: link.to_owned(),
            fault,
            started_at: Utc::now(),
            ended_at: Mutex::new(None),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            hits: metrics::counter!("chaos_fault_hits_total", &labels),
            active,
        });
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(event.clone());
        event
    }

    /// Newest first, optionally of one link only.
    pub fn list(&self, link: Option<&str>) -> Vec<EventView> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events
            .iter()
            .rev()
            .filter(|e| link.is_none_or(|l| e.link == l))
            .map(|e| e.view())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toxic(name: &str) -> FaultRef {
        FaultRef {
            kind: "toxic",
            name: name.into(),
            fault_type: "latency".into(),
        }
    }

    #[test]
    fn events_count_hits_and_close_once() {
        let log = FaultLog::default();
        let a = log.open("order->inventory", toxic("slow"));
        let b = log.open("order->orders-db", toxic("slow"));
        a.hit_connection(1);
        a.hit_connection(2);
        b.hit_request(3, "GET", "/x", "-");
        a.end();
        let first_end = a.view().ended_at;
        a.end();
        assert_eq!(a.view().ended_at, first_end, "the first end stays");
        let all = log.list(None);
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 1]);
        assert_eq!((all[1].connections, all[1].requests), (2, 0));
        assert_eq!((all[0].connections, all[0].requests), (0, 1));
        assert_eq!(log.list(Some("order->inventory")).len(), 1);
    }

    #[test]
    fn the_log_keeps_the_newest() {
        let log = FaultLog::default();
        for _ in 0..CAPACITY + 5 {
            log.open("a->b", toxic("t"));
        }
        let all = log.list(None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].id, (CAPACITY + 5) as u64);
    }
}
