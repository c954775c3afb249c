//! Median, min and max of a series of durations.

use std::time::Duration;

/// A series summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    /// The middle value; the mean of the two middle values for an even count.
    pub(crate) median: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Summary {
    /// `None` for an empty series.
    pub(crate) fn of(values: &[Duration]) -> Option<Self> {
        let mut sorted = values.to_vec();
        sorted.sort();
        let n = sorted.len();
        let (min, max) = (*sorted.first()?, *sorted.last()?);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        };
        Some(Self {
            n,
            median,
            min,
            max,
        })
    }
}

/// `1.234 s` or `87.5 ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.3} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn summaries() {
        let cases: &[(&[u64], u64, u64, u64)] = &[
            (&[5], 5, 5, 5),
            (&[30, 10, 20], 20, 10, 30),
            (&[40, 10, 20, 30], 25, 10, 40),
        ];
        for &(values, median, min, max) in cases {
            let s = Summary::of(&ms(values)).expect("non-empty");
            assert_eq!(s.n, values.len());
            assert_eq!(s.median, Duration::from_millis(median), "{values:?}");
            assert_eq!(s.min, Duration::from_millis(min));
            assert_eq!(s.max, Duration::from_millis(max));
        }
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.234 s");
        assert_eq!(fmt_duration(Duration::from_millis(87)), "87 ms");
        assert_eq!(fmt_duration(Duration::from_micros(2500)), "2.5 ms");
    }
}
