//! The HTTPS listener: connection cap, TLS handshake with a deadline, HTTP/1.1 or HTTP/2 by
//! ALPN with bounded header sizes and timeouts, and graceful draining on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::h2guard::Guarded;
use crate::metrics::KindLabel;
use crate::state::Shared;

/// Accepts visitors until `shutdown`, then drains in-flight requests for the grace period.
pub(crate) async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(http_builder(&shared));
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
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
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let shared = shared.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            shared.metrics.connections_open.inc();
            serve_connection(tcp, remote, acceptor, &builder, &shared, watcher).await;
            shared.metrics.connections_open.dec();
            drop(permit);
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

async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    builder: &auto::Builder<TokioExecutor>,
    shared: &Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let tls =
        match tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%remote, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
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
