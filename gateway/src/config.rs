//! Gateway configuration: every key of the TOML file (`--config`) and of the command line.
//! Unknown keys are refused, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use peercompute_tunnel_proto::TunnelCongestion;
use serde::Deserialize;

use crate::tls::{LineContext, TlsChoice, TlsInputs, TlsSource};

/// Where the visitor-facing certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// dev for names no public CA certifies (localhost, *.localhost, .test, .example, .invalid,
    /// .local, .internal, .home.arpa, IP addresses), acme otherwise, files when --cert/--key
    /// are given.
    // The rule and its table test: tls/auto.rs (`GatewayConfig::tls_choice`).
    #[default]
    Auto,
    /// A local CA in the state dir signs D and *.D (development: visitors must trust it).
    Dev,
    /// The --cert and --key PEM files.
    Files,
    /// Certificates from an ACME server (Let's Encrypt by default), renewed automatically,
    /// whatever the domain.
    Acme,
}

/// How the ACME server checks that the gateway controls a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum AcmeChallenge {
    /// A TXT record per name, published by RFC 2136 dynamic update: one wildcard certificate
    /// for `D` and `*.D`.
    #[serde(rename = "dns-01")]
    #[value(name = "dns-01")]
    Dns01,
    /// A file under `/.well-known/acme-challenge/` on the HTTP listener: per-name
    /// certificates for registered names.
    #[serde(rename = "http-01")]
    #[value(name = "http-01")]
    Http01,
    /// A special certificate on the HTTPS listener (ALPN `acme-tls/1`): per-name
    /// certificates for registered names.
    #[serde(rename = "tls-alpn-01")]
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

/// How DNS-01 records are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DnsProvider {
    /// RFC 2136 dynamic updates signed with TSIG (bind9, Knot, PowerDNS, ...).
    Rfc2136,
}

