//! When to renew and when to retry: pure functions of times, table-tested.
//!
//! - Renewal when two thirds of the lifetime have passed, or earlier inside the server's ARI
//!   window (RFC 9773) when it offers one — never later than the two-thirds point.
//! - After a failed order: `initial × 2^(failures-1)`, capped at one hour.
//! - New per-name certificates: at most `max` orders started in any hour.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

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

/// A sliding one-hour window of order starts.
#[derive(Debug)]
pub(crate) struct HourlyCap {
    max: u32,
    starts: VecDeque<Instant>,
}

impl HourlyCap {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max,
            starts: VecDeque::new(),
        }
    }

    /// Records a start at `now` if the cap allows; otherwise says when a slot frees.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        let hour = Duration::from_secs(3600);
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= hour)
        {
            self.starts.pop_front();
        }
        if self.starts.len() < self.max as usize {
            self.starts.push_back(now);
            return Ok(());
        }
        Err(self.starts.front().map_or(now + hour, |t| *t + hour))
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

    #[tokio::test]
    async fn hourly_cap_slides() {
        let now = Instant::now();
        let mut cap = HourlyCap::new(2);
        assert!(cap.try_take(now).is_ok());
        assert!(cap.try_take(now + Duration::from_secs(10)).is_ok());
        let free = cap
            .try_take(now + Duration::from_secs(20))
            .expect_err("third in the hour refused");
        assert_eq!(free, now + Duration::from_secs(3600));
        assert!(cap.try_take(now + Duration::from_secs(3600)).is_ok());
        assert!(HourlyCap::new(0).try_take(now).is_err());
    }
}
