//! The TCP tunnel's multiplexer: one yamux session over any byte stream (TLS over TCP in
//! production), driven by one task, used through a cloneable [`MuxHandle`] that behaves like a
//! `quinn::Connection`: `open_bi` waits at the stream limit, `accept_bi` hands out the peer's
//! streams, `close` keeps its code and reason on this side (yamux's GoAway carries neither).
//!
//! The driver task ([`driver`]) owns the `yamux::Connection`, the only place yamux makes
//! progress: it pushes inbound streams into a bounded channel and serves open requests sent
//! to it with a oneshot for the answer. [`limits`] turns [`MuxLimits`] into yamux's settings;
//! [`linger`] keeps a closing session's socket until the peer has read everything.

mod driver;
mod limits;
mod linger;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::task::AtomicWaker;
use peercompute_tunnel_proto::GoAwayCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use limits::{MAX_STREAMS_EACH_WAY, MuxLimits};
pub use yamux::Mode;

use crate::conn::ConnId;
use crate::counted::{ByteCount, Counted};
use crate::error::{CloseReason, ConnError};
use crate::stream::BiStream;

/// Open requests waiting for the driver (each already holds a stream permit).
const OPEN_QUEUE: usize = 64;
/// `rtt_nanos` value meaning "not measured yet".
const NO_RTT: u64 = u64::MAX;

/// An open request: the driver answers with a new outbound stream.
pub(crate) type OpenRequest = oneshot::Sender<Result<yamux::Stream, ConnError>>;

/// A stream the peer opened, with the inbound permit it holds while open.
#[derive(Debug)]
pub(crate) struct Inbound {
    stream: yamux::Stream,
    permit: OwnedSemaphorePermit,
}

/// State shared by the handles, the driver and the streams of one connection.
#[derive(Debug)]
pub(crate) struct MuxShared {
    id: ConnId,
    remote: SocketAddr,
    bytes: ByteCount,
    rtt_nanos: AtomicU64,
    /// The first close asked for on this side; the driver carries it out.
    close_request: Mutex<Option<(GoAwayCode, String)>>,
    /// Wakes the driver when `close_request` is set.
    close_waker: AtomicWaker,
    /// Why the connection ended, set once before `closed` is cancelled.
    reason: OnceLock<CloseReason>,
    /// Cancelled when the driver ended: wakes `closed()`, `open_bi`, `accept_bi` and streams.
    closed: CancellationToken,
}

impl MuxShared {
    fn close_request(&self) -> Option<(GoAwayCode, String)> {
        self.close_request
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the driver to close with `code` and `reason`; the first request wins.
    fn request_close(&self, code: GoAwayCode, reason: &str) {
        {
            let mut request = self
                .close_request
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if request.is_none() {
                *request = Some((code, reason.to_owned()));
            }
        }
        self.close_waker.wake();
    }

    /// Records why the connection ended (the first reason wins) and wakes every waiter.
    fn finish(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.closed.cancel();
    }

    /// Why the connection ended, or is ending by our own close.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        if let Some(reason) = self.reason.get() {
            return Some(reason.clone());
        }
        self.close_request()
            .map(|(code, reason)| CloseReason::Local { code, reason })
    }

    /// Whether the session has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub(crate) fn closed_token(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Why the connection ended, once `closed` is cancelled.
    fn final_reason(&self) -> CloseReason {
        self.close_reason()
            .unwrap_or_else(|| CloseReason::Lost("the tunnel's driver task ended".into()))
    }

    pub(crate) fn closed_error(&self) -> ConnError {
        ConnError::Closed {
            id: self.id,
            reason: self.final_reason(),
        }
    }
}

/// A handle on a yamux session; clones share it. The session closes when [`close`] is called,
/// when the peer closes or the byte stream breaks, or when every handle and stream is gone.
///
/// [`close`]: MuxHandle::close
#[derive(Clone)]
pub struct MuxHandle {
    shared: Arc<MuxShared>,
    opens: mpsc::Sender<OpenRequest>,
    inbound: Arc<tokio::sync::Mutex<mpsc::Receiver<Inbound>>>,
    outbound_permits: Arc<Semaphore>,
}

impl std::fmt::Debug for MuxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxHandle")
            .field("id", &self.shared.id)
            .field("remote", &self.shared.remote)
            .finish_non_exhaustive()
    }
}