/// Let's Encrypt's production directory, the default `acme_directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Everything `peercompute-gateway run` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Apps answer at `https://<name>.<domain>`.
    pub domain: String,
    /// Identity, name ownership and certificates live here.
    pub state_dir: PathBuf,
    pub https_listen: SocketAddr,
    /// Plain HTTP, redirecting to HTTPS. `None` disables it.
    pub http_listen: Option<SocketAddr>,
    pub tunnel_listen: SocketAddr,
    /// Health, readiness, metrics, the admin API and the dashboard. `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer tokens of the admin API, one per line (`read TOKEN` / `admin TOKEN`). Required
    /// when `admin_listen` is not a loopback address.
    pub admin_token_file: Option<PathBuf>,
    /// Host names the admin listener answers to besides IP literals and `localhost` (against
    /// DNS rebinding, other `Host` values get 421).
    pub admin_host: Vec<String>,
    /// Access log: a file path, or `-` for standard output. `None`: no access log.
    pub access_log: Option<PathBuf>,
    /// The access log is rotated when it reaches this size (`PATH.1` … `PATH.N`).
    pub access_log_max_bytes: u64,
    /// Rotated access logs kept (1 to 100).
    pub access_log_keep: usize,
    /// Most routes with their own `route` label in the metrics; later names share
    /// `route="other"` (0: every app does). A cell idle for an hour with no live route gives
    /// its slot back.
    pub metrics_max_routes: usize,
    /// Port printed in public URLs when HTTPS is not served on 443.
    pub public_port: Option<u16>,
    /// Certificate source; `auto` resolves by [`GatewayConfig::tls_choice`].
    pub tls: TlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// ACME directory URL, or `letsencrypt` / `letsencrypt-staging`.
    pub acme_directory: String,
    /// Contact address given to the ACME server (optional).
    pub acme_email: Option<String>,
    /// PEM file of CA certificates trusted for the ACME server's own HTTPS (private CAs).
    pub acme_ca: Option<PathBuf>,
    /// `None`: DNS-01 when DNS-01 settings are given, else HTTP-01 (TLS-ALPN-01 without the
    /// HTTP listener).
    pub acme_challenge: Option<AcmeChallenge>,
    /// First retry delay after a failed ACME order; doubles on each failure, up to 1 h.
    #[serde(with = "humantime_serde")]
    pub acme_retry_initial: Duration,
    /// New per-name certificates (HTTP-01 / TLS-ALPN-01): up to this many at once, then this
    /// many per hour (one every 60/N minutes). 0 orders none.
    pub acme_orders_per_hour: u32,
    /// How DNS-01 records are published [default: rfc2136]; setting it asks for DNS-01.
    pub dns_provider: Option<DnsProvider>,
    /// Primary (authoritative) DNS server accepting updates, `HOST[:PORT]`.
    pub dns_server: Option<String>,
    /// Zone the `_acme-challenge` records go in [default: the domain].
    pub dns_zone: Option<String>,
    /// TSIG key file (BIND `key "name" { ... };` or Knot `id:/algorithm:/secret:`).
    pub dns_tsig_key: Option<PathBuf>,
    /// Provider peer ids allowed to open tunnels.
    pub allow_providers: Vec<String>,
    /// File with one allowed provider peer id per line, re-read on change.
    pub allow_providers_file: Option<PathBuf>,
    /// Accept any provider (development only).
    pub open: bool,
    /// Requests per second per hostname (burst: one second's worth). 0 disables.
    pub rate_limit: u32,
    /// Requests per second per client IP (IPv6 per /64). 0 disables.
    pub rate_limit_ip: u32,
    /// How long in-flight requests may finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// How long to wait for a provider's response head before answering 504.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// How long a visitor may take to send request headers (slowloris guard).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// TLS handshakes slower than this are dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Most visitor connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// Largest request head (request line + headers) in bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Most names one provider may hold at once.
    pub max_names_per_provider: usize,
    /// Most names one provider key may own (names stay owned after the provider withdraws
    /// them, until the operator releases them); new names past it are refused.
    pub max_owned_names_per_provider: usize,
    /// Most requests one provider tunnel carries at once; more get 502 at once.
    pub max_streams_per_tunnel: usize,
    /// libp2p listen addresses of the meeting point (relay v2 server + rendezvous) that lets
    /// clients reach providers behind NAT by peer id. Empty disables it.
    pub p2p_listen: Vec<String>,
    /// Public libp2p addresses to announce (to providers in the tunnel's Welcome and in relay
    /// reservations) when they differ from the listen addresses (NAT, DNS name).
    pub p2p_announce: Vec<String>,
    /// Most relay slots reserved at once.
    pub relay_max_reservations: usize,
    /// How long a relay slot lasts; providers renew it before it ends.
    #[serde(with = "humantime_serde")]
    pub relay_reservation_duration: Duration,
    /// A relayed control session is closed after this long...
    #[serde(with = "humantime_serde")]
    pub relay_max_circuit_duration: Duration,
    /// ...or after this many bytes (both directions): relays carry control traffic only.
    pub relay_max_circuit_bytes: u64,
    /// The tunnel's QUIC congestion controller; it paces what the gateway sends to providers
    /// (request and upload bodies). Providers choose theirs for responses.
    pub tunnel_congestion: TunnelCongestion,
    /// etcd endpoints shared by several gateways (`etcd://HOST:PORT`, `etcds://HOST:PORT` for
    /// TLS): name ownership and the allow/revoked sets live there. Empty: one gateway alone.
    pub cluster: Vec<String>,
    /// PEM CA that signed etcd's certificate (required with `etcds://`).
    pub cluster_ca: Option<PathBuf>,
    /// PEM client certificate for etcd, with `cluster_key`.
    pub cluster_cert: Option<PathBuf>,
    /// PEM private key of `cluster_cert`.
    pub cluster_key: Option<PathBuf>,
    /// etcd user (with `cluster_password_file`, over `etcds://` only).
    pub cluster_user: Option<String>,
    /// File holding the etcd user's password (first line).
    pub cluster_password_file: Option<PathBuf>,
    /// Allow plain `etcd://` to a host that is not loopback (names and revocations then
    /// cross the network unencrypted and unauthenticated).
    pub cluster_insecure: bool,
    /// 32 random bytes (mode 0600, the same file on every gateway): the AES-256-GCM key that
    /// seals ACME private keys stored in etcd. Required with `--cluster` and `--tls acme`.
    pub cluster_secret_file: Option<PathBuf>,
}

/// quinn's controller for a [`TunnelCongestion`] choice, with quinn's default parameters.
pub(crate) fn quic_congestion(
    choice: TunnelCongestion,
) -> std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    match choice {
        TunnelCongestion::Cubic => std::sync::Arc::new(CubicConfig::default()),
        TunnelCongestion::Bbr => std::sync::Arc::new(BbrConfig::default()),
        TunnelCongestion::NewReno => std::sync::Arc::new(NewRenoConfig::default()),
    }
}

