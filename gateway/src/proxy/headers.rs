//! Header rewriting between visitor and provider: hop-by-hop headers removed (RFC 9110
//! §7.6.1, including those named by `Connection`), `X-Forwarded-*` and `Forwarded` set from
//! what the gateway saw — incoming copies are discarded, never trusted — and `Host` set to the
//! routed host so HTTP/2 requests (which carry `:authority`) become valid HTTP/1.1.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

const FORWARDING: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// Removes hop-by-hop headers, and `upgrade` unless `keep_upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Whether an HTTP/1.1 request asks for a protocol upgrade (WebSocket).
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether a message says its connection closes after it (`Connection: close`).
pub(crate) fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Rewrites visitor request headers for the provider.
pub(crate) fn upstream_request_headers(
    headers: &mut HeaderMap,
    host: &str,
    client: IpAddr,
    upgrade: bool,
) {
    strip_hop_by_hop(headers, upgrade);
    for name in FORWARDING {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let host_value =
        HeaderValue::from_str(host).expect("a normalised host is a valid header value");
    headers.insert(header::HOST, host_value.clone());
    let ip = client.to_canonical();
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value"),
    );
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    headers.insert("x-forwarded-host", host_value);
    let node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    headers.insert(
        "forwarded",
        HeaderValue::from_str(&format!("for={node};host={host};proto=https"))
            .expect("IP and normalised host are valid header characters"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn forwarded_headers_replace_forged_ones() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("host", "ignored"),
        ]);
        upstream_request_headers(
            &mut h,
            "blog.apps.example.com",
            "192.0.2.9".parse().expect("ip"),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "blog.apps.example.com");
        assert_eq!(h["host"], "blog.apps.example.com");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.9;host=blog.apps.example.com;proto=https"
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn ipv6_forwarded_is_quoted_and_mapped_v4_canonical() {
        let mut h = HeaderMap::new();
        upstream_request_headers(
            &mut h,
            "a.example",
            "2001:db8::1".parse().expect("ip"),
            false,
        );
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";host=a.example;proto=https"
        );
        let mut h = HeaderMap::new();
        upstream_request_headers(
            &mut h,
            "a.example",
            "::ffff:192.0.2.1".parse().expect("ip"),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
    }

    #[test]
    fn connection_close_is_found_among_tokens() {
        let cases = [
            (&[][..], false),
            (&[("connection", "keep-alive")][..], false),
            (&[("connection", "close")][..], true),
            (&[("connection", "Keep-Alive, CLOSE")][..], true),
            (
                &[("connection", "upgrade"), ("connection", " close ")][..],
                true,
            ),
            (&[("x-connection", "close")][..], false),
        ];
        for (pairs, want) in cases {
            assert_eq!(asks_to_close(&map(pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn upgrade_kept_for_websocket() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        upstream_request_headers(&mut h, "a.example", "192.0.2.1".parse().expect("ip"), true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}
