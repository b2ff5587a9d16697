//! A circuit breaker per dependency (pure: the caller passes the time).
//!
//! A dependency that keeps failing or timing out is not asked again for a while: callers get an immediate
//! "open" instead of each waiting for its own time-out, and the dependency gets room to recover.
//!
//! - **closed**: calls pass; [`FAILURES_TO_OPEN`] failures in a row open the breaker.
//! - **open**: calls are refused at once for [`OPEN_FOR`]; then the breaker is half-open.
//! - **half-open**: one call (the probe) passes, the others are refused; its success closes the breaker,
//!   its failure opens it again for another [`OPEN_FOR`].
//!
//! A probe whose call is dropped is recorded as failed by its caller (`deps`); one whose outcome is never
//! recorded at all is given up after [`PROBE_TIMEOUT`], so a lost probe cannot keep the breaker half-open
//! for ever.
//!
//! No crate is used: `failsafe` (the maintained Rust breaker) hides its state, and the gateway shows the
//! state on `/readyz`, in metrics and on its pages, and its tests drive the clock.

use std::time::{Duration, Instant};

/// Failures in a row that open a closed breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open breaker refuses calls before it lets a probe through.
pub const OPEN_FOR: Duration = Duration::from_secs(2);
/// How long a probe may stay unanswered before another may go.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { since: Instant, until: Instant },
    HalfOpen { probe_sent: Instant },
}

/// Whether a call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go, and record the outcome.
    Call,
    /// Go: this call is the half-open probe; record its outcome.
    Probe,
    /// Do not call; the breaker is open (since the instant given).
    Refused { open_since: Instant },
}

/// One dependency's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    opened_at: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed { failures: 0 },
            opened_at: None,
        }
    }
}

impl Breaker {
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the breaker is not closed (open, or half-open).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// Whether a call asked at `now` would be refused: open and not yet due for its probe, or half-open
    /// with its probe out. (An open breaker past its time is not "refusing": the next call is its probe.)
    pub fn refuses(&self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => false,
            State::Open { until, .. } => now < until,
            State::HalfOpen { probe_sent } => {
                now.saturating_duration_since(probe_sent) < PROBE_TIMEOUT
            }
        }
    }

    /// When the breaker last opened (kept while it is half-open).
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    /// Asks to call at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Call,
            State::Open { since, until } => {
                if now >= until {
                    self.state = State::HalfOpen { probe_sent: now };
                    Admission::Probe
                } else {
                    Admission::Refused { open_since: since }
                }
            }
            State::HalfOpen { probe_sent } => {
                if now.saturating_duration_since(probe_sent) >= PROBE_TIMEOUT {
                    self.state = State::HalfOpen { probe_sent: now };
                    Admission::Probe
                } else {
                    Admission::Refused {
                        open_since: self.opened_at.unwrap_or(probe_sent),
                    }
                }
            }
        }
    }

    /// Records the outcome of an admitted call at `now`.
    pub fn record(&mut self, now: Instant, success: bool) {
        self.state = match (self.state, success) {
            (_, true) => {
                self.opened_at = None;
                State::Closed { failures: 0 }
            }
            (State::Closed { failures }, false) if failures + 1 < FAILURES_TO_OPEN => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (State::Open { since, until }, false) => State::Open { since, until },
            (State::Closed { .. } | State::HalfOpen { .. }, false) => {
                let since = *self.opened_at.get_or_insert(now);
                State::Open {
                    since,
                    until: now + OPEN_FOR,
                }
            }
        };
    }

    /// `closed`, `open` or `half_open`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(breaker: &mut Breaker, now: Instant, times: u32) {
        for _ in 0..times {
            assert!(!matches!(breaker.admit(now), Admission::Refused { .. }));
            breaker.record(now, false);
        }
    }

    #[test]
    fn failures_in_a_row_open_it_and_a_success_in_between_resets_the_count() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, t0, FAILURES_TO_OPEN - 1);
        breaker.record(t0, true);
        failing(&mut breaker, t0, FAILURES_TO_OPEN - 1);
        assert_eq!(breaker.admit(t0), Admission::Call);
        breaker.record(t0, false);
        assert!(breaker.is_open());
        assert_eq!(breaker.admit(t0), Admission::Refused { open_since: t0 });
    }

    #[test]
    fn an_open_breaker_lets_one_probe_through_after_its_time_and_the_probe_decides() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, t0, FAILURES_TO_OPEN);
        let almost = t0 + OPEN_FOR - Duration::from_millis(1);
        assert!(matches!(breaker.admit(almost), Admission::Refused { .. }));

        let later = t0 + OPEN_FOR;
        assert!(breaker.refuses(almost));
        assert!(!breaker.refuses(later), "due for its probe: not refusing");
        assert_eq!(breaker.admit(later), Admission::Probe);
        assert!(breaker.refuses(later), "its probe is out");
        // Only one probe at a time.
        assert_eq!(breaker.admit(later), Admission::Refused { open_since: t0 });
        // The probe fails: open again, for another OPEN_FOR, still counted from the first opening.
        breaker.record(later, false);
        assert_eq!(breaker.state_name(), "open");
        assert_eq!(breaker.opened_at(), Some(t0));
        assert!(matches!(
            breaker.admit(later + OPEN_FOR / 2),
            Admission::Refused { .. }
        ));
        // The next probe succeeds: closed.
        assert_eq!(breaker.admit(later + OPEN_FOR), Admission::Probe);
        breaker.record(later + OPEN_FOR, true);
        assert_eq!(breaker.state_name(), "closed");
        assert_eq!(breaker.opened_at(), None);
        assert_eq!(breaker.admit(later + OPEN_FOR), Admission::Call);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, t0, FAILURES_TO_OPEN);
        assert_eq!(breaker.admit(t0 + OPEN_FOR), Admission::Probe);
        // Its outcome is never recorded.
        assert!(matches!(
            breaker.admit(t0 + OPEN_FOR + PROBE_TIMEOUT / 2),
            Admission::Refused { .. }
        ));
        assert_eq!(
            breaker.admit(t0 + OPEN_FOR + PROBE_TIMEOUT),
            Admission::Probe
        );
    }

    #[test]
    fn late_failures_of_calls_admitted_before_it_opened_do_not_extend_the_opening() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, t0, FAILURES_TO_OPEN);
        let State::Open { until, .. } = breaker.state() else {
            panic!("open")
        };
        breaker.record(t0 + Duration::from_millis(500), false);
        assert_eq!(breaker.state(), State::Open { since: t0, until });
    }
}
