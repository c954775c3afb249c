//! The provider's TOML file (`peercomputed run --config FILE`): the same keys as the `run`
//! flags (`--max-memory` is `max_memory`), in the same forms (`max_cpu = "4"`,
//! `max_memory = "4GB"`, `ready_timeout = "60s"`); `--grant-device` is a `[[devices]]` table
//! each. Unknown keys are refused, so a typo never silently falls back to a default. Flags
//! given on the command line win over the file; see `deploy/provider.toml` for a documented
//! example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{
    AdminListen, DeviceGrant, DeviceKeys, Expose, Firewall, GatewaySpec, JoinTokenText,
    ProviderConfig, check_grants,
};

/// A configuration file that cannot be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: `{key}`: {reason}")]
    Value {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// The keys as written in the file, before their values are checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    #[serde(default)]
    gateway: OneOrMany,
    gateway_ca: Option<PathBuf>,
    transport: Option<String>,
    #[serde(default)]
    gateway_https: OneOrMany,
    #[serde(default)]
    expose: Vec<String>,
    #[serde(default)]
    grant: Vec<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    no_mdns: bool,
    #[serde(default)]
    gateway_p2p: Vec<String>,
    #[serde(default)]
    no_relay: bool,
    max_cpu: Option<String>,
    max_memory: Option<String>,
    max_deploys: Option<u32>,
    ready_timeout: Option<String>,
    firewall: Option<String>,
    join: Option<String>,
    #[serde(default)]
    devices: Vec<DeviceKeys>,
    max_volumes_size: Option<String>,
    volume_check_interval: Option<String>,
    offline_start_wait: Option<String>,
    admin_listen: Option<String>,
    admin_token_file: Option<PathBuf>,
    #[serde(default)]
    admin_host: Vec<String>,
    tunnel_congestion: Option<String>,
}

/// `gateway = "…"` (one, as files before several gateways wrote it) or `gateway = ["…", "…"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// The settings of a provider configuration file, checked. A key that is absent leaves the
/// default (or the flag) in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderFile {
    /// `gateway`: one or a list.
    pub gateways: Vec<GatewaySpec>,
    pub gateway_ca: Option<PathBuf>,
    pub transport: Option<crate::tunnel::TransportMode>,
    /// `gateway_https`: one or a list, one per gateway in the same order.
    pub gateway_https: Vec<crate::config::HttpsAddr>,
    pub expose: Vec<Expose>,
    /// `grant`: files holding owners' grants for `expose` names other keys own (read, with
    /// `--grant`'s, once the exposed names are settled).
    pub grant: Vec<PathBuf>,
    pub listen: Vec<peercompute_p2p::Multiaddr>,
    pub no_mdns: bool,
    pub gateway_p2p: Vec<peercompute_p2p::Multiaddr>,
    pub no_relay: bool,
    /// Millicores.
    pub max_cpu: Option<u32>,
    /// Bytes.
    pub max_memory: Option<u64>,
    pub max_deploys: Option<u32>,
    pub ready_timeout: Option<Duration>,
    pub firewall: Option<Firewall>,
    /// A fleet join token (`peercomputed join` at start).
    pub join: Option<JoinTokenText>,
    /// The `[[devices]]` entries.
    pub devices: Vec<DeviceGrant>,
    /// Bytes.
    pub max_volumes_size: Option<u64>,
    pub volume_check_interval: Option<Duration>,
    pub offline_start_wait: Option<Duration>,
    pub admin_listen: Option<AdminListen>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_host: Vec<String>,
    pub tunnel_congestion: Option<crate::config::TunnelCongestion>,
}