impl MuxHandle {
    /// Starts a yamux session over `io` (already authenticated: TLS is the caller's) with the
    /// peer at `remote`. The provider, which dialled,
    /// is [`Mode::Client`]; the gateway is [`Mode::Server`] (two sides of one mode would
    /// pick the same stream ids). The task, spawned on the current tokio runtime (which must
    /// exist), ends when the session does; aborting it drops the connection at once.
    pub fn spawn<IO>(
        io: IO,
        remote: SocketAddr,
        mode: Mode,
        limits: MuxLimits,
    ) -> (MuxHandle, JoinHandle<()>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = limits.clamped();
        let io = Counted::new(io);
        let shared = Arc::new(MuxShared {
            id: ConnId::next(),
            remote,
            bytes: io.count(),
            rtt_nanos: AtomicU64::new(NO_RTT),
            close_request: Mutex::new(None),
            close_waker: AtomicWaker::new(),
            reason: OnceLock::new(),
            closed: CancellationToken::new(),
        });
        let io = linger::Linger::new(io);
        let connection = yamux::Connection::new(io.compat(), limits.yamux_config(), mode);
        let (opens, open_requests) = mpsc::channel(OPEN_QUEUE);
        let (inbound_tx, inbound_rx) = mpsc::channel(limits.max_inbound);
        let driver = driver::Driver::new(
            connection,
            shared.clone(),
            open_requests,
            inbound_tx,
            Arc::new(Semaphore::new(limits.max_inbound)),
        );
        let span = tracing::debug_span!("tunnel_mux", conn = %shared.id, %remote);
        let task = tokio::spawn(driver.instrument(span));
        let handle = MuxHandle {
            shared,
            opens,
            inbound: Arc::new(tokio::sync::Mutex::new(inbound_rx)),
            outbound_permits: Arc::new(Semaphore::new(limits.max_outbound)),
        };
        (handle, task)
    }

    /// The process-wide id of this connection.
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The peer's address given to [`spawn`](Self::spawn).
    pub fn remote_address(&self) -> SocketAddr {
        self.shared.remote
    }

    /// Opens a stream toward the peer. Waits while `max_outbound` streams of ours are open
    /// (bound the wait with a timeout, as for QUIC). The peer sees the stream once something
    /// is written on it.
    pub async fn open_bi(&self) -> Result<BiStream, ConnError> {
        let closed = self.shared.closed.clone();
        let open = async {
            let permit = self
                .outbound_permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| self.shared.closed_error())?;
            let (answer, answered) = oneshot::channel();
            self.opens
                .send(answer)
                .await
                .map_err(|_| self.shared.closed_error())?;
            let stream = answered.await.map_err(|_| self.shared.closed_error())??;
            Ok(self.stream(stream, permit))
        };
        tokio::select! {
            biased;
            () = closed.cancelled() => Err(self.shared.closed_error()),
            opened = open => opened,
        }
    }

    /// The next stream the peer opened. Streams that arrived before the session ended are
    /// still handed out, with the data they carried; then this fails.
    pub async fn accept_bi(&self) -> Result<BiStream, ConnError> {
        // The driver drops the channel's sender when it ends: `None` follows the last stream.
        let next = self.inbound.lock().await.recv().await;
        next.map(|inbound| self.stream(inbound.stream, inbound.permit))
            .ok_or_else(|| self.shared.closed_error())
    }

    fn stream(&self, stream: yamux::Stream, permit: OwnedSemaphorePermit) -> BiStream {
        BiStream::mux(stream, permit, self.shared.clone(), self.opens.clone())
    }

    /// Closes the session: queued stream data is flushed and yamux's GoAway sent (within a
    /// bound), then the byte stream is closed. `code` and `reason` stay on this side
    /// ([`close_reason`](Self::close_reason)); the first close wins. Returns at once.
    pub fn close(&self, code: GoAwayCode, reason: &str) {
        self.shared.request_close(code, reason);
    }

    /// Resolves when the session has ended, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.shared.closed.cancelled().await;
        self.shared.final_reason()
    }

    /// Why the session ended, or is ending after our [`close`](Self::close); `None` while open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }

    /// The round-trip time last stored with [`set_rtt`](Self::set_rtt).
    pub fn rtt(&self) -> Option<Duration> {
        match self.shared.rtt_nanos.load(Ordering::Relaxed) {
            NO_RTT => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Stores a round-trip time measured above yamux (the control stream's Ping → Pong).
    pub fn set_rtt(&self, rtt: Duration) {
        let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(NO_RTT - 1);
        self.shared
            .rtt_nanos
            .store(nanos.min(NO_RTT - 1), Ordering::Relaxed);
    }

    /// Bytes (received, sent) on the byte stream given to [`spawn`](Self::spawn): when that is
    /// a TLS stream, the TLS record overhead (about 22 bytes per record of up to 16 KiB) is not
    /// counted.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.shared.bytes.rx(), self.shared.bytes.tx())
    }
}
