//! Test backends standing in for a provider's local service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 backend on 127.0.0.1:0.
///
/// Endpoints: `/echo` (method, URI and headers as text), `/upload` (SHA-256 and size of the
/// body), `/download?bytes=N` (N deterministic bytes, chunked), `/sse?n=N&ms=M` (N events M ms
/// apart), `/slow?ms=M`, `/hang` (never answers), anything else: `hello from backend`.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        handle(req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            connections,
            task,
        }
    }

    /// Requests this backend has received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections this backend has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/echo" => {
            let mut text = format!("{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("<binary>")));
            }
            full(StatusCode::OK, text)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            hasher.update(d);
                            n += d.len() as u64;
                        }
                    }
                    Err(e) => return Ok(full(StatusCode::BAD_REQUEST, e.to_string())),
                }
            }
            full(
                StatusCode::OK,
                format!("{} {n}", hex::encode(hasher.finalize())),
            )
        }
        "/download" => {
            let total = query(&req, "bytes").unwrap_or(1024);
            let stream = futures_util::stream::iter(DownloadChunks::new(total))
                .map(|c| Ok::<_, Infallible>(Frame::data(c)));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(
                "content-type",
                "application/octet-stream".parse().expect("header"),
            );
            r
        }
        "/sse" => {
            let n = query(&req, "n").unwrap_or(3);
            let ms = query(&req, "ms").unwrap_or(300);
            let stream = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let ev = Bytes::from(format!("id: {i}\ndata: event {i}\n\n"));
                Some((Ok::<_, Infallible>(Frame::data(ev)), i + 1))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("header"));
            r
        }
        "/slow" => {
            let ms = query(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(StatusCode::OK, format!("slept {ms} ms"))
        }
        "/hang" => {
            futures_util::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        _ => full(StatusCode::OK, "hello from backend"),
    };
    Ok(resp)
}

const CHUNK: usize = 64 * 1024;

/// Deterministic download content: chunk `i` is filled with byte `i % 251`.
struct DownloadChunks {
    left: u64,
    index: u64,
}

impl DownloadChunks {
    fn new(total: u64) -> Self {
        Self {
            left: total,
            index: 0,
        }
    }
}

impl Iterator for DownloadChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let len = self.left.min(CHUNK as u64) as usize;
        let byte = u8::try_from(self.index % 251).expect("below 251");
        self.left -= len as u64;
        self.index += 1;
        Some(Bytes::from(vec![byte; len]))
    }
}

/// SHA-256 of what `/download?bytes=total` sends.
pub fn download_sha256(total: u64) -> String {
    let mut h = Sha256::new();
    for chunk in DownloadChunks::new(total) {
        h.update(&chunk);
    }
    hex::encode(h.finalize())
}

/// A WebSocket echo server on 127.0.0.1:0.
#[derive(Debug)]
pub struct WsBackend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
        let addr = listener.local_addr().expect("ws addr");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                        } else if msg.is_close() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}
