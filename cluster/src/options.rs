//! How to reach etcd and what to write there: [`ClusterOptions`] and the endpoint spelling
//! the gateway's `--cluster` flag takes (`etcd://H:P`, `etcds://H:P` for TLS), turned into the
//! URLs etcd-client dials.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ClusterError;

/// Options of [`ClusterStore::connect`](crate::ClusterStore::connect).
#[derive(Clone)]
pub struct ClusterOptions {
    /// The public domain this cluster of gateways serves: keys live under
    /// `/peercompute/v1/<domain>/`.
    pub domain: String,
    /// This gateway's peer id, written as `by` into every record.
    pub by: String,
    /// Where the cache is mirrored (`<state>/cluster-names.json`); `None` keeps it in memory.
    pub mirror: Option<PathBuf>,
    /// etcd user and password (the password is masked in `Debug`).
    pub user: Option<(String, String)>,
    /// TLS to etcd: CA and optional client certificate. Required for `etcds://`.
    pub tls: Option<ClusterTls>,
    /// The most one request to etcd may take before it counts as unreachable.
    pub request_timeout: Duration,
    /// The most a connection attempt to one endpoint may take.
    pub connect_timeout: Duration,
    /// The gateway lease's time to live; it is renewed every third of it.
    pub lease_ttl: Duration,
    /// How long a released name's previous owner may not take it back on its own.
    pub release_hold: Duration,
}

impl ClusterOptions {
    /// Defaults: request timeout 3 s, connect timeout 2 s, lease TTL 10 s, release hold
    /// 24 h, no mirror file, no credentials, no TLS.
    pub fn new(domain: impl Into<String>, by: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            by: by.into(),
            mirror: None,
            user: None,
            tls: None,
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            release_hold: Duration::from_secs(24 * 3600),
        }
    }

    /// The etcd-client options these stand for.
    pub(crate) fn connect_options(&self) -> etcd_client::ConnectOptions {
        let mut options = etcd_client::ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            // HTTP/2 pings notice a silent partition even while no request is in flight.
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            let mut config = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                config = config.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.client_pem {
                config = config.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        options
    }
}

impl fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("domain", &self.domain)
            .field("by", &self.by)
            .field("mirror", &self.mirror)
            .field("user", &self.user.as_ref().map(|(user, _)| (user, "***")))
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("release_hold", &self.release_hold)
            .finish()
    }
}

/// TLS to etcd, PEM-encoded.
#[derive(Clone, Default)]
pub struct ClusterTls {
    /// The CA that signed etcd's certificate; `None`: the system's roots are not loaded, so
    /// give one.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its private key, when etcd asks for one.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field(
                "client_cert",
                &self.client_pem.as_ref().map(|_| "(key masked)"),
            )
            .finish()
    }
}

/// Turns `etcd://H:P` into `http://H:P` and `etcds://H:P` into `https://H:P`; `http(s)://`
/// is kept. TLS endpoints need [`ClusterOptions::tls`], plain ones must not mix with it.
pub(crate) fn endpoint_url(endpoint: &str, tls: bool) -> Result<String, ClusterError> {
    let bad = |reason: &str| ClusterError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let (secure, rest) = if let Some(rest) = endpoint.strip_prefix("etcd://") {
        (false, rest)
    } else if let Some(rest) = endpoint.strip_prefix("etcds://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(bad("unknown scheme"));
    };
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.is_empty() || host_port.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected HOST:PORT after the scheme"));
    }
    match (secure, tls) {
        (true, false) => Err(bad("a TLS endpoint needs the cluster CA (TLS options)")),
        (false, true) => Err(bad(
            "TLS options were given for a plain endpoint: use etcds://",
        )),
        (true, true) => Ok(format!("https://{host_port}")),
        (false, false) => Ok(format!("http://{host_port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_spelled_as_etcd_client_dials_them() {
        let table: [(&str, bool, Result<&str, &str>); 10] = [
            ("etcd://10.0.0.1:2379", false, Ok("http://10.0.0.1:2379")),
            ("etcds://etcd.lan:2379", true, Ok("https://etcd.lan:2379")),
            ("http://127.0.0.1:2379/", false, Ok("http://127.0.0.1:2379")),
            ("https://[::1]:2379", true, Ok("https://[::1]:2379")),
            ("etcds://etcd.lan:2379", false, Err("needs the cluster CA")),
            ("etcd://etcd.lan:2379", true, Err("use etcds://")),
            ("127.0.0.1:2379", false, Err("unknown scheme")),
            ("etcd://", false, Err("HOST:PORT")),
            ("etcd://h:1/path", false, Err("HOST:PORT")),
            ("etcd://user@h:1", false, Err("HOST:PORT")),
        ];
        for (endpoint, tls, want) in table {
            match (endpoint_url(endpoint, tls), want) {
                (Ok(url), Ok(want)) => assert_eq!(url, want, "{endpoint}"),
                (Err(err), Err(want)) => {
                    assert!(err.to_string().contains(want), "{endpoint}: {err}")
                }
                (got, want) => panic!("{endpoint}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn debug_masks_the_password_and_the_key() {
        let mut options = ClusterOptions::new("example.net", "gw");
        options.user = Some(("gateway".into(), "hunter2".into()));
        options.tls = Some(ClusterTls {
            ca_pem: Some(b"ca".to_vec()),
            client_pem: Some((b"cert".to_vec(), b"SECRET KEY".to_vec())),
        });
        let text = format!("{options:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("SECRET"),
            "{text}"
        );
        assert!(text.contains("gateway"), "{text}");
    }
}
