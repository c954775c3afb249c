//! The provider's admin listener (`--admin-listen`, loopback `127.0.0.1:9181` by default):
//! `/healthz` (the process answers), `/readyz` (tunnel, Docker, firewall; 200 or 503 with the
//! checks as text, or JSON when asked), `/metrics` (OpenMetrics text) and `/api/v1/status`
//! (what `peercomputed status` prints). Served by `peercompute_ops::serve`; the bound address
//! is written to `<home>/state/admin.addr` for `peercomputed status`.
//!
//! Probes never touch the engine on a request: a task pings Docker every [`DOCKER_EVERY`]
//! (at most [`DOCKER_TIMEOUT`] each) and lists the firewall table every [`FIREWALL_EVERY`];
//! the handlers read their last results. Only `/metrics` and `/api/v1/status` list this
//! provider's containers (at most once per [`LIST_EVERY`], [`DOCKER_TIMEOUT`] at most, and
//! only while the last ping answered), for the deployments' states. Everything but `/healthz` and `/readyz` answers only
//! to a `Host` that is an IP address, `localhost` or an `--admin-host` name (421 otherwise:
//! DNS rebinding would let any web page read a token-less loopback listener), and with
//! `--admin-token-file` only with a bearer token (any role: this API only reads).
//!
//! - `health`: readiness from the probes' results (pure).
//! - `metrics`: the counted series ([`Telemetry`]) and the ones read at scrape time.

mod health;
mod link_doc;
mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use peercompute_identity::PeerId;
use peercompute_ops::tokens::Tokens;
use peercompute_runtime::DockerRuntime;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::ProviderError;
use crate::config::{AdminListen, Firewall};
use crate::control::ControlContext;
use crate::relay::RelayStatus;
use crate::tunnel::{TunnelHandle, TunnelStatus};
pub(crate) use health::{Check, DockerProbe, FirewallProbe, Probes, readiness};
use link_doc::LinkDoc;
pub(crate) use metrics::{MachineReader, Telemetry};

/// How often the Docker engine is pinged.
pub(crate) const DOCKER_EVERY: Duration = Duration::from_secs(5);
/// How long a ping may take before the engine counts as down.
pub(crate) const DOCKER_TIMEOUT: Duration = Duration::from_secs(2);
/// How old a container listing may be before a scrape lists again.
pub(crate) const LIST_EVERY: Duration = Duration::from_secs(1);
/// How often the firewall table is looked for.
pub(crate) const FIREWALL_EVERY: Duration = Duration::from_secs(30);

/// The file, under `<home>/state`, holding the admin listener's address.
pub const ADDR_FILE: &str = "admin.addr";

/// Binds the admin listener as `listen` says. The default address being taken is a warning
/// (several daemons on one host); an explicit one failing is an error.
pub(crate) async fn bind(listen: AdminListen) -> Result<Option<TcpListener>, ProviderError> {
    let Some(addr) = listen.addr() else {
        return Ok(None);
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if listen == AdminListen::Default => {
            warn!(
                "cannot listen on {addr} for the admin API ({e}; another peercomputed on this host?): running without it; pass --admin-listen 127.0.0.1:PORT, or --admin-listen off"
            );
            Ok(None)
        }
        Err(e) => Err(ProviderError::Config(format!(
            "cannot listen on {addr} for the admin API: {e}: pick another --admin-listen, or `off`"
        ))),
    }
}

/// Loads `--admin-token-file` (a bad file is a start error).
pub(crate) fn load_tokens(path: Option<&Path>) -> Result<Option<Tokens>, ProviderError> {
    path.map(|p| Tokens::load(p).map_err(|e| ProviderError::Config(e.to_string())))
        .transpose()
}

/// What the admin handlers read.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) me: PeerId,
    /// The provider label of this daemon's containers (`crate::label`), not its peer id.
    label: PeerId,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) machine: MachineReader,
    pub(crate) relay: watch::Receiver<RelayStatus>,
    pub(crate) tunnel: Option<TunnelHandle>,
    pub(crate) ctx: Arc<ControlContext>,
    pub(crate) tokens: Option<Tokens>,
    /// `--admin-host` names.
    pub(crate) hosts: Vec<String>,
    /// The listener is on loopback: `/readyz` names its checks to anyone.
    loopback: bool,
    docker: Mutex<DockerProbe>,
    firewall: Mutex<FirewallProbe>,
    /// The engine, for the container listing of `deployments{state}`.
    runtime: Option<DockerRuntime>,
    /// This provider's containers (id → state) as the engine last listed them, and when.
    containers: Mutex<Listing>,
}

/// Container id → state, and when the engine said so.
type Listing = (Option<HashMap<String, String>>, Option<std::time::Instant>);

