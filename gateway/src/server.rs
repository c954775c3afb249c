//! The HTTPS listener: connection cap, TLS handshake with a deadline, HTTP/1.1 or HTTP/2 by
//! ALPN with bounded header sizes and timeouts, and graceful draining on shutdown. A provider
//! whose UDP is blocked reaches the gateway here too: its ClientHello offers the tunnel's ALPN
//! (`peercompute-tunnel/1`, which no browser offers), so it gets the tunnel's TLS
//! configuration (client certificate required) and becomes a TCP tunnel.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::h2guard::Guarded;
use crate::metrics::KindLabel;
use crate::state::Shared;

/// TCP tunnels the HTTPS listener carries at once; they do not count against the visitor
/// connection cap.
const TCP_TUNNEL_SLOTS: usize = 10_000;

/// The two TLS configurations of the HTTPS port, chosen by the ClientHello's ALPN.
#[derive(Clone)]
pub(crate) struct TlsConfigs {
    pub(crate) visitor: Arc<rustls::ServerConfig>,
    pub(crate) tunnel: Arc<rustls::ServerConfig>,
}

/// What a finished handshake turned out to be.
enum Accepted {
    Visitor(TlsStream<TcpStream>),
    Tunnel(TlsStream<TcpStream>),
}

/// Accepts visitors (and TCP tunnels) until `shutdown`, then drains in-flight requests for the
/// grace period.
pub(crate) async fn serve_https(
    listener: TcpListener,
    tls: TlsConfigs,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&shared));
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let tunnel_slots = Arc::new(Semaphore::new(TCP_TUNNEL_SLOTS));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.metrics.connections_refused.inc();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        shared.metrics.connections_total.inc();
        let tls = tls.clone();
        let builder = builder.clone();
        let shared = shared.clone();
        let watcher = graceful.watcher();
        let tunnel_slots = tunnel_slots.clone();
        let tunnel_shutdown = shutdown.clone();
        tokio::spawn(async move {
            shared.metrics.connections_open.inc();
            let accepted = accept_tls(tcp, remote, &tls, &shared).await;
            if let Some(Accepted::Visitor(stream)) = accepted {
                serve_connection(stream, remote, &builder, &shared, watcher).await;
                shared.metrics.connections_open.dec();
                drop(permit);
                return;
            }
            // Not a visitor: it holds no visitor slot and the drain does not wait for it.
            shared.metrics.connections_open.dec();
            drop(permit);
            drop(watcher);
            let Some(Accepted::Tunnel(stream)) = accepted else {
                return;
            };
            let Ok(_slot) = tunnel_slots.try_acquire_owned() else {
                warn!(%remote, "{TCP_TUNNEL_SLOTS} TCP tunnels already: refused one more");
                shared.metrics.tunnels_refused.inc();
                return;
            };
            crate::tunnel::serve_tcp_tunnel(stream, remote, shared, tunnel_shutdown).await;
        });
    }
    drop(listener);
    let grace = shared.config.grace_period;
    info!(
        ?grace,
        "no longer accepting visitors; draining in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("grace period over; closing the remaining connections");
    }
}

/// The TLS handshake within the handshake timeout, with the configuration the ClientHello's
/// ALPN asks for: the tunnel's for `peercompute-tunnel/1`, the visitors' otherwise.
async fn accept_tls(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: &TlsConfigs,
    shared: &Shared,
) -> Option<Accepted> {
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let tunnel = start
            .client_hello()
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == peercompute_tunnel_proto::ALPN));
        let config = if tunnel { &tls.tunnel } else { &tls.visitor };
        let stream = start.into_stream(config.clone()).await?;
        Ok::<_, std::io::Error>(if tunnel {
            Accepted::Tunnel(stream)
        } else {
            Accepted::Visitor(stream)
        })
    };
    match tokio::time::timeout(shared.config.handshake_timeout, handshake).await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(e)) => {
            debug!(%remote, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            debug!(%remote, "TLS handshake timed out");
            None
        }
    }
}

async fn serve_connection(
    tls: TlsStream<TcpStream>,
    remote: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    shared: &Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::acme::ACME_TLS_ALPN) {
        // A TLS-ALPN-01 validation: the handshake was the answer; no HTTP on this connection.
        debug!(%remote, "answered a TLS-ALPN-01 challenge handshake");
        let mut tls = tls;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        return;
    }
    let svc_shared = shared.clone();
    let service = service_fn(move |req| crate::proxy::handle(req, svc_shared.clone(), remote));
    let metrics = shared.clone();
    let guarded = Guarded::new(tls, move |flood| {
        info!(%remote, kind = flood.as_str(), "HTTP/2 control frame flood: connection closed");
        metrics
            .metrics
            .h2_floods
            .get_or_create(&KindLabel {
                kind: flood.as_str(),
            })
            .inc();
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(guarded), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        debug!(%remote, "connection ended: {e}");
    }
}

fn http_builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let cfg = &shared.config;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        // hyper's floor is 8 KiB.
        .max_buf_size(cfg.max_header_bytes.max(8 * 1024))
        .max_headers(cfg.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    builder
}

/// rustls configuration for visitors: TLS 1.2/1.3, ALPN h2 then http/1.1, then `acme-tls/1`
/// when TLS-ALPN-01 challenges are answered (the server's order wins, so only a client that
/// offers neither h2 nor http/1.1 — an ACME validator — negotiates it).
pub(crate) fn visitor_tls(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    offer_acme_tls: bool,
) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if offer_acme_tls {
        cfg.alpn_protocols
            .push(crate::tls::acme::ACME_TLS_ALPN.to_vec());
    }
    Arc::new(cfg)
}
