//! The accept loop of the admin listeners: an axum [`Router`] served over HTTP/1.1 with a
//! header timeout, a cap on open connections and a bounded drain at shutdown.
//!
//! `axum::serve` is not used because it has no header read timeout. Each accepted connection
//! takes a permit of a semaphore of [`MAX_CONNECTIONS`] before the next accept, so a client
//! holding many idle connections delays others instead of exhausting file descriptors. Every
//! answer without its own `Cache-Control` gets `no-store` (API answers carry live state and
//! may be behind a token). At shutdown the connections are asked to close after their current
//! answer; live streams (SSE) that do not end within [`DRAIN`] are dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Open connections at most; the accept loop waits for one to close beyond that.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections (streams included) before dropping them.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `shutdown` turns true (or its sender is dropped), then
/// drains the open connections for at most [`DRAIN`].
pub async fn serve_admin(listener: TcpListener, router: Router, shutdown: watch::Receiver<bool>) {
    serve_capped(listener, router, shutdown, MAX_CONNECTIONS).await;
}

async fn serve_capped(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
) {
    let router = router.layer(axum::middleware::map_response(no_store));
    let permits = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
    }
}

/// `Cache-Control: no-store` unless the handler chose its own.
async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start() -> (
        std::net::SocketAddr,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new()
            .route("/hello", get(|| async { "hi\n" }))
            .route(
                "/cached",
                get(|| async { ([(header::CACHE_CONTROL, "max-age=60")], "c") }),
            );
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve_admin(listener, router, rx));
        (addr, tx, task)
    }

    async fn get_raw(addr: std::net::SocketAddr, path: &str) -> String {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.expect("read");
        out.to_ascii_lowercase()
    }

    #[tokio::test]
    async fn serves_the_router_with_no_store_unless_set() {
        let (addr, tx, task) = start().await;
        let resp = get_raw(addr, "/hello").await;
        assert!(resp.starts_with("http/1.1 200"), "{resp}");
        assert!(resp.contains("cache-control: no-store"), "{resp}");
        assert!(resp.ends_with("hi\n"), "{resp}");
        let resp = get_raw(addr, "/cached").await;
        assert!(resp.contains("cache-control: max-age=60"), "{resp}");
        assert!(!resp.contains("no-store"), "{resp}");
        tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("join");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_one_to_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/hello", get(|| async { "hi\n" }));
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(serve_capped(listener, router, rx, 2));
        let idle1 = TcpStream::connect(addr).await.expect("connect");
        let _idle2 = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = tokio::spawn(get_raw(addr, "/hello"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !third.is_finished(),
            "a third connection was served past a cap of 2"
        );
        drop(idle1);
        let resp = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("served once a connection closed")
            .expect("join");
        assert!(resp.starts_with("http/1.1 200"), "{resp}");
    }

    #[tokio::test]
    async fn shutdown_drops_idle_connections_within_the_drain() {
        let (addr, tx, task) = start().await;
        // A connection that never sends its head.
        let _idle = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(true).expect("stop");
        tokio::time::timeout(DRAIN + Duration::from_secs(2), task)
            .await
            .expect("stops within the drain")
            .expect("join");
    }
}
