//! Provider settings and the parsing of the two address forms users type:
//! `--gateway [PEERID@]HOST:PORT` and `--expose NAME=HOST:PORT`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use peercompute_identity::{PeerId, parse_peer_id};

/// Where the gateway is and how to authenticate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Pinned gateway identity; `None` means verify by CA (`--gateway-ca` or system roots).
    pub peer: Option<PeerId>,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for GatewaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(p) => write!(f, "{p}@{}:{}", self.host, self.port),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl FromStr for GatewaySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (peer, addr) = match s.split_once('@') {
            Some((peer, addr)) => (Some(parse_peer_id(peer)?), addr),
            None => (None, s),
        };
        let (host, port) = split_host_port(addr).ok_or_else(|| {
            format!("`{s}` is not [PEERID@]HOST:PORT (e.g. 12D3KooW…@gw.example.com:8443)")
        })?;
        Ok(Self { peer, host, port })
    }
}

/// A local TCP service published under a route name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expose {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl FromStr for Expose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("`{s}` is not NAME=HOST:PORT (e.g. blog=127.0.0.1:8080)");
        let (name, addr) = s.split_once('=').ok_or_else(usage)?;
        peercompute_tunnel_proto::validate_name(name)
            .map_err(|e| format!("`{name}` cannot be a route name: {e}"))?;
        let (host, port) = split_host_port(addr).ok_or_else(usage)?;
        Ok(Self {
            name: name.to_owned(),
            host,
            port,
        })
    }
}

/// `host:port`, `[v6]:port`; the port must be a non-zero u16.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// The default control-plane listen addresses: TCP and QUIC (hole punching works best over
/// UDP) on port 9000.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/9000", "/ip4/0.0.0.0/udp/9000/quic-v1"];

/// Who keeps containers off this host and its private networks (the egress firewall of the
/// sandbox network, `peercompute_runtime::install_egress_firewall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firewall {
    /// The daemon installs the rules as it starts and before every deploy (needs root or
    /// CAP_NET_ADMIN; without, it refuses deploys and says what to run).
    #[default]
    Install,
    /// Someone else does, e.g. `peercomputed firewall` run as root before the daemon (the
    /// systemd unit's ExecStartPre): the daemon only says so.
    External,
    /// Nobody: containers can reach this host and its LAN. Warned about at start.
    Off,
}

impl Firewall {
    /// The forms `--firewall` and the config file take.
    pub const FORMS: [&'static str; 3] = ["install", "external", "off"];
}

impl fmt::Display for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firewall::Install => "install",
            Firewall::External => "external",
            Firewall::Off => "off",
        })
    }
}

impl FromStr for Firewall {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "install" => Ok(Firewall::Install),
            "external" => Ok(Firewall::External),
            "off" => Ok(Firewall::Off),
            other => Err(format!(
                "`{other}` is not one of {}",
                Firewall::FORMS.join(", ")
            )),
        }
    }
}

/// A join token as text (`join = "pcjoin1.…"` in the config file); it admits robots to a
/// fleet, so `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokenText(pub String);

impl fmt::Debug for JoinTokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinTokenText(<redacted>)")
    }
}

/// Everything `peercomputed run` needs.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Identity, trusted peers and state.
    pub home: PathBuf,
    /// The gateway to open the tunnel to.
    pub gateway: Option<GatewaySpec>,
    /// CA bundle that signs the gateway's certificate (when its peer id is not pinned).
    pub gateway_ca: Option<PathBuf>,
    /// Local services to publish.
    pub expose: Vec<Expose>,
    /// libp2p listen addresses of the control plane.
    pub listen: Vec<peercompute_p2p::Multiaddr>,
    /// Announce on the LAN with mDNS.
    pub mdns: bool,
    /// The gateway's libp2p addresses (`--gateway-p2p`); empty: learned from the tunnel.
    pub gateway_p2p: Vec<peercompute_p2p::Multiaddr>,
    /// Keep a relay slot at the gateway so clients reach us behind NAT by peer id.
    pub relay: bool,
    /// Admission limits and readiness timeout.
    pub deploy: crate::deploy::DeploySettings,
    /// Who installs the containers' egress firewall.
    pub firewall: Firewall,
    /// A fleet join token to enrol with at start (`join` in the config file), like
    /// `peercomputed join`.
    pub join: Option<JoinTokenText>,
}

impl ProviderConfig {
    /// Defaults of the spec: listen on TCP and QUIC port 9000, mDNS on, relay on, 4000m
    /// CPU, 4 GB, 10 deployments, 60 s readiness timeout.
    pub fn new(home: PathBuf) -> Self {
        Self {
            home,
            gateway: None,
            gateway_ca: None,
            expose: Vec::new(),
            listen: DEFAULT_LISTEN
                .iter()
                .map(|a| a.parse().expect("a valid multiaddr"))
                .collect(),
            mdns: true,
            gateway_p2p: Vec::new(),
            relay: true,
            deploy: crate::deploy::DeploySettings {
                limits: peercompute_runtime::Limits::default(),
                ready_timeout: std::time::Duration::from_secs(60),
            },
            firewall: Firewall::Install,
            join: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercompute_identity::Identity;

    #[test]
    fn gateway_spec_forms() {
        let id = Identity::generate().expect("id").peer_id();
        let spec: GatewaySpec = format!("{id}@gw.example.com:8443").parse().expect("pinned");
        assert_eq!(spec.peer, Some(id));
        assert_eq!((spec.host.as_str(), spec.port), ("gw.example.com", 8443));
        let spec: GatewaySpec = "[::1]:8443".parse().expect("v6");
        assert_eq!((spec.peer, spec.host.as_str()), (None, "::1"));
        for bad in ["gw.example.com", "x@gw:1", "gw:0", "gw:99999", ":8443"] {
            assert!(bad.parse::<GatewaySpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn expose_forms() {
        let e: Expose = "blog=127.0.0.1:8080".parse().expect("expose");
        assert_eq!(
            (e.name.as_str(), e.host.as_str(), e.port),
            ("blog", "127.0.0.1", 8080)
        );
        for bad in [
            "blog",
            "Blog=1.2.3.4:80",
            "blog=1.2.3.4",
            "=1.2.3.4:80",
            "a.b=x:1",
        ] {
            assert!(bad.parse::<Expose>().is_err(), "{bad}");
        }
    }
}
