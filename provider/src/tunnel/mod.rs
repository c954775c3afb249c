//! The provider's tunnel client: a connection to each gateway it names, kept open forever,
//! over QUIC or — where UDP is blocked — over TLS on TCP to the gateway's HTTPS port
//! (`--transport auto|quic|tcp`).
//!
//! [`start_tunnel`] spawns one link per gateway ([`client`]: each with its own state, backoff
//! and transport choice) and the [`fanout`] task in front of them, and returns a
//! [`TunnelHandle`] through which the rest of the daemon publishes and withdraws routes at all
//! gateways at once; [`routes`] decides what a registration answers when the gateways
//! disagree. Each link reconnects with jittered exponential backoff ([`crate::backoff`]) and
//! re-registers every route after each reconnect ([`session`]); each data stream a gateway
//! opens is spliced to the route's local TCP target ([`splice`]). [`link`] dials the
//! transports as [`choice`] decides (QUIC first, TCP beside it when UDP stays silent, back to
//! QUIC when a probe works) and moves a live tunnel from one to the other without failing the
//! streams under way. [`tls`] builds the client certificate and the gateway check.

mod choice;
mod client;
mod fanout;
mod link;
mod routes;
mod session;
mod splice;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use peercompute_fleet::FleetId;
use peercompute_identity::Identity;
use peercompute_tunnel_proto::{NameGrant, RefuseCode, TunnelCongestion};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

pub use choice::TransportMode;
pub use peercompute_tunnel_transport::Transport;
pub use tls::TlsSetupError;

use crate::config::GatewaySpec;
pub(crate) use client::ClientState;

/// The HTTPS port the TCP transport goes to when `--gateway-https` does not say.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// Why a route could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("the gateway refused `{name}`: {reason}")]
    Refused {
        name: String,
        code: RefuseCode,
        reason: String,
    },
    #[error("the tunnel client has stopped")]
    Stopped,
    #[error("`{name}` was withdrawn before the gateway confirmed it")]
    Withdrawn { name: String },
}

/// Local target of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// On what ground this provider asks for the name.
    pub(crate) claim: Claim,
}

/// On what ground a provider asks the gateway for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Its own key owns it, or takes it (`Register`).
    Own,
    /// The owner's grant: this provider serves a name another key owns (`RegisterGranted`).
    Granted(Box<NameGrant>),
    /// A fleet group's name, as a robot of `group` of fleet `fleet` (`RegisterFleet`).
    Fleet { fleet: FleetId, group: String },
}

/// Routes the gateway accepted: name → local target. Data streams for other names are refused.
pub(crate) type Routes = Arc<RwLock<HashMap<String, Target>>>;

pub(crate) enum Command {
    Register {
        name: String,
        target: Target,
        reply: oneshot::Sender<Result<String, RegisterError>>,
    },
    Unregister {
        name: String,
    },
}

/// Publishes and withdraws routes through the running tunnel client.
#[derive(Debug, Clone)]
pub struct TunnelHandle {
    commands: mpsc::Sender<Command>,
    /// The aggregate over the links ([`fanout::aggregate`]).
    status: watch::Receiver<TunnelStatus>,
    p2p: watch::Receiver<Option<GatewayP2p>>,
    /// Each link's own status, in the order of the gateways.
    links: Arc<[(GatewaySpec, watch::Receiver<TunnelStatus>)]>,
}

/// One gateway's link and what it is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub gateway: GatewaySpec,
    pub status: TunnelStatus,
}

/// The gateway's libp2p meeting point as its Welcome announced it, with unspecified IPs
/// replaced by the host the tunnel reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayP2p {
    pub peer: peercompute_identity::PeerId,
    pub addrs: Vec<peercompute_p2p::Multiaddr>,
}

/// What the tunnel client is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelStatus {
    Connecting,
    /// Connected; `session` counts connections since start (1 = first; a move to the other
    /// transport is a new one), `registered` the names the gateway accepted on this
    /// connection so far, `transport` QUIC or TCP.
    Connected {
        gateway: SocketAddr,
        session: u64,
        registered: usize,
        transport: Transport,
    },
    /// The gateway refused this provider (e.g. not on its allowlist); retrying with backoff.
    Refused {
        reason: String,
    },
    /// The gateway presented another key than the pinned one. Final: the client stopped (a
    /// configuration error, not a network fault; the error was logged once).
    WrongGateway {
        expected: peercompute_identity::PeerId,
        presented: peercompute_identity::PeerId,
    },
    Stopped,
}

impl TunnelStatus {
    /// The client has stopped for good (shutdown, or a gateway that is not the pinned one).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Stopped | Self::WrongGateway { .. })
    }
}

impl TunnelHandle {
    /// Publishes `name` → `host:port` and waits until the gateway accepted it; returns the URL.
    /// While the gateway is unreachable the registration waits for the next connection.
    pub async fn register(
        &self,
        name: &str,
        host: &str,
        port: u16,
    ) -> Result<String, RegisterError> {
        self.register_target(name, host, port, Claim::Own).await
    }

    /// Publishes `name` → `host:port` for a name another key owns, presenting its owner's
    /// `grant` (`RegisterGranted`, gateways of protocol version 2 and later); the gateway
    /// adds this provider beside the owner's and balances requests between them.
    pub async fn register_granted(
        &self,
        name: &str,
        host: &str,
        port: u16,
        grant: NameGrant,
    ) -> Result<String, RegisterError> {
        self.register_target(name, host, port, Claim::Granted(Box::new(grant)))
            .await
    }

