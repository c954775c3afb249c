//! Latency samples (nanoseconds) and nearest-rank percentiles, plus the small formatting
//! helpers every report line uses.

use std::time::Duration;

/// Latency samples of one phase on one target.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(n),
            sorted: true,
        }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    pub(crate) fn merge(&mut self, other: Latencies) {
        self.nanos.extend(other.nanos);
        self.sorted = false;
    }

    /// Sorts once; percentiles need it.
    pub(crate) fn finish(mut self) -> Self {
        self.nanos.sort_unstable();
        self.sorted = true;
        self
    }

    /// Nearest-rank percentile `p` (0–100]; zero when there are no samples.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        debug_assert!(self.sorted, "call finish() before percentile()");
        if self.nanos.is_empty() {
            return Duration::ZERO;
        }
        let n = self.nanos.len();
        // Nearest rank: the smallest sample with at least p % of samples at or below it.
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        Duration::from_nanos(self.nanos[index])
    }

    pub(crate) fn max(&self) -> Duration {
        debug_assert!(self.sorted, "call finish() before max()");
        Duration::from_nanos(self.nanos.last().copied().unwrap_or(0))
    }
}

/// `1.234 ms`
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `12.3 MiB`
pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `through / direct` as `0.42×`, or `n/a` when direct is zero.
pub(crate) fn ratio(through: f64, direct: f64) -> String {
    if direct > 0.0 {
        format!("{:.2}×", through / direct)
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::with_capacity(100);
        for i in 1..=100u64 {
            l.record(Duration::from_micros(i));
        }
        let l = l.finish();
        let cases = [(50.0, 50), (99.0, 99), (100.0, 100), (0.1, 1), (99.9, 100)];
        for (p, want) in cases {
            assert_eq!(l.percentile(p), Duration::from_micros(want), "p{p}");
        }
        assert_eq!(l.max(), Duration::from_micros(100));
    }

    #[test]
    fn empty_is_zero() {
        let l = Latencies::default().finish();
        assert_eq!(l.percentile(99.0), Duration::ZERO);
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }
}
