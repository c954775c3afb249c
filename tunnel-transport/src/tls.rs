//! The TCP tunnel's dialling side: TCP to the gateway's HTTPS port, TLS 1.3 with the tunnel's
//! ALPN, then a yamux session as [`Mode::Client`]. Also the socket settings both sides give a
//! tunnel's TCP connection ([`tune_tcp`]): yamux sends nothing on an idle session, so TCP
//! keepalive is what keeps NAT bindings and notices a peer that vanished.
//!
//! The TLS configuration (client certificate, how the gateway is verified) is the caller's, as
//! for QUIC; the gateway side accepts TLS itself and hands the stream to [`MuxHandle::spawn`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peercompute_tunnel_proto::ALPN;
use rustls::pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::conn::TunnelConn;
use crate::mux::{Mode, MuxHandle, MuxLimits};

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the kernel drops the connection (after 10 + 3 × 5 = 25 s).
pub const KEEPALIVE_PROBES: u32 = 3;

/// Dialling a TCP tunnel failed.
#[derive(Debug, thiserror::Error)]
pub enum TcpConnectError {
    #[error("cannot reach {addr} over TCP: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{addr} answered TLS without the tunnel protocol (ALPN peercompute-tunnel/1)")]
    Alpn { addr: SocketAddr },
}

/// Sets the tunnel's socket options: no Nagle delay, and TCP keepalive
/// ([`KEEPALIVE_IDLE`], [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`]).
pub fn tune_tcp(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Dials `addr`, runs TLS with `sni` and `tls` (whose `alpn_protocols` must offer [`ALPN`];
/// the gateway must agree to it) and starts the yamux session as [`Mode::Client`]. Bound it
/// with a timeout: neither step has one.
pub async fn tcp_connect(
    addr: SocketAddr,
    sni: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    limits: MuxLimits,
) -> Result<TunnelConn, TcpConnectError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| TcpConnectError::Connect { addr, source })?;
    tune_tcp(&tcp).map_err(|source| TcpConnectError::Connect { addr, source })?;
    let stream = TlsConnector::from(tls)
        .connect(sni, tcp)
        .await
        .map_err(|source| TcpConnectError::Tls { addr, source })?;
    if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(TcpConnectError::Alpn { addr });
    }
    let (mux, _driver) = MuxHandle::spawn(stream, addr, Mode::Client, limits);
    Ok(TunnelConn::tcp(mux))
}