impl Shared {
    pub(crate) fn tunnel_status(&self) -> Option<TunnelStatus> {
        self.tunnel.as_ref().map(TunnelHandle::status)
    }

    pub(crate) fn probes(&self) -> Probes {
        Probes {
            tunnel: self.tunnel_status(),
            links: self
                .tunnel
                .as_ref()
                .map(TunnelHandle::links)
                .unwrap_or_default(),
            docker: self
                .docker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            firewall: self
                .firewall
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    pub(crate) fn deployment_counts(&self) -> BTreeMap<String, u64> {
        let engine = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        self.ctx.deployments.state_counts(engine.0.as_ref())
    }

    /// Lists this provider's containers again, for a scrape or a status answer, unless that
    /// was done within [`LIST_EVERY`] or the engine is not answering (then the last listing
    /// stands). At most [`DOCKER_TIMEOUT`].
    pub(crate) async fn refresh_containers(&self) {
        let Some(rt) = &self.runtime else { return };
        let fresh = {
            let listed = self.containers.lock().unwrap_or_else(|p| p.into_inner());
            listed.1.is_some_and(|at| at.elapsed() < LIST_EVERY)
        };
        let up = *self.docker.lock().unwrap_or_else(|p| p.into_inner()) == DockerProbe::Up;
        if fresh || !up {
            return;
        }
        if let Some(listed) = list_containers(rt, &self.label).await {
            *self.containers.lock().unwrap_or_else(|p| p.into_inner()) =
                (Some(listed), Some(std::time::Instant::now()));
        }
    }
}

/// What [`start`] needs.
#[derive(Debug)]
pub(crate) struct AdminParts {
    pub(crate) listener: TcpListener,
    pub(crate) home: PathBuf,
    pub(crate) me: PeerId,
    /// The provider label of this daemon's containers (`crate::label`).
    pub(crate) label: PeerId,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) relay: watch::Receiver<RelayStatus>,
    pub(crate) tunnel: Option<TunnelHandle>,
    pub(crate) ctx: Arc<ControlContext>,
    pub(crate) tokens: Option<Tokens>,
    pub(crate) hosts: Vec<String>,
    /// The engine, or why there was none at start.
    pub(crate) runtime: Result<DockerRuntime, String>,
    pub(crate) firewall: Firewall,
}

/// A started admin listener.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) addr: SocketAddr,
    pub(crate) task: JoinHandle<()>,
}

/// Probes once, writes `admin.addr`, and serves until `stop`.
pub(crate) async fn start(
    parts: AdminParts,
    stop: watch::Receiver<bool>,
) -> Result<Admin, ProviderError> {
    let addr = parts
        .listener
        .local_addr()
        .map_err(|e| ProviderError::Config(format!("the admin listener has no address: {e}")))?;
    let docker = match &parts.runtime {
        Ok(rt) => ping(rt).await,
        Err(e) => DockerProbe::NotConnectedAtStart(e.clone()),
    };
    let firewall = probe_firewall(parts.firewall).await;
    let disk_path = match &parts.runtime {
        Ok(rt) => rt
            .data_root()
            .await
            .ok()
            .flatten()
            .filter(|p| p.exists())
            .unwrap_or_else(|| parts.home.clone()),
        Err(_) => parts.home.clone(),
    };
    let shared = Arc::new(Shared {
        me: parts.me,
        label: parts.label,
        telemetry: parts.telemetry,
        machine: MachineReader::new(disk_path),
        relay: parts.relay,
        tunnel: parts.tunnel,
        ctx: parts.ctx,
        tokens: parts.tokens,
        hosts: parts.hosts,
        loopback: addr.ip().is_loopback(),
        docker: Mutex::new(docker),
        firewall: Mutex::new(firewall),
        runtime: parts.runtime.as_ref().ok().cloned(),
        containers: Mutex::new((None, None)),
    });
    let mut registry = Registry::default();
    peercompute_ops::build::register(&mut registry, "peercomputed");
    peercompute_ops::process::register(&mut registry);
    {
        let sub = registry.sub_registry_with_prefix("peercompute_provider");
        shared.telemetry.register(sub);
        sub.register_collector(Box::new(metrics::StateCollector(shared.clone())));
    }
    let state = AppState {
        shared: shared.clone(),
        registry: Arc::new(registry),
    };
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/status", get(status))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);

    let addr_file = parts.home.join("state").join(ADDR_FILE);
    write_addr_file(&addr_file, addr);
    info!(%addr, "admin listener: /healthz /readyz /metrics /api/v1/status");
    let runtime = parts.runtime.ok();
    let firewall_mode = parts.firewall;
    let task = tokio::spawn(async move {
        let probes = probe_loop(shared.clone(), runtime, firewall_mode, stop.clone());
        tokio::join!(
            peercompute_ops::serve::serve_admin(parts.listener, router, stop),
            probes,
        );
        // Only our own address: another daemon may have taken the file since.
        if std::fs::read_to_string(&addr_file).is_ok_and(|t| t.trim() == addr.to_string()) {
            let _ = std::fs::remove_file(&addr_file);
        }
    });
    Ok(Admin { addr, task })
}

