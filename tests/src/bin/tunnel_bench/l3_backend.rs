//! The backends of the L3 phase: one small HTTP/1.1 server per provider, in this process,
//! each knowing which provider it sits behind. `GET /l3?nonce=N&len=L` answers a body of `L`
//! bytes generated from (provider id, nonce) with the headers `x-provider-id` and
//! `x-body-sha256` (hex). The visitor computes the same body's SHA-256 from the provider it
//! addressed and the nonce it sent, so a response from another provider (misrouted), for
//! another request, or with changed bytes (corrupted) is told apart from a correct one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub(crate) const PROVIDER_HEADER: &str = "x-provider-id";
pub(crate) const SHA_HEADER: &str = "x-body-sha256";
/// Longest body a request may ask for.
const MAX_LEN: usize = 1 << 20;

/// The body for (`provider`, `nonce`): SHA-256 in counter mode, `len` bytes.
pub(crate) fn body(provider: &str, nonce: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(provider.as_bytes());
        h.update(nonce.to_be_bytes());
        h.update(block.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        block += 1;
    }
    out.truncate(len);
    out
}

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The servers; they stop when this is dropped.
#[derive(Debug)]
pub(crate) struct Backends {
    pub(crate) addrs: Vec<SocketAddr>,
    _tasks: JoinSet<()>,
}

impl Backends {
    /// One server on 127.0.0.1:0 per provider id.
    pub(crate) async fn start(providers: &[String]) -> anyhow::Result<Self> {
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::with_capacity(providers.len());
        for id in providers {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("bind an L3 backend")?;
            addrs.push(listener.local_addr()?);
            let id: Arc<str> = id.as_str().into();
            tasks.spawn(serve(listener, id));
        }
        Ok(Self {
            addrs,
            _tasks: tasks,
        })
    }
}

async fn serve(listener: TcpListener, id: Arc<str>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // EMFILE and friends: back off a little instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let id = id.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let id = id.clone();
                async move { Ok::<_, Infallible>(answer(&id, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
        // Reap finished connections so the set stays as large as the open ones.
        while conns.try_join_next().is_some() {}
    }
}

fn answer(id: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (Some(nonce), Some(len)) = (param("nonce"), param("len")) else {
        return plain(StatusCode::BAD_REQUEST, "want /l3?nonce=N&len=L\n");
    };
    let Some(len) = usize::try_from(len).ok().filter(|l| *l <= MAX_LEN) else {
        return plain(StatusCode::BAD_REQUEST, "len too large\n");
    };
    let bytes = body(id, nonce, len);
    let sha = sha256_hex(&bytes);
    Response::builder()
        .header(PROVIDER_HEADER, id)
        .header(SHA_HEADER, sha)
        .body(Full::new(Bytes::from(bytes)))
        .expect("static headers and a peer id make a valid response")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_differ_by_provider_and_nonce_and_have_the_asked_length() {
        let a = body("A", 1, 5000);
        assert_eq!(a.len(), 5000);
        assert_eq!(a, body("A", 1, 5000), "deterministic");
        assert_ne!(sha256_hex(&a), sha256_hex(&body("B", 1, 5000)));
        assert_ne!(sha256_hex(&a), sha256_hex(&body("A", 2, 5000)));
        assert_eq!(&body("A", 1, 10)[..], &a[..10]);
    }
}
