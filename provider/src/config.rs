//! Provider settings and the parsing of the forms users type: `--gateway
//! [PEERID@]HOST:PORT`, `--expose NAME=HOST:PORT` and the owner's device grants
//! (`--grant-device name=arm,path=/dev/ttyACM0,…`, `[[devices]]` in the file).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use peercompute_fleet::FleetId;
use peercompute_identity::{PeerId, parse_peer_id};
use peercompute_runtime::{DeviceAccess, GpuRequest};
pub use peercompute_tunnel_proto::TunnelCongestion;
use serde::Deserialize;

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

/// `--gateway-https HOST:PORT`: where the gateway's HTTPS listener is, for the tunnel over
/// TCP (default: the `--gateway` host, port 443).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsAddr {
    pub host: String,
    pub port: u16,
}

impl FromStr for HttpsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = split_host_port(s)
            .ok_or_else(|| format!("`{s}` is not HOST:PORT (e.g. gw.example.com:443)"))?;
        Ok(Self { host, port })
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

/// Where the admin listener (`/healthz`, `/readyz`, `/metrics`, `/api/v1/status`) listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminListen {
    /// [`DEFAULT_ADMIN_LISTEN`]; when that port is taken (another daemon on this host) the
    /// daemon warns and runs on without it.
    #[default]
    Default,
    /// This address; failing to bind it is an error.
    At(SocketAddr),
    /// No admin listener.
    Off,
}

/// The admin listener's default address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9181);

impl AdminListen {
    /// The address to bind, `None` when off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            AdminListen::Default => Some(DEFAULT_ADMIN_LISTEN),
            AdminListen::At(a) => Some(a),
            AdminListen::Off => None,
        }
    }
}

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(AdminListen::Off);
        }
        s.parse().map(AdminListen::At).map_err(|_| {
            format!("`{s}` is not IP:PORT or `off` (e.g. 127.0.0.1:9181, or 127.0.0.1:0 for any free port)")
        })
    }
}

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
    /// The gateways to open a tunnel to (`--gateway`, repeatable): one link each, every
    /// route published at all of them. Empty: no public URL.
    pub gateways: Vec<GatewaySpec>,
    /// CA bundle that signs the gateway's certificate (when its peer id is not pinned).
    pub gateway_ca: Option<PathBuf>,
    /// How the tunnel reaches the gateway (`--transport`).
    pub transport: crate::tunnel::TransportMode,
    /// The gateways' HTTPS listeners, for the tunnel over TCP (`--gateway-https`, repeatable):
    /// none, or one per gateway in the order of [`Self::gateways`]. Empty: each gateway's
    /// host, port 443.
    pub gateway_https: Vec<HttpsAddr>,
    /// Local services to publish.
    pub expose: Vec<Expose>,
    /// Owners' grants (`peerctl names grant`) for exposed names this key does not own: an
    /// `expose` whose name has a grant here is registered with it (`RegisterGranted`).
    pub grants: Vec<peercompute_tunnel_proto::NameGrant>,
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
    /// The devices this machine's owner grants (`[[devices]]`, `--grant-device`); empty:
    /// nothing is granted.
    pub devices: Vec<DeviceGrant>,
    /// Bytes all named volumes together may hold (`--max-volumes-size`).
    pub max_volumes_size: u64,
    /// How often the volumes' use is measured against their shares (`--volume-check-interval`).
    pub volume_check_interval: Duration,
    /// The admin listener (`--admin-listen`).
    pub admin_listen: AdminListen,
    /// Bearer tokens for the admin API (`--admin-token-file`); required when the admin
    /// listener is not on loopback. `/healthz` and `/readyz` stay open.
    pub admin_token_file: Option<PathBuf>,
    /// Host names the admin listener answers to besides IP literals and `localhost`
    /// (`--admin-host`); other `Host` headers get 421, against DNS rebinding.
    pub admin_host: Vec<String>,
    /// The Docker engine to use (`unix:///path`, `tcp://host:port`); `None`: `DOCKER_HOST`,
    /// else the local socket.
    pub docker_endpoint: Option<String>,
    /// How long a robot holding a fleet log waits at start for one sync with any peer before
    /// it starts the fleet's apps from its own copy (`--offline-start-wait`); 0: no wait.
    pub offline_start_wait: Duration,
    /// The tunnel's QUIC congestion controller, for what the provider sends (responses,
    /// downloads) (`--tunnel-congestion`).
    pub tunnel_congestion: TunnelCongestion,
}

