//! A closing yamux session must not drop its socket while the peer's last frames sit unread
//! in it: the kernel then answers with a TCP reset instead of a FIN, and a reset makes the
//! peer's kernel discard what it had received but not yet read, such as the stream data and
//! the GoAway message written just before the close (seen in `close_delivers_what_was_
//! written_first`: the peer's read failed with "connection reset by peer").
//!
//! yamux drops the socket as soon as its own `poll_close` is done. [`Linger`] sits under it
//! and makes that close wait: it sends our end of stream (TLS close_notify and FIN, by the
//! inner shutdown), then reads and discards until the peer closes too. The driver bounds the
//! wait.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of the buffer that reads what the peer still sends during a close.
const DISCARD_BUF: usize = 4096;

/// An I/O object whose shutdown completes when the peer has closed its side too.
#[derive(Debug)]
pub(super) struct Linger<IO> {
    inner: IO,
    /// Our end of stream is sent; what is left is reading to the peer's.
    shut: bool,
    discard: Vec<u8>,
}

impl<IO> Linger<IO> {
    pub(super) fn new(inner: IO) -> Self {
        Self {
            inner,
            shut: false,
            discard: Vec::new(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Linger<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.shut {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.shut = true;
            this.discard = vec![0; DISCARD_BUF];
        }
        loop {
            let mut buf = ReadBuf::new(&mut this.discard);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => continue,
                // A peer that resets instead of closing: nothing left to protect.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}
