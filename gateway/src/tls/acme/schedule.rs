//! When to renew and when to retry: pure functions of times, table-tested.
//!
//! - Renewal when two thirds of the lifetime have passed, or earlier inside the server's ARI
//!   window (RFC 9773) when it offers one — never later than the two-thirds point.
//! - After a failed order: `initial × 2^(failures-1)`, capped at one hour.
//! - New per-name certificates: [`HourlyCap`], governor's GCRA — a burst of `max` orders,
//!   then `max` per hour (one every `60/max` minutes).

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Longest wait between two attempts after failures.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The two-thirds point of `[not_before, not_after]`.
pub(crate) fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + life * 2 / 3
}

/// A point in the ARI window `[start, end]` chosen by `frac` ∈ [0, 1), but not after
/// `latest` (the two-thirds point).
pub(crate) fn ari_pick(
    start: SystemTime,
    end: SystemTime,
    frac: f64,
    latest: SystemTime,
) -> SystemTime {
    let width = end.duration_since(start).unwrap_or(Duration::ZERO);
    let pick = start + width.mul_f64(frac.clamp(0.0, 1.0));
    pick.min(latest)
}

/// Wait before the next attempt after `failures` consecutive failures (≥ 1).
pub(crate) fn backoff(initial: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    initial
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF.max(initial))
}

/// How often new per-name certificates may be ordered: up to `max` at once, then `max` per
/// hour. Keeps a burst of new names from running into the ACME server's rate limits.
#[derive(Debug)]
pub(crate) struct HourlyCap<C: Clock = DefaultClock> {
    /// `None` when `max` is 0: no new orders at all.
    limiter: Option<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
    clock: C,
}

impl HourlyCap {
    pub(crate) fn new(max: u32) -> Self {
        Self::with_clock(max, DefaultClock::default())
    }
}

impl<C: Clock + Clone> HourlyCap<C> {
    pub(crate) fn with_clock(max: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(max)
            .map(|n| RateLimiter::direct_with_clock(Quota::per_hour(n), clock.clone()));
        Self { limiter, clock }
    }

    /// Takes a slot for one order now; otherwise says how long until one frees.
    pub(crate) fn try_take(&self) -> Result<(), Duration> {
        match &self.limiter {
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
            None => Err(MAX_BACKOFF),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn two_thirds_of_the_lifetime() {
        for (nb, na, want) in [
            (0, 90 * 86_400, 60 * 86_400),
            (1000, 1030, 1020),
            (1000, 1000, 1000),
            (2000, 1000, 2000), // inverted validity: renew at once
        ] {
            assert_eq!(renew_at(t(nb), t(na)), t(want), "{nb}..{na}");
        }
    }

    #[test]
    fn ari_window_never_later_than_two_thirds() {
        let latest = t(600);
        for (start, end, frac, want) in [
            (100, 200, 0.0, 100),
            (100, 200, 0.5, 150),
            (100, 200, 2.0, 200),
            (500, 900, 0.5, 600), // window after two thirds: two thirds wins
            (100, 50, 0.5, 100),  // empty window
        ] {
            assert_eq!(ari_pick(t(start), t(end), frac, latest), t(want));
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs;
        for (failures, want) in [
            (1, 60),
            (2, 120),
            (3, 240),
            (6, 1920),
            (7, 3600),
            (99, 3600),
        ] {
            assert_eq!(backoff(s(60), failures), s(want), "{failures}");
        }
        assert_eq!(
            backoff(Duration::from_millis(200), 3),
            Duration::from_millis(800)
        );
        assert_eq!(backoff(s(7200), 5), s(7200), "initial above the cap stays");
    }

    #[test]
    fn hourly_cap_allows_a_burst_then_refills_at_the_hourly_rate() {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let cap = HourlyCap::with_clock(2, clock.clone());
        assert_eq!(cap.try_take(), Ok(()));
        assert_eq!(cap.try_take(), Ok(()), "a burst of max orders");
        let mins = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(
            cap.try_take(),
            Err(mins(30)),
            "2 per hour: one every 30 min"
        );
        clock.advance(mins(10));
        assert_eq!(cap.try_take(), Err(mins(20)), "the wait shrinks with time");
        clock.advance(mins(20));
        assert_eq!(cap.try_take(), Ok(()), "one slot refilled");
        assert_eq!(cap.try_take(), Err(mins(30)));
        clock.advance(mins(180));
        assert_eq!(cap.try_take(), Ok(()));
        assert_eq!(cap.try_take(), Ok(()), "idle time refills the burst");
        assert_eq!(cap.try_take(), Err(mins(30)), "but never beyond it");
        let none = HourlyCap::with_clock(0, clock);
        assert_eq!(none.try_take(), Err(MAX_BACKOFF), "0 orders nothing");
    }
}
