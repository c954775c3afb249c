//! [`TunnelConn`]: one provider ↔ gateway tunnel connection, over QUIC or over TCP, with the
//! `quinn::Connection` methods the gateway and provider use, and an id ([`ConnId`]) unique in
//! the process for both kinds (registry entries and the tunnels table are keyed by it).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use peercompute_tunnel_proto::GoAwayCode;

use crate::error::{CloseReason, ConnError};
use crate::mux::MuxHandle;
use crate::stream::BiStream;

/// The next [`ConnId`]; starts at 1.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A tunnel connection's id, unique among all connections of this process (QUIC and TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn next() -> Self {
        Self(NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a provider reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// QUIC over UDP.
    Quic,
    /// TLS over TCP with yamux inside.
    Tcp,
}

impl Transport {
    /// The name shown in the API and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tunnel connection; clones share it.
#[derive(Debug, Clone)]
pub struct TunnelConn(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Quic(QuicConn),
    Tcp(MuxHandle),
}

#[derive(Debug, Clone)]
struct QuicConn {
    conn: quinn::Connection,
    id: ConnId,
    /// Our close's code and reason (quinn reports only `LocallyClosed`).
    local_close: Arc<OnceLock<CloseReason>>,
}

impl From<quinn::Connection> for TunnelConn {
    fn from(conn: quinn::Connection) -> Self {
        Self::quic(conn)
    }
}

impl From<MuxHandle> for TunnelConn {
    fn from(mux: MuxHandle) -> Self {
        Self::tcp(mux)
    }
}

impl TunnelConn {
    /// An established QUIC connection; it gets a new [`ConnId`].
    pub fn quic(conn: quinn::Connection) -> Self {
        Self(Kind::Quic(QuicConn {
            conn,
            id: ConnId::next(),
            local_close: Arc::default(),
        }))
    }

    /// A TCP tunnel's yamux session (its id was given by [`MuxHandle::spawn`]).
    pub fn tcp(mux: MuxHandle) -> Self {
        Self(Kind::Tcp(mux))
    }

    /// The QUIC connection, for what only QUIC has (its TLS peer identity, its statistics).
    pub fn as_quic(&self) -> Option<&quinn::Connection> {
        match &self.0 {
            Kind::Quic(q) => Some(&q.conn),
            Kind::Tcp(_) => None,
        }
    }

    /// This connection's process-wide id.
    pub fn id(&self) -> ConnId {
        match &self.0 {
            Kind::Quic(q) => q.id,
            Kind::Tcp(mux) => mux.id(),
        }
    }

    /// QUIC or TCP.
    pub fn transport(&self) -> Transport {
        match &self.0 {
            Kind::Quic(_) => Transport::Quic,
            Kind::Tcp(_) => Transport::Tcp,
        }
    }

    /// Opens a stream toward the peer; waits while the stream limit is reached (bound it with
    /// a timeout). The peer sees the stream once something is written on it.
    pub async fn open_bi(&self) -> Result<BiStream, ConnError> {
        match &self.0 {
            Kind::Quic(q) => q.stream(q.conn.open_bi().await),
            Kind::Tcp(mux) => mux.open_bi().await,
        }
    }

    /// The next stream the peer opened.
    pub async fn accept_bi(&self) -> Result<BiStream, ConnError> {
        match &self.0 {
            Kind::Quic(q) => q.stream(q.conn.accept_bi().await),
            Kind::Tcp(mux) => mux.accept_bi().await,
        }
    }

    /// Closes the connection. QUIC sends `code` and `reason` in its close frame (and drops
    /// unsent stream data); TCP flushes queued stream data, then closes with yamux's GoAway,
    /// which carries neither: on TCP say why in a `GoAway` message first. Either way
    /// [`close_reason`](Self::close_reason) answers `Local { code, reason }` on this side. The
    /// first close wins. Returns at once.
    pub fn close(&self, code: GoAwayCode, reason: &str) {
        match &self.0 {
            Kind::Quic(q) => {
                let _ = q.local_close.set(CloseReason::Local {
                    code,
                    reason: reason.to_owned(),
                });
                q.conn.close(code.to_u16().into(), reason.as_bytes());
            }
            Kind::Tcp(mux) => mux.close(code, reason),
        }
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn closed(&self) -> CloseReason {
        match &self.0 {
            Kind::Quic(q) => q.reason(&q.conn.closed().await),
            Kind::Tcp(mux) => mux.closed().await,
        }
    }

    /// Why the connection ended (or is ending after our close); `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match &self.0 {
            Kind::Quic(q) => q.conn.close_reason().map(|e| q.reason(&e)),
            Kind::Tcp(mux) => mux.close_reason(),
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        match &self.0 {
            Kind::Quic(q) => q.conn.remote_address(),
            Kind::Tcp(mux) => mux.remote_address(),
        }
    }

    /// The round-trip time: quinn's estimate on QUIC; on TCP the last one stored with
    /// [`set_rtt`](Self::set_rtt) (`None` before).
    pub fn rtt(&self) -> Option<Duration> {
        match &self.0 {
            Kind::Quic(q) => Some(q.conn.rtt()),
            Kind::Tcp(mux) => mux.rtt(),
        }
    }

    /// Stores a round-trip time measured on the control stream (Ping → Pong). TCP only: QUIC
    /// measures its own, and this does nothing there.
    pub fn set_rtt(&self, rtt: Duration) {
        if let Kind::Tcp(mux) = &self.0 {
            mux.set_rtt(rtt);
        }
    }

    /// Bytes (received, sent) on the wire: UDP payload bytes on QUIC, the session's byte
    /// stream on TCP.
    pub fn wire_bytes(&self) -> (u64, u64) {
        match &self.0 {
            Kind::Quic(q) => {
                let stats = q.conn.stats();
                (stats.udp_rx.bytes, stats.udp_tx.bytes)
            }
            Kind::Tcp(mux) => mux.wire_bytes(),
        }
    }
}

impl QuicConn {
    fn stream(
        &self,
        opened: Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>,
    ) -> Result<BiStream, ConnError> {
        opened.map(BiStream::quic).map_err(|e| ConnError::Closed {
            id: self.id,
            reason: self.reason(&e),
        })
    }

    fn reason(&self, e: &quinn::ConnectionError) -> CloseReason {
        match (e, self.local_close.get()) {
            (quinn::ConnectionError::LocallyClosed, Some(ours)) => ours.clone(),
            _ => CloseReason::from_quic(e),
        }
    }
}
