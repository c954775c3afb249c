//! The `--cluster` settings: which etcd the gateways share, and how this one reaches it.
//! [`check`] is the pure rule (table-tested below); [`GatewayConfig::cluster_options`] reads
//! the CA, certificate, key and password files into the cluster crate's options.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use peercompute_cluster::{ClusterOptions, ClusterTls};

use super::{ConfigError, GatewayConfig};

/// What [`check`] looks at.
#[derive(Debug, Default)]
struct Inputs<'a> {
    endpoints: &'a [String],
    ca: bool,
    cert: bool,
    key: bool,
    user: bool,
    password: bool,
    insecure: bool,
}

/// Whether the cluster settings make sense together; the error says what to change.
fn check(i: &Inputs<'_>) -> Result<(), String> {
    if i.endpoints.is_empty() {
        if i.ca || i.cert || i.key || i.user || i.password || i.insecure {
            return Err("the --cluster-* settings need --cluster etcd://HOST:PORT".into());
        }
        return Ok(());
    }
    let mut tls = None;
    for endpoint in i.endpoints {
        let (secure, host) = split(endpoint)?;
        if tls.is_some_and(|t| t != secure) {
            return Err("--cluster mixes etcd:// and etcds:// endpoints: use one scheme".into());
        }
        tls = Some(secure);
        if !secure && !i.insecure && !is_loopback(host) {
            return Err(format!(
                "--cluster {endpoint}: plain etcd:// to a host that is not loopback sends names \
                 and revocations unencrypted; use etcds:// with --cluster-ca, or pass \
                 --cluster-insecure on a network you trust"
            ));
        }
    }
    let tls = tls == Some(true);
    if tls && !i.ca {
        return Err(
            "etcds:// needs --cluster-ca FILE (the CA that signed etcd's certificate)".into(),
        );
    }
    if !tls && (i.ca || i.cert || i.key) {
        return Err("--cluster-ca/--cluster-cert/--cluster-key are for etcds:// endpoints".into());
    }
    if i.cert != i.key {
        return Err("--cluster-cert and --cluster-key go together".into());
    }
    if i.user != i.password {
        return Err("--cluster-user and --cluster-password-file go together".into());
    }
    if i.password && !tls {
        return Err("an etcd password would cross the network in clear: use etcds://".into());
    }
    Ok(())
}

/// `etcd://HOST:PORT` → (false, HOST); `etcds://` → (true, HOST).
fn split(endpoint: &str) -> Result<(bool, &str), String> {
    let (secure, rest) = if let Some(rest) = endpoint.strip_prefix("etcd://") {
        (false, rest)
    } else if let Some(rest) = endpoint.strip_prefix("etcds://") {
        (true, rest)
    } else {
        return Err(format!(
            "--cluster {endpoint:?}: give etcd://HOST:PORT (or etcds://HOST:PORT for TLS)"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad = || format!("--cluster {endpoint:?}: expected HOST:PORT after the scheme");
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() || host.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    Ok((secure, host))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl GatewayConfig {
    /// Checks the `--cluster*` settings together.
    pub(super) fn validate_cluster(&self) -> Result<(), ConfigError> {
        check(&Inputs {
            endpoints: &self.cluster,
            ca: self.cluster_ca.is_some(),
            cert: self.cluster_cert.is_some(),
            key: self.cluster_key.is_some(),
            user: self.cluster_user.is_some(),
            password: self.cluster_password_file.is_some(),
            insecure: self.cluster_insecure,
        })
        .map_err(ConfigError::Invalid)
    }

    /// The cluster store's options (`by`: who writes, the gateway's peer id), reading the
    /// TLS and password files; `None` without `--cluster`. Call on a validated config.
    pub fn cluster_options(&self, by: &str) -> Result<Option<ClusterOptions>, ConfigError> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        let mut options = ClusterOptions::new(self.domain.clone(), by);
        if let Some(ca) = &self.cluster_ca {
            let client_pem = match (&self.cluster_cert, &self.cluster_key) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            };
            options.tls = Some(ClusterTls {
                ca_pem: Some(read(ca)?),
                client_pem,
            });
        }
        if let (Some(user), Some(file)) = (&self.cluster_user, &self.cluster_password_file) {
            let text = String::from_utf8(read(file)?).map_err(|_| {
                ConfigError::Invalid(format!("{} is not UTF-8 text", file.display()))
            })?;
            let password = text.lines().next().unwrap_or_default().trim().to_owned();
            options.user = Some((user.clone(), password));
        }
        Ok(Some(options))
    }

    /// Where a clustered gateway mirrors the shared names (`<state>/cluster-names.json`).
    pub(crate) fn cluster_mirror(&self) -> PathBuf {
        self.state_dir.join("cluster-names.json")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_settings_table() {
        let one = |s: &str| vec![s.to_owned()];
        let two = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
        let cases: Vec<(Vec<String>, Inputs<'static>, Result<(), &str>)> = vec![
            (vec![], Inputs::default(), Ok(())),
            (
                vec![],
                Inputs {
                    ca: true,
                    ..Default::default()
                },
                Err("need --cluster"),
            ),
            (one("etcd://127.0.0.1:2379"), Inputs::default(), Ok(())),
            (one("etcd://localhost:2379"), Inputs::default(), Ok(())),
            (one("etcd://[::1]:2379"), Inputs::default(), Ok(())),
            (
                one("etcd://10.0.0.5:2379"),
                Inputs::default(),
                Err("--cluster-insecure"),
            ),
            (
                one("etcd://etcd.lan:2379"),
                Inputs {
                    insecure: true,
                    ..Default::default()
                },
                Ok(()),
            ),
            (
                one("etcds://etcd.lan:2379"),
                Inputs::default(),
                Err("needs --cluster-ca"),
            ),
            (
                one("etcds://etcd.lan:2379"),
                Inputs {
                    ca: true,
                    ..Default::default()
                },
                Ok(()),
            ),
            (
                one("etcds://etcd.lan:2379"),
                Inputs {
                    ca: true,
                    cert: true,
                    ..Default::default()
                },
                Err("go together"),
            ),
            (
                one("etcds://e:2379"),
                Inputs {
                    ca: true,
                    cert: true,
                    key: true,
                    user: true,
                    password: true,
                    ..Default::default()
                },
                Ok(()),
            ),
            (
                one("etcd://127.0.0.1:2379"),
                Inputs {
                    ca: true,
                    ..Default::default()
                },
                Err("for etcds://"),
            ),
            (
                one("etcd://127.0.0.1:2379"),
                Inputs {
                    user: true,
                    password: true,
                    ..Default::default()
                },
                Err("in clear"),
            ),
            (
                two("etcd://127.0.0.1:1", "etcds://e:2"),
                Inputs {
                    ca: true,
                    ..Default::default()
                },
                Err("mixes"),
            ),
            (
                one("http://127.0.0.1:2379"),
                Inputs::default(),
                Err("give etcd://"),
            ),
            (one("etcd://127.0.0.1"), Inputs::default(), Err("HOST:PORT")),
            (one("etcd://:2379"), Inputs::default(), Err("HOST:PORT")),
        ];
        for (endpoints, inputs, want) in cases {
            let inputs = Inputs {
                endpoints: &endpoints,
                ..inputs
            };
            match (check(&inputs), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "{inputs:?}: {e}"),
                (got, want) => panic!("{inputs:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
