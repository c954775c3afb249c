//! The provider's tunnel client: one connection to the gateway, kept open forever, over QUIC
//! or — where UDP is blocked — over TLS on TCP to the gateway's HTTPS port (`--transport
//! auto|quic|tcp`).
//!
//! [`start_tunnel`] spawns the client task and returns a [`TunnelHandle`] through which the
//! rest of the daemon publishes and withdraws routes. The task reconnects with jittered
//! exponential backoff ([`crate::backoff`]) and re-registers every route after each reconnect
//! ([`session`]); each data stream the gateway opens is spliced to the route's local TCP
//! target ([`splice`]). [`link`] dials the transports as [`choice`] decides (QUIC first, TCP
//! beside it when UDP stays silent, back to QUIC when a probe works) and moves a live tunnel
//! from one to the other without failing the streams under way. [`tls`] builds the client
//! certificate and the gateway check.

mod choice;
mod link;
mod session;
mod splice;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use peercompute_identity::Identity;
use peercompute_tunnel_proto::RefuseCode;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub use choice::TransportMode;
pub use peercompute_tunnel_transport::Transport;
pub use tls::TlsSetupError;

use crate::backoff::Backoff;
use crate::config::GatewaySpec;
use session::SessionEnd;

/// A connection that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
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
    status: watch::Receiver<TunnelStatus>,
    p2p: watch::Receiver<Option<GatewayP2p>>,
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
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Register {
            name: name.to_owned(),
            target: Target {
                host: host.to_owned(),
                port,
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

    /// Current connection status.
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

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    pub gateway: GatewaySpec,
    pub gateway_ca: Option<PathBuf>,
    /// `--transport`: QUIC, TCP, or QUIC with a TCP fallback (auto).
    pub transport: TransportMode,
    /// `--gateway-https`: where the TCP transport goes; `None`: the gateway's host, port
    /// [`DEFAULT_HTTPS_PORT`].
    pub gateway_https: Option<(String, u16)>,
}

impl TunnelSettings {
    /// Settings for `gateway` with the defaults: auto transport, TCP to its host's port 443,
    /// the gateway's key pinned or checked against system roots.
    pub fn new(gateway: GatewaySpec) -> Self {
        Self {
            gateway,
            gateway_ca: None,
            transport: TransportMode::Auto,
            gateway_https: None,
        }
    }
}

/// Starts the tunnel client. It runs until `shutdown` becomes true (then closes the
/// connection politely) or until the returned task is aborted (like a crash: no goodbye).
pub fn start_tunnel(
    identity: &Identity,
    settings: TunnelSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(TunnelHandle, tokio::task::JoinHandle<()>), TlsSetupError> {
    let configs = tls::client_config(
        identity,
        settings.gateway.peer,
        settings.gateway_ca.as_deref(),
    )?;
    let (commands, rx) = mpsc::channel(64);
    let (status_tx, status) = watch::channel(TunnelStatus::Connecting);
    let (p2p_tx, p2p) = watch::channel(None);
    let https = settings
        .gateway_https
        .unwrap_or_else(|| (settings.gateway.host.clone(), DEFAULT_HTTPS_PORT));
    let task = tokio::spawn(run_client(
        Dial {
            gateway: settings.gateway,
            https,
            configs,
            mode: settings.transport,
        },
        rx,
        (status_tx, p2p_tx),
        shutdown,
    ));
    Ok((
        TunnelHandle {
            commands,
            status,
            p2p,
        },
        task,
    ))
}

/// State that outlives one connection.
pub(crate) struct ClientState {
    /// Routes we want published (re-registered after every reconnect).
    pub(crate) desired: HashMap<String, Target>,
    /// Routes the gateway accepted, read by the splicer.
    pub(crate) routes: Routes,
    /// Callers waiting for a registration answer.
    pub(crate) waiters: HashMap<String, Vec<oneshot::Sender<Result<String, RegisterError>>>>,
    pub(crate) splices: JoinSet<()>,
}

/// Where the client connects and how it checks the gateway.
struct Dial {
    gateway: GatewaySpec,
    /// The TCP transport's address.
    https: (String, u16),
    configs: tls::ClientConfigs,
    mode: TransportMode,
}

async fn run_client(
    dial: Dial,
    mut commands: mpsc::Receiver<Command>,
    (status, p2p): (
        watch::Sender<TunnelStatus>,
        watch::Sender<Option<GatewayP2p>>,
    ),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = ClientState {
        desired: HashMap::new(),
        routes: Arc::new(RwLock::new(HashMap::new())),
        waiters: HashMap::new(),
        splices: JoinSet::new(),
    };
    let Dial {
        gateway,
        https,
        configs,
        mode,
    } = dial;
    let mut backoff = Backoff::reconnect();
    let mut sessions = 0u64;
    let mut last_status = TunnelStatus::Stopped;
    let endpoint = match bind_endpoint(&gateway) {
        Ok(ep) => ep,
        Err(e) => {
            error!("cannot open a UDP socket for the tunnel: {e}");
            status.send_replace(TunnelStatus::Stopped);
            return;
        }
    };
    let mut link = link::Link::new(
        link::Dialer {
            gateway: gateway.clone(),
            https,
            quic: configs.quic,
            tcp: configs.tcp,
            mismatch: configs.mismatch,
            endpoint: endpoint.clone(),
        },
        mode,
    );
    // Connections the tunnel moved away from, finishing their streams.
    let mut draining = JoinSet::new();
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        if !matches!(*status.borrow(), TunnelStatus::Refused { .. }) {
            status.send_replace(TunnelStatus::Connecting);
        }
        link.start();
        let first = loop {
            tokio::select! {
                step = link.next_step() => match step {
                    link::Step::Serve(opened) => break Ok(opened),
                    link::Step::Retry(end) => break Err(end),
                    link::Step::Migrate(extra) => extra.close("no tunnel to move").await,
                },
                _ = shutdown.changed() => break 'outer,
                // Keep accepting registrations while we are offline.
                Some(cmd) = commands.recv() => session::apply_offline(&mut state, cmd),
                Some(_) = draining.join_next(), if !draining.is_empty() => {}
            }
        };
        let end = match first {
            Ok(mut opened) => {
                let since = Instant::now();
                info!(gateway = %gateway, transport = %opened.conn.transport(), "connected to the gateway");
                let end = loop {
                    sessions += 1;
                    let via = opened.conn.transport();
                    status.send_replace(TunnelStatus::Connected {
                        gateway: opened.conn.remote_address(),
                        session: sessions,
                        registered: 0,
                        transport: via,
                    });
                    let announce = session::Announce {
                        status: &status,
                        p2p: &p2p,
                    };
                    let end = session::run(
                        opened,
                        &mut state,
                        &mut commands,
                        &mut shutdown,
                        announce,
                        &mut link,
                    )
                    .await;
                    match end {
                        SessionEnd::Moved { next, old } => {
                            info!(
                                from = %via,
                                to = %next.conn.transport(),
                                "tunnel moved; {} streams finishing on {via}",
                                state.splices.len()
                            );
                            draining.spawn(session::drain(*old, state.routes.clone()));
                            opened = *next;
                        }
                        other => {
                            link.session_lost(via);
                            break other;
                        }
                    }
                };
                if since.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                end
            }
            Err(end) => end,
        };
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Lost(reason) => warn!("tunnel to {gateway} lost: {reason}"),
            SessionEnd::Refused(reason) => {
                error!("the gateway refused this provider: {reason}");
                status.send_replace(TunnelStatus::Refused { reason });
            }
            SessionEnd::Moved { next, old } => {
                // Not returned outside the serving loop; close both if it ever is.
                next.close("provider restarting its tunnel").await;
                old.close("provider restarting its tunnel").await;
            }
            // Only a pinned check notes a presented key, so `peer` is always set here.
            SessionEnd::WrongGateway(presented) => match gateway.peer {
                Some(expected) => {
                    error!(
                        "{}",
                        wrong_gateway(&gateway.host, gateway.port, expected, presented)
                    );
                    last_status = TunnelStatus::WrongGateway {
                        expected,
                        presented,
                    };
                    break;
                }
                None => warn!("tunnel to {gateway} refused: it presented {presented}"),
            },
        }
        let delay = backoff.next_delay();
        info!("reconnecting in {:.1} s", delay.as_secs_f64());
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = shutdown.changed() => break 'outer,
                Some(cmd) = commands.recv() => session::apply_offline(&mut state, cmd),
                Some(_) = draining.join_next(), if !draining.is_empty() => {}
            }
        }
    }
    status.send_replace(last_status);
    for (_, waiters) in state.waiters.drain() {
        for w in waiters {
            let _ = w.send(Err(RegisterError::Stopped));
        }
    }
    draining.abort_all();
    endpoint.close(
        peercompute_tunnel_proto::GoAwayCode::Shutdown
            .to_u16()
            .into(),
        b"provider stopping",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    // Let in-flight requests finish briefly, then drop the rest.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while state.splices.join_next().await.is_some() {}
    })
    .await;
}

/// What the operator reads once when the gateway is not the pinned one.
fn wrong_gateway(
    host: &str,
    port: u16,
    expected: peercompute_identity::PeerId,
    presented: peercompute_identity::PeerId,
) -> String {
    format!(
        "check --gateway {expected}@{host}:{port}: the gateway at {host}:{port} is {presented}, not {expected} \
         (`peercompute-gateway id` on the gateway prints its id). Not retrying: no route is published \
         until peercomputed restarts with the right id; deployments and the control plane keep running"
    )
}

fn bind_endpoint(gateway: &GatewaySpec) -> std::io::Result<quinn::Endpoint> {
    let v6 = gateway.host.parse::<std::net::Ipv6Addr>().is_ok();
    let local: SocketAddr = if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let (socket, granted) = peercompute_tunnel_proto::bind_udp(local)?;
    if granted < 4 * 1024 * 1024 {
        warn!(
            granted_bytes = granted,
            "the kernel capped the tunnel's UDP buffer; raise net.core.rmem_max for heavy traffic"
        );
    }
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}