impl ProviderFile {
    /// Reads and checks `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            Invalid::Toml(reason) => ConfigFileError::Parse {
                path: path.to_path_buf(),
                reason,
            },
            Invalid::Value(key, reason) => ConfigFileError::Value {
                path: path.to_path_buf(),
                key,
                reason,
            },
        })
    }

    fn parse(text: &str) -> Result<Self, Invalid> {
        let keys: Keys = toml::from_str(text).map_err(|e| Invalid::Toml(e.to_string()))?;
        let value = |key: &'static str| move |e: String| Invalid::Value(key, e);
        let gateways = each("gateway", &keys.gateway.into_vec())?;
        let gateway_https = each("gateway_https", &keys.gateway_https.into_vec())?;
        crate::config::check_gateways(&gateways, &gateway_https).map_err(value("gateway"))?;
        Ok(Self {
            gateways,
            gateway_ca: keys.gateway_ca,
            transport: keys
                .transport
                .map(|s| s.parse().map_err(value("transport")))
                .transpose()?,
            gateway_https,
            expose: each("expose", &keys.expose)?,
            grant: keys.grant,
            listen: keys
                .listen
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|e| Invalid::Value("listen", format!("`{s}`: {e}")))
                })
                .collect::<Result<_, _>>()?,
            no_mdns: keys.no_mdns,
            gateway_p2p: keys
                .gateway_p2p
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|e| Invalid::Value("gateway_p2p", format!("`{s}`: {e}")))
                })
                .collect::<Result<_, _>>()?,
            no_relay: keys.no_relay,
            max_cpu: keys
                .max_cpu
                .map(|s| peercompute_runtime::parse_cpu(&s).map_err(|e| e.to_string()))
                .transpose()
                .map_err(value("max_cpu"))?,
            max_memory: keys
                .max_memory
                .map(|s| peercompute_runtime::parse_memory(&s).map_err(|e| e.to_string()))
                .transpose()
                .map_err(value("max_memory"))?,
            max_deploys: keys.max_deploys,
            ready_timeout: keys
                .ready_timeout
                .map(|s| humantime::parse_duration(&s).map_err(|e| format!("`{s}`: {e}")))
                .transpose()
                .map_err(value("ready_timeout"))?,
            firewall: keys
                .firewall
                .map(|s| s.parse())
                .transpose()
                .map_err(value("firewall"))?,
            join: keys
                .join
                .map(|s| {
                    peercompute_fleet::JoinToken::parse(&s)
                        .map(|_| JoinTokenText(s.trim().to_owned()))
                        .map_err(|e| e.to_string())
                })
                .transpose()
                .map_err(value("join"))?,
            devices: {
                let devices = keys
                    .devices
                    .into_iter()
                    .map(DeviceKeys::check)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(value("devices"))?;
                check_grants(&devices).map_err(value("devices"))?;
                devices
            },
            max_volumes_size: keys
                .max_volumes_size
                .map(|s| peercompute_runtime::parse_memory(&s).map_err(|e| e.to_string()))
                .transpose()
                .map_err(value("max_volumes_size"))?,
            volume_check_interval: keys
                .volume_check_interval
                .map(|s| ProviderConfig::parse_check_interval(&s))
                .transpose()
                .map_err(value("volume_check_interval"))?,
            offline_start_wait: keys
                .offline_start_wait
                .map(|s| ProviderConfig::parse_start_wait(&s))
                .transpose()
                .map_err(value("offline_start_wait"))?,
            admin_listen: keys
                .admin_listen
                .map(|s| s.parse())
                .transpose()
                .map_err(value("admin_listen"))?,
            admin_token_file: keys.admin_token_file,
            admin_host: keys.admin_host,
            tunnel_congestion: keys
                .tunnel_congestion
                .map(|s| s.parse())
                .transpose()
                .map_err(value("tunnel_congestion"))?,
        })
    }

    /// Writes the keys the file sets into `config`.
    pub fn apply_to(self, config: &mut ProviderConfig) {
        if !self.gateways.is_empty() {
            config.gateways = self.gateways;
        }
        if self.gateway_ca.is_some() {
            config.gateway_ca = self.gateway_ca;
        }
        if let Some(transport) = self.transport {
            config.transport = transport;
        }
        if !self.gateway_https.is_empty() {
            config.gateway_https = self.gateway_https;
        }
        if !self.expose.is_empty() {
            config.expose = self.expose;
        }
        if !self.listen.is_empty() {
            config.listen = self.listen;
        }
        if self.no_mdns {
            config.mdns = false;
        }
        if !self.gateway_p2p.is_empty() {
            config.gateway_p2p = self.gateway_p2p;
        }
        if self.no_relay {
            config.relay = false;
        }
        let limits = &mut config.deploy.limits;
        if let Some(v) = self.max_cpu {
            limits.max_cpu_millis = v;
        }
        if let Some(v) = self.max_memory {
            limits.max_memory_bytes = v;
        }
        if let Some(v) = self.max_deploys {
            limits.max_deploys = v;
        }
        if let Some(v) = self.ready_timeout {
            config.deploy.ready_timeout = v;
        }
        if let Some(v) = self.firewall {
            config.firewall = v;
        }
        if self.join.is_some() {
            config.join = self.join;
        }
        if !self.devices.is_empty() {
            config.devices = self.devices;
        }
        if let Some(v) = self.max_volumes_size {
            config.max_volumes_size = v;
        }
        if let Some(v) = self.volume_check_interval {
            config.volume_check_interval = v;
        }
        if let Some(v) = self.offline_start_wait {
            config.offline_start_wait = v;
        }
        if let Some(v) = self.admin_listen {
            config.admin_listen = v;
        }
        if self.admin_token_file.is_some() {
            config.admin_token_file = self.admin_token_file;
        }
        if !self.admin_host.is_empty() {
            config.admin_host = self.admin_host;
        }
        if let Some(v) = self.tunnel_congestion {
            config.tunnel_congestion = v;
        }
    }
}

