//! Load shedding that protects checkout (seed section 四: "some customers are directed to a degraded page").
//!
//! Two adaptive concurrency limits from the `congestion-limiter` crate (a Rust take on Netflix's
//! concurrency-limits):
//!
//! - **browse** (the catalog and product pages, full version): a [`Vegas`] limit, which grows while
//!   latency stays near its best and shrinks when it rises (queueing) or a dependency times out. A browse
//!   request over the limit does not wait: it gets the degraded page at once, from memory.
//! - **checkout**: a limit of its own ([`Aimd`]), which browsing never touches — the capacity reserved for
//!   orders. A checkout over it waits at most [`CHECKOUT_WAIT`] for a slot, then gets "high demand, try
//!   again" (503 with `Retry-After`).
//!
//! The crate's own partitioned limiter was not used: its partitions borrow each other's spare slots down to
//! a 10 % buffer, so a flood of browsing could still take nearly all of checkout's share.

use std::sync::Arc;
use std::time::Duration;

use congestion_limiter::limiter::{DefaultLimiter, Limiter, Outcome, Token};
use congestion_limiter::limits::{Aimd, Vegas};

/// How long a checkout waits for a slot before "try again".
pub const CHECKOUT_WAIT: Duration = Duration::from_millis(500);

/// A page that took longer than this counts as an overload signal for the browse limit.
pub const SLOW_PAGE: Duration = Duration::from_millis(300);

/// What a request is, for shedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Browse,
    Checkout,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Checkout => "checkout",
        }
    }
}

/// The two limits.
#[derive(Debug, Clone)]
pub struct Shedder {
    browse: Arc<DefaultLimiter<Vegas>>,
    checkout: Arc<DefaultLimiter<Aimd>>,
}

/// A slot under a limit; give it back with [`Slot::done`] (dropping it frees the slot without a sample).
#[derive(Debug)]
pub struct Slot {
    class: Class,
    token: Token,
    shedder: Shedder,
}

impl Default for Shedder {
    fn default() -> Self {
        Self::new(16, 256, 32, 128)
    }
}

impl Shedder {
    /// Browse starts at `browse_initial` concurrent full pages and may grow to `browse_max`; checkout at
    /// `checkout_initial`, up to `checkout_max`.
    pub fn new(
        browse_initial: usize,
        browse_max: usize,
        checkout_initial: usize,
        checkout_max: usize,
    ) -> Self {
        // Exported from the start (a series appears only once touched), for the dashboards.
        for class in [Class::Browse, Class::Checkout] {
            metrics::counter!("gateway_shed_total", "class" => class.as_str()).increment(0);
        }
        Self {
            browse: Arc::new(DefaultLimiter::new(Vegas::new(
                browse_initial,
                2..=browse_max,
            ))),
            checkout: Arc::new(DefaultLimiter::new(
                Aimd::new(checkout_initial, 4..=checkout_max).decrease_factor(0.8),
            )),
        }
    }

    /// A slot for a full page now, or `None` (serve the degraded page).
    pub async fn browse(&self) -> Option<Slot> {
        let token = self.browse.try_acquire().await;
        self.slot(Class::Browse, token)
    }

    /// A slot for a checkout within [`CHECKOUT_WAIT`], or `None`.
    pub async fn checkout(&self) -> Option<Slot> {
        let token = self.checkout.acquire_timeout(CHECKOUT_WAIT).await;
        self.slot(Class::Checkout, token)
    }

    fn slot(&self, class: Class, token: Option<Token>) -> Option<Slot> {
        match token {
            Some(token) => Some(Slot {
                class,
                token,
                shedder: self.clone(),
            }),
            None => {
                metrics::counter!("gateway_shed_total", "class" => class.as_str()).increment(1);
                None
            }
        }
    }

    /// The current limits and what is in flight: `/readyz` detail and gauges.
    pub fn detail(&self) -> serde_json::Value {
        let browse = self.browse.state();
        let checkout = self.checkout.state();
        serde_json::json!({
            "browse": {"limit": browse.limit(), "in_flight": browse.in_flight()},
            "checkout": {"limit": checkout.limit(), "in_flight": checkout.in_flight()},
        })
    }
}

impl Slot {
    /// Gives the slot back without a sample (the work did not reach the dependencies).
    pub fn forget(self) {
        drop(self.token);
    }

    /// Gives the slot back; `overloaded` when the work was too slow or a dependency timed out.
    pub async fn done(self, overloaded: bool) {
        let outcome = if overloaded {
            Outcome::Overload
        } else {
            Outcome::Success
        };
        let limit = match self.class {
            Class::Browse => self.shedder.browse.release(self.token, Some(outcome)).await,
            Class::Checkout => {
                self.shedder
                    .checkout
                    .release(self.token, Some(outcome))
                    .await
            }
        };
        metrics::gauge!("gateway_concurrency_limit", "class" => self.class.as_str())
            .set(limit as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn browsing_over_its_limit_is_refused_at_once_and_never_takes_checkout_slots() {
        let shedder = Shedder::new(2, 2, 4, 4);
        let a = shedder.browse().await.expect("first");
        let b = shedder.browse().await.expect("second");
        let started = std::time::Instant::now();
        assert!(shedder.browse().await.is_none(), "the third is shed");
        assert!(started.elapsed() < Duration::from_millis(50), "at once");
        let mut checkouts = Vec::new();
        for _ in 0..4 {
            checkouts.push(
                shedder
                    .checkout()
                    .await
                    .expect("checkout has its own slots"),
            );
        }
        a.done(false).await;
        assert!(shedder.browse().await.is_some(), "a freed slot is reused");
        drop((b, checkouts));
    }

    #[tokio::test]
    async fn overload_shrinks_the_browse_limit() {
        let shedder = Shedder::new(20, 64, 4, 4);
        for _ in 0..5 {
            let slot = shedder.browse().await.expect("a slot");
            // Work that takes time: the limit ignores samples of under a microsecond.
            tokio::time::sleep(Duration::from_millis(2)).await;
            slot.done(true).await;
        }
        let limit = shedder.detail()["browse"]["limit"]
            .as_u64()
            .expect("a limit");
        assert!(limit < 20, "limit after overload: {limit}");
    }
}
