//! Retry delays, shared by the tunnel client (reconnects) and the relay keeper (re-reserving):
//! exponential with jitter, so a gateway restart is not met by every provider at the same
//! instant, for as many attempts as it takes, and reset after a success that lasted.
//!
//! The arithmetic is backon's `ExponentialBuilder`: with jitter it draws each delay from
//! `[d, 2d)` while `d` doubles from its minimum to its maximum, so [`Backoff::new`] passes half
//! of the ceilings it promises.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Exponential backoff with jitter and no attempt limit.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// The first delay lies in `[first/2, first)`, each next one in a range twice as high,
    /// up to `[max/2, max)`.
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        let policy = ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(first / 2)
            .with_max_delay(max / 2)
            .without_max_times();
        Self {
            policy,
            delays: policy.build(),
            max,
        }
    }

    /// Tunnel reconnects: from 250 ms up to 30 s.
    pub(crate) fn reconnect() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }

    /// The relay keeper: from 500 ms up to 60 s.
    pub(crate) fn relay() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(60))
    }

    /// The next delay (jittered), and advances.
    pub(crate) fn next_delay(&mut self) -> Duration {
        // Without an attempt limit the sequence never ends; the cap is a safe answer anyway.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// Back to the first delay.
    pub(crate) fn reset(&mut self) {
        self.delays = self.policy.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_within_its_jitter_range_then_caps() {
        let mut b = Backoff::reconnect();
        // Ceilings: 250 ms, 500 ms, 1 s, 2 s, … 16 s, then 30 s for ever.
        let mut ceiling = ms(250);
        for attempt in 0..40 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "attempt {attempt}: {d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(Duration::from_secs(30));
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= ms(125) && d <= ms(250), "after reset: {d:?}");
    }

    #[test]
    fn delays_are_jittered() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(Backoff::relay().next_delay());
        }
        assert!(seen.len() > 1, "20 first delays all equal: {seen:?}");
        assert!(
            seen.iter().all(|d| *d >= ms(250) && *d <= ms(500)),
            "{seen:?}"
        );
    }

    #[test]
    fn many_attempts_stay_capped() {
        let mut b = Backoff::relay();
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }
}
