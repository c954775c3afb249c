//! The visitor-facing request handler: route by host, apply rate limits, and carry the
//! request over a QUIC stream to the provider as HTTP/1.1, streaming bodies both ways. Streams
//! are kept open between requests and reused per route ([`pool`], [`upstream`]), so a run of
//! requests costs the provider one app connection instead of one per request.
//!
//! Errors are classified here, once, into the status a visitor sees: 400 (no usable host),
//! 404 (no such app: the provider is never contacted), 429 (rate limit, with Retry-After),
//! 502 (provider offline or the tunnel broke), 504 (no response head in time). Requests to
//! registered names are also counted per app and per tunnel ([`crate::traffic`]).

mod headers;
mod log;
mod pool;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use peercompute_identity::PeerId;
use tracing::debug;

use crate::events::EventKind;
use crate::host::{HostRoute, request_host, route_for};
use crate::ratelimit::{Limited, retry_after_secs};
use crate::registry::Route;
use crate::state::Shared;
use crate::traffic::{ErrorKind, TrafficCell};
use upstream::{Exchange, Replay};

pub(crate) use headers::strip_hop_by_hop;
pub(crate) use upstream::UpstreamPool;

/// Body type of every response the gateway produces.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

const MAX_URI_BYTES: usize = 8 * 1024;

/// hyper service entry point.
pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: SocketAddr,
) -> Result<Response<ProxyBody>, Infallible> {
    let pending = shared
        .access_log
        .as_ref()
        .map(|_| log::Pending::start(&req, client));
    let bytes_in = pending.as_ref().map(log::Pending::bytes_in);
    let (response, counted) = route_request(req, &shared, client, bytes_in).await;
    let status = response.status().as_u16();
    shared.metrics.request(status);
    if let Some(counted) = &counted {
        counted.route.record_status(status);
        if let Some(tunnel) = &counted.tunnel {
            tunnel.record_status(status);
        }
    }
    let response = match (pending, &shared.access_log) {
        (Some(pending), Some(access_log)) => {
            let (route, provider) = match counted {
                Some(c) => (Some(c.name), c.provider.map(|p| p.to_string())),
                None => (None, None),
            };
            pending.attach(response, access_log.clone(), route, provider)
        }
        _ => response,
    };
    Ok(response)
}

/// The traffic cells a request to a registered name counts in.
struct Counted {
    name: String,
    route: Arc<TrafficCell>,
    /// `None` when no tunnel serves the name (offline).
    tunnel: Option<Arc<TrafficCell>>,
    provider: Option<PeerId>,
}

impl Counted {
    fn of(name: String, route: &Route) -> Self {
        Self {
            name,
            route: route.traffic.clone(),
            tunnel: Some(route.tunnel_traffic.clone()),
            provider: Some(route.peer),
        }
    }

    /// A request to a name no tunnel here serves, counted as `kind`.
    fn unserved(shared: &Shared, name: String, kind: ErrorKind) -> Self {
        let counted = Self {
            route: shared.traffic.cell_for(&name),
            tunnel: None,
            provider: None,
            name,
        };
        counted.error(kind);
        counted
    }

    fn error(&self, kind: ErrorKind) {
        self.route.record_error(kind);
        if let Some(tunnel) = &self.tunnel {
            tunnel.record_error(kind);
        }
    }
}

