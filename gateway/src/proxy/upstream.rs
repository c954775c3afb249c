//! Getting a request to the app: on an idle stream of the route's pool when there is one,
//! otherwise on a fresh tunnel stream with its own HTTP/1.1 client connection; and giving the
//! stream back to the pool once its exchange is complete.
//!
//! A fresh stream starts with a [`StreamHeader`] naming the route and the visitor that caused
//! it to be opened. Streams are reused by later requests from other visitors, so the header's
//! client address is informational only (the provider uses just the route name): per request,
//! the forwarding headers set in [`super::headers`] are the source of truth.
//!
//! Retry rule: a request goes out at most twice, and the second time only on a fresh stream
//! after the first one failed before any response head, when either hyper handed the request
//! back unsent (the stream had closed while idle), or the request is idempotent and has no
//! body, so replaying it is safe (RFC 9110 §9.2.2), and the first stream was a *reused* one
//! (the app closed its keep-alive connection while the request was on its way) or a fresh one
//! that the provider closed before a complete response head (the app's connection was reset or
//! closed unanswered: under a burst of new connections an app's listen queue overflows and its
//! kernel resets some of them), or the provider's whole tunnel ended under it (a robot or
//! provider that crashed: the retry goes to another provider of the name). A request whose
//! body may have been partly sent is never
//! retried, nor one whose fresh stream timed out or carried a malformed answer.
//!
//! Names served by several providers (grants): the retry goes to another provider of the
//! name when there is one, and a request whose first stream could not even be opened (nothing
//! was sent, whatever its method) goes once to another provider too. Each attempt counts as an
//! outstanding request of its route while it waits for the response head, which is what the
//! registry's least-outstanding pick reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Method, Request, Response, request};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use peercompute_tunnel_proto::{StreamHeader, StreamKind};
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::pool::IdlePool;
use super::{ProxyBody, ProxyError, empty};
use crate::registry::Route;
use crate::state::Shared;

/// The request half of one HTTP/1.1 connection over one tunnel stream.
pub(crate) type Upstream = SendRequest<ProxyBody>;

/// Idle upstream streams of one route registration.
pub(crate) type UpstreamPool = IdlePool<Upstream>;

const OPEN_STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a request waits for one of its tunnel's stream permits (`max_streams_per_tunnel`)
/// before a 502: a burst is smoothed, a provider holding every stream is not waited for.
const STREAM_PERMIT_WAIT: Duration = Duration::from_secs(1);
/// Largest response head (and read buffer) of one upstream stream: hyper's default is
/// ~400 KiB, which a hostile provider could make the gateway hold on every open stream.
const MAX_UPSTREAM_BUF: usize = 64 * 1024;

/// What a request needs to reach the app once.
pub(super) struct Exchange<'a> {
    pub(super) route: &'a Route,
    pub(super) name: &'a str,
    pub(super) client: SocketAddr,
    pub(super) shared: &'a Arc<Shared>,
}

