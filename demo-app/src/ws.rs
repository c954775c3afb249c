//! `GET /ws`: the WebSocket endpoint that proves upgrades cross the whole path (gateway,
//! tunnel, provider). The handshake is checked and answered here with hyper's upgrade
//! machinery; once upgraded, the session sends `{"counter": n}` every second (n = 0, 1, …,
//! per connection) and answers each text message with `{"echo": "<text>"}`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::routes::text;

/// Largest message the echo accepts; bigger ones close the connection.
const MAX_MESSAGE: usize = 64 * 1024;
const TICK: Duration = Duration::from_secs(1);

/// Answers the handshake; on success the session runs in its own task once hyper hands the
/// connection over, and the caller gets the `101 Switching Protocols` to send.
pub(crate) fn accept<B: Send + 'static>(mut req: Request<B>) -> Response<Full<Bytes>> {
    let key = match check_handshake(req.method(), req.headers()) {
        Ok(key) => key,
        Err(refusal) => return refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session(upgraded).await,
            Err(e) => crate::log::line(format_args!("ws upgrade failed: {e}")),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

/// The client's `Sec-WebSocket-Key`, or the response refusing the handshake.
#[allow(clippy::result_large_err)] // the refusal is sent as is; no need to box it
fn check_handshake(method: &Method, headers: &HeaderMap) -> Result<String, Response<Full<Bytes>>> {
    let upgrade_requested =
        has_token(headers, &UPGRADE, "websocket") && has_token(headers, &CONNECTION, "upgrade");
    if method != Method::GET || !upgrade_requested {
        let mut resp = text(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket endpoint: send GET with Upgrade: websocket\n",
        );
        resp.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return Err(resp);
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut resp = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version; this server speaks 13\n",
        );
        resp.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(resp);
    }
    match headers.get(SEC_WEBSOCKET_KEY).map(HeaderValue::to_str) {
        Some(Ok(key)) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
        _ => Err(text(
            StatusCode::BAD_REQUEST,
            "missing or invalid Sec-WebSocket-Key\n",
        )),
    }
}

/// True if a comma-separated header (any occurrence) lists `token`, case-insensitively.
fn has_token(headers: &HeaderMap, name: &hyper::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn session(upgraded: Upgraded) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut counter: u64 = 0;
    loop {
        let outgoing = tokio::select! {
            _ = ticks.tick() => {
                let msg = json!({ "counter": counter });
                counter += 1;
                msg
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => json!({ "echo": text.as_str() }),
                // Pings are answered by tungstenite; a Close is answered on the next poll,
                // which then ends the stream. Binary frames are not part of the demo.
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            },
        };
        if ws.send(Message::text(outgoing.to_string())).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn handshake_table() {
        let good = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let key = check_handshake(&Method::GET, &headers(&good)).ok();
        assert_eq!(key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        // RFC 6455 section 1.3 example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );

        let status = |method: Method, pairs: &[(&'static str, &'static str)]| {
            check_handshake(&method, &headers(pairs))
                .err()
                .map(|r| r.status())
        };
        assert_eq!(
            status(Method::POST, &good),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
        assert_eq!(
            status(Method::GET, &good[2..]),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
        let old_version = [good[0], good[1], ("sec-websocket-version", "8"), good[3]];
        assert_eq!(
            status(Method::GET, &old_version),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
        assert_eq!(
            status(Method::GET, &good[..3]),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
