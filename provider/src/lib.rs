//! `peercomputed`: the Peer Compute provider daemon.
//!
//! It runs trusted peers' containers in a sandbox and publishes them at the gateway: a libp2p
//! node takes signed requests from trusted peers, the Docker runtime runs the images, and a
//! QUIC tunnel it dials out to the gateway carries visitors' requests to the containers.
//!
//! - [`admin`](crate::admin): the admin listener — health, readiness, metrics, status.
//! - [`backoff`](crate::backoff): the retry delays of the tunnel and the relay keeper.
//! - [`config`](crate::config): settings and the `[PEERID@]HOST:PORT` / `NAME=HOST:PORT` forms.
//! - [`config_file`](crate::config_file): the TOML file of `run --config`, same keys as the flags.
//! - [`control`](crate::control): the `/peercompute/control/1` server — trust, signature and
//!   replay checks, dispatch, streamed progress and logs.
//! - [`deploy`](crate::deploy): deployments — admission, image, sandboxed start, readiness,
//!   route registration, persisted state, reconciliation at start.
//! - [`devices`]: the devices this machine's owner grants, and who may use them.
//! - [`label`](crate::label): the provider label on this daemon's containers and volumes —
//!   its first peer id, kept in `<home>/provider-label`, so a key rotation never orphans them.
//! - [`fleet`](crate::fleet): the robot's side of a fleet — its copy of the fleet log kept in
//!   step with the gateway, the join with a token, the reconciler that applies releases
//!   (health-gated switch, rollback) and the signed status it reports.
//! - [`tunnel`](crate::tunnel): the tunnel client — a link to each gateway; reconnects,
//!   re-registers, splices streams.
//! - [`relay`](crate::relay): a relay slot and a rendezvous registration at the gateway's
//!   libp2p meeting point, so clients reach this provider behind NAT by its peer id.
//! - [`rotate`](crate::rotate): `rotate-key` (the next key and its rotation token) and the
//!   switch to it once a fleet log retired the current key ([`finish_pending`], at start;
//!   [`run`] ends with [`Ended::KeyRotated`] when the entry arrives while it runs).
//!
//! The binary parses flags and calls [`run`]; tests call [`Daemon::start`] or
//! [`start_tunnel`] directly.

