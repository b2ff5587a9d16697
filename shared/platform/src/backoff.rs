//! Capped exponential backoff, as a pure function of the attempt number.
//!
//! The outbox keeps a row's attempt count in the database and computes its next attempt time from it, so the
//! schedule must be a function of `attempts` alone (a retry crate's stateful iterator does not fit); the
//! consumer uses the same schedule for retrying a batch, and the config follower (`distlab-config-client`)
//! for moving to the next config node. `distlab_messaging::backoff` re-exports this module.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// Delay after the `attempts`-th consecutive failure (1-based): `base · 2^(attempts-1)`, capped at `max`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_and_stops_at_max() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..8).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }
}
