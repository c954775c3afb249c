//! Reconnect delays: exponential from 250 ms, capped at 30 s, with jitter (each delay drawn
//! from [d/2, d]) so a gateway restart is not met by every provider at the same instant.
//! Reset after a connection stayed healthy for a while.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// Upper bound of the next delay, without jitter.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay (jittered) and advances.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let low = ceiling / 2;
        let span = ceiling.saturating_sub(low);
        low + span.mul_f64(rand::thread_rng().r#gen::<f64>())
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling());
            let d = b.next_delay();
            let c = *ceilings.last().expect("pushed");
            assert!(d >= c / 2 && d <= c, "{d:?} within [{:?}, {c:?}]", c / 2);
        }
        assert_eq!(ceilings[0], Duration::from_millis(250));
        assert_eq!(ceilings[1], Duration::from_millis(500));
        assert_eq!(ceilings[3], Duration::from_secs(2));
        assert_eq!(*ceilings.last().expect("some"), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::default();
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