mod admin;
mod backoff;
mod config;
mod config_file;
mod control;
mod deploy;
pub mod devices;
mod fleet;
mod label;
mod relay;
mod rotate;
#[cfg(feature = "testsupport")]
pub mod testsupport;
mod tunnel;
pub mod volumes;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use peercompute_identity::{Identity, TrustWatcher};
use peercompute_p2p::{Multiaddr, Node, NodeConfig};
use peercompute_runtime::DockerRuntime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use admin::ADDR_FILE as ADMIN_ADDR_FILE;
pub use config::{
    AdminListen, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, Expose, Firewall, GatewaySpec, HttpsAddr,
    JoinTokenText, ProviderConfig, TunnelCongestion,
};
pub use config_file::{ConfigFileError, ProviderFile};
pub use control::ReplayStoreError;
pub use deploy::{
    DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_BYTES, DeploySettings, ReconcileReport, StateError,
};
pub use fleet::{
    AppliedError, FleetAgentError, JoinError, JoinSaved, JoinStatus, fleet_dir, save_token,
};
pub use label::{LABEL_FILE as PROVIDER_LABEL_FILE, LabelError};
pub use peercompute_runtime::Limits;
pub use relay::RelayStatus;
pub use rotate::{
    NEXT_KEY_FILE, RotateError, RotationRequest, Switch, finish_pending,
    request as request_rotation,
};
pub use tunnel::{
    DEFAULT_HTTPS_PORT, GatewayLink, GatewayP2p, LinkStatus, RegisterError, TlsSetupError,
    Transport, TransportMode, TunnelHandle, TunnelSettings, TunnelStatus, start_tunnel,
};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Identity(#[from] peercompute_identity::IdentityError),
    #[error(transparent)]
    Trust(#[from] peercompute_identity::TrustError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Replay(#[from] ReplayStoreError),
    #[error(transparent)]
    Node(#[from] peercompute_p2p::NodeError),
    #[error(transparent)]
    Fleet(#[from] FleetAgentError),
    #[error(transparent)]
    Rotate(#[from] RotateError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error("{0}")]
    Config(String),
    #[error(
        "nothing to do: pass --gateway [PEERID@]HOST:PORT (to publish) and/or keep the control plane listening (--listen)"
    )]
    NothingToDo,
}

/// Loads (or creates) the provider identity in `home`.
pub fn identity(home: &Path) -> Result<(Identity, bool), ProviderError> {
    Ok(Identity::load_or_create(home)?)
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    pub peer_id: peercompute_identity::PeerId,
    /// The `peercompute.provider` label of this daemon's containers and volumes: its first
    /// peer id, which a key rotation does not change (`<home>/provider-label`).
    pub label: peercompute_identity::PeerId,
    /// Where the control plane listens (real ports).
    pub listen_addrs: Vec<Multiaddr>,
    pub tunnel: Option<TunnelHandle>,
    /// Reachability through the gateway's relay ([`RelayStatus::Stopped`] when off).
    pub relay: watch::Receiver<RelayStatus>,
    /// What reconciliation found at start.
    pub reconciled: ReconcileReport,
    /// The fleet logs this robot holds.
    pub fleet: peercompute_p2p::fleet_hub::FleetHub,
    /// Where the join with a saved token is ([`JoinStatus::NoToken`] without one).
    pub join: watch::Receiver<JoinStatus>,
    /// The new peer id once a held fleet log retired this key for the pending next key
    /// (`rotate-key`); [`run`] then stops and ends with [`Ended::KeyRotated`].
    pub rotated: watch::Receiver<Option<peercompute_identity::PeerId>>,
    /// Where the admin listener listens (`None`: off, or the default port was taken).
    pub admin_addr: Option<std::net::SocketAddr>,
    admin_task: Option<JoinHandle<()>>,
    fleet_tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    tunnel_task: Option<JoinHandle<()>>,
    relay_task: Option<JoinHandle<()>>,
    control_task: JoinHandle<()>,
    _node: Node,
}

impl Daemon {
    /// Starts everything: identity, Docker, tunnel, reconciliation, libp2p control plane.
    pub async fn start(config: ProviderConfig) -> Result<Self, ProviderError> {
        config.check().map_err(ProviderError::Config)?;
        let (identity, created) = identity(&config.home)?;
        if created {
            info!(home = %config.home.display(), "created a new provider identity");
        }
        let me = identity.peer_id();
        let label = label::load_or_create(&config.home, &me)?;
        if label == me {
            info!(peer_id = %me, "provider starting");
        } else {
            info!(peer_id = %me, %label, "provider starting (its containers and volumes keep the label of its first key)");
        }
        let trust = TrustWatcher::open(&config.home)?;
        let state_dir = config.home.join("state");
        let admin_tokens = admin::load_tokens(config.admin_token_file.as_deref())?;
        let admin_listener = admin::bind(config.admin_listen).await?;
        let telemetry = Arc::new(admin::Telemetry::default());
        let replay = control::ReplayStore::open(&state_dir)?;

        let mut gpu_runtime = false;
        let connected = match &config.docker_endpoint {
            Some(endpoint) => {
                DockerRuntime::connect_to(endpoint, peercompute_runtime::SandboxPolicy::default())
                    .await
            }
            None => DockerRuntime::connect().await,
        };
        let mut docker_error = None;
        let runtime = match connected {
            Ok(rt) => {
                if let Err(e) = rt.ensure_sandbox_network().await {
                    warn!("{e}; deploy requests will fail until this is fixed");
                }
                egress_firewall(config.firewall).await;
                gpu_runtime = match rt.gpu_runtime_present().await {
                    Ok(present) => present,
                    Err(e) => {
                        warn!("{e}; GPU grants are refused until peercomputed restarts");
                        false
                    }
                };
                Some(rt)
            }
            Err(e) => {
                warn!(
                    "{e}; deploy requests will be refused until Docker is available and peercomputed restarts"
                );
                docker_error = Some(e.to_string());
                None
            }
        };
        let admin_runtime = runtime
            .clone()
            .ok_or_else(|| docker_error.unwrap_or_default());
        let (stop, stop_rx) = watch::channel(false);
        let (tunnel, tunnel_task) = match tunnel_settings(&config) {
            Some(settings) => {
                let (handle, task) = start_tunnel(&identity, settings, stop_rx)?;
                (Some(handle), Some(task))
            }
            None => {
                warn!(
                    "no --gateway: deployments run, without a public URL (they answer on this host's loopback only)"
                );
                (None, None)
            }
        };
        if let Some(handle) = &tunnel {
            for expose in &config.expose {
                let handle = handle.clone();
                let expose = expose.clone();
                let grant = config
                    .grants
                    .iter()
                    .find(|g| g.name == expose.name)
                    .cloned();
                tokio::spawn(async move {
                    let (name, host, port) = (&expose.name, &expose.host, expose.port);
                    let published = match grant {
                        Some(grant) => handle.register_granted(name, host, port, grant).await,
                        None => handle.register(name, host, port).await,
                    };
                    if let Err(e) = published {
                        error!(route = %expose.name, "cannot publish: {e}");
                    }
                });
            }
        }
        let devices = devices::DeviceGrants::new(config.devices.clone(), gpu_runtime);
        devices.warn_at_start();
        let fleet_runtime = runtime.clone();
        let deployments = deploy::Deployments::open_parts(deploy::DeployParts {
            state_dir: &state_dir,
            runtime,
            tunnel: tunnel.clone(),
            me,
            label,
            settings: &config.deploy,
            firewall: config.firewall,
            volumes: volumes::VolumeSettings {
                max_bytes: config.max_volumes_size,
                check_interval: config.volume_check_interval,
            },
            devices: devices.clone(),
            telemetry: telemetry.clone(),
        })?;
        let reconciled = deployments.reconcile().await;

        let node = Node::start(
            &identity,
            NodeConfig {
                listen: config.listen.clone(),
                mdns: config.mdns,
                ..NodeConfig::default()
            },
        )
        .await?;
        let listen_addrs = node.listen_addrs();
        let (relay, relay_task) = start_relay(&config, &node, tunnel.as_ref(), &stop)?;
        let fixed_gateway = if config.gateway_p2p.is_empty() {
            None
        } else {
            let pinned = config.gateways.first().and_then(|g| g.peer);
            Some(relay::fixed_source(&config.gateway_p2p, pinned).map_err(ProviderError::Config)?)
        };
        let fleet::FleetAgent {
            hub: fleet,
            join,
            rotated,
            tasks: fleet_tasks,
        } = fleet::start(
            fleet::FleetParts {
                home: &config.home,
                identity: &identity,
                label,
                node: &node,
                tunnel: tunnel.as_ref(),
                fixed_gateway,
                runtime: fleet_runtime,
                firewall: config.firewall,
                limits: config.deploy.limits,
                devices,
                volumes: deployments.volumes(),
                join: config.join.as_ref(),
                telemetry: telemetry.clone(),
                deploys: deployments.estop_handle(),
                offline_start_wait: config.offline_start_wait,
            },
            &stop,
        )?;
        let home_hint = format!(" --home {}", config.home.display());
        let ctx = Arc::new(control::ControlContext {
            me,
            trust,
            replay,
            deployments,
            home_hint,
        });
        let control_task = tokio::spawn({
            let (node, ctx) = (node.clone(), ctx.clone());
            async move {
                tokio::join!(
                    control::serve(node, ctx.clone()),
                    ctx.deployments
                        .follow_ports(std::time::Duration::from_secs(3)),
                    ctx.deployments.check_volumes(),
                );
            }
        });
        let admin = match admin_listener {
            Some(listener) => Some(
                admin::start(
                    admin::AdminParts {
                        listener,
                        home: config.home.clone(),
                        me,
                        label,
                        telemetry,
                        relay: relay.clone(),
                        tunnel: tunnel.clone(),
                        ctx: ctx.clone(),
                        tokens: admin_tokens,
                        hosts: config.admin_host.clone(),
                        runtime: admin_runtime,
                        firewall: config.firewall,
                    },
                    stop.subscribe(),
                )
                .await?,
            ),
            None => None,
        };
        info!(
            ?listen_addrs,
            "control plane ready: clients add this provider with `peerctl peers add {me} --addr <listen address>`"
        );
        Ok(Self {
            peer_id: me,
            label,
            listen_addrs,
            tunnel,
            relay,
            relay_task,
            reconciled,
            fleet,
            join,
            rotated,
            admin_addr: admin.as_ref().map(|a| a.addr),
            admin_task: admin.map(|a| a.task),
            fleet_tasks,
            stop,
            tunnel_task,
            control_task,
            _node: node,
        })
    }

    /// Polite stop: GoAway to the gateway, listeners closed. Containers keep running and are
    /// re-adopted at the next start.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.control_task.abort();
        for task in self.fleet_tasks.drain(..) {
            task.abort();
        }
        if let Some(task) = self.relay_task.take() {
            let _ = task.await;
        }
        self._node.shutdown().await;
        if let Some(task) = self.tunnel_task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.admin_task.take() {
            let _ = task.await;
        }
    }

    /// Like a crash: every task stops at once, nothing is said to anyone.
    pub fn abort(mut self) {
        self.control_task.abort();
        for task in self.fleet_tasks.drain(..) {
            task.abort();
        }
        if let Some(task) = self.relay_task.take() {
            task.abort();
        }
        if let Some(task) = self.tunnel_task.take() {
            task.abort();
        }
        if let Some(task) = self.admin_task.take() {
            task.abort();
        }
    }
}

/// The tunnel's settings: a link to each `--gateway`, the i-th `--gateway-https` going with
/// the i-th gateway. `None` without a gateway.
fn tunnel_settings(config: &ProviderConfig) -> Option<TunnelSettings> {
    if config.gateways.is_empty() {
        return None;
    }
    let mut settings = TunnelSettings::several(config.gateways.clone());
    for (link, https) in settings.gateways.iter_mut().zip(&config.gateway_https) {
        link.https = Some((https.host.clone(), https.port));
    }
    settings.gateway_ca = config.gateway_ca.clone();
    settings.transport = config.transport;
    settings.congestion = config.tunnel_congestion;
    Some(settings)
}

/// Starts the relay keeper when there is a gateway to reach and `relay` is on.
fn start_relay(
    config: &ProviderConfig,
    node: &Node,
    tunnel: Option<&TunnelHandle>,
    stop: &watch::Sender<bool>,
) -> Result<(watch::Receiver<RelayStatus>, Option<JoinHandle<()>>), ProviderError> {
    let (status, rx) = watch::channel(RelayStatus::Waiting);
    let pinned = config.gateways.first().and_then(|g| g.peer);
    let source = if !config.relay {
        None
    } else if !config.gateway_p2p.is_empty() {
        Some(relay::Source::Fixed(
            relay::fixed_source(&config.gateway_p2p, pinned).map_err(ProviderError::Config)?,
        ))
    } else {
        tunnel.map(|t| relay::Source::Tunnel(t.gateway_p2p()))
    };
    let task = match source {
        Some(source) => Some(tokio::spawn(relay::keep_reachable(
            node.clone(),
            source,
            status,
            stop.subscribe(),
        ))),
        None => {
            status.send_replace(RelayStatus::Stopped);
            None
        }
    };
    Ok((rx, task))
}

/// How [`run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// `shutdown` resolved.
    Stopped,
    /// A fleet log retired this key for the pending next one: the daemon stopped (containers
    /// keep running) and switched keys; the caller starts it again (`peercomputed`
    /// re-executes itself), and the boot path adopts the containers.
    KeyRotated { new: peercompute_identity::PeerId },
}