impl Exchange<'_> {
    /// Sends `req` and waits for the response head (within the upstream timeout per attempt).
    /// Returns the connection too, with the pool of the route that answered, for [`recycle`]
    /// once the exchange is complete.
    pub(super) async fn send(
        &self,
        req: Request<ProxyBody>,
        replay: Replay,
    ) -> Result<(Response<Incoming>, Upstream, Arc<UpstreamPool>), ProxyError> {
        let timeout = self.shared.config.upstream_timeout;
        let head = replay.prepare(&req);
        let _inflight = self.route.begin();
        let (mut sender, reused) = match self.route.pool.checkout(Instant::now()) {
            Some(sender) => (sender, true),
            None => match self.open(self.route).await {
                Ok(sender) => (sender, false),
                // Nothing was sent: the request may go to another provider of the name.
                Err(e) => return self.elsewhere(req, e).await,
            },
        };
        let mut e = match tokio::time::timeout(timeout, sender.try_send_request(req)).await {
            Err(_) => return Err(ProxyError::Timeout(timeout)),
            Ok(Ok(resp)) => return Ok((resp, sender, self.route.pool.clone())),
            Ok(Err(e)) => e,
        };
        let req = match (e.take_message(), head) {
            (Some(unsent), _) => unsent,
            (None, Some(parts))
                if reused
                    || e.error().is_incomplete_message()
                    || self.route.conn.close_reason().is_some() =>
            {
                Request::from_parts(parts, empty())
            }
            _ => return Err(ProxyError::Tunnel(e.into_error().to_string())),
        };
        // Another provider of the name when there is one (this one may have just died), else
        // a fresh stream to this one.
        let target = self
            .shared
            .registry
            .lookup_other(self.name, self.route.conn.id())
            .unwrap_or_else(|| self.route.clone());
        debug!(
            route = %self.name,
            reused,
            other_provider = target.conn.id() != self.route.conn.id(),
            "stream failed before a response ({}); retrying on a fresh one",
            e.error()
        );
        self.send_once(&target, req).await
    }

    /// The first stream could not be opened, so nothing of `req` was sent: it goes once to
    /// another provider of the name, if there is one.
    async fn elsewhere(
        &self,
        req: Request<ProxyBody>,
        first: ProxyError,
    ) -> Result<(Response<Incoming>, Upstream, Arc<UpstreamPool>), ProxyError> {
        let Some(other) = self
            .shared
            .registry
            .lookup_other(self.name, self.route.conn.id())
        else {
            return Err(first);
        };
        debug!(route = %self.name, "stream open failed ({first}); sending to another provider");
        self.send_once(&other, req).await
    }

    /// One attempt on a fresh stream of `route`, no retry.
    async fn send_once(
        &self,
        route: &Route,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Upstream, Arc<UpstreamPool>), ProxyError> {
        let timeout = self.shared.config.upstream_timeout;
        let _inflight = route.begin();
        let mut sender = self.open(route).await?;
        let resp = tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| ProxyError::Timeout(timeout))?
            .map_err(|e| ProxyError::Tunnel(e.to_string()))?;
        Ok((resp, sender, route.pool.clone()))
    }

    /// Opens a stream on `route` ([`Self::open_stream`]) and keeps the route's health: the
    /// third failure in a row takes it out of its name's set for a while.
    async fn open(&self, route: &Route) -> Result<Upstream, ProxyError> {
        let opened = self.open_stream(route).await;
        match &opened {
            Ok(_) => route.opened(),
            Err(ProxyError::Busy(_)) => {}
            Err(_) => route.open_failed(Instant::now()),
        }
        opened
    }

    /// Opens a tunnel stream to the provider, writes its header and starts an HTTP/1.1 client
    /// connection on it.
    async fn open_stream(&self, route: &Route) -> Result<Upstream, ProxyError> {
        let permits = self
            .shared
            .tunnels
            .stream_permits(route.conn.id())
            .ok_or_else(|| ProxyError::Open("the provider's tunnel has ended".into()))?;
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Idle streams in the pool hold permits too: under a burst, streams on their
                // way back to the pool make new ones open, and the idle ones would then keep
                // requests out at the cap. Closing one frees its permit as its task ends.
                // (Idle streams of the tunnel's other names are closed by their idle timeout.)
                route.pool.evict_oldest();
                match tokio::time::timeout(STREAM_PERMIT_WAIT, permits.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(ProxyError::Busy(self.shared.config.max_streams_per_tunnel)),
                }
            }
        };
        let mut stream = tokio::time::timeout(OPEN_STREAM_TIMEOUT, route.conn.open_bi())
            .await
            .map_err(|_| ProxyError::Open("stream limit reached and none freed in time".into()))?
            .map_err(|e| ProxyError::Open(e.to_string()))?;
        let mut head = BytesMut::with_capacity(64);
        StreamHeader {
            kind: StreamKind::Http,
            route: self.name.to_owned(),
            client: self.client,
        }
        .encode(&mut head)
        .map_err(|e| ProxyError::Open(e.to_string()))?;
        // The provider sees the stream only once something is written on it.
        stream
            .write_all(&head)
            .await
            .map_err(|e| ProxyError::Tunnel(e.to_string()))?;

        let io = TokioIo::new(stream);
        let (sender, conn) = Builder::new()
            .max_buf_size(MAX_UPSTREAM_BUF)
            .handshake::<_, ProxyBody>(io)
            .await
            .map_err(|e| ProxyError::Tunnel(e.to_string()))?;
        let shared = self.shared.clone();
        shared.metrics.streams_open.inc();
        tokio::spawn(async move {
            // Held while the stream lives, in use or idle in the pool.
            let _permit = permit;
            if let Err(e) = conn.with_upgrades().await {
                debug!("tunnel stream ended with error: {e}");
            }
            shared.metrics.streams_open.dec();
        });
        Ok(sender)
    }
}

/// Whether a request could be sent again from its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Idempotent and without a body.
    Safe,
    Never,
}

impl Replay {
    pub(super) fn of(method: &Method, body_is_empty: bool) -> Self {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        if idempotent && body_is_empty {
            Self::Safe
        } else {
            Self::Never
        }
    }

    /// A copy of the head to send again.
    fn prepare<B>(self, req: &Request<B>) -> Option<request::Parts> {
        if self == Self::Never {
            return None;
        }
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = req.method().clone();
        parts.uri = req.uri().clone();
        parts.version = req.version();
        parts.headers = req.headers().clone();
        Some(parts)
    }
}

/// Gives `sender` back to the route's pool once its exchange is complete: the response body
/// delivered and the request body sent. A connection that closes instead (app said
/// `connection: close`, visitor went away mid-body, error) is dropped.
pub(super) fn recycle(pool: Arc<UpstreamPool>, mut sender: Upstream) {
    tokio::spawn(async move {
        if sender.ready().await.is_ok() {
            pool.checkin(sender, Instant::now());
        }
    });
}
