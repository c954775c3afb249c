//! HTTP/2 control-frame flood guard (checklist B6): h2 0.4 limits resets, CONTINUATION and
//! empty DATA frames, but answers every PING and SETTINGS and ignores PRIORITY with no count
//! limit, so a visitor that reads its answers costs CPU in proportion to its bandwidth for
//! ever; and every unsolicited PING ACK is a `warn!` line (a disk-fill amplifier).
//!
//! [`FrameMeter`] (sans-IO, the clock passed in) follows a visitor connection's bytes: the
//! 24-byte client preface switches it to frame mode (anything else passes through at no
//! cost: HTTP/1), then it walks 9-byte frame headers across any split and skips payloads
//! without buffering them. PING (ACKs too), SETTINGS without ACK and PRIORITY frames draw on
//! a token bucket ([`CONTROL_FRAMES_PER_SEC`], burst [`CONTROL_FRAME_BURST`]); an empty bucket
//! trips it. [`Guarded`] applies it to a connection: on a trip it writes a GOAWAY
//! (ENHANCE_YOUR_CALM) when the outgoing side is at a frame boundary, and fails the read, so
//! hyper ends the connection before it parses the flood.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The refill rate of the control-frame bucket: a browser sends a handful per connection.
pub(crate) const CONTROL_FRAMES_PER_SEC: f64 = 100.0;
/// The bucket's size.
pub(crate) const CONTROL_FRAME_BURST: f64 = 1000.0;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
/// GOAWAY's error code ENHANCE_YOUR_CALM.
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Which frame kind emptied the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flood {
    Ping,
    Settings,
    Priority,
}

impl Flood {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Flood::Ping => "ping",
            Flood::Settings => "settings",
            Flood::Priority => "priority",
        }
    }
}

/// Walks frames: accumulates a 9-byte header across splits, then skips its payload.
#[derive(Debug, Default)]
struct Walker {
    head: [u8; 9],
    have: usize,
    /// Payload bytes still to skip.
    skip: u64,
    /// The highest client stream id seen (for GOAWAY's last-stream-id).
    last_stream: u32,
}

impl Walker {
    /// Feeds `bytes`; calls `frame(type, flags)` for every complete header.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8) -> bool) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = self.head;
            self.skip = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if stream % 2 == 1 {
                self.last_stream = self.last_stream.max(stream);
            }
            if !frame(h[3], h[4]) {
                return false;
            }
        }
        true
    }

    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0
    }
}

#[derive(Debug)]
enum Mode {
    /// The first bytes: the HTTP/2 preface or not.
    Sniff {
        seen: usize,
    },
    Frames,
    Passthrough,
}

/// Counts a visitor connection's HTTP/2 control frames against a token bucket.
#[derive(Debug)]
pub(crate) struct FrameMeter {
    mode: Mode,
    walker: Walker,
    tokens: f64,
    refilled: Option<Instant>,
    rate: f64,
    burst: f64,
}

impl Default for FrameMeter {
    fn default() -> Self {
        Self::new(CONTROL_FRAMES_PER_SEC, CONTROL_FRAME_BURST)
    }
}

impl FrameMeter {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self {
            mode: Mode::Sniff { seen: 0 },
            walker: Walker::default(),
            tokens: burst,
            refilled: None,
            rate,
            burst,
        }
    }

    /// The client's bytes, read at `now`: `Some` when a control-frame flood emptied the
    /// bucket.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Option<Flood> {
        if let Mode::Sniff { seen } = self.mode {
            let n = (PREFACE.len() - seen).min(bytes.len());
            if bytes[..n] != PREFACE[seen..seen + n] {
                self.mode = Mode::Passthrough;
                return None;
            }
            bytes = &bytes[n..];
            self.mode = if seen + n == PREFACE.len() {
                Mode::Frames
            } else {
                Mode::Sniff { seen: seen + n }
            };
        }
        if !matches!(self.mode, Mode::Frames) {
            return None;
        }
        self.refill(now);
        let mut flood = None;
        let tokens = &mut self.tokens;
        self.walker.feed(bytes, |kind, flags| {
            let counted = match kind {
                PING => Some(Flood::Ping),
                SETTINGS if flags & ACK == 0 => Some(Flood::Settings),
                PRIORITY => Some(Flood::Priority),
                _ => None,
            };
            let Some(kind) = counted else {
                return true;
            };
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                return true;
            }
            flood = Some(kind);
            false
        });
        flood
    }

    /// Whether the connection speaks HTTP/2 (the preface was seen).
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self.mode, Mode::Frames)
    }

    /// The highest stream id the client opened.
    pub(crate) fn last_stream(&self) -> u32 {
        self.walker.last_stream
    }

    fn refill(&mut self, now: Instant) {
        if let Some(then) = self.refilled {
            let earned = now.saturating_duration_since(then).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.refilled = Some(now);
    }
}

/// A GOAWAY frame with `last_stream` and ENHANCE_YOUR_CALM, and a short debug text.
pub(crate) fn goaway(last_stream: u32) -> Vec<u8> {
    let text = b"control frame flood";
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend(ENHANCE_YOUR_CALM.to_be_bytes());
    payload.extend(text);
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], 0x7, 0, 0, 0, 0, 0];
    frame.extend(payload);
    frame
}

/// A visitor connection with a [`FrameMeter`] on what it reads. `on_flood` is called once,
/// on the trip.
pub(crate) struct Guarded<IO> {
    inner: IO,
    meter: FrameMeter,
    /// Follows the bytes hyper writes, to know when a GOAWAY may go in between.
    out: Walker,
    tripped: bool,
    on_flood: Option<Box<dyn FnOnce(Flood) + Send>>,
}

impl<IO> Guarded<IO> {
    pub(crate) fn new(inner: IO, on_flood: impl FnOnce(Flood) + Send + 'static) -> Self {
        Self {
            inner,
            meter: FrameMeter::default(),
            out: Walker::default(),
            tripped: false,
            on_flood: Some(Box::new(on_flood)),
        }
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "HTTP/2 control frame flood: connection closed",
    )
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.tripped {
            return Poll::Ready(Err(aborted()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let Some(flood) = this.meter.feed(&buf.filled()[before..], Instant::now()) else {
            return Poll::Ready(Ok(()));
        };
        this.tripped = true;
        if let Some(on_flood) = this.on_flood.take() {
            on_flood(flood);
        }
        // Best effort: the GOAWAY goes out only between two of hyper's frames, and only if
        // the stream takes it at once; the connection closes either way.
        if this.meter.is_h2() && this.out.at_boundary() {
            let frame = goaway(this.meter.last_stream());
            if let Poll::Ready(Ok(n)) = Pin::new(&mut this.inner).poll_write(cx, &frame)
                && n == frame.len()
            {
                let _ = Pin::new(&mut this.inner).poll_flush(cx);
            }
        }
        Poll::Ready(Err(aborted()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.tripped {
            return Poll::Ready(Err(aborted()));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &written
            && this.meter.is_h2()
        {
            this.out.feed(&data[..*n], |_, _| true);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "h2guard_tests.rs"]
mod tests;
