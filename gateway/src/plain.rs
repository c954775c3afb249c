//! The plain-HTTP/1.1 listener of port 80: ACME HTTP-01 answers, else the redirect to HTTPS.
//! (The admin listener is [`crate::admin`].)

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::host::normalize_host;
use crate::proxy::{ProxyBody, text};
use crate::state::Shared;

type Handler = fn(&Request<Incoming>, &Shared) -> Response<ProxyBody>;

/// Serves `handler` on `listener` until `shutdown`.
pub(crate) async fn serve_plain(
    listener: TcpListener,
    shared: Arc<Shared>,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = handler(&req, &shared);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Port 80: ACME HTTP-01 answers, else a permanent redirect to the same URL over HTTPS.
pub(crate) fn redirect(req: &Request<Incoming>, shared: &Shared) -> Response<ProxyBody> {
    if let Some(key_authorization) = shared.acme.http01_answer(req.uri().path()) {
        let mut resp = text(StatusCode::OK, key_authorization);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        return resp;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(normalize_host);
    let Some(host) = host else {
        return text(StatusCode::BAD_REQUEST, "missing Host\n");
    };
    let port = match shared.config.public_port {
        Some(p) if p != 443 => format!(":{p}"),
        _ => String::new(),
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut resp = text(
        StatusCode::PERMANENT_REDIRECT,
        format!("moved to {location}\n"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