/// How long the stop before a key switch may take (tunnel GoAway, relay, listeners).
const ROTATION_STOP: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the daemon until `shutdown` resolves, or until its key is rotated. First thing, a
/// key switch the fleet log already allows is done ([`finish_pending`]).
pub async fn run(
    config: ProviderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<Ended, ProviderError> {
    if config.gateways.is_empty() && config.listen.is_empty() {
        return Err(ProviderError::NothingToDo);
    }
    // Before a switch, so an install from before the label file keeps the peer id its
    // containers carry even when its first start under this version switches keys.
    if Identity::path_in(&config.home).exists() {
        let current = Identity::load(&config.home)?.peer_id();
        label::load_or_create(&config.home, &current)?;
    }
    match finish_pending(&config.home)? {
        Switch::Switched { old, new } => match old {
            Some(old) => info!(%old, %new, "key rotated: now running as {new}"),
            None => {
                info!(%new, "key rotated: an interrupted switch finished, now running as {new}")
            }
        },
        Switch::Pending { next } => info!(
            %next,
            "a key rotation is pending: this daemon switches to {next} once a fleet admin ran `peerctl fleet rotate-member` with its token"
        ),
        Switch::Nothing => {}
    }
    let home = config.home.clone();
    let daemon = Daemon::start(config).await?;
    let mut rotated = daemon.rotated.clone();
    let new = tokio::select! {
        () = shutdown => None,
        Ok(new) = rotated.wait_for(Option::is_some) => *new,
    };
    let Some(new) = new else {
        info!("shutting down (containers keep running and are re-adopted at the next start)");
        daemon.shutdown().await;
        return Ok(Ended::Stopped);
    };
    info!(%new, "key rotated: switching to {new} (containers keep running)");
    if tokio::time::timeout(ROTATION_STOP, daemon.shutdown())
        .await
        .is_err()
    {
        warn!("the daemon took over {ROTATION_STOP:?} to stop; switching keys anyway");
    }
    match finish_pending(&home)? {
        Switch::Switched { .. } => Ok(Ended::KeyRotated { new }),
        Switch::Pending { .. } => Err(ProviderError::Config(format!(
            "the key rotation to {new} was not found in the fleet logs on disk when switching; restart peercomputed (it switches at start once its log holds the rotation)"
        ))),
        Switch::Nothing => Err(ProviderError::Config(format!(
            "the key rotation to {new} cannot be finished: {} is gone (someone moved it?); restart peercomputed, and run `peercomputed rotate-key` again if the fleet still needs a new key",
            home.join(NEXT_KEY_FILE).display()
        ))),
    }
}

/// Puts the containers' egress firewall in place as `firewall` says, and says what holds.
async fn egress_firewall(firewall: Firewall) {
    match firewall {
        Firewall::Install => match peercompute_runtime::install_egress_firewall().await {
            Ok(()) => info!(
                bridge = peercompute_runtime::SANDBOX_BRIDGE,
                "egress firewall in place: containers reach neither this host nor private networks"
            ),
            Err(e) => warn!(
                "{e}. Until then deploy requests are refused (pass --firewall external if `peercomputed firewall` ran as root, or --firewall off to let containers reach this host and its LAN)"
            ),
        },
        Firewall::External => info!(
            "egress firewall left to `peercomputed firewall` (firewall = external): without it containers can reach this host and its LAN"
        ),
        Firewall::Off => {
            warn!("firewall = off: containers can reach this host, its LAN and 169.254.169.254")
        }
    }
}
