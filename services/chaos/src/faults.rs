//! What a link's connections must do right now: the faults a proxy publishes to its connections, and the
//! pure rules that turn them into one direction's effect ([`Effects`]).
//!
//! A proxy holds its toxics and the cuts of the partitions that separate its two parts; whenever they
//! change it publishes a new [`LinkFaults`] (through a `tokio::sync::watch`), and every open connection
//! re-reads it before its next chunk and while it waits, so a fault added or removed acts on open
//! connections too. A toxic's `toxicity` is rolled once per connection (per request for HTTP toxics);
//! the result is kept by the connection ([`Decisions`]) so a toxic does not flicker on and off.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::FaultEvent;
use crate::partition::CutMode;
use crate::toxic::{Kind, Stream, Toxic};

/// A toxic as its connections see it: a unique id (a toxic re-created with the same name is another
/// toxic) and its fault-log entry.
#[derive(Debug)]
pub struct ActiveToxic {
    pub id: u64,
    pub toxic: Toxic,
    pub event: Arc<FaultEvent>,
}

/// A partition's cut of this link.
#[derive(Debug)]
pub struct Cut {
    pub mode: CutMode,
    pub event: Arc<FaultEvent>,
}

/// Everything a proxy's connections must apply.
#[derive(Debug, Default)]
pub struct LinkFaults {
    pub toxics: Vec<Arc<ActiveToxic>>,
    pub cuts: Vec<Arc<Cut>>,
}

impl LinkFaults {
    pub fn is_clean(&self) -> bool {
        self.toxics.is_empty() && self.cuts.is_empty()
    }

    /// The strongest cut: a reset wins over a hold.
    pub fn cut(&self) -> Option<&Arc<Cut>> {
        self.cuts
            .iter()
            .find(|c| c.mode == CutMode::Reset)
            .or_else(|| self.cuts.first())
    }
}

/// One connection's memory of the toxics it has seen in one direction: `Some(since)` when the toxic
/// applies (since that instant), `None` when its toxicity roll said no.
#[derive(Debug, Default)]
pub struct Decisions {
    seen: HashMap<u64, Option<Instant>>,
    cuts_hit: HashSet<u64>,
}

impl Decisions {
    /// Whether `toxic` applies to this connection, rolling its toxicity the first time; `hit` is called once
    /// when it starts to apply. Returns since when it applies.
    pub fn decide(
        &mut self,
        toxic: &ActiveToxic,
        now: Instant,
        roll: impl FnOnce() -> f64,
        hit: impl FnOnce(),
    ) -> Option<Instant> {
        *self.seen.entry(toxic.id).or_insert_with(|| {
            let applies = toxic.toxic.toxicity >= 1.0 || roll() < toxic.toxic.toxicity;
            if applies {
                hit();
            }
            applies.then_some(now)
        })
    }
}

/// What one direction must do with its next chunk, given the faults that apply to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Stop passing data (a `timeout` toxic or a `hold` cut).
    pub hold: bool,
    /// Close the connection at this instant (a `timeout` toxic with a non-zero timeout).
    pub close_at: Option<Instant>,
    /// Reset the connection at this instant (`reset_peer`, or now for a `reset` cut).
    pub reset_at: Option<Instant>,
    /// Added to every chunk (the sum of the `latency` toxics), and its jitter.
    pub latency: Duration,
    pub jitter: Duration,
    /// The smallest `bandwidth` rate, in bytes per second.
    pub rate: Option<u64>,
    /// `slicer`: average size, variation, delay between slices.
    pub slicer: Option<(u64, u64, Duration)>,
    /// The smallest `limit_data`.
    pub limit: Option<u64>,
    /// The longest `slow_close` delay.
    pub slow_close: Duration,
}

