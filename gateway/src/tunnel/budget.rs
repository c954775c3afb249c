//! The control-message budget of one tunnel: a token bucket over the messages a provider sends
//! on its control stream (Register, Unregister, Ping, ...). Each Register of a new name rewrites
//! and fsyncs `names.json` and publishes an event, so a provider looping on Register/Unregister
//! would make the gateway write to disk as fast as it can read; past the budget the tunnel is
//! closed with a GoAway that says why.
//!
//! Pure: the clock is passed in. The burst is above what an honest provider sends at once (it
//! re-registers at most `max_names_per_provider`, 64 by default, right after connecting).

use std::time::{Duration, Instant};

/// Messages a second a provider may send on its control stream, sustained.
pub(crate) const CONTROL_PER_SEC: u32 = 20;
/// Messages it may send at once (a fresh connection re-registering its names).
pub(crate) const CONTROL_BURST: u32 = 200;

/// The budget's verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    /// Over budget: `count` messages since the tunnel started, `over` its age.
    Exceeded {
        count: u64,
        over: Duration,
    },
}

/// A token bucket of control messages.
#[derive(Debug, Clone)]
pub(crate) struct ControlBudget {
    per_sec: u32,
    burst: u32,
    /// Tokens, in millionths of a message (integer arithmetic, no drift).
    micro_tokens: u64,
    last: Instant,
    started: Instant,
    count: u64,
}

impl ControlBudget {
    /// A full bucket at `now`.
    pub(crate) fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_sec,
            burst,
            micro_tokens: u64::from(burst) * 1_000_000,
            last: now,
            started: now,
            count: 0,
        }
    }

    /// The gateway's budget: [`CONTROL_PER_SEC`] with a burst of [`CONTROL_BURST`].
    pub(crate) fn standard(now: Instant) -> Self {
        Self::new(CONTROL_PER_SEC, CONTROL_BURST, now)
    }

    /// Counts one message received at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> Verdict {
        self.count += 1;
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let refill = elapsed.as_micros().saturating_mul(u128::from(self.per_sec));
        let cap = u64::from(self.burst) * 1_000_000;
        self.micro_tokens = u64::try_from(u128::from(self.micro_tokens) + refill)
            .unwrap_or(u64::MAX)
            .min(cap);
        if self.micro_tokens >= 1_000_000 {
            self.micro_tokens -= 1_000_000;
            Verdict::Ok
        } else {
            Verdict::Exceeded {
                count: self.count,
                over: now.saturating_duration_since(self.started),
            }
        }
    }

    /// The GoAway text for an exceeded budget.
    pub(crate) fn message(&self, count: u64, over: Duration) -> String {
        format!(
            "too many control messages: {count} in {over:.1?}; at most {}/s (bursts of {})",
            self.per_sec, self.burst
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` messages evenly over `span` and returns the first exceeded verdict's index.
    fn first_refusal(
        budget: &mut ControlBudget,
        start: Instant,
        n: u32,
        span: Duration,
    ) -> Option<u32> {
        (0..n).find(|&i| {
            let at = start + span.mul_f64(f64::from(i) / f64::from(n.max(1)));
            budget.take(at) != Verdict::Ok
        })
    }

    #[test]
    fn table() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // (what, messages, over, expected first refusal)
        let cases: &[(&str, u32, Duration, Option<u32>)] = &[
            (
                "a reconnect re-registering 64 names at once",
                64,
                Duration::ZERO,
                None,
            ),
            ("the whole burst at once", 200, Duration::ZERO, None),
            ("one past the burst at once", 201, Duration::ZERO, Some(200)),
            ("sustained at the rate for a minute", 20 * 60, 60 * s, None),
            ("a ping a second for an hour", 3600, 3600 * s, None),
            ("a tight loop: 10 000 in 1 s", 10_000, s, Some(200)),
        ];
        for &(what, n, span, want) in cases {
            let mut budget = ControlBudget::standard(t0);
            let got = first_refusal(&mut budget, t0, n, span);
            match (want, got) {
                (None, None) => {}
                (Some(w), Some(g)) => {
                    assert!(g.abs_diff(w) <= 2, "{what}: refused at {g}, want ~{w}")
                }
                _ => panic!("{what}: refused at {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_caps_at_the_burst() {
        let t0 = Instant::now();
        let mut budget = ControlBudget::new(20, 200, t0);
        for _ in 0..200 {
            assert_eq!(budget.take(t0), Verdict::Ok);
        }
        assert!(matches!(
            budget.take(t0),
            Verdict::Exceeded { count: 201, .. }
        ));
        // 100 ms gives 2 messages back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(budget.take(t1), Verdict::Ok);
        assert_eq!(budget.take(t1), Verdict::Ok);
        assert_ne!(budget.take(t1), Verdict::Ok);
        // An idle hour refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..200 {
            assert_eq!(budget.take(t2), Verdict::Ok);
        }
        assert_ne!(budget.take(t2), Verdict::Ok);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut budget = ControlBudget::new(1, 1, t0);
        assert_eq!(budget.take(t0), Verdict::Ok);
        assert_ne!(budget.take(t0 - Duration::from_secs(5)), Verdict::Ok);
        assert_ne!(
            budget.take(t0),
            Verdict::Ok,
            "no refill for the time it went back"
        );
    }

    #[test]
    fn the_message_says_the_count_the_time_and_the_limit() {
        let t0 = Instant::now();
        let budget = ControlBudget::standard(t0);
        let text = budget.message(401, Duration::from_millis(1500));
        assert_eq!(
            text,
            "too many control messages: 401 in 1.5s; at most 20/s (bursts of 200)"
        );
    }
}
