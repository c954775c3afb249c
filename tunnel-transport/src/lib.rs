//! The gateway ↔ provider tunnel connection, over QUIC or over TCP, behind one API.
//!
//! QUIC is the tunnel's first transport. Where UDP is blocked, the provider reaches the
//! gateway over TLS on TCP instead and runs yamux inside, whose streams are symmetric like
//! QUIC's: the provider opens the control stream, the gateway opens data streams, and every
//! codec of `peercompute-tunnel-proto` is used unchanged. Code above this crate holds a
//! [`TunnelConn`] and [`BiStream`]s and does not care which transport carries them. TLS (and
//! who the peer is) stays with the caller: a TCP tunnel is built from an already
//! authenticated byte stream.
//!
//! Modules, from the connection down:
//! - `conn`: [`TunnelConn`] (open/accept streams, close with a reason, RTT, wire bytes),
//!   [`ConnId`] (unique in the process across both transports) and [`Transport`].
//! - `stream`: [`BiStream`], one tokio `AsyncRead + AsyncWrite` for a quinn stream pair or a
//!   yamux stream, with `finish` and `reset`.
//! - `mux`: [`MuxHandle`], the yamux session's handle, and the task that drives it;
//!   [`MuxLimits`] for stream counts and windows.
//! - `tls`: [`tcp_connect`], the dialling side of a TCP tunnel (TCP, TLS with the tunnel's
//!   ALPN, yamux), and [`tune_tcp`], the socket options of both sides (keepalive, nodelay).
//! - `counted`: [`Counted`], the byte-counting I/O wrapper under a TCP session.
//! - `error`: [`CloseReason`] and [`ConnError`].

mod conn;
mod counted;
mod error;
mod mux;
mod stream;
mod tls;

pub use conn::{ConnId, Transport, TunnelConn};
pub use counted::{ByteCount, Counted};
pub use error::{CloseReason, ConnError};
pub use mux::{MAX_STREAMS_EACH_WAY, Mode, MuxHandle, MuxLimits};
pub use stream::{BiStream, RESET_CODE};
pub use tls::{
    KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, TcpConnectError, tcp_connect, tune_tcp,
};
