//! What the container saw of one request: method, path, the TCP peer, and every header in
//! the order it arrived. The page and `/api/info` both render this view, so they always agree.

use std::net::SocketAddr;

use hyper::Request;

/// Headers a proxy in front of the app sets or rewrites; the page highlights them.
pub const FORWARDING_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "host",
];

/// True for the headers in [`FORWARDING_HEADERS`] (names compared case-insensitively).
pub fn is_forwarding_header(name: &str) -> bool {
    FORWARDING_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// A request as received, decoupled from hyper's types. Header values that are not UTF-8 are
/// shown lossily (U+FFFD), never rejected.
#[derive(Debug, Clone)]
pub(crate) struct SeenRequest {
    pub(crate) method: String,
    /// Path and query, as sent.
    pub(crate) target: String,
    pub(crate) remote: SocketAddr,
    /// Lower-case names, arrival order, duplicates kept.
    pub(crate) headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub(crate) fn from_request<B>(req: &Request<B>, remote: SocketAddr) -> Self {
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
        let headers = req
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Self {
            method: req.method().as_str().to_owned(),
            target,
            remote,
            headers,
        }
    }

    /// All values of `name` joined with `", "` (how HTTP folds repeated headers), if present.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_folded_in_arrival_order() {
        let req = Request::builder()
            .uri("/a?b=1")
            .header("X-Forwarded-For", "203.0.113.7")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .expect("static request is valid");
        let seen = SeenRequest::from_request(&req, ([127, 0, 0, 1], 9).into());
        assert_eq!(seen.target, "/a?b=1");
        assert_eq!(
            seen.header("X-FORWARDED-FOR").as_deref(),
            Some("203.0.113.7, 10.0.0.1")
        );
        assert_eq!(seen.header("forwarded"), None);
    }

    #[test]
    fn forwarding_headers_are_recognised_in_any_case() {
        for name in ["Host", "X-Forwarded-Proto", "FORWARDED", "x-forwarded-host"] {
            assert!(is_forwarding_header(name), "{name}");
        }
        assert!(!is_forwarding_header("user-agent"));
    }
}
