//! The gateway's admin API from the outside: a client that sends the bearer token (when it has
//! one) and the JSON content type on mutations, a Server-Sent Events reader for
//! `/api/v1/events`, a backend that answers the status a test asks for (`/status/404`), and
//! an admin token file written with mode 0600.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// A token of the right shape; `seed` makes distinct ones.
pub fn token(seed: &str) -> String {
    format!("{seed}-{}", "0123456789abcdef".repeat(3))
}

/// Writes `lines` (e.g. `read TOKEN`) to `dir/admin-tokens` with mode 0600.
pub fn token_file(dir: &Path, lines: &[String]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("admin-tokens");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A client of one admin listener.
#[derive(Debug, Clone)]
pub struct AdminClient {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// Without a token.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            token: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// The same listener with `token` (`None`: no Authorization header).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// A request to `path` with the token and, for mutations, the JSON content type.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mutation = !matches!(method, Method::GET | Method::HEAD);
        let mut b = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.bearer_auth(t);
        }
        if mutation {
            b = b.header("content-type", "application/json");
        }
        b
    }

    pub async fn send(&self, method: Method, path: &str) -> reqwest::Response {
        self.request(method, path)
            .send()
            .await
            .expect("admin request")
    }

    /// GET `path`, asserting 200, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.send(Method::GET, path).await;
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// POST `body` (JSON) to `path`; status and JSON body (Null when empty or not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .request(Method::POST, path)
            .body(body.to_string())
            .send()
            .await
            .expect("admin POST");
        let status = resp.status();
        (status, json_or_null(resp).await)
    }

    /// DELETE `path`; status and JSON body (Null when empty or not JSON).
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.send(Method::DELETE, path).await;
        let status = resp.status();
        (status, json_or_null(resp).await)
    }

    /// Subscribes to `/api/v1/events` (resuming after `last_event_id`, an `id` as sent).
    pub async fn events(&self, last_event_id: Option<&str>) -> SseReader {
        let mut b = self.request(Method::GET, "/api/v1/events");
        if let Some(id) = last_event_id {
            b = b.header("last-event-id", id);
        }
        // The stream outlives the client's overall timeout: use a client without one.
        let resp = b
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .expect("events");
        assert_eq!(resp.status(), 200, "GET /api/v1/events");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        SseReader {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }
}

async fn json_or_null(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// One Server-Sent Events message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseMessage {
    /// The event number of an `id` of `BOOT-SEQ`.
    pub fn seq(&self) -> Option<u64> {
        self.id.as_deref()?.split_once('-')?.1.parse().ok()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Reads messages off an event stream (comments and keep-alives skipped).
pub struct SseReader {
    stream: ByteStream,
    buf: String,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader").finish_non_exhaustive()
    }
}

impl SseReader {
    /// The next message; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(m) = parse_block(&block) {
                    return Some(m);
                }
                continue;
            }
            let chunk = self.stream.next().await?.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The first message (within `secs`) that `pred` accepts; the others are dropped.
    pub async fn until(&mut self, secs: u64, pred: impl Fn(&SseMessage) -> bool) -> SseMessage {
        crate::within(secs, "an event on the admin stream", async {
            loop {
                let m = self.next().await.expect("event stream ended");
                if pred(&m) {
                    return m;
                }
            }
        })
        .await
    }
}

fn parse_block(block: &str) -> Option<SseMessage> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseMessage {
        id,
        event: event.unwrap_or_else(|| "message".to_owned()),
        data: data.join("\n"),
    })
}

/// A backend whose `/status/NNN` answers NNN (body `status NNN`); everything else 200 `ok`.
#[derive(Debug)]
pub struct StatusBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl StatusBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let code = req
                            .uri()
                            .path()
                            .strip_prefix("/status/")
                            .and_then(|c| c.parse::<u16>().ok())
                            .and_then(|c| StatusCode::from_u16(c).ok())
                            .unwrap_or(StatusCode::OK);
                        let mut resp = Response::new(Full::new(Bytes::from(format!(
                            "status {}",
                            code.as_u16()
                        ))));
                        *resp.status_mut() = code;
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for StatusBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
