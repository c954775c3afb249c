//! The provider's tunnel client: one QUIC connection to the gateway, kept open forever.
//!
//! [`start_tunnel`] spawns the client task and returns a [`TunnelHandle`] through which the
//! rest of the daemon publishes and withdraws routes. The task reconnects with jittered
//! exponential backoff ([`crate::backoff`]) and re-registers every route after each reconnect
//! ([`session`]); each data stream the gateway opens is spliced to the route's local TCP
//! target ([`splice`]). [`tls`] builds the client certificate and the gateway check.

// The transport choice of issue 14's TCP fallback, tested on its own; the link that carries
// out its actions comes with the TCP transport.
#[allow(dead_code)]
mod choice;
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

pub use tls::TlsSetupError;

use crate::backoff::Backoff;
use crate::config::GatewaySpec;
use session::SessionEnd;

/// A connection that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Connected; `session` counts connections since start (1 = first), `registered` the
    /// names the gateway accepted on this connection so far.
    Connected {
        gateway: SocketAddr,
        session: u64,
        registered: usize,
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
}

/// Starts the tunnel client. It runs until `shutdown` becomes true (then closes the
/// connection politely) or until the returned task is aborted (like a crash: no goodbye).
pub fn start_tunnel(
    identity: &Identity,
    settings: TunnelSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(TunnelHandle, tokio::task::JoinHandle<()>), TlsSetupError> {
    let (client, mismatch) = tls::client_config(
        identity,
        settings.gateway.peer,
        settings.gateway_ca.as_deref(),
    )?;
    let (commands, rx) = mpsc::channel(64);
    let (status_tx, status) = watch::channel(TunnelStatus::Connecting);
    let (p2p_tx, p2p) = watch::channel(None);
    let task = tokio::spawn(run_client(
        Dial {
            gateway: settings.gateway,
            client,
            mismatch,
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
    client: quinn::ClientConfig,
    /// Set when the gateway's key is pinned: what a refused gateway presented.
    mismatch: Option<Arc<tls::PinMismatch>>,
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
        client,
        mismatch,
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
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        if !matches!(*status.borrow(), TunnelStatus::Refused { .. }) {
            status.send_replace(TunnelStatus::Connecting);
        }
        let attempt = connect(&endpoint, &client, &gateway);
        tokio::pin!(attempt);
        let outcome = loop {
            tokio::select! {
                r = &mut attempt => break r,
                _ = shutdown.changed() => break 'outer,
                // Keep accepting registrations while we are offline.
                Some(cmd) = commands.recv() => session::apply_offline(&mut state, cmd),
            }
        };
        let end = match outcome {
            Ok(conn) => {
                let since = Instant::now();
                sessions += 1;
                status.send_replace(TunnelStatus::Connected {
                    gateway: conn.remote_address(),
                    session: sessions,
                    registered: 0,
                });
                info!(gateway = %gateway, "connected to the gateway");
                let announce = session::Announce {
                    status: &status,
                    p2p: &p2p,
                    gateway_host: &gateway.host,
                };
                let end =
                    session::run(conn, &mut state, &mut commands, &mut shutdown, announce).await;
                if since.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                end
            }
            Err(reason) => match mismatch.as_ref().and_then(|m| m.take()) {
                Some(presented) => SessionEnd::WrongGateway(presented),
                None => SessionEnd::Lost(reason),
            },
        };
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Lost(reason) => warn!("tunnel to {gateway} lost: {reason}"),
            SessionEnd::Refused(reason) => {
                error!("the gateway refused this provider: {reason}");
                status.send_replace(TunnelStatus::Refused { reason });
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
            }
        }
    }
    status.send_replace(last_status);
    for (_, waiters) in state.waiters.drain() {
        for w in waiters {
            let _ = w.send(Err(RegisterError::Stopped));
        }
    }
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

async fn connect(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    gateway: &GatewaySpec,
) -> Result<quinn::Connection, String> {
    let addr = tokio::net::lookup_host((gateway.host.as_str(), gateway.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", gateway.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", gateway.host))?;
    let server_name = if gateway.peer.is_some() {
        tls::PINNED_SNI
    } else {
        gateway.host.as_str()
    };
    let connecting = endpoint
        .connect_with(client.clone(), addr, server_name)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(session::describe_close(&e)),
        Err(_) => Err(format!("no answer from {addr} within {CONNECT_TIMEOUT:?}")),
    }
}
