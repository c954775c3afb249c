//! One bidirectional tunnel stream, over QUIC (a quinn send/receive pair) or over a TCP
//! tunnel's yamux session, as one tokio `AsyncRead + AsyncWrite`.
//!
//! The two transports end streams a little differently, and this type evens out what a
//! reader sees:
//! - yamux reads a reset, and a stream cut by the session's end, as a plain end of stream.
//!   Here an end of stream that came with no FIN from the peer is an error
//!   (`ConnectionReset`, or `ConnectionAborted` with the session's close reason), as on QUIC.
//!   Two blind spots of yamux 0.14 remain. After our own [`finish`](BiStream::finish) a
//!   reset looks like a FIN, so it reads as a clean end. And when the session ends, yamux
//!   forgets the FINs it received: a stream whose FIN arrived but was not read yet reads its
//!   data, then the error (never a clean end that did not happen: a truncated body is not
//!   taken for a whole one).
//! - A yamux stream waiting for data or window is not woken by a local close of the session;
//!   each TCP stream also watches the session's end.
//! - Dropping a stream without `finish`: QUIC finishes the send side (and stops the receive
//!   side); yamux resets the stream. Call `finish` for a clean end on both.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::mux::{MuxShared, OpenRequest};

/// The QUIC application error code of a reset (and a stop) sent by [`BiStream::reset`].
pub const RESET_CODE: u32 = 1;

/// A bidirectional stream of a tunnel connection.
#[derive(Debug)]
pub struct BiStream(Kind);

#[derive(Debug)]
enum Kind {
    Quic {
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    Mux(Box<MuxStream>),
}

/// A yamux stream and what ties it to its session.
struct MuxStream {
    io: Compat<yamux::Stream>,
    /// Resolves when the session ended.
    session_end: Pin<Box<WaitForCancellationFutureOwned>>,
    shared: Arc<MuxShared>,
    /// We finished our side (sent FIN).
    finished: bool,
    /// The stream counts against its direction's limit until dropped.
    _permit: OwnedSemaphorePermit,
    /// Keeps the session open while a stream lives, as a quinn stream keeps its connection.
    _session: mpsc::Sender<OpenRequest>,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxStream")
            .field("stream", self.io.get_ref())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl BiStream {
    pub(crate) fn quic((send, recv): (quinn::SendStream, quinn::RecvStream)) -> Self {
        Self(Kind::Quic { send, recv })
    }

    pub(crate) fn mux(
        stream: yamux::Stream,
        permit: OwnedSemaphorePermit,
        shared: Arc<MuxShared>,
        session: mpsc::Sender<OpenRequest>,
    ) -> Self {
        Self(Kind::Mux(Box::new(MuxStream {
            io: stream.compat(),
            session_end: Box::pin(shared.closed_token().cancelled_owned()),
            shared,
            finished: false,
            _permit: permit,
            _session: session,
        })))
    }

    /// Ends our side cleanly (QUIC FIN / yamux FIN); the peer reads to its end. Reading from
    /// the peer goes on.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.shutdown().await
    }

    /// Abandons the stream both ways: the peer's reads and writes fail. QUIC sends
    /// RESET_STREAM and STOP_SENDING with [`RESET_CODE`]; yamux sends RST (unless we already
    /// finished: yamux cannot reset after its FIN, and only drops the stream).
    pub fn reset(self) {
        match self.0 {
            Kind::Quic { mut send, mut recv } => {
                let _ = send.reset(RESET_CODE.into());
                let _ = recv.stop(RESET_CODE.into());
            }
            // yamux sends RST for a stream dropped while open.
            Kind::Mux(stream) => drop(stream),
        }
    }
}

impl MuxStream {
    /// The error of a stream that ended without a FIN from the peer.
    fn cut_error(&self) -> io::Error {
        if self.shared.is_closed() {
            io::Error::new(io::ErrorKind::ConnectionAborted, self.shared.closed_error())
        } else {
            io::Error::new(io::ErrorKind::ConnectionReset, "stream reset by the peer")
        }
    }

    /// Pending I/O turns into an error once the session ended (yamux does not wake streams
    /// on a local close).
    fn pending_or_ended<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.session_end.poll_unpin(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.cut_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// yamux's answer to a write-side call, with a failure of a cut stream and a wait past
    /// the session's end turned into errors that say so.
    fn settle<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(Err(_)) if self.was_cut() || self.shared.is_closed() => {
                Poll::Ready(Err(self.cut_error()))
            }
            Poll::Pending => self.pending_or_ended(cx),
            ready => ready,
        }
    }

    /// Whether yamux holds the stream fully closed while we never finished it: a reset, or
    /// the session's end.
    fn was_cut(&self) -> bool {
        !self.finished && self.io.get_ref().is_closed()
    }
}

impl AsyncRead for BiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Kind::Quic { recv, .. } => AsyncRead::poll_read(Pin::new(recv), cx, buf),
            Kind::Mux(s) => {
                let before = buf.filled().len();
                match Pin::new(&mut s.io).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {
                        let eof = buf.filled().len() == before && buf.remaining() > 0;
                        if eof && s.was_cut() {
                            return Poll::Ready(Err(s.cut_error()));
                        }
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => s.pending_or_ended(cx),
                }
            }
        }
    }
}

impl AsyncWrite for BiStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Kind::Quic { send, .. } => AsyncWrite::poll_write(Pin::new(send), cx, buf),
            Kind::Mux(s) => {
                let polled = Pin::new(&mut s.io).poll_write(cx, buf);
                s.settle(cx, polled)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Kind::Quic { send, .. } => AsyncWrite::poll_flush(Pin::new(send), cx),
            Kind::Mux(s) => {
                let polled = Pin::new(&mut s.io).poll_flush(cx);
                s.settle(cx, polled)
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Kind::Quic { send, .. } => AsyncWrite::poll_shutdown(Pin::new(send), cx),
            Kind::Mux(s) if s.finished => Poll::Ready(Ok(())),
            Kind::Mux(s) => {
                let polled = Pin::new(&mut s.io).poll_shutdown(cx);
                if let Poll::Ready(Ok(())) = polled {
                    s.finished = true;
                }
                s.settle(cx, polled)
            }
        }
    }
}