/// Parses every item of a list key in its flag form.
fn each<T: std::str::FromStr<Err = String>>(
    key: &'static str,
    items: &[String],
) -> Result<Vec<T>, Invalid> {
    items
        .iter()
        .map(|s| s.parse().map_err(|e: String| Invalid::Value(key, e)))
        .collect()
}

/// Why the text was refused, before the path is attached.
enum Invalid {
    Toml(String),
    Value(&'static str, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_in_its_flag_form() {
        let file = ProviderFile::parse(
            r#"
            gateway = "gw.example.com:8443"
            gateway_ca = "/etc/ca.pem"
            expose = ["blog=127.0.0.1:8080"]
            grant = ["/etc/peercompute/blog.grant"]
            listen = ["/ip4/0.0.0.0/tcp/9001"]
            no_mdns = true
            max_cpu = "1.5"
            max_memory = "2GB"
            max_deploys = 3
            ready_timeout = "90s"
            admin_listen = "127.0.0.1:0"
            admin_token_file = "/etc/peercompute/admin-tokens"
            admin_host = ["robot1.lan"]
            tunnel_congestion = "bbr"
            "#,
        )
        .unwrap_or_else(|_| panic!("a valid file"));
        assert_eq!(file.grant, [PathBuf::from("/etc/peercompute/blog.grant")]);
        let mut config = ProviderConfig::new(PathBuf::from("/h"));
        file.apply_to(&mut config);
        assert_eq!(
            config.gateways.iter().map(|g| g.port).collect::<Vec<_>>(),
            [8443],
            "gateway"
        );
        assert_eq!(config.expose.len(), 1);
        assert_eq!(config.listen[0].to_string(), "/ip4/0.0.0.0/tcp/9001");
        assert!(!config.mdns);
        assert_eq!(config.deploy.limits.max_cpu_millis, 1500);
        assert_eq!(config.deploy.limits.max_memory_bytes, 2 << 30);
        assert_eq!(config.deploy.limits.max_deploys, 3);
        assert_eq!(config.deploy.ready_timeout, Duration::from_secs(90));
        assert_eq!(
            config.admin_listen,
            AdminListen::At("127.0.0.1:0".parse().expect("addr"))
        );
        assert!(config.admin_token_file.is_some());
        assert_eq!(config.admin_host, ["robot1.lan"]);
        assert_eq!(
            config.tunnel_congestion,
            crate::config::TunnelCongestion::Bbr
        );
        let off = ProviderFile::parse("admin_listen = \"off\"\n").unwrap_or_else(|_| panic!("off"));
        assert_eq!(off.admin_listen, Some(AdminListen::Off));
        assert!(ProviderFile::parse("admin_listen = \"9181\"\n").is_err());
    }

    #[test]
    fn gateway_takes_one_or_a_list() {
        let one = ProviderFile::parse("gateway = \"gw.example.com:8443\"\n")
            .unwrap_or_else(|_| panic!("one gateway"));
        assert_eq!(one.gateways.len(), 1);
        let many = ProviderFile::parse(
            "gateway = [\"gw1.example.com:8443\", \"gw2.example.com:8443\"]\n\
             gateway_https = [\"gw1.example.com:443\", \"gw2.example.com:10443\"]\n",
        )
        .unwrap_or_else(|_| panic!("two gateways"));
        let hosts: Vec<_> = many.gateways.iter().map(|g| g.host.as_str()).collect();
        assert_eq!(hosts, ["gw1.example.com", "gw2.example.com"]);
        assert_eq!(many.gateway_https[1].port, 10443);
    }