fn write_addr_file(path: &Path, addr: SocketAddr) {
    if let Err(e) = peercompute_identity::write_atomic(path, format!("{addr}\n").as_bytes(), 0o644)
    {
        warn!(
            "cannot write {}: {e}; `peercomputed status` will not find this daemon",
            path.display()
        );
    }
}

/// This provider's deployment containers (id → state): those carrying its provider `label`
/// (which a key rotation does not change), or `None` when the engine does not list them
/// within [`DOCKER_TIMEOUT`].
async fn list_containers(rt: &DockerRuntime, label: &PeerId) -> Option<HashMap<String, String>> {
    let label = label.to_string();
    let listed = tokio::time::timeout(DOCKER_TIMEOUT, rt.list_managed())
        .await
        .ok()?
        .ok()?;
    Some(
        listed
            .into_iter()
            .filter(|c| c.labels.get(peercompute_runtime::LABEL_PROVIDER) == Some(&label))
            .map(|c| (c.id, c.state.to_string()))
            .collect(),
    )
}

async fn ping(rt: &DockerRuntime) -> DockerProbe {
    match rt.ping(DOCKER_TIMEOUT).await {
        Ok(()) => DockerProbe::Up,
        Err(e) => DockerProbe::Down(e.to_string()),
    }
}

/// How long `nft list` may take (a held xtables lock, a netlink stall) before the firewall
/// counts as unknown; the child is killed.
const FIREWALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn probe_firewall(mode: Firewall) -> FirewallProbe {
    if mode != Firewall::Install {
        return FirewallProbe::NotChecked(mode);
    }
    match tokio::time::timeout(
        FIREWALL_TIMEOUT,
        peercompute_runtime::egress_firewall_present(),
    )
    .await
    {
        Ok(Ok(true)) => FirewallProbe::Installed,
        Ok(Ok(false)) => FirewallProbe::Missing,
        Ok(Err(e)) => FirewallProbe::Unknown(e.to_string()),
        Err(_) => FirewallProbe::Unknown(format!(
            "`nft list table` did not answer within {FIREWALL_TIMEOUT:?}"
        )),
    }
}