    /// Publishes the group name `name` → `host:port` as a robot of `group` of `fleet`
    /// (`RegisterFleet`, gateways of protocol version 3 and later): the gateway checks the
    /// fleet's log and balances the name's visitors across the group's robots.
    pub async fn register_fleet(
        &self,
        name: &str,
        host: &str,
        port: u16,
        fleet: FleetId,
        group: &str,
    ) -> Result<String, RegisterError> {
        let claim = Claim::Fleet {
            fleet,
            group: group.to_owned(),
        };
        self.register_target(name, host, port, claim).await
    }

    async fn register_target(
        &self,
        name: &str,
        host: &str,
        port: u16,
        claim: Claim,
    ) -> Result<String, RegisterError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Register {
            name: name.to_owned(),
            target: Target {
                host: host.to_owned(),
                port,
                claim,
            },
            reply,
        };
        self.commands
            .send(cmd)
            .await
            .map_err(|_| RegisterError::Stopped)?;
        rx.await.map_err(|_| RegisterError::Stopped)?
    }

    /// Withdraws `name`; the gateway stops routing it at once.
    pub async fn unregister(&self, name: &str) {
        let _ = self
            .commands
            .send(Command::Unregister {
                name: name.to_owned(),
            })
            .await;
    }

    /// The gateway's libp2p addresses, once a Welcome announced them.
    pub fn gateway_p2p(&self) -> watch::Receiver<Option<GatewayP2p>> {
        self.p2p.clone()
    }

    /// Each gateway's link, in the order the gateways were given.
    pub fn links(&self) -> Vec<LinkStatus> {
        self.links
            .iter()
            .map(|(gateway, rx)| LinkStatus {
                gateway: gateway.clone(),
                status: rx.borrow().clone(),
            })
            .collect()
    }

    /// Current connection status: `Connected` (the first connected link's) while at least one
    /// gateway's link is; see [`Self::links`] for each.
    pub fn status(&self) -> TunnelStatus {
        self.status.borrow().clone()
    }

    /// The status as a watch, for whoever follows its changes (the admin metrics).
    pub fn status_watch(&self) -> watch::Receiver<TunnelStatus> {
        self.status.clone()
    }

    /// Waits until the status satisfies `pred` (e.g. connected), or the client stopped.
    pub async fn wait_for(&self, pred: impl Fn(&TunnelStatus) -> bool) -> TunnelStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(|s| pred(s) || s.is_final()).await {
            Ok(s) => s.clone(),
            Err(_) => TunnelStatus::Stopped,
        }
    }
}

/// One gateway to keep a link to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayLink {
    pub spec: GatewaySpec,
    /// `--gateway-https`: where the TCP transport goes; `None`: the gateway's host, port
    /// [`DEFAULT_HTTPS_PORT`].
    pub https: Option<(String, u16)>,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    /// One link each, in this order (the order [`TunnelHandle::links`] shows).
    pub gateways: Vec<GatewayLink>,
    pub gateway_ca: Option<PathBuf>,
    /// `--transport`: QUIC, TCP, or QUIC with a TCP fallback (auto).
    pub transport: TransportMode,
    /// `--tunnel-congestion`: the QUIC congestion controller for what the provider sends.
    pub congestion: TunnelCongestion,
}

impl TunnelSettings {
    /// Settings for one `gateway` with the defaults: auto transport, TCP to its host's port
    /// 443, the gateway's key pinned or checked against system roots, cubic.
    pub fn new(gateway: GatewaySpec) -> Self {
        Self::several(vec![gateway])
    }

    /// Settings for a link to each of `gateways`, with the defaults of [`Self::new`].
    pub fn several(gateways: Vec<GatewaySpec>) -> Self {
        Self {
            gateways: gateways
                .into_iter()
                .map(|spec| GatewayLink { spec, https: None })
                .collect(),
            gateway_ca: None,
            transport: TransportMode::Auto,
            congestion: TunnelCongestion::default(),
        }
    }
}

/// Starts a link to every gateway of `settings` and the fan-out in front of them. It runs
/// until `shutdown` becomes true (then closes the connections politely) or until the returned
/// task is aborted (like a crash: no goodbye; the links are aborted with it).
pub fn start_tunnel(
    identity: &Identity,
    settings: TunnelSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(TunnelHandle, tokio::task::JoinHandle<()>), TlsSetupError> {
    let mut tasks = JoinSet::new();
    let mut ios = Vec::with_capacity(settings.gateways.len());
    let mut links = Vec::with_capacity(settings.gateways.len());
    for GatewayLink { spec, https } in settings.gateways {
        let configs = tls::client_config(
            identity,
            spec.peer,
            settings.gateway_ca.as_deref(),
            settings.congestion,
        )?;
        let (commands, rx) = mpsc::channel(64);
        let (status_tx, status) = watch::channel(TunnelStatus::Connecting);
        let (p2p_tx, p2p) = watch::channel(None);
        let https = https.unwrap_or_else(|| (spec.host.clone(), DEFAULT_HTTPS_PORT));
        links.push((spec.clone(), status.clone()));
        ios.push(fanout::LinkIo {
            name: format!("{}:{}", spec.host, spec.port),
            commands,
            status,
            p2p,
        });
        tasks.spawn(client::run_client(
            client::Dial {
                gateway: spec,
                https,
                configs,
                mode: settings.transport,
            },
            rx,
            (status_tx, p2p_tx),
            shutdown.clone(),
        ));
    }
    let (commands, rx) = mpsc::channel(64);
    let (status_tx, status) = watch::channel(TunnelStatus::Connecting);
    let (p2p_tx, p2p) = watch::channel(None);
    let task = tokio::spawn(fanout::run(ios, tasks, rx, (status_tx, p2p_tx)));
    Ok((
        TunnelHandle {
            commands,
            status,
            p2p,
            links: links.into(),
        },
        task,
    ))
}
