//! The access-log line of one visitor request (`--access-log`), written when its response body
//! ends, so it carries the bytes really sent and the full duration. Only built when the access
//! log is on; the request path pays nothing otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Body as _;

use super::ProxyBody;
use crate::access_log::{AccessLog, Entry};

/// What is known of a request before it is routed.
#[derive(Debug)]
pub(super) struct Pending {
    time: SystemTime,
    started: Instant,
    method: String,
    /// The path only: the query string never reaches the log.
    path: String,
    client: SocketAddr,
    /// Request body bytes, counted while the body streams to the app.
    bytes_in: Arc<AtomicU64>,
}

impl Pending {
    pub(super) fn start<B>(req: &Request<B>, client: SocketAddr) -> Self {
        Self {
            time: SystemTime::now(),
            started: Instant::now(),
            method: req.method().to_string(),
            // Cut to a bounded length by the logger.
            path: req.uri().path().to_owned(),
            client,
            bytes_in: Arc::default(),
        }
    }

    /// The counter the request body's bytes go to.
    pub(super) fn bytes_in(&self) -> Arc<AtomicU64> {
        self.bytes_in.clone()
    }

    /// Returns `resp` with a body that writes the log line when it ends (or is dropped, if
    /// the visitor goes away first).
    pub(super) fn attach(
        self,
        resp: Response<ProxyBody>,
        log: AccessLog,
        route: Option<String>,
        provider: Option<String>,
    ) -> Response<ProxyBody> {
        let (parts, body) = resp.into_parts();
        let mut line = Line {
            entry: Entry {
                time: self.time,
                route,
                method: self.method,
                path: self.path,
                status: parts.status.as_u16(),
                bytes_in: 0,
                bytes_out: 0,
                duration: std::time::Duration::ZERO,
                client: self.client,
                provider,
            },
            started: self.started,
            bytes_in: self.bytes_in,
            log,
        };
        let body = if body.is_end_stream() {
            drop(line);
            body
        } else {
            body.map_frame(move |f| {
                // The closure owns the whole line (not just the field), so the line is
                // recorded when the body is dropped.
                let line = &mut line;
                if let Some(d) = f.data_ref() {
                    line.entry.bytes_out += d.len() as u64;
                }
                f
            })
            .boxed()
        };
        Response::from_parts(parts, body)
    }
}

/// A line that is recorded when dropped, that is when the response body is done with.
struct Line {
    entry: Entry,
    started: Instant,
    bytes_in: Arc<AtomicU64>,
    log: AccessLog,
}

impl Drop for Line {
    fn drop(&mut self) {
        self.entry.bytes_in = self.bytes_in.load(Relaxed);
        self.entry.duration = self.started.elapsed();
        self.log.record(&self.entry);
    }
}