impl Effects {
    /// Combines the byte toxics of `stream` that apply (per `decisions`) and the link's cut.
    pub fn of(
        faults: &LinkFaults,
        stream: Stream,
        decisions: &mut Decisions,
        now: Instant,
        mut roll: impl FnMut() -> f64,
        connection: u64,
    ) -> Effects {
        let mut effects = Effects::default();
        if let Some(cut) = faults.cut() {
            // Both directions see the cut; the upstream one counts the connection.
            if stream == Stream::Upstream && decisions.cuts_hit.insert(cut.event.id) {
                cut.event.hit_connection(connection);
            }
            match cut.mode {
                CutMode::Hold => effects.hold = true,
                CutMode::Reset => effects.reset_at = Some(now),
            }
        }
        for active in &faults.toxics {
            if active.toxic.stream != stream || active.toxic.kind.is_http() {
                continue;
            }
            let Some(since) = decisions.decide(active, now, &mut roll, || {
                active.event.hit_connection(connection)
            }) else {
                continue;
            };
            match &active.toxic.kind {
                Kind::Latency { latency, jitter } => {
                    effects.latency += *latency;
                    effects.jitter += *jitter;
                }
                Kind::Bandwidth { rate_kb } => {
                    let rate = rate_kb.saturating_mul(1000);
                    effects.rate = Some(effects.rate.map_or(rate, |r| r.min(rate)));
                }
                Kind::SlowClose { delay } => effects.slow_close = effects.slow_close.max(*delay),
                Kind::Timeout { timeout } => {
                    effects.hold = true;
                    if !timeout.is_zero() {
                        effects.close_at = earliest(effects.close_at, since + *timeout);
                    }
                }
                Kind::ResetPeer { timeout } => {
                    effects.reset_at = earliest(effects.reset_at, since + *timeout);
                }
                Kind::Slicer {
                    average_size,
                    size_variation,
                    delay,
                } => effects.slicer = Some((*average_size, *size_variation, *delay)),
                Kind::LimitData { bytes } => {
                    effects.limit = Some(effects.limit.map_or(*bytes, |l| l.min(*bytes)));
                }
                Kind::HttpError { .. } | Kind::HttpLatency { .. } => {}
            }
        }
        effects
    }

    /// Nothing to do but copy.
    pub fn is_clear(&self) -> bool {
        *self == Effects::default()
    }
}

fn earliest(current: Option<Instant>, candidate: Instant) -> Option<Instant> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

/// `latency ± jitter`, never below zero; `unit` is a uniform sample in [0, 1).
pub fn jittered(latency: Duration, jitter: Duration, unit: f64) -> Duration {
    if jitter.is_zero() {
        return latency;
    }
    let offset = jitter.as_secs_f64() * (2.0 * unit - 1.0);
    Duration::from_secs_f64((latency.as_secs_f64() + offset).max(0.0))
}

/// The sizes a `slicer` cuts `len` bytes into: each `average ± variation` (at least 1), summing to `len`.
/// `unit` gives uniform samples in [0, 1).
pub fn slices(
    len: usize,
    average: u64,
    variation: u64,
    mut unit: impl FnMut() -> f64,
) -> Vec<usize> {
    let average = usize::try_from(average.max(1)).unwrap_or(usize::MAX);
    let variation = usize::try_from(variation).unwrap_or(0).min(average - 1);
    let mut sizes = Vec::new();
    let mut left = len;
    while left > 0 {
        let spread = (2 * variation + 1) as f64;
        let size = average - variation + ((unit() * spread) as usize).min(2 * variation);
        let size = size.clamp(1, left);
        sizes.push(size);
        left -= size;
    }
    sizes
}

