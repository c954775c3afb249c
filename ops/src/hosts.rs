//! Which `Host` header values an admin listener answers to: IP literals (any port),
//! `localhost`, and the names its operator lists (`--admin-host`). Anything else gets 421
//! from the caller, because a loopback listener without tokens is otherwise readable by any
//! web page through DNS rebinding (a name the attacker controls, re-pointed at 127.0.0.1).

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderValue;

/// Whether `host` (a `Host` header value, port allowed) names this listener; no header at
/// all is refused (HTTP/1.1 requires one).
pub fn host_allowed(host: Option<&HeaderValue>, extra: &[String]) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || extra
            .iter()
            .any(|e| e.strip_suffix('.').unwrap_or(e).eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_and_listed_names_only() {
        let extra = vec!["metrics.example.com.".to_owned()];
        let check =
            |h: &str| host_allowed(Some(&HeaderValue::from_str(h).expect("header")), &extra);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9181",
            "10.0.0.7:9181",
            "[::1]:9181",
            "[::1]",
            "localhost",
            "LOCALHOST:9181",
            "metrics.example.com:9181",
            "Metrics.Example.Com",
        ] {
            assert!(check(ok), "{ok} refused");
        }
        for bad in [
            "evil.example",
            "evil.example:9181",
            "localhost.evil.example",
            "[not-v6]:1",
            "[::1",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!check(bad), "{bad} allowed");
        }
        assert!(!host_allowed(None, &extra));
    }
}
