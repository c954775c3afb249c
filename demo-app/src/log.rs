//! Access log: one line per request and a start-up line, written to stdout and flushed at
//! once so `docker logs -f` (and tests waiting for a line) see them immediately. Plain text,
//! no logging framework, to keep the static binary small. Write errors (a closed stdout) are
//! ignored: logging never takes the server down.

use std::fmt;
use std::io::Write;

use hyper::StatusCode;

use crate::request::SeenRequest;

/// Writes one line to stdout and flushes it.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// `GET /api/info 200 xff=203.0.113.7 peer=10.0.0.2:51234`
pub(crate) fn request(seen: &SeenRequest, status: StatusCode) {
    let xff = seen.header("x-forwarded-for");
    line(format_args!(
        "{} {} {} xff={} peer={}",
        seen.method,
        seen.target,
        status.as_u16(),
        xff.as_deref().unwrap_or("-"),
        seen.remote
    ));
}