impl ProviderConfig {
    /// Defaults of the spec: listen on TCP and QUIC port 9000, mDNS on, relay on, 4000m
    /// CPU, 4 GB, 10 deployments, 60 s readiness timeout, no device granted, 10 GB of volumes
    /// measured every 60 s.
    pub fn new(home: PathBuf) -> Self {
        Self {
            home,
            gateways: Vec::new(),
            gateway_ca: None,
            transport: crate::tunnel::TransportMode::Auto,
            gateway_https: Vec::new(),
            expose: Vec::new(),
            grants: Vec::new(),
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
            devices: Vec::new(),
            max_volumes_size: DEFAULT_MAX_VOLUMES_SIZE,
            volume_check_interval: DEFAULT_VOLUME_CHECK_INTERVAL,
            admin_listen: AdminListen::Default,
            admin_token_file: None,
            admin_host: Vec::new(),
            docker_endpoint: None,
            offline_start_wait: DEFAULT_OFFLINE_START_WAIT,
            tunnel_congestion: TunnelCongestion::default(),
        }
    }

    /// What the flags and the file cannot check one by one: two device grants of one name, a
    /// gateway named twice, `--gateway-https` not matching the gateways.
    pub fn check(&self) -> Result<(), String> {
        check_grants(&self.devices)?;
        check_gateways(&self.gateways, &self.gateway_https)?;
        if let Some(addr) = self.admin_listen.addr()
            && !addr.ip().is_loopback()
            && self.admin_token_file.is_none()
        {
            return Err(format!(
                "the admin listener on {addr} would be reachable from other machines without a token: pass --admin-token-file FILE (lines `read TOKEN`, chmod 600), or listen on 127.0.0.1"
            ));
        }
        Ok(())
    }

    /// `--volume-check-interval` (and its key): a duration of at least a second (`60s`, `5m`).
    pub fn parse_check_interval(s: &str) -> Result<Duration, String> {
        let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
        if d < Duration::from_secs(1) {
            return Err(format!("`{s}` is under one second: give e.g. 60s"));
        }
        Ok(d)
    }

    /// `--offline-start-wait` (and its key): a duration up to 10 minutes (`10s`, `0s`).
    pub fn parse_start_wait(s: &str) -> Result<Duration, String> {
        let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
        if d > MAX_OFFLINE_START_WAIT {
            return Err(format!(
                "`{s}` is over 10 minutes: give e.g. 10s, or 0s for no wait"
            ));
        }
        Ok(d)
    }
}

/// Each gateway once (by address, and by pinned id), and `--gateway-https` either absent or
/// one per gateway, in the same order.
pub(crate) fn check_gateways(gateways: &[GatewaySpec], https: &[HttpsAddr]) -> Result<(), String> {
    for (i, a) in gateways.iter().enumerate() {
        for b in &gateways[..i] {
            if a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port {
                return Err(format!(
                    "--gateway {}:{} is given twice: name each gateway once",
                    a.host, a.port
                ));
            }
            if let (Some(pa), Some(pb)) = (a.peer, b.peer)
                && pa == pb
            {
                return Err(format!(
                    "gateway {pa} is named twice ({b} and {a}): one --gateway per gateway, keep the address the provider should use"
                ));
            }
        }
    }
    if !https.is_empty() && https.len() != gateways.len() {
        return Err(format!(
            "{} --gateway-https for {} --gateway: give one per --gateway, in the same order, or none (each gateway's host, port 443)",
            https.len(),
            gateways.len()
        ));
    }
    Ok(())
}

/// Default of `--offline-start-wait`.
pub(crate) const DEFAULT_OFFLINE_START_WAIT: Duration = Duration::from_secs(10);
/// Most of `--offline-start-wait`.
const MAX_OFFLINE_START_WAIT: Duration = Duration::from_secs(600);

