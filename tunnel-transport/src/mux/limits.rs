//! How many streams a TCP tunnel carries and how much it may buffer: [`MuxLimits`], and the
//! yamux configuration derived from it.
//!
//! yamux counts the streams of both directions together, closes the whole connection when a
//! peer opens one past its `max_num_streams`, and refuses (rather than waits) a local open past
//! it. So the counts handed to yamux sit above ours by [`STREAM_SLACK`]: our own limits (a
//! semaphore for our opens, a reset for the peer's extra ones) act first, and a stream dropped a
//! moment ago but not yet swept out of yamux's table never breaks the connection.

use yamux::DEFAULT_CREDIT;

/// The most streams each way a connection may allow: larger values are lowered to it (and
/// keep every count below yamux's, the semaphore's and the channel's own maxima).
pub const MAX_STREAMS_EACH_WAY: usize = 1 << 16;

/// Streams yamux may count beyond `max_outbound + max_inbound`: dropped streams not yet swept
/// and peer streams about to be reset.
pub(crate) const STREAM_SLACK: usize = 64;

/// Stream and window limits of one TCP tunnel side.
///
/// One side's `max_outbound` should not exceed the other's `max_inbound`: the streams past it
/// are reset, not queued. The gateway opens the data streams and the provider only the control
/// stream, so a fitting pair is `max_outbound: 512, max_inbound: 4` on the gateway (its QUIC
/// config also lets providers open 4) and the mirror image on the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxLimits {
    /// Streams this side opened that may be open at once; `open_bi` waits past it, as QUIC's
    /// stream limit does.
    pub max_outbound: usize,
    /// Streams the peer opened that may be open at once (queued for `accept_bi` or accepted);
    /// more are reset as they arrive.
    pub max_inbound: usize,
    /// Bytes the receive windows of all streams together may grow beyond yamux's 256 KiB
    /// per stream (yamux auto-tunes a busy stream's window toward its bandwidth-delay product).
    /// At most `(streams × 256 KiB) + window_growth` is ever buffered unread.
    pub window_growth: usize,
}

impl Default for MuxLimits {
    /// 512 streams each way (the plan's figure) and 32 MiB of window growth.
    fn default() -> Self {
        Self {
            max_outbound: 512,
            max_inbound: 512,
            window_growth: 32 * 1024 * 1024,
        }
    }
}

impl MuxLimits {
    /// These limits with the stream counts lowered to [`MAX_STREAMS_EACH_WAY`] and the inbound
    /// count raised to 1 (a tunnel must carry its control stream).
    pub(crate) fn clamped(self) -> Self {
        Self {
            max_outbound: self.max_outbound.min(MAX_STREAMS_EACH_WAY),
            max_inbound: self.max_inbound.clamp(1, MAX_STREAMS_EACH_WAY),
            window_growth: self.window_growth,
        }
    }

    /// The yamux stream count: ours, the peer's and the slack.
    pub(crate) fn yamux_streams(&self) -> usize {
        self.max_outbound
            .saturating_add(self.max_inbound)
            .saturating_add(STREAM_SLACK)
    }

    /// The yamux connection receive window: 256 KiB per stream (the minimum yamux accepts)
    /// plus the growth allowance.
    pub(crate) fn yamux_window(&self) -> usize {
        self.yamux_streams()
            .saturating_mul(DEFAULT_CREDIT as usize)
            .saturating_add(self.window_growth)
    }

    /// The yamux configuration of [`clamped`](Self::clamped) limits. Never panics: the window
    /// is set after the stream count, from a value that satisfies yamux's `window >= 256 KiB ×
    /// streams` assertion.
    pub(crate) fn yamux_config(&self) -> yamux::Config {
        let mut config = yamux::Config::default();
        config
            .set_max_connection_receive_window(None)
            .set_max_num_streams(self.yamux_streams())
            .set_max_connection_receive_window(Some(self.yamux_window()));
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yamux_counts_sit_above_ours() {
        // (max_outbound, max_inbound, window_growth) → (yamux streams, yamux window)
        let cases = [
            (
                (512, 512, 32 << 20),
                (1088, 1088 * (256 << 10) + (32 << 20)),
            ),
            ((512, 4, 0), (580, 580 * (256 << 10))),
            ((0, 1, 0), (65, 65 * (256 << 10))),
        ];
        for ((max_outbound, max_inbound, window_growth), expected) in cases {
            let limits = MuxLimits {
                max_outbound,
                max_inbound,
                window_growth,
            };
            assert_eq!((limits.yamux_streams(), limits.yamux_window()), expected);
        }
    }

    #[test]
    fn config_never_trips_yamux_assertions() {
        for streams in [0, 1, 100, 511, 512, 513, 4096, usize::MAX] {
            let limits = MuxLimits {
                max_outbound: streams,
                max_inbound: streams / 2,
                window_growth: streams,
            }
            .clamped();
            assert!(limits.max_outbound <= MAX_STREAMS_EACH_WAY);
            assert!((1..=MAX_STREAMS_EACH_WAY).contains(&limits.max_inbound));
            let _ = limits.yamux_config();
        }
    }
}
