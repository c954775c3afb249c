//! Gateway configuration: every key of the TOML file (`--config`) and of the command line.
//! Unknown keys are refused, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the visitor-facing certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// A local CA in the state dir and a certificate for `D` and `*.D` (development).
    #[default]
    Dev,
    /// `--cert` and `--key` PEM files.
    Files,
}

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
    /// Health, readiness and metrics. `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Port printed in public URLs when HTTPS is not served on 443.
    pub public_port: Option<u16>,
    pub tls: TlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
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
            public_port: None,
            tls: TlsMode::Dev,
            cert: None,
            key: None,
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
        if self.tls == TlsMode::Files && (self.cert.is_none() || self.key.is_none()) {
            return Err(ConfigError::Invalid(
                "--tls files needs --cert FILE and --key FILE".into(),
            ));
        }
        if !self.open && self.allow_providers.is_empty() && self.allow_providers_file.is_none() {
            return Err(ConfigError::Invalid(
                "no provider could connect: pass --allow-provider PEERID (repeatable), \
                 --allow-providers-file FILE, or --open"
                    .into(),
            ));
        }
        Ok(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keys_and_unknown_refused() {
        let cfg: GatewayConfig = toml::from_str(
            "domain = \"Apps.Example.com.\"\nopen = true\ngrace_period = \"5s\"\nrate_limit = 7\n",
        )
        .expect("parse");
        let cfg = cfg.validate().expect("valid");
        assert_eq!(cfg.domain, "apps.example.com");
        assert_eq!(cfg.grace_period, Duration::from_secs(5));
        assert_eq!(cfg.rate_limit, 7);
        assert!(toml::from_str::<GatewayConfig>("domian = \"x\"").is_err());
    }

    #[test]
    fn validation_messages() {
        let base = GatewayConfig {
            domain: "apps.example.com".into(),
            open: true,
            ..GatewayConfig::default()
        };
        let no_domain = GatewayConfig {
            domain: String::new(),
            ..base.clone()
        };
        assert!(
            no_domain
                .validate()
                .expect_err("domain")
                .to_string()
                .contains("--domain")
        );
        let nobody = GatewayConfig {
            open: false,
            ..base.clone()
        };
        assert!(
            nobody
                .validate()
                .expect_err("allow")
                .to_string()
                .contains("--allow-provider")
        );
        let files = GatewayConfig {
            tls: TlsMode::Files,
            ..base.clone()
        };
        assert!(
            files
                .validate()
                .expect_err("files")
                .to_string()
                .contains("--cert")
        );
        assert_eq!(base.public_url("blog"), "https://blog.apps.example.com");
        let port = GatewayConfig {
            public_port: Some(8443),
            ..base
        };
        assert_eq!(
            port.public_url("blog"),
            "https://blog.apps.example.com:8443"
        );
    }
}