/// Default of `--max-volumes-size`: 10 GB (powers of 1024, like `--max-memory`).
pub(crate) const DEFAULT_MAX_VOLUMES_SIZE: u64 = 10 << 30;
/// Default of `--volume-check-interval`.
pub(crate) const DEFAULT_VOLUME_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// What a granted device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device node (serial port, camera): mapped with a cgroup rule for its
    /// major:minor alone.
    Char {
        /// The node on this machine (`/dev/ttyACM0`, or a `/dev/serial/by-id/…` link resolved
        /// at each deploy).
        path: PathBuf,
        /// Where the container sees it, under `/dev/`.
        container_path: String,
        /// What the container may do with it (cgroup permissions, never `m`).
        access: DeviceAccess,
    },
    /// NVIDIA GPUs, through the engine's device requests (needs the NVIDIA container runtime).
    Gpu(GpuRequest),
}

/// A fleet named in a grant's `fleets`: its id (`pcf…`), or its name, matched against the
/// fleets this robot has joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetRef {
    Id(FleetId),
    Name(String),
}

impl fmt::Display for FleetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetRef::Id(id) => write!(f, "{id}"),
            FleetRef::Name(name) => f.write_str(name),
        }
    }
}

/// One device the machine's owner grants: a `[[devices]]` entry or a `--grant-device` flag,
/// checked. Both `peers` and `fleets` empty means nobody may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGrant {
    /// The name a deploy asks for (`--device arm`): a DNS label of at most 32 characters.
    pub name: String,
    pub kind: DeviceKind,
    /// Peers whose deploys may use it.
    pub peers: Vec<PeerId>,
    /// Fleets whose releases may use it.
    pub fleets: Vec<FleetRef>,
    /// Whether several running containers may hold it at once (default: no for `char`, yes
    /// for `gpu`).
    pub shared: bool,
}

/// Longest device name.
pub const MAX_DEVICE_NAME: usize = 32;

/// The keys of one `[[devices]]` entry (and of the `--grant-device` flag), before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceKeys {
    name: String,
    path: Option<String>,
    container_path: Option<String>,
    access: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    fleets: Vec<String>,
    kind: Option<String>,
    count: Option<u32>,
    #[serde(default)]
    gpu_ids: Vec<String>,
    shared: Option<bool>,
}

