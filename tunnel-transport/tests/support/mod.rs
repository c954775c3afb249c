//! Connected pairs of tunnel connections on loopback, one per transport, and the helpers the
//! tests share: bounded waits and large deterministic bodies checked by SHA-256.
//!
//! `a` is the dialling side (the provider), `b` the accepting one (the gateway). Both pairs
//! let `a` open at most `limit` streams toward `b` at once: QUIC through `b`'s
//! `max_concurrent_bidi_streams`, TCP through `a`'s `max_outbound` (and `b`'s `max_inbound`).

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peercompute_tunnel_transport::{BiStream, Mode, MuxHandle, MuxLimits, TunnelConn};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The bound on every wait of these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A connected pair.
pub struct Pair {
    /// The dialling side.
    pub a: TunnelConn,
    /// The accepting side.
    pub b: TunnelConn,
    /// TCP: the driver tasks of a and b.
    pub drivers: Option<(JoinHandle<()>, JoinHandle<()>)>,
    /// What must outlive the connections (QUIC endpoints).
    _keep: Box<dyn Any + Send>,
}

/// `fut`, which must finish within [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {WAIT:?}"),
    }
}

/// A stream opened by `a` and accepted by `b` (ours, theirs): `a` writes `first` (the peer
/// sees a stream once it is written) and `b` reads it.
pub async fn stream_between(a: &TunnelConn, b: &TunnelConn, first: &[u8]) -> (BiStream, BiStream) {
    let mut ours = within("open", a.open_bi()).await.expect("open");
    ours.write_all(first).await.expect("write");
    let mut theirs = within("accept", b.accept_bi()).await.expect("accept");
    let mut got = vec![0u8; first.len()];
    within("read", theirs.read_exact(&mut got))
        .await
        .expect("read");
    assert_eq!(got, first);
    (ours, theirs)
}

/// A TCP + yamux pair over a real loopback socket.
pub async fn tcp_pair(limit: usize) -> Pair {
    let dialler = MuxLimits {
        max_outbound: limit,
        ..MuxLimits::default()
    };
    let acceptor = MuxLimits {
        max_inbound: limit,
        ..MuxLimits::default()
    };
    tcp_pair_with(dialler, acceptor).await
}

/// A TCP + yamux pair with the given limits for a and b.
pub async fn tcp_pair_with(a_limits: MuxLimits, b_limits: MuxLimits) -> Pair {
    let (a_io, b_io) = tcp_sockets().await;
    let a_remote = a_io.peer_addr().expect("peer addr");
    let b_remote = b_io.peer_addr().expect("peer addr");
    let (a, a_task) = MuxHandle::spawn(a_io, a_remote, Mode::Client, a_limits);
    let (b, b_task) = MuxHandle::spawn(b_io, b_remote, Mode::Server, b_limits);
    Pair {
        a: a.into(),
        b: b.into(),
        drivers: Some((a_task, b_task)),
        _keep: Box::new(()),
    }
}

/// Both ends of one loopback TCP connection (dialler, acceptor).
pub async fn tcp_sockets() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (dialled, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let dialled = dialled.expect("connect");
    let (accepted, _) = accepted.expect("accept");
    dialled.set_nodelay(true).expect("nodelay");
    accepted.set_nodelay(true).expect("nodelay");
    (dialled, accepted)
}

/// A QUIC pair on loopback, with a self-signed certificate for `localhost`.
pub async fn quic_pair(limit: u32) -> Pair {
    let (server_tls, client_tls) = tls_configs(&[b"test"]);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_tls).expect("quic server config"),
    ));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(limit.into());
    server.transport_config(Arc::new(transport));

    let client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).expect("quic client config"),
    ));

    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server_endpoint = quinn::Endpoint::server(server, loopback).expect("server endpoint");
    let server_addr = server_endpoint.local_addr().expect("server addr");
    let mut client_endpoint = quinn::Endpoint::client(loopback).expect("client endpoint");
    client_endpoint.set_default_client_config(client);

    let connecting = client_endpoint
        .connect(server_addr, "localhost")
        .expect("connect");
    let (a, b) = within("QUIC handshake", async {
        let incoming = server_endpoint.accept().await.expect("incoming");
        tokio::join!(connecting, incoming)
    })
    .await;
    Pair {
        a: TunnelConn::quic(a.expect("client handshake")),
        b: TunnelConn::quic(b.expect("server handshake")),
        drivers: None,
        _keep: Box::new((server_endpoint, client_endpoint)),
    }
}

/// TLS 1.3 configurations (server, client) for `localhost` with a fresh self-signed
/// certificate, the client trusting it; the server agrees to `server_alpn`, the client offers
/// `test` and the tunnel's ALPN.
pub fn tls_configs(server_alpn: &[&[u8]]) -> (rustls::ServerConfig, rustls::ClientConfig) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server cert");
    server.alpn_protocols = server_alpn.iter().map(|a| a.to_vec()).collect();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"test".to_vec(), peercompute_tunnel_proto::ALPN.to_vec()];
    (server, client)
}

/// Deterministic pseudo-random bytes (xorshift64*), `len` of them from `seed`.
pub fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` in 64 KiB pieces, then finishes.
pub async fn send_all(mut w: impl AsyncWrite + Unpin, data: &[u8]) -> std::io::Result<()> {
    for chunk in data.chunks(64 * 1024) {
        w.write_all(chunk).await?;
    }
    w.shutdown().await
}

/// Reads to the end; returns the SHA-256 and the length.
pub async fn hash_all(mut r: impl AsyncRead + Unpin) -> std::io::Result<([u8; 32], usize)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((hasher.finalize().into(), len));
        }
        hasher.update(&buf[..n]);
        len += n;
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