/// Refreshes the probes' results until `stop`, and follows the tunnel for its counters.
async fn probe_loop(
    shared: Arc<Shared>,
    runtime: Option<DockerRuntime>,
    firewall: Firewall,
    mut stop: watch::Receiver<bool>,
) {
    let mut docker_tick = tokio::time::interval(DOCKER_EVERY);
    let mut firewall_tick = tokio::time::interval(FIREWALL_EVERY);
    docker_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    firewall_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    docker_tick.tick().await;
    firewall_tick.tick().await;
    let mut tunnel = shared.tunnel.as_ref().map(TunnelHandle::status_watch);
    if let Some(rx) = &tunnel {
        let now = rx.borrow().clone();
        shared.telemetry.tunnel_changed(&now);
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = docker_tick.tick() => {
                shared.machine.sample_cpu();
                if let Some(rt) = &runtime {
                    let now = ping(rt).await;
                    if now != DockerProbe::Up {
                        // The engine can no longer vouch for its containers: `unknown`.
                        *shared.containers.lock().unwrap_or_else(|p| p.into_inner()) = (None, None);
                    }
                    let mut docker = shared.docker.lock().unwrap_or_else(|p| p.into_inner());
                    if *docker != now {
                        match &now {
                            DockerProbe::Up => info!("the Docker engine answers again"),
                            other => warn!("the Docker engine stopped answering: {other:?}"),
                        }
                        *docker = now;
                    }
                }
            }
            _ = firewall_tick.tick() => {
                let now = probe_firewall(firewall).await;
                *shared.firewall.lock().unwrap_or_else(|p| p.into_inner()) = now;
            }
            changed = async {
                match tunnel.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                match (changed, &tunnel) {
                    (Ok(()), Some(rx)) => {
                        let now = rx.borrow().clone();
                        shared.telemetry.tunnel_changed(&now);
                    }
                    _ => tunnel = None,
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

/// Everything but the probes: a `Host` naming this listener (421 otherwise), and with a
/// token file a known bearer token (401 with an empty body otherwise).
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let shared = &state.shared;
    if !peercompute_ops::hosts::host_allowed(req.headers().get(header::HOST), &shared.hosts) {
        return StatusCode::MISDIRECTED_REQUEST.into_response();
    }
    if let Some(tokens) = &shared.tokens {
        let known = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| tokens.check(h))
            .is_some();
        if !known {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// `/readyz`: 200 or 503. The checks' details (gateway address, refusal reasons, engine
/// errors) are for loopback listeners and token holders, and only by a `Host` naming this
/// listener; anyone else (a load balancer's probe on an exposed listener, a page rebinding
/// its name to 127.0.0.1) reads only `ready` or `not ready`.
async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let shared = &state.shared;
    let mut r = readiness(&shared.probes());
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // A foreign Host (a DNS-rebinding page) gets the bare answer even on loopback.
    let named = peercompute_ops::hosts::host_allowed(headers.get(header::HOST), &shared.hosts);
    let details = named
        && (shared.loopback
            || shared.tokens.as_ref().is_some_and(|t| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|h| t.check(h))
                    .is_some()
            }));
    if !details {
        r.checks.clear();
    }
    if wants_json(&headers) {
        (code, axum::Json(r)).into_response()
    } else {
        (code, r.text()).into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    state.shared.refresh_containers().await;
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/api/v1/status`: what `peercomputed status` prints.
#[derive(Debug, Serialize)]
pub(crate) struct StatusDoc {
    pub(crate) peer_id: String,
    pub(crate) version: &'static str,
    pub(crate) commit: &'static str,
    pub(crate) ready: bool,
    pub(crate) checks: Vec<Check>,
    /// `None` when no gateway is configured.
    pub(crate) tunnel: Option<TunnelDoc>,
    pub(crate) relay: RelayDoc,
    pub(crate) deployments: BTreeMap<String, u64>,
    /// Deploys by outcome since the daemon started.
    pub(crate) deploys: BTreeMap<String, u64>,
    pub(crate) machine: metrics::Machine,
}

#[derive(Debug, Serialize)]
pub(crate) struct TunnelDoc {
    pub(crate) state: &'static str,
    pub(crate) gateway: Option<String>,
    /// Connections since the start (1 = the first).
    pub(crate) session: Option<u64>,
    pub(crate) registered: Option<usize>,
    /// `quic` or `tcp` while connected.
    pub(crate) transport: Option<&'static str>,
    /// Unix seconds.
    pub(crate) connected_since: Option<u64>,
    pub(crate) reason: Option<String>,
    /// Each gateway's link, when there are several (absent with one gateway).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) gateways: Vec<LinkDoc>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RelayDoc {
    pub(crate) state: &'static str,
    /// The relayed address, or why the last attempt failed.
    pub(crate) detail: Option<String>,
}

pub(crate) fn status_doc(shared: &Shared) -> StatusDoc {
    let r = readiness(&shared.probes());
    let tunnel = shared.tunnel_status().map(|s| {
        let state = metrics::tunnel_state(&s);
        let mut doc = TunnelDoc {
            state,
            gateway: None,
            session: None,
            registered: None,
            transport: None,
            connected_since: shared.telemetry.connected_since(),
            reason: None,
            gateways: Vec::new(),
        };
        let links = shared
            .tunnel
            .as_ref()
            .map(TunnelHandle::links)
            .unwrap_or_default();
        if links.len() > 1 {
            doc.gateways = links.iter().map(LinkDoc::of).collect();
        }
        match s {
            TunnelStatus::Connected {
                gateway,
                session,
                registered,
                transport,
            } => {
                doc.gateway = Some(gateway.to_string());
                doc.session = Some(session);
                doc.registered = Some(registered);
                doc.transport = Some(transport.as_str());
            }
            TunnelStatus::Refused { reason } => doc.reason = Some(reason),
            TunnelStatus::WrongGateway {
                expected,
                presented,
            } => doc.reason = Some(format!("presented {presented}, pinned {expected}")),
            TunnelStatus::Connecting | TunnelStatus::Stopped => {}
        }
        doc
    });
    let relay = {
        let s = shared.relay.borrow();
        RelayDoc {
            state: metrics::relay_state(&s),
            detail: match &*s {
                RelayStatus::Reserved { address } => Some(address.to_string()),
                RelayStatus::Failed { reason } => Some(reason.clone()),
                RelayStatus::Waiting | RelayStatus::Stopped => None,
            },
        }
    };
    StatusDoc {
        peer_id: shared.me.to_string(),
        version: peercompute_ops::build::VERSION,
        commit: peercompute_ops::build::COMMIT,
        ready: r.ready,
        checks: r.checks,
        tunnel,
        relay,
        deployments: shared.deployment_counts(),
        deploys: shared.telemetry.deploy_counts(),
        machine: shared.machine.read(),
    }
}

async fn status(State(state): State<AppState>) -> axum::Json<StatusDoc> {
    state.shared.refresh_containers().await;
    axum::Json(status_doc(&state.shared))
}