/// The default `p2p_listen`: TCP and QUIC on port 4001 of every interface.
pub(crate) fn default_p2p_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/tcp/4001".into(),
        "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
    ]
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            domain: String::new(),
            state_dir: PathBuf::from("/var/lib/peercompute-gateway"),
            https_listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            http_listen: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            tunnel_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9180))),
            admin_token_file: None,
            admin_host: Vec::new(),
            access_log: None,
            access_log_max_bytes: 100 * 1024 * 1024,
            access_log_keep: 5,
            metrics_max_routes: 500,
            public_port: None,
            tls: TlsMode::Auto,
            cert: None,
            key: None,
            acme_directory: LETS_ENCRYPT.into(),
            acme_email: None,
            acme_ca: None,
            acme_challenge: None,
            acme_retry_initial: Duration::from_secs(60),
            acme_orders_per_hour: 10,
            dns_provider: None,
            dns_server: None,
            dns_zone: None,
            dns_tsig_key: None,
            allow_providers: Vec::new(),
            allow_providers_file: None,
            open: false,
            rate_limit: 100,
            rate_limit_ip: 200,
            grace_period: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_names_per_provider: 64,
            max_owned_names_per_provider: crate::names::MAX_OWNED_NAMES,
            max_streams_per_tunnel: 1024,
            p2p_listen: default_p2p_listen(),
            p2p_announce: Vec::new(),
            relay_max_reservations: 1024,
            relay_max_circuit_duration: Duration::from_secs(30 * 60),
            relay_reservation_duration: Duration::from_secs(3600),
            relay_max_circuit_bytes: 16 * 1024 * 1024,
            tunnel_congestion: TunnelCongestion::default(),
            cluster: Vec::new(),
            cluster_ca: None,
            cluster_cert: None,
            cluster_key: None,
            cluster_user: None,
            cluster_password_file: None,
            cluster_insecure: false,
            cluster_secret_file: None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl GatewayConfig {
    /// Reads a TOML file with the same keys as the flags (`https_listen = "0.0.0.0:443"`).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Normalises the domain and checks that the combination of settings makes sense.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let domain = self
            .domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if domain.is_empty() {
            return Err(ConfigError::Invalid(
                "--domain is required (apps answer at https://<name>.<domain>)".into(),
            ));
        }
        if crate::host::normalize_host(&domain).as_deref() != Some(domain.as_str())
            || domain.contains(':')
        {
            return Err(ConfigError::Invalid(format!(
                "--domain {domain:?} is not a host name"
            )));
        }
        self.domain = domain;
        match self.tls_choice().source {
            TlsSource::Files if self.cert.is_none() || self.key.is_none() => {
                return Err(ConfigError::Invalid(
                    "--tls files needs --cert FILE and --key FILE".into(),
                ));
            }
            TlsSource::Acme(challenge) => self.validate_acme(challenge)?,
            TlsSource::Files | TlsSource::Dev => {}
        }
        for (flag, list) in [
            ("--p2p-listen", &self.p2p_listen),
            ("--p2p-announce", &self.p2p_announce),
        ] {
            for addr in list {
                if let Err(e) = addr.parse::<peercompute_p2p::Multiaddr>() {
                    return Err(ConfigError::Invalid(format!(
                        "{flag} {addr:?} is not a multiaddr ({e}); e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1"
                    )));
                }
            }
        }
        if !self.p2p_listen.is_empty()
            && (self.relay_max_circuit_bytes == 0
                || self.relay_max_circuit_duration.is_zero()
                || self.relay_reservation_duration < Duration::from_secs(2))
        {
            return Err(ConfigError::Invalid(
                "relay_max_circuit_bytes and relay_max_circuit_duration must be more than 0, relay_reservation_duration at least 2s".into(),
            ));
        }
        self.validate_admin()?;
        self.validate_cluster()?;
        if !self.open
            && self.allow_providers.is_empty()
            && self.allow_providers_file.is_none()
            && self.cluster.is_empty()
        {
            return Err(ConfigError::Invalid(
                "no provider could connect: pass --allow-provider PEERID (repeatable), \
                 --allow-providers-file FILE, --cluster (its allow set), or --open"
                    .into(),
            ));
        }
        Ok(self)
    }

    /// What `--tls` resolves to with these settings, and why (`auto` is never left over).
    pub fn tls_choice(&self) -> TlsChoice {
        crate::tls::choose_tls(&TlsInputs {
            tls: self.tls,
            domain: &self.domain,
            cert_files: self.cert.is_some() || self.key.is_some(),
            acme_challenge: self.acme_challenge,
            dns_settings: self.dns_provider.is_some()
                || self.dns_server.is_some()
                || self.dns_zone.is_some()
                || self.dns_tsig_key.is_some(),
            http_listener: self.http_listener_on(),
        })
    }

    /// The one start-up line saying which certificate source is used and why.
    pub fn tls_line(&self) -> String {
        let dev_ca = crate::dev_ca_path(&self.state_dir);
        self.tls_choice().line(&LineContext {
            domain: &self.domain,
            acme_directory: &self.acme_directory,
            dev_ca: &dev_ca,
            cert: self.cert.as_deref(),
        })
    }

    /// The admin listener off loopback needs tokens; the access log needs room to rotate.
    fn validate_admin(&mut self) -> Result<(), ConfigError> {
        if let Some(addr) = self.admin_listen
            && !addr.ip().is_loopback()
            && self.admin_token_file.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "--admin-listen {addr} is not loopback: give --admin-token-file FILE \
                 (lines `read TOKEN` / `admin TOKEN`)"
            )));
        }
        for host in &mut self.admin_host {
            match crate::host::normalize_host(host) {
                Some(name) if !host.contains(':') => *host = name,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "--admin-host {host:?} is not a host name (give it without a port)"
                    )));
                }
            }
        }
        let max_keep = crate::access_log::MAX_KEEP;
        if self.access_log.is_some()
            && (self.access_log_max_bytes < 1024 || !(1..=max_keep).contains(&self.access_log_keep))
        {
            return Err(ConfigError::Invalid(format!(
                "access_log_max_bytes must be at least 1024 and access_log_keep from 1 to {max_keep}"
            )));
        }
        Ok(())
    }

    fn http_listener_on(&self) -> bool {
        self.http_listen.is_some()
    }

    /// Checks and normalises the ACME settings (`--tls acme`, or `auto` on a public domain).
    fn validate_acme(&mut self, challenge: AcmeChallenge) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match self.acme_directory.trim() {
            "letsencrypt" => self.acme_directory = LETS_ENCRYPT.into(),
            "letsencrypt-staging" => self.acme_directory = LETS_ENCRYPT_STAGING.into(),
            url if url.starts_with("https://") => self.acme_directory = url.to_owned(),
            other => {
                return invalid(format!(
                    "--acme-directory {other:?} is not an https:// URL \
                     (or letsencrypt / letsencrypt-staging)"
                ));
            }
        }
        if let Some(email) = &self.acme_email
            && (!email.contains('@') || email.contains(char::is_whitespace))
        {
            return invalid(format!("--acme-email {email:?} is not an e-mail address"));
        }
        match challenge {
            AcmeChallenge::Dns01 => {
                if self.dns_server.is_none() || self.dns_tsig_key.is_none() {
                    return invalid(
                        "ACME with DNS-01 (a wildcard certificate) needs --dns-server HOST:PORT \
                         and --dns-tsig-key FILE; without them the gateway gets per-name \
                         certificates (HTTP-01 / TLS-ALPN-01) with no DNS credentials"
                            .into(),
                    );
                }
                let zone = self
                    .dns_zone
                    .as_deref()
                    .unwrap_or(&self.domain)
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if zone.is_empty()
                    || !(self.domain == zone || self.domain.ends_with(&format!(".{zone}")))
                {
                    return invalid(format!(
                        "--dns-zone {zone:?} does not contain the domain {:?}",
                        self.domain
                    ));
                }
                self.dns_zone = Some(zone);
            }
            AcmeChallenge::Http01 if self.http_listen.is_none() => {
                return invalid(
                    "--acme-challenge http-01 needs the HTTP listener (drop --no-http)".into(),
                );
            }
            AcmeChallenge::Http01 | AcmeChallenge::TlsAlpn01 => {}
        }
        if self.acme_retry_initial.is_zero() {
            return invalid("acme_retry_initial must be more than 0".into());
        }
        Ok(())
    }

    /// `https://<name>.<domain>[:port]`
    pub fn public_url(&self, name: &str) -> String {
        let port = self.public_port.unwrap_or(443);
        match port {
            443 => format!("https://{name}.{}", self.domain),
            p => format!("https://{name}.{}:{p}", self.domain),
        }
    }
}

mod cluster;
#[cfg(test)]
mod tests;
