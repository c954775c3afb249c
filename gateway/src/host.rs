//! Which route a request is for, from its host (`Host` header or HTTP/2 `:authority`).
//!
//! Normalisation: port stripped, ASCII case folded, one trailing dot removed. The result is
//! matched against the gateway's domain: `<name>.<domain>` routes to `name`; the apex and any
//! other host are not routes, so they never reach a provider.

use http::Request;

/// What a host means to this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostRoute {
    /// `<name>.<domain>` with a syntactically valid name.
    App(String),
    /// The domain itself.
    Apex,
    /// Anything else: another domain, an IP literal, a nested subdomain, a bad label.
    Foreign,
}

/// The normalised host of a request: `:authority` for HTTP/2 (and absolute-form URIs),
/// otherwise the `Host` header. `None` when absent, duplicated with different values, or
/// malformed.
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<String> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(h), None) => Some(h.to_str().ok()?),
        (None, _) => None,
        (Some(_), Some(_)) => return None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    let raw = match (authority, header) {
        (Some(a), Some(h)) => {
            // Both present (HTTP/2 with a Host header, or absolute-form URI): they must agree.
            let (a, h) = (normalize_host(a)?, normalize_host(h)?);
            return (a == h).then_some(a);
        }
        (Some(a), None) => a,
        (None, Some(h)) => h,
        (None, None) => return None,
    };
    normalize_host(raw)
}

/// Strips the port, folds case and removes one trailing dot. `None` for empty or malformed
/// hosts (userinfo, bad characters, bad port).
pub(crate) fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.contains('@') {
        return None;
    }
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: keep as is, it is never a route.
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        return Some(format!("[{}]", rest[..end].to_ascii_lowercase()));
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if valid_port(port) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

/// Classifies a normalised host against the (normalised) domain.
pub(crate) fn route_for(host: &str, domain: &str) -> HostRoute {
    if host == domain {
        return HostRoute::Apex;
    }
    match host
        .strip_suffix(domain)
        .and_then(|prefix| prefix.strip_suffix('.'))
    {
        Some(label) if peercompute_tunnel_proto::validate_name(label).is_ok() => {
            HostRoute::App(label.to_owned())
        }
        _ => HostRoute::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases = [
            ("Blog.Apps.Example.com", Some("blog.apps.example.com")),
            ("blog.apps.example.com.", Some("blog.apps.example.com")),
            ("blog.apps.example.com:8443", Some("blog.apps.example.com")),
            ("blog.apps.example.com.:443", Some("blog.apps.example.com")),
            ("[::1]:443", Some("[::1]")),
            ("", None),
            ("user@blog.apps.example.com", None),
            ("blog.apps.example.com:99999", None),
            ("blog.apps.example.com:", None),
            ("bl og.example.com", None),
            ("blog\u{0}.example.com", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_host(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn routing_table() {
        let d = "apps.example.com";
        assert_eq!(
            route_for("blog.apps.example.com", d),
            HostRoute::App("blog".into())
        );
        assert_eq!(route_for("apps.example.com", d), HostRoute::Apex);
        assert_eq!(route_for("a.b.apps.example.com", d), HostRoute::Foreign);
        assert_eq!(route_for("evilapps.example.com", d), HostRoute::Foreign);
        assert_eq!(route_for("127.0.0.1", d), HostRoute::Foreign);
        assert_eq!(route_for("localhost", d), HostRoute::Foreign);
        assert_eq!(route_for("-x.apps.example.com", d), HostRoute::Foreign);
    }

    #[test]
    fn request_host_sources() {
        let req = Request::builder()
            .uri("/")
            .header("host", "A.apps.example.com:443")
            .body(())
            .expect("request");
        assert_eq!(request_host(&req).as_deref(), Some("a.apps.example.com"));

        let h2 = Request::builder()
            .uri("https://b.apps.example.com/x")
            .body(())
            .expect("request");
        assert_eq!(request_host(&h2).as_deref(), Some("b.apps.example.com"));

        let differing = Request::builder()
            .uri("https://b.apps.example.com/x")
            .header("host", "c.apps.example.com")
            .body(())
            .expect("request");
        assert_eq!(request_host(&differing), None);

        let dup = Request::builder()
            .uri("/")
            .header("host", "a.apps.example.com")
            .header("host", "b.apps.example.com")
            .body(())
            .expect("request");
        assert_eq!(request_host(&dup), None);

        let none = Request::builder().uri("/").body(()).expect("request");
        assert_eq!(request_host(&none), None);
    }
}
