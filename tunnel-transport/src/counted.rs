//! Byte counting for a TCP tunnel: [`Counted`] wraps the connection's I/O and adds every byte
//! read and written to a shared [`ByteCount`], which answers `TunnelConn::wire_bytes` the way
//! quinn's UDP statistics do for QUIC.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes received and sent through a [`Counted`] I/O; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct ByteCount(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    rx: AtomicU64,
    tx: AtomicU64,
}

impl ByteCount {
    /// Bytes read so far.
    pub fn rx(&self) -> u64 {
        self.0.rx.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn tx(&self) -> u64 {
        self.0.tx.load(Ordering::Relaxed)
    }
}

/// An I/O object that counts the bytes going through it.
#[derive(Debug)]
pub struct Counted<IO> {
    inner: IO,
    count: ByteCount,
}

impl<IO> Counted<IO> {
    /// Wraps `inner`, counting from zero.
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            count: ByteCount::default(),
        }
    }

    /// A handle on the counts, valid after this wrapper is gone.
    pub fn count(&self) -> ByteCount {
        self.count.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len().saturating_sub(before);
            self.count.0.rx.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.count.0.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.count.0.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn counts_both_directions() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let mut a = Counted::new(a.expect("connect"));
        let (mut b, _) = b.expect("accept");
        let count = a.count();
        a.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.expect("read");
        b.write_all(b"hi").await.expect("write back");
        let mut back = [0u8; 2];
        a.read_exact(&mut back).await.expect("read back");
        assert_eq!((count.rx(), count.tx()), (2, 5));
        drop(a);
        assert_eq!(count.tx(), 5, "the counts outlive the wrapper");
    }
}