/// Routes and forwards `req`; `bytes_in` counts its body for the access log.
async fn route_request(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    client: SocketAddr,
    bytes_in: Option<Arc<AtomicU64>>,
) -> (Response<ProxyBody>, Option<Counted>) {
    if req.uri().to_string().len() > MAX_URI_BYTES {
        return (
            text(StatusCode::URI_TOO_LONG, "request URI too long\n"),
            None,
        );
    }
    if req.method() == Method::CONNECT {
        let resp = text(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
        return (resp, None);
    }
    let Some(host) = request_host(&req) else {
        let resp = text(
            StatusCode::BAD_REQUEST,
            "missing, duplicated or conflicting Host / :authority\n",
        );
        return (resp, None);
    };
    let name = match route_for(&host, &shared.config.domain) {
        HostRoute::App(name) => name,
        HostRoute::Apex => {
            let resp = text(
                StatusCode::NOT_FOUND,
                "this is a Peer Compute gateway; apps answer at https://<name>.<domain>\n",
            );
            return (resp, None);
        }
        HostRoute::Foreign => return (not_found(&host), None),
    };
    if let Err(limited) = shared.limits.check(&host, client.ip()) {
        return rate_limited(shared, name, limited);
    }
    let Some(route) = shared.registry.lookup(&name) else {
        if let Some(gateway) = shared.served_elsewhere(&name) {
            return elsewhere(shared, name, &host, &gateway);
        }
        if !shared.registry.is_offline(&name) {
            return (not_found(&host), None);
        }
        // An offline name was registered, so it has (or shares) a cell: bounded.
        let counted = Counted::unserved(shared, name, ErrorKind::Offline);
        let resp = text(
            StatusCode::BAD_GATEWAY,
            format!("the provider serving {host} is offline\n"),
        );
        return (resp, Some(counted));
    };
    let counted = Counted::of(name, &route);
    let started = Instant::now();
    let target = Target {
        name: &counted.name,
        host: &host,
        client,
        bytes_in,
    };
    let response = match forward(req, route, target, shared).await {
        Ok(resp) => {
            let elapsed = started.elapsed();
            counted.route.observe_head(elapsed);
            if let Some(tunnel) = &counted.tunnel {
                tunnel.observe_head(elapsed);
            }
            resp
        }
        Err(e) => {
            debug!(route = %counted.name, "proxy error: {e}");
            counted.error(e.kind());
            e.into_response(&host)
        }
    };
    shared
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    (response, Some(counted))
}

/// 502 at once, with Retry-After: the name's tunnel is at another gateway of the cluster
/// (its provider is reconnecting to this one; plan §5 — gateways do not forward).
fn elsewhere(
    shared: &Shared,
    name: String,
    host: &str,
    gateway: &str,
) -> (Response<ProxyBody>, Option<Counted>) {
    // An owned name: the cells stay bounded by the owned names.
    let counted = Counted::unserved(shared, name, ErrorKind::Elsewhere);
    let mut resp = text(
        StatusCode::BAD_GATEWAY,
        format!(
            "{host} is served by another gateway of this domain right now ({gateway}); retry \
             in a few seconds\n"
        ),
    );
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("2"),
    );
    (resp, Some(counted))
}

/// 429 with Retry-After. A registered name's host limit starts a rate-limit episode (one
/// event until it has been quiet for a while); per-IP limits are only counted.
fn rate_limited(
    shared: &Shared,
    name: String,
    limited: Limited,
) -> (Response<ProxyBody>, Option<Counted>) {
    let (kind, wait) = match limited {
        Limited::Host(w) => ("host", w),
        Limited::Ip(w) => ("ip", w),
    };
    shared
        .metrics
        .rate_limited
        .get_or_create(&crate::metrics::KindLabel { kind })
        .inc();
    // The 429 path is cold: a lookup here costs the request path nothing.
    let registered = shared.registry.lookup(&name);
    if registered.is_some()
        && matches!(limited, Limited::Host(_))
        && shared.traffic.rate_limited(&name, Instant::now())
    {
        shared.events.publish(EventKind::RateLimitStarted {
            route: name.clone(),
            kind: kind.to_owned(),
        });
    }
    let counted = registered.map(|route| Counted::of(name, &route));
    let mut resp = text(
        StatusCode::TOO_MANY_REQUESTS,
        format!("rate limit exceeded ({kind}); retry later\n"),
    );
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(retry_after_secs(wait)),
    );
    (resp, counted)
}

fn not_found(host: &str) -> Response<ProxyBody> {
    text(
        StatusCode::NOT_FOUND,
        format!("no app is published at {host}\n"),
    )
}

/// Why a proxied request failed.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("cannot open a tunnel stream: {0}")]
    Open(String),
    #[error("tunnel stream failed: {0}")]
    Tunnel(String),
    #[error("no response head within {0:?}")]
    Timeout(Duration),
    /// The tunnel carries `max_streams_per_tunnel` (this many) requests already.
    #[error("the tunnel has {0} requests open, its limit")]
    Busy(usize),
    /// The visitor's own body could not be read (a malformed chunk, say): their fault, not
    /// the provider's. `close`: an HTTP/1 connection, which cannot be framed any further.
    #[error("the request body is malformed: {reason}")]
    BadBody { reason: String, close: bool },
}

