//! `peercompute-demo`: the small web app the quickstart deploys through the whole system
//! (visitor → HTTPS gateway → QUIC tunnel → provider → container), and the workload the
//! end-to-end tests run in their containers.
//!
//! It answers, over plain HTTP/1.1 (TLS ends at the gateway):
//!
//! | route              | what                                                                  |
//! |--------------------|-----------------------------------------------------------------------|
//! | `GET /`            | an HTML page: which provider served it, the request headers as the container received them (`X-Forwarded-*`, `Forwarded`, `Host` highlighted), a live WebSocket counter and echo box |
//! | `GET /ws`          | WebSocket: `{"counter": n}` every second, `{"echo": "…"}` for each text message |
//! | `GET /api/info`    | the page's information as JSON                                        |
//! | `GET /healthz`     | `ok`                                                                  |
//! | `GET /proc-status` | `/proc/self/status`, for sandbox checks from outside (`CapEff`, `NoNewPrivs`, `Seccomp`) |
//!
//! Modules, in request order: `routes` (dispatch, response helpers), `request` (what the
//! container saw of a request), `page` (HTML, [`escape_html`]), `api` (JSON), `ws` (handshake
//! and session), `log` (one flushed stdout line per request), `info` ([`Info`]: provider,
//! deployment, name, hostname from the environment).
//!
//! The binary reads `PORT` / `--port`, binds `0.0.0.0`, and calls [`serve`]; tests bind
//! `127.0.0.1:0` themselves and call [`serve`] too.
//!
//! # Static build
//!
//! The image is `FROM scratch`, so the binary must be fully static and need nothing at run
//! time (no DNS, no TLS, no files it must read). From the workspace root:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu -p peercompute-demo
//! ldd target/x86_64-unknown-linux-gnu/release/peercompute-demo   # "statically linked"
//! ```
//!
//! `--target` matters: with it, `RUSTFLAGS` does not reach build scripts and proc macros,
//! which must stay dynamic. The result is a static-pie ELF of about 14 MB (the release
//! profile keeps line tables), about 2.4 MB after `strip`. It runs as is in `FROM scratch`,
//! as PID 1 or under `docker --init`, with `--cap-drop ALL`.

mod api;
mod info;
mod log;
mod page;
mod request;
mod routes;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use info::{ENV_DEPLOYMENT, ENV_NAME, ENV_PROVIDER, Info};
pub use log::line as log_line;
pub use page::escape_html;
pub use request::{FORWARDING_HEADERS, is_forwarding_header};

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP/1.1 (with upgrades) on `listener` until the task is dropped; each connection
/// runs in its own task. Accept errors (out of file descriptors, …) are logged and retried
/// after a short pause, so this never returns on its own.
pub async fn serve(listener: TcpListener, info: Info) {
    let info = Arc::new(info);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                log::line(format_args!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let info = info.clone();
        let conn = builder.serve_connection(
            TokioIo::new(tcp),
            service_fn(move |req| routes::handle(req, remote, info.clone())),
        );
        tokio::spawn(async move {
            // Errors here are the client's (reset, malformed request, header timeout); the
            // request log already has everything that was answered.
            let _ = conn.with_upgrades().await;
        });
    }
}
