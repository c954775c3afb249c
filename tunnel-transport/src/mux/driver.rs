//! The task that owns a `yamux::Connection`. yamux makes progress only while
//! `poll_next_inbound` (all frames in and out) or `poll_close` is polled, so this one future
//! polls it without pause and does everything else in between: it hands inbound streams to
//! `accept_bi` (resetting those past `max_inbound`, never waiting on a slow acceptor, which
//! would stall every stream), answers open requests, and carries out a local close.
//!
//! Invariant: the driver ends by recording the reason in `MuxShared` and cancelling its token,
//! in `Drop` if not before, so an aborted task or a panic still wakes every waiter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::AsyncWrite;
use peercompute_tunnel_proto::GoAwayCode;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Sleep;
use tracing::debug;

use super::linger::Linger;
use super::{Inbound, MuxShared, OpenRequest};
use crate::counted::Counted;
use crate::error::{CloseReason, ConnError};

/// Longest a local close may spend flushing queued frames and the GoAway, and waiting for the
/// peer to close its side (see `linger`); the byte stream is dropped after it.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

type Connection<IO> = yamux::Connection<tokio_util::compat::Compat<Linger<Counted<IO>>>>;

pub(super) struct Driver<IO> {
    connection: Connection<IO>,
    shared: Arc<MuxShared>,
    open_requests: mpsc::Receiver<OpenRequest>,
    /// The open request being served (yamux may make it wait for stream acknowledgements).
    pending_open: Option<OpenRequest>,
    inbound: mpsc::Sender<Inbound>,
    inbound_permits: Arc<Semaphore>,
    /// Set once a local close started: when it must be over.
    closing: Option<Pin<Box<Sleep>>>,
}

impl<IO> Driver<IO> {
    pub(super) fn new(
        connection: Connection<IO>,
        shared: Arc<MuxShared>,
        open_requests: mpsc::Receiver<OpenRequest>,
        inbound: mpsc::Sender<Inbound>,
        inbound_permits: Arc<Semaphore>,
    ) -> Self {
        Self {
            connection,
            shared,
            open_requests,
            pending_open: None,
            inbound,
            inbound_permits,
            closing: None,
        }
    }
}

/// What one round of polling decided.
enum Step {
    /// Nothing more to do until woken.
    Wait,
    /// Something changed state: poll again.
    Again,
    /// The session is over.
    Done(CloseReason),
}

impl<IO> Driver<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Step {
        if self.closing.is_none() {
            self.shared.close_waker.register(cx.waker());
            if self.shared.close_request().is_some() {
                self.closing = Some(Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT)));
            }
        }
        if let Some(deadline) = self.closing.as_mut() {
            let flushed = match self.connection.poll_close(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => {
                    debug!("closing the session: {e}");
                    true
                }
                Poll::Pending => false,
            };
            if !flushed && deadline.as_mut().poll(cx).is_pending() {
                return Step::Wait;
            }
            if !flushed {
                debug!("the peer did not take the close in {CLOSE_FLUSH_TIMEOUT:?}: dropping");
            }
            return Step::Done(self.local_reason());
        }
        match self.poll_inbound(cx) {
            Step::Wait => {}
            other => return other,
        }
        self.poll_outbound(cx)
    }

    /// Drives yamux and takes every stream the peer opened.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Step {
        loop {
            match self.connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => self.on_inbound(stream, cx),
                Poll::Ready(Some(Err(e))) => return Step::Done(CloseReason::Lost(e.to_string())),
                Poll::Ready(None) => {
                    return Step::Done(CloseReason::Peer {
                        code: None,
                        reason: "the peer closed the tunnel connection".into(),
                    });
                }
                Poll::Pending => return Step::Wait,
            }
        }
    }

    fn on_inbound(&mut self, mut stream: yamux::Stream, cx: &mut Context<'_>) {
        let Ok(permit) = self.inbound_permits.clone().try_acquire_owned() else {
            // Dropping an open stream resets it; the peer's stream fails, the session goes on.
            debug!(stream = %stream.id(), "reset a stream of the peer: too many open");
            return;
        };
        // Acknowledge the stream now (a zero-length write sends a data frame carrying only the
        // ACK flag). yamux otherwise acknowledges with the first answer, and a peer with 256
        // streams unacknowledged cannot open more: requests waiting for a slow app would hold
        // up every new one. Our permits bound the streams instead, as QUIC's limit does.
        if let Poll::Ready(Err(e)) = Pin::new(&mut stream).poll_write(cx, &[]) {
            debug!(stream = %stream.id(), "cannot acknowledge a stream of the peer: {e}");
        }
        if let Err(e) = self.inbound.try_send(Inbound { stream, permit }) {
            // Full cannot happen (each queued stream holds one of the channel-sized permits);
            // Closed means nobody can accept any more.
            debug!("reset a stream of the peer: {e}");
        }
    }

    /// Answers open requests, one at a time, as yamux allows.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> Step {
        loop {
            let request = match self.pending_open.take() {
                Some(request) => request,
                None => match self.open_requests.poll_recv(cx) {
                    Poll::Ready(Some(request)) => request,
                    Poll::Ready(None) => {
                        // Every handle and stream is gone: nobody will use the session.
                        let reason = "every handle was dropped";
                        self.shared.request_close(GoAwayCode::Other(0), reason);
                        return Step::Again;
                    }
                    Poll::Pending => return Step::Wait,
                },
            };
            if request.is_closed() {
                // The caller gave up waiting (timeout): no stream for it.
                continue;
            }
            match self.connection.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    // A refused stream is dropped unwritten: the peer never sees it.
                    let _ = request.send(Ok(stream));
                    // yamux only listens to the new stream's frames once `poll_next_inbound`
                    // has polled it: poll again before sleeping, or its first write is lost
                    // until some other event wakes the driver.
                    return Step::Again;
                }
                Poll::Ready(Err(yamux::ConnectionError::TooManyStreams)) => {
                    let id = self.shared.id;
                    let _ = request.send(Err(ConnError::TooManyStreams { id }));
                }
                Poll::Ready(Err(e)) => {
                    // The session failed; the next inbound poll reports why.
                    debug!("cannot open a stream: {e}");
                    drop(request);
                    return Step::Again;
                }
                Poll::Pending => {
                    self.pending_open = Some(request);
                    return Step::Wait;
                }
            }
        }
    }

    fn local_reason(&self) -> CloseReason {
        let (code, reason) = self
            .shared
            .close_request()
            .unwrap_or((GoAwayCode::Other(0), "closed by this side".into()));
        CloseReason::Local { code, reason }
    }
}

impl<IO> Future for Driver<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this.poll_step(cx) {
                Step::Wait => return Poll::Pending,
                Step::Again => continue,
                Step::Done(reason) => {
                    debug!(%reason, "tunnel session ended");
                    this.shared.finish(reason);
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl<IO> Drop for Driver<IO> {
    fn drop(&mut self) {
        // No-op after `poll` finished; otherwise the task was aborted or panicked.
        self.shared.finish(CloseReason::Lost(
            "the tunnel's driver task was stopped".into(),
        ));
    }
}
