//! The `--cluster` settings: which etcd the gateways share, and how this one reaches it.
//! [`check`] is the pure rule (table-tested below); [`GatewayConfig::cluster_options`] reads
//! the CA, certificate, key and password files into the cluster crate's options.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use peercompute_cluster::{ClusterOptions, ClusterTls};

use super::{AcmeChallenge, ConfigError, GatewayConfig};
use crate::tls::TlsSource;

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
    /// The ACME challenge in use, when `--tls` resolves to ACME.
    acme: Option<AcmeChallenge>,
    /// `--cluster-secret-file` given.
    secret: bool,
}

/// What to tell an operator who needs the sealing key.
const MAKE_SECRET: &str = "make it once with `head -c 32 /dev/urandom > F && chmod 600 F` and \
                           give every gateway the same file";

/// Whether the cluster settings make sense together; the error says what to change.
fn check(i: &Inputs<'_>) -> Result<(), String> {
    if i.endpoints.is_empty() {
        if i.ca || i.cert || i.key || i.user || i.password || i.insecure || i.secret {
            return Err("the --cluster-* settings need --cluster etcd://HOST:PORT".into());
        }
        return Ok(());
    }
    check_acme(i)?;
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

/// ACME with several gateways: one orderer publishes to etcd, so the challenge must be one
/// any gateway can answer without the orderer (DNS-01), and the private key needs sealing.
fn check_acme(i: &Inputs<'_>) -> Result<(), String> {
    match i.acme {
        None => Ok(()),
        Some(AcmeChallenge::TlsAlpn01) => Err(
            "--acme-challenge tls-alpn-01 cannot work with --cluster: the ACME server may \
             reach any gateway, and only the orderer holds the challenge certificate; use \
             DNS-01 (--acme-challenge dns-01 with --dns-server and --dns-tsig-key), one \
             wildcard certificate every gateway serves"
                .into(),
        ),
        Some(AcmeChallenge::Http01) => Err(
            "--acme-challenge http-01 is not supported with --cluster yet (the validator may \
             reach a gateway that did not order); use DNS-01 (--acme-challenge dns-01 with \
             --dns-server and --dns-tsig-key), one wildcard certificate every gateway serves"
                .into(),
        ),
        Some(AcmeChallenge::Dns01) if !i.secret => Err(format!(
            "--cluster with --tls acme needs --cluster-secret-file FILE (32 random bytes that \
             seal the certificate's private key in etcd): {MAKE_SECRET}"
        )),
        Some(AcmeChallenge::Dns01) => Ok(()),
    }
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
            acme: match self.tls_choice().source {
                TlsSource::Acme(challenge) => Some(challenge),
                TlsSource::Files | TlsSource::Dev => None,
            },
            secret: self.cluster_secret_file.is_some(),
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

    /// The 32-byte key of `--cluster-secret-file`: refused when the file is readable by group
    /// or others, or is not exactly 32 bytes. `None` without the flag.
    pub(crate) fn cluster_secret(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(path) = &self.cluster_secret_file else {
            return Ok(None);
        };
        let bytes = read(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(ConfigError::Invalid(format!(
                    "--cluster-secret-file {}: mode {:o} lets others read the key that seals \
                     the certificates' private keys; run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )));
            }
        }
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            ConfigError::Invalid(format!(
                "--cluster-secret-file {} holds {} bytes, not 32: {MAKE_SECRET}",
                path.display(),
                bytes.len()
            ))
        })?;
        Ok(Some(key))
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
    fn the_secret_file_must_be_32_private_bytes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let file = |name: &str, bytes: &[u8], mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        };
        let cases = [
            (file("good", &[1; 32], 0o600), Ok(())),
            (file("open", &[1; 32], 0o644), Err("chmod 600")),
            (
                file("short", &[1; 31], 0o600),
                Err("holds 31 bytes, not 32: make it once"),
            ),
        ];
        for (path, want) in cases {
            let config = GatewayConfig {
                cluster_secret_file: Some(path.clone()),
                ..GatewayConfig::default()
            };
            match (config.cluster_secret(), want) {
                (Ok(Some(key)), Ok(())) => assert_eq!(key, [1; 32]),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{path:?}: {e}"),
                (got, want) => panic!("{path:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_cluster_with_tls_alpn_01_is_a_start_error_that_points_to_dns_01() {
        let config = GatewayConfig {
            domain: "apps.example.com".into(),
            open: true,
            tls: crate::config::TlsMode::Acme,
            acme_challenge: Some(AcmeChallenge::TlsAlpn01),
            cluster: vec!["etcd://127.0.0.1:2379".into()],
            ..GatewayConfig::default()
        };
        let err = config.validate().expect_err("refused").to_string();
        assert!(
            err.contains("tls-alpn-01 cannot work with --cluster"),
            "{err}"
        );
        assert!(err.contains("use DNS-01 (--acme-challenge dns-01"), "{err}");
    }

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
            (
                vec![],
                Inputs {
                    secret: true,
                    ..Default::default()
                },
                Err("need --cluster"),
            ),
            (
                vec![],
                Inputs {
                    acme: Some(AcmeChallenge::TlsAlpn01),
                    ..Default::default()
                },
                Ok(()),
            ),
            (
                one("etcd://127.0.0.1:2379"),
                Inputs {
                    acme: Some(AcmeChallenge::TlsAlpn01),
                    secret: true,
                    ..Default::default()
                },
                Err(
                    "tls-alpn-01 cannot work with --cluster: the ACME server may reach any \
                     gateway, and only the orderer holds the challenge certificate; use DNS-01",
                ),
            ),
            (
                one("etcd://127.0.0.1:2379"),
                Inputs {
                    acme: Some(AcmeChallenge::Http01),
                    secret: true,
                    ..Default::default()
                },
                Err("http-01 is not supported with --cluster yet"),
            ),
            (
                one("etcd://127.0.0.1:2379"),
                Inputs {
                    acme: Some(AcmeChallenge::Dns01),
                    ..Default::default()
                },
                Err("head -c 32 /dev/urandom > F && chmod 600 F"),
            ),
            (
                one("etcd://127.0.0.1:2379"),
                Inputs {
                    acme: Some(AcmeChallenge::Dns01),
                    secret: true,
                    ..Default::default()
                },
                Ok(()),
            ),
            (
                one("etcd://127.0.0.1:2379"),
                Inputs {
                    secret: true,
                    ..Default::default()
                },
                Ok(()),
            ),
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
