//! Request routing: one `match` on the path, the small response helpers, and the access-log
//! line for every request. `GET` and `HEAD` are served; other methods get 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::info::Info;
use crate::request::SeenRequest;
use crate::{api, log, page, ws};

const PROC_STATUS: &str = "/proc/self/status";

pub(crate) async fn handle<B: Send + 'static>(
    req: Request<B>,
    remote: SocketAddr,
    info: Arc<Info>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let seen = SeenRequest::from_request(&req, remote);
    let resp = if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        resp
    } else {
        match req.uri().path() {
            "/" => with_type(page::render(&info, &seen), "text/html; charset=utf-8"),
            "/api/info" => with_type(api::info_json(&info, &seen).to_string(), "application/json"),
            "/healthz" => text(StatusCode::OK, "ok"),
            "/proc-status" => proc_status().await,
            "/ws" => ws::accept(req),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    };
    log::request(&seen, resp.status());
    Ok(resp)
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A 200 whose body describes this very request, so no cache may keep it.
fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn proc_status() -> Response<Full<Bytes>> {
    match tokio::fs::read_to_string(PROC_STATUS).await {
        Ok(status) => with_type(status, "text/plain; charset=utf-8"),
        Err(e) => {
            let mut resp = with_type(
                format!("cannot read {PROC_STATUS}: {e}\n"),
                "text/plain; charset=utf-8",
            );
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}