impl DeviceKeys {
    /// Checks the entry; the message names the device and says what to write instead.
    pub(crate) fn check(self) -> Result<DeviceGrant, String> {
        let name = self.name;
        if name.len() > MAX_DEVICE_NAME {
            return Err(format!(
                "device name `{name}` is longer than {MAX_DEVICE_NAME} characters"
            ));
        }
        peercompute_tunnel_proto::validate_name(&name)
            .map_err(|e| format!("`{name}` cannot be a device name: {e} (e.g. name = \"arm\")"))?;
        let bad = |what: String| format!("device `{name}`: {what}");
        let peers = self
            .peers
            .iter()
            .map(|p| parse_peer_id(p).map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let fleets = self
            .fleets
            .iter()
            .map(|f| parse_fleet_ref(f).map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let kind = match self.kind.as_deref().unwrap_or("char") {
            "char" => {
                if self.count.is_some() || !self.gpu_ids.is_empty() {
                    return Err(bad(
                        "`count` and `gpu_ids` are for kind = \"gpu\" entries".into()
                    ));
                }
                let path = self.path.ok_or_else(|| {
                    bad(
                        "no `path`: give the node on this machine, e.g. path = \"/dev/ttyACM0\""
                            .into(),
                    )
                })?;
                let path = absolute_path(&path).map_err(|e| bad(format!("path: {e}")))?;
                let container_path = match self.container_path {
                    Some(p) => {
                        absolute_path(&p).map_err(|e| bad(format!("container_path: {e}")))?
                    }
                    None if path.starts_with("/dev") => path.clone(),
                    None => Path::new("/dev").join(&name),
                };
                if container_path
                    .parent()
                    .is_none_or(|p| !p.starts_with("/dev"))
                {
                    return Err(bad(format!(
                        "container_path `{}` is not under /dev/",
                        container_path.display()
                    )));
                }
                let access: DeviceAccess = self
                    .access
                    .as_deref()
                    .unwrap_or("rw")
                    .parse()
                    .map_err(bad)?;
                DeviceKind::Char {
                    path,
                    container_path: container_path.to_string_lossy().into_owned(),
                    access,
                }
            }
            "gpu" => {
                if self.path.is_some() || self.container_path.is_some() || self.access.is_some() {
                    return Err(bad(
                        "`path`, `container_path` and `access` are for kind = \"char\" entries; a gpu entry takes count or gpu_ids".into(),
                    ));
                }
                match (self.count, self.gpu_ids.is_empty()) {
                    (Some(_), false) => {
                        return Err(bad("give `count` or `gpu_ids`, not both".into()));
                    }
                    (Some(0), true) => return Err(bad("count = 0 grants no GPU".into())),
                    (Some(n), true) => DeviceKind::Gpu(GpuRequest::Count(n)),
                    (None, true) => DeviceKind::Gpu(GpuRequest::Count(1)),
                    (None, false) => {
                        if self.gpu_ids.iter().any(|id| !is_gpu_id(id)) {
                            return Err(bad(format!(
                                "gpu_ids {:?}: each is an index (\"0\") or a UUID (\"GPU-…\")",
                                self.gpu_ids
                            )));
                        }
                        DeviceKind::Gpu(GpuRequest::DeviceIds(self.gpu_ids))
                    }
                }
            }
            other => return Err(bad(format!("kind `{other}` is not \"char\" or \"gpu\""))),
        };
        let shared = self.shared.unwrap_or(matches!(kind, DeviceKind::Gpu(_)));
        Ok(DeviceGrant {
            name,
            kind,
            peers,
            fleets,
            shared,
        })
    }
}

impl FromStr for DeviceGrant {
    type Err = String;

    /// The `--grant-device` form: `KEY=VALUE` pairs separated by `,`, lists joined by `+`
    /// (`name=arm,path=/dev/ttyACM0,access=rw,peers=ID1+ID2,fleets=lekiwi`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut keys = DeviceKeys::default();
        let mut named = false;
        for pair in s.split(',') {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("`{pair}` in `{s}` is not KEY=VALUE (e.g. name=arm,path=/dev/ttyACM0,peers=12D3KooW…)")
            })?;
            let list = || value.split('+').map(str::to_owned).collect::<Vec<_>>();
            match key {
                "name" => (keys.name, named) = (value.to_owned(), true),
                "path" => keys.path = Some(value.to_owned()),
                "container_path" => keys.container_path = Some(value.to_owned()),
                "access" => keys.access = Some(value.to_owned()),
                "peers" => keys.peers = list(),
                "fleets" => keys.fleets = list(),
                "kind" => keys.kind = Some(value.to_owned()),
                "count" => {
                    keys.count = Some(
                        value
                            .parse()
                            .map_err(|_| format!("count `{value}` is not a number"))?,
                    );
                }
                "gpu_ids" => keys.gpu_ids = list(),
                "shared" => {
                    keys.shared = Some(
                        value
                            .parse()
                            .map_err(|_| format!("shared `{value}` is not true or false"))?,
                    );
                }
                other => {
                    return Err(format!(
                        "`{other}` is not a device key: name, path, container_path, access, peers, fleets, kind, count, gpu_ids, shared"
                    ));
                }
            }
        }
        if !named {
            return Err(format!("`{s}` has no name=NAME"));
        }
        keys.check()
    }
}

/// Refuses two grants of one name.
pub(crate) fn check_grants(grants: &[DeviceGrant]) -> Result<(), String> {
    for (i, grant) in grants.iter().enumerate() {
        if grants[..i].iter().any(|g| g.name == grant.name) {
            return Err(format!(
                "device `{}` is granted twice: give each entry its own name",
                grant.name
            ));
        }
    }
    Ok(())
}

fn parse_fleet_ref(s: &str) -> Result<FleetRef, String> {
    if s.starts_with("pcf")
        && let Ok(id) = s.parse()
    {
        return Ok(FleetRef::Id(id));
    }
    if s.trim().is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
        return Err(format!(
            "fleets: `{s}` is neither a fleet id (pcf…) nor a fleet name"
        ));
    }
    Ok(FleetRef::Name(s.to_owned()))
}