    #[test]
    fn empty_file_changes_nothing() {
        let file = ProviderFile::parse("").unwrap_or_else(|_| panic!("empty is valid"));
        let mut config = ProviderConfig::new(PathBuf::from("/h"));
        let before = format!("{config:?}");
        file.apply_to(&mut config);
        assert_eq!(format!("{config:?}"), before);
    }

    #[test]
    fn refusals_name_the_key() {
        let cases = [
            ("max_memry = \"1G\"", "max_memry"),
            ("max_cpu = \"lots\"", "max_cpu"),
            ("max_memory = \"1 parsec\"", "max_memory"),
            ("gateway = \"nowhere\"", "gateway"),
            ("gateway = [\"a:1\", \"nowhere\"]", "gateway"),
            ("gateway = [\"a:1\", \"A:1\"]", "gateway"),
            (
                "gateway = [\"a:1\", \"b:1\"]\ngateway_https = \"a:443\"",
                "gateway",
            ),
            ("expose = [\"Blog=x:1\"]", "expose"),
            ("listen = [\"not-a-multiaddr\"]", "listen"),
            ("ready_timeout = \"soon\"", "ready_timeout"),
            ("join = \"pcjoin1.damaged\"", "join"),
            ("max_volumes_size = \"lots\"", "max_volumes_size"),
            ("volume_check_interval = \"0s\"", "volume_check_interval"),
            ("offline_start_wait = \"2h\"", "offline_start_wait"),
            ("tunnel_congestion = \"vegas\"", "tunnel_congestion"),
            (
                "[[devices]]\nname = \"arm\"\npath = \"/dev/tty\"\nmode = \"m\"",
                "mode",
            ),
            ("[[devices]]\nname = \"arm\"\npath = \"tty\"", "devices"),
            (
                "[[devices]]\nname = \"arm\"\npath = \"/dev/a\"\n[[devices]]\nname = \"arm\"\npath = \"/dev/b\"",
                "devices",
            ),
        ];
        for (text, key) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("provider.toml");
            std::fs::write(&path, text).expect("write");
            let err = match ProviderFile::from_file(&path) {
                Ok(f) => panic!("{text} was accepted: {f:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(key) && err.contains("provider.toml"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn volumes_and_devices_keys() {
        let file = ProviderFile::parse(
            r#"
            max_volumes_size = "50GB"
            volume_check_interval = "5m"

            [[devices]]
            name = "arm"
            path = "/dev/ttyACM0"
            access = "rw"
            peers = ["12D3KooWDu97DyF8V2VLbWMPNhGa1J4PPFVFDxmTTER2dmd6YN4s"]
            fleets = ["lekiwi"]

            [[devices]]
            name = "gpu0"
            kind = "gpu"
            count = 1
            "#,
        )
        .unwrap_or_else(|_| panic!("a valid file"));
        let mut config = ProviderConfig::new(PathBuf::from("/h"));
        assert_eq!(config.max_volumes_size, 10 << 30, "default 10 GB");
        assert_eq!(config.volume_check_interval, Duration::from_secs(60));
        assert!(config.devices.is_empty(), "nothing granted by default");
        file.apply_to(&mut config);
        assert_eq!(config.max_volumes_size, 50 << 30);
        assert_eq!(config.volume_check_interval, Duration::from_secs(300));
        let names: Vec<_> = config.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["arm", "gpu0"]);
        assert_eq!(config.devices[0].peers.len(), 1);
    }

    #[test]
    fn offline_start_wait_key() {
        let mut config = ProviderConfig::new(PathBuf::from("/h"));
        assert_eq!(
            config.offline_start_wait,
            Duration::from_secs(10),
            "default"
        );
        for (text, secs) in [("\"0s\"", 0), ("\"90s\"", 90)] {
            ProviderFile::parse(&format!("offline_start_wait = {text}"))
                .unwrap_or_else(|_| panic!("{text} is valid"))
                .apply_to(&mut config);
            assert_eq!(config.offline_start_wait, Duration::from_secs(secs));
        }
    }
}