impl ProxyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Open(_) | Self::Tunnel(_) | Self::Busy(_) => ErrorKind::Unreachable,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::BadBody { .. } => ErrorKind::BadBody,
        }
    }

    fn into_response(self, host: &str) -> Response<ProxyBody> {
        match self {
            Self::Timeout(t) => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the app at {host} did not answer within {}s\n", t.as_secs()),
            ),
            Self::Open(_) | Self::Tunnel(_) => text(
                StatusCode::BAD_GATEWAY,
                format!("the provider serving {host} could not be reached\n"),
            ),
            Self::Busy(n) => text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the provider serving {host} has {n} requests open, the gateway's limit; \
                     try again\n"
                ),
            ),
            Self::BadBody { reason, close } => {
                let mut resp = text(
                    StatusCode::BAD_REQUEST,
                    format!("the request body is malformed: {reason}\n"),
                );
                // HTTP/2 ends just the stream (and has no Connection header).
                if close {
                    resp.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
                resp
            }
        }
    }
}

/// Where a request goes, and who sent it.
struct Target<'a> {
    name: &'a str,
    host: &'a str,
    client: SocketAddr,
    /// Counts the request body for the access log (when it is on).
    bytes_in: Option<Arc<AtomicU64>>,
}

async fn forward(
    mut req: Request<Incoming>,
    route: Route,
    target: Target<'_>,
    shared: &Arc<Shared>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Target {
        name,
        host,
        client,
        bytes_in,
    } = target;
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    // Before the version is rewritten for the provider.
    let http1 = req.version() < Version::HTTP_2;
    let (mut parts, body) = req.into_parts();
    headers::upstream_request_headers(&mut parts.headers, host, client.ip(), upgrade);
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let replay = Replay::of(&parts.method, body.is_end_stream());
    let up = (
        shared.metrics.bytes_upload.clone(),
        route.traffic.clone(),
        route.tunnel_traffic.clone(),
    );
    let body_error: Arc<OnceLock<String>> = Arc::default();
    let failed = body_error.clone();
    let body = body
        .map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                let n = d.len() as u64;
                up.0.inc_by(n);
                up.1.add_in(n);
                up.2.add_in(n);
                if let Some(logged) = &bytes_in {
                    logged.fetch_add(n, Ordering::Relaxed);
                }
            }
            f
        })
        .map_err(move |e| {
            failed.get_or_init(|| {
                // hyper's message names the step; its source names what was wrong.
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    reason = format!("{reason}: {cause}");
                    source = cause.source();
                }
                reason
            });
            e
        })
        .boxed();
    let upstream_req = Request::from_parts(parts, body);

    let exchange = Exchange {
        route: &route,
        name,
        client,
        shared,
    };
    let (mut resp, sender, pool) = match exchange.send(upstream_req, replay).await {
        Err(ProxyError::Tunnel(_)) if body_error.get().is_some() => {
            return Err(ProxyError::BadBody {
                reason: body_error.get().cloned().unwrap_or_default(),
                close: http1,
            });
        }
        other => other?,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // A 101 nobody asked for would desynchronise the visitor's connection.
            return Err(ProxyError::Tunnel("unsolicited 101 from the app".into()));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(a), Ok(b)) => {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b))
                            .await;
                }
                (a, b) => debug!("upgrade failed: visitor {:?}, app {:?}", a.err(), b.err()),
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, empty()));
    }
    // A stream that carried an upgrade request, or whose app asked to close, is not reused.
    if !upgrade && !headers::asks_to_close(resp.headers()) {
        upstream::recycle(pool, sender);
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let down = (
        shared.metrics.bytes_download.clone(),
        route.traffic.clone(),
        route.tunnel_traffic.clone(),
    );
    let body = body
        .map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                let n = d.len() as u64;
                down.0.inc_by(n);
                down.1.add_out(n);
                down.2.add_out(n);
            }
            f
        })
        .boxed();
    Ok(Response::from_parts(parts, body))
}

/// `/path?query` of any request-target form; `/` when empty.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map(|pq| pq.as_str())
        .filter(|s| s.starts_with('/'))
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// A small plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty() -> ProxyBody {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_of_each_target_form() {
        let cases = [
            ("/a/b?c=d", "/a/b?c=d"),
            ("https://x.example/p?q", "/p?q"),
            ("https://x.example", "/"),
            ("*", "/"),
        ];
        for (input, want) in cases {
            let uri: Uri = input.parse().expect("uri");
            assert_eq!(origin_form(&uri), want, "{input}");
        }
    }
}