/// An absolute, normalized path (no `.`, `..`, `//` or trailing `/`), not `/`.
fn absolute_path(s: &str) -> Result<PathBuf, String> {
    let refused =
        || format!("`{s}` is not an absolute path like /dev/ttyACM0 (no . or .., no trailing /)");
    let mut rebuilt = String::new();
    let mut components = Path::new(s).components();
    if components.next() != Some(Component::RootDir) || s.chars().any(char::is_control) {
        return Err(refused());
    }
    for c in components {
        let Component::Normal(part) = c else {
            return Err(refused());
        };
        rebuilt.push('/');
        rebuilt.push_str(&part.to_string_lossy());
    }
    if rebuilt.is_empty() || rebuilt != s {
        return Err(refused());
    }
    Ok(PathBuf::from(s))
}

fn is_gpu_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercompute_identity::Identity;

    #[test]
    fn each_gateway_once_and_https_one_per_gateway() {
        let id = Identity::generate().expect("id").peer_id();
        let g = |s: &str| s.parse::<GatewaySpec>().expect("spec");
        let h = |s: &str| s.parse::<HttpsAddr>().expect("https");
        let cases: Vec<(Vec<GatewaySpec>, Vec<HttpsAddr>, Option<&str>)> = vec![
            (vec![], vec![], None),
            (vec![g("gw1:8443")], vec![h("gw1:443")], None),
            (vec![g("gw1:8443"), g("gw2:8443")], vec![], None),
            (
                vec![g("gw1:8443"), g("gw2:8443")],
                vec![h("gw1:443"), h("gw2:443")],
                None,
            ),
            (
                vec![g("gw1:8443"), g("GW1:8443")],
                vec![],
                Some("--gateway GW1:8443 is given twice"),
            ),
            (
                vec![
                    g(&format!("{id}@gw1:8443")),
                    g(&format!("{id}@192.0.2.1:8443")),
                ],
                vec![],
                Some("is named twice"),
            ),
            (
                vec![g("gw1:8443"), g("gw2:8443")],
                vec![h("gw1:443")],
                Some(
                    "1 --gateway-https for 2 --gateway: give one per --gateway, in the same order",
                ),
            ),
        ];
        for (gateways, https, want) in cases {
            let got = check_gateways(&gateways, &https).err();
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(e)) if e.contains(w) => {}
                _ => panic!("{gateways:?} {https:?}: {got:?}, want {want:?}"),
            }
        }
    }

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

    const PEER: &str = "12D3KooWDu97DyF8V2VLbWMPNhGa1J4PPFVFDxmTTER2dmd6YN4s";

    #[test]
    fn grant_device_flag_form() {
        let g: DeviceGrant =
            format!("name=arm,path=/dev/ttyACM0,access=rw,peers={PEER},fleets=lekiwi")
                .parse()
                .expect("a grant");
        assert_eq!(g.name, "arm");
        assert_eq!(
            g.kind,
            DeviceKind::Char {
                path: "/dev/ttyACM0".into(),
                container_path: "/dev/ttyACM0".into(),
                access: DeviceAccess::Rw,
            }
        );
        assert_eq!(g.peers.len(), 1);
        assert_eq!(g.fleets, vec![FleetRef::Name("lekiwi".into())]);
        assert!(!g.shared, "a char device is exclusive by default");

        let g: DeviceGrant = "name=cam,path=/dev/v4l/by-id/usb-cam,access=r,shared=true"
            .parse()
            .expect("a grant");
        let DeviceKind::Char {
            container_path,
            access,
            ..
        } = &g.kind
        else {
            panic!("char: {g:?}");
        };
        assert_eq!(
            container_path, "/dev/v4l/by-id/usb-cam",
            "under /dev: same path"
        );
        assert_eq!(*access, DeviceAccess::R);
        assert!(g.shared && g.peers.is_empty() && g.fleets.is_empty());

        let g: DeviceGrant = "name=motor,path=/run/motor0".parse().expect("a grant");
        let DeviceKind::Char { container_path, .. } = &g.kind else {
            panic!("char: {g:?}");
        };
        assert_eq!(container_path, "/dev/motor", "outside /dev: /dev/<name>");

        let g: DeviceGrant = "name=gpu0,kind=gpu,gpu_ids=0+GPU-1a2b"
            .parse()
            .expect("a gpu");
        assert_eq!(
            g.kind,
            DeviceKind::Gpu(GpuRequest::DeviceIds(vec!["0".into(), "GPU-1a2b".into()]))
        );
        assert!(g.shared, "GPUs are shared by default");
        let g: DeviceGrant = "name=gpu,kind=gpu".parse().expect("a gpu");
        assert_eq!(g.kind, DeviceKind::Gpu(GpuRequest::Count(1)));

        let fleet = "pcf".to_owned() + &bs58_of_a_key();
        let g: DeviceGrant = format!("name=arm,path=/dev/ttyACM0,fleets={fleet}+lekiwi")
            .parse()
            .expect("fleet id and name");
        assert!(matches!(g.fleets[0], FleetRef::Id(_)), "{:?}", g.fleets);
    }

    fn bs58_of_a_key() -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let id = peercompute_fleet::FleetId(key.to_bytes()).to_string();
        id.trim_start_matches("pcf").to_owned()
    }

    #[test]
    fn grant_device_refusals_say_what_is_wrong() {
        let cases = [
            ("path=/dev/ttyACM0", "no name"),
            ("name=Arm,path=/dev/ttyACM0", "cannot be a device name"),
            (
                "name=a-very-long-device-name-of-33-chars,path=/dev/x",
                "longer than 32",
            ),
            ("name=arm", "no `path`"),
            ("name=arm,path=dev/ttyACM0", "not an absolute path"),
            ("name=arm,path=/dev/../etc/shadow", "not an absolute path"),
            ("name=arm,path=/dev/./ttyACM0", "not an absolute path"),
            ("name=arm,path=/dev/ttyACM0/", "not an absolute path"),
            ("name=arm,path=/dev//ttyACM0", "not an absolute path"),
            ("name=arm,path=/", "not an absolute path"),
            (
                "name=arm,path=/dev/ttyACM0,container_path=/data/tty",
                "not under /dev/",
            ),
            (
                "name=arm,path=/dev/ttyACM0,container_path=/dev",
                "not under /dev/",
            ),
            (
                "name=arm,path=/dev/ttyACM0,access=rwm",
                "use \"r\" or \"rw\"",
            ),
            ("name=arm,path=/dev/ttyACM0,peers=nobody", "not a peer id"),
            ("name=arm,path=/dev/ttyACM0,fleets=", "neither a fleet id"),
            ("name=arm,path=/dev/ttyACM0,kind=block", "kind `block`"),
            (
                "name=arm,path=/dev/ttyACM0,count=1",
                "are for kind = \"gpu\"",
            ),
            (
                "name=gpu,kind=gpu,path=/dev/nvidia0",
                "are for kind = \"char\"",
            ),
            ("name=gpu,kind=gpu,count=0", "grants no GPU"),
            ("name=gpu,kind=gpu,count=1,gpu_ids=0", "not both"),
            ("name=gpu,kind=gpu,gpu_ids=0;rm", "gpu_ids"),
            ("name=arm,path=/dev/ttyACM0,shared=yes", "not true or false"),
            ("name=arm,path=/dev/ttyACM0,mode=m", "not a device key"),
            ("name=arm,/dev/ttyACM0", "not KEY=VALUE"),
        ];
        for (flag, expected) in cases {
            match flag.parse::<DeviceGrant>() {
                Ok(g) => panic!("{flag} was accepted: {g:?}"),
                Err(e) => assert!(e.contains(expected), "{flag}: {e}"),
            }
        }
    }

    #[test]
    fn a_name_is_granted_once() {
        let mut config = ProviderConfig::new(PathBuf::from("/h"));
        config.devices = vec![
            "name=arm,path=/dev/ttyACM0".parse().expect("grant"),
            "name=arm,path=/dev/ttyACM1".parse().expect("grant"),
        ];
        let err = config.check().expect_err("two grants named arm");
        assert!(err.contains("`arm` is granted twice"), "{err}");
        config.devices.pop();
        config.check().expect("one grant");
    }

    #[test]
    fn check_interval_is_at_least_a_second() {
        assert_eq!(
            ProviderConfig::parse_check_interval("5m"),
            Ok(Duration::from_secs(300))
        );
        for bad in ["0s", "500ms", "soon"] {
            assert!(ProviderConfig::parse_check_interval(bad).is_err(), "{bad}");
        }
    }
}