/// How long `bytes` take at `rate` bytes per second.
pub fn transmission_time(bytes: usize, rate: u64) -> Duration {
    if rate == 0 {
        // A rate of 0 passes nothing: Toxiproxy's bandwidth toxic then blocks; a day stands for "forever".
        return Duration::from_secs(86_400);
    }
    Duration::from_secs_f64(bytes as f64 / rate as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{FaultLog, FaultRef};
    use serde_json::json;

    fn active(id: u64, body: serde_json::Value) -> Arc<ActiveToxic> {
        let toxic = crate::toxic::ToxicSpec::parse(&body).expect("valid").0;
        let event = FaultLog::default().open(
            "a->b",
            FaultRef {
                kind: "toxic",
                name: toxic.name.clone(),
                fault_type: toxic.kind.type_name().into(),
            },
        );
        Arc::new(ActiveToxic { id, toxic, event })
    }

    fn faults(toxics: Vec<Arc<ActiveToxic>>) -> LinkFaults {
        LinkFaults {
            toxics,
            cuts: Vec::new(),
        }
    }

    #[test]
    fn toxics_of_the_other_stream_do_not_apply() {
        let f = faults(vec![active(
            1,
            json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 10}}),
        )]);
        let now = Instant::now();
        let down = Effects::of(
            &f,
            Stream::Downstream,
            &mut Decisions::default(),
            now,
            || 0.0,
            1,
        );
        assert!(down.is_clear());
        let up = Effects::of(
            &f,
            Stream::Upstream,
            &mut Decisions::default(),
            now,
            || 0.0,
            1,
        );
        assert_eq!(up.latency, Duration::from_millis(10));
    }

    #[test]
    fn toxicity_is_rolled_once_per_connection() {
        let f = faults(vec![active(
            7,
            json!({"type": "limit_data", "toxicity": 0.5, "attributes": {"bytes": 10}}),
        )]);
        let now = Instant::now();
        let mut lucky = Decisions::default();
        assert_eq!(
            Effects::of(&f, Stream::Downstream, &mut lucky, now, || 0.9, 1).limit,
            None
        );
        // A later roll that would apply changes nothing: the decision stays.
        assert_eq!(
            Effects::of(&f, Stream::Downstream, &mut lucky, now, || 0.1, 1).limit,
            None
        );
        let mut unlucky = Decisions::default();
        assert_eq!(
            Effects::of(&f, Stream::Downstream, &mut unlucky, now, || 0.1, 2).limit,
            Some(10)
        );
        assert_eq!(f.toxics[0].event.view().connections, 1);
    }

    #[test]
    fn toxicity_zero_never_applies_and_one_always_does() {
        let now = Instant::now();
        let never = faults(vec![active(1, json!({"type": "timeout", "toxicity": 0.0}))]);
        let always = faults(vec![active(2, json!({"type": "timeout", "toxicity": 1.0}))]);
        for _ in 0..100 {
            let mut d = Decisions::default();
            assert!(!Effects::of(&never, Stream::Downstream, &mut d, now, || 0.0, 1).hold);
            let mut d = Decisions::default();
            assert!(Effects::of(&always, Stream::Downstream, &mut d, now, || 0.999, 1).hold);
        }
    }

    #[test]
    fn timers_count_from_when_the_connection_first_saw_the_toxic() {
        let f = faults(vec![
            active(
                1,
                json!({"type": "timeout", "attributes": {"timeout": 100}}),
            ),
            active(
                2,
                json!({"type": "reset_peer", "attributes": {"timeout": 300}}),
            ),
        ]);
        let mut d = Decisions::default();
        let t0 = Instant::now();
        let first = Effects::of(&f, Stream::Downstream, &mut d, t0, || 0.0, 1);
        let later = Effects::of(
            &f,
            Stream::Downstream,
            &mut d,
            t0 + Duration::from_secs(5),
            || 0.0,
            1,
        );
        assert_eq!(first.close_at, Some(t0 + Duration::from_millis(100)));
        assert_eq!(later.close_at, first.close_at);
        assert_eq!(later.reset_at, Some(t0 + Duration::from_millis(300)));
    }

    #[test]
    fn toxics_combine() {
        let f = faults(vec![
            active(
                1,
                json!({"type": "latency", "attributes": {"latency": 10, "jitter": 2}}),
            ),
            active(
                2,
                json!({"type": "latency", "name": "more", "attributes": {"latency": 5}}),
            ),
            active(3, json!({"type": "bandwidth", "attributes": {"rate": 100}})),
            active(
                4,
                json!({"type": "bandwidth", "name": "b2", "attributes": {"rate": 10}}),
            ),
            active(
                5,
                json!({"type": "limit_data", "attributes": {"bytes": 50}}),
            ),
            active(
                6,
                json!({"type": "http_error", "attributes": {"status": 500}}),
            ),
        ]);
        let e = Effects::of(
            &f,
            Stream::Downstream,
            &mut Decisions::default(),
            Instant::now(),
            || 0.0,
            1,
        );
        assert_eq!(e.latency, Duration::from_millis(15));
        assert_eq!(e.jitter, Duration::from_millis(2));
        assert_eq!(e.rate, Some(10_000));
        assert_eq!(e.limit, Some(50));
        assert!(!e.hold, "HTTP toxics do not act on bytes");
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let l = Duration::from_millis(100);
        let j = Duration::from_millis(20);
        assert_eq!(jittered(l, j, 0.0), Duration::from_millis(80));
        assert_eq!(jittered(l, j, 0.5), l);
        assert!(jittered(l, j, 0.999_999) <= Duration::from_millis(120));
        assert_eq!(jittered(Duration::from_millis(5), j, 0.0), Duration::ZERO);
    }

    #[test]
    fn slices_sum_to_the_chunk_and_respect_the_variation() {
        let mut state = 0.0_f64;
        let sizes = slices(1000, 10, 3, || {
            state = (state + 0.37) % 1.0;
            state
        });
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        assert!(
            sizes[..sizes.len() - 1]
                .iter()
                .all(|s| (7..=13).contains(s))
        );
        assert_eq!(slices(5, 10, 0, || 0.5), [5]);
        assert_eq!(slices(0, 10, 0, || 0.5), Vec::<usize>::new());
    }

    #[test]
    fn transmission_time_follows_the_rate() {
        assert_eq!(
            transmission_time(10_000, 100_000),
            Duration::from_millis(100)
        );
    }
}
