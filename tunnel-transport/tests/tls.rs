//! A TCP tunnel as the provider dials it: TCP, TLS 1.3 with the tunnel's ALPN, yamux; the
//! accepting side does what the gateway will (TLS acceptor, then `MuxHandle::spawn`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use peercompute_tunnel_proto::{ALPN, GoAwayCode};
use peercompute_tunnel_transport::{
    KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, Mode, MuxHandle, MuxLimits,
    TcpConnectError, Transport, TunnelConn, tcp_connect, tune_tcp,
};
use rustls::pki_types::ServerName;
use socket2::SockRef;
use support::{stream_between, tcp_sockets, tls_configs, within};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS listener on loopback that runs a yamux session on each connection it accepts with
/// the tunnel's ALPN, and hands the sessions out.
async fn gateway(
    server_alpn: &[&[u8]],
) -> (
    std::net::SocketAddr,
    Arc<rustls::ClientConfig>,
    tokio::sync::mpsc::Receiver<TunnelConn>,
) {
    let (server, client) = tls_configs(server_alpn);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let (sessions, accepted) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((tcp, remote)) = listener.accept().await {
            tune_tcp(&tcp).expect("tune");
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
                continue;
            }
            let (mux, _) = MuxHandle::spawn(tls, remote, Mode::Server, MuxLimits::default());
            let _ = sessions.send(TunnelConn::tcp(mux)).await;
        }
    });
    (addr, Arc::new(client), accepted)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("server name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_over_tls_and_carry_streams() {
    let (addr, client, mut accepted) = gateway(&[ALPN]).await;
    let provider = within(
        "dial",
        tcp_connect(addr, localhost(), client, MuxLimits::default()),
    )
    .await
    .expect("tcp_connect");
    let gateway = within("session", accepted.recv()).await.expect("session");
    assert_eq!(provider.transport(), Transport::Tcp);
    assert_eq!(provider.remote_address(), addr);

    // The provider opens the control stream, the gateway a data stream: both directions.
    let (_control, _) = stream_between(&provider, &gateway, b"hello").await;
    let (_data, _) = stream_between(&gateway, &provider, b"GET / HTTP/1.1\r\n\r\n").await;
    let (rx, tx) = provider.wire_bytes();
    assert!(rx > 0 && tx > 0, "wire bytes {rx}/{tx}");

    gateway.close(GoAwayCode::Shutdown, "bye");
    within("provider sees the close", provider.closed()).await;
}

#[tokio::test]
async fn a_server_without_the_tunnel_alpn_is_refused() {
    let (addr, client, _accepted) = gateway(&[]).await;
    let refused = within(
        "dial",
        tcp_connect(addr, localhost(), client, MuxLimits::default()),
    )
    .await;
    assert!(
        matches!(refused, Err(TcpConnectError::Alpn { addr: a }) if a == addr),
        "{refused:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let (_, client, _) = gateway(&[ALPN]).await;
    // A port that was just free: bind, note it, close.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let refused = within(
        "dial",
        tcp_connect(addr, localhost(), client, MuxLimits::default()),
    )
    .await;
    assert!(
        matches!(refused, Err(TcpConnectError::Connect { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn tune_tcp_sets_keepalive_and_nodelay() {
    let (s, _peer) = tcp_sockets().await;
    s.set_nodelay(false).expect("nodelay off");
    tune_tcp(&s).expect("tune");
    let sock = SockRef::from(&s);
    assert!(s.nodelay().expect("nodelay"));
    assert!(sock.keepalive().expect("keepalive"));
    assert_eq!(sock.tcp_keepalive_time().expect("time"), KEEPALIVE_IDLE);
    assert_eq!(
        sock.tcp_keepalive_interval().expect("interval"),
        KEEPALIVE_INTERVAL
    );
    assert_eq!(
        sock.tcp_keepalive_retries().expect("retries"),
        KEEPALIVE_PROBES
    );
    assert!(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES <= Duration::from_secs(30));
}
