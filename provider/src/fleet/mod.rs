//! The robot's side of a fleet: it holds the fleet log, keeps it in step with the gateway,
//! joins with a saved token, and runs what the log's releases ask of its groups.
//!
//! - `sync`: the log's anti-entropy with the gateway (every (re)connect and every 30 s) and
//!   the join with a saved token.
//! - `join`: `peercomputed join TOKEN` — the token checked and saved — and the `Join` entry.
//! - `plan`: the pure planner, fleet state × what runs here → actions.
//! - `apply`: the applier — pinned image, new container beside the old, health gate, route
//!   switch, drain, stop; or keep the old one and record why.
//! - `attach`: a release's volumes (scope `fleet:<id>`) and granted devices, and the
//!   exclusive switch (old container halted first; resumed if the new one fails).
//! - `estop`: an emergency stop in force kills the group's containers at once (its own task,
//!   woken by every new entry; also run from the on-disk log before anything starts).
//! - `image_fetch`: a release pinned by a peer digest is fetched from fleet members (LAN
//!   first, then the author), every blob verified while it streams, loaded, recorded in
//!   `peer-images.json`; the verified blobs are served to other members
//!   (`/peercompute/image/1`).
//! - `routes`: serving routes registered in the background (an apply never waits for a
//!   gateway that is not connected); the URL recorded once the gateway confirms it.
//! - `group_names`: every robot of a group also serves the group's app at `<app>.<domain>`
//!   (`RegisterFleet`; the gateway balances it across the group's robots).
//! - `adopt`: at start, the serving containers re-adopted; routes kept on a restarted
//!   container's new port.
//! - `applied`: what runs here, persisted in `applied.json` so a restart re-adopts it.
//! - `logs`: the group's container logs for members allowed to view it (`fleet logs`).
//! - `status`: the robot's signed status, sent to the gateway on change and every 30 s.
//! - `history`: the robot's finished applies, carried in its status, kept in `history.json`.
//!
//! Everything lives under `<home>/fleet/`: one directory per fleet log, `join.token`,
//! `applied.json`, `history.json`.

mod adopt;
mod applied;
mod apply;
mod attach;
mod estop;
mod group_names;
mod history;
mod image_fetch;
mod join;
mod logs;
mod plan;
mod routes;
mod status;
mod sync;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use peercompute_fleet::MemberKey;
use peercompute_identity::Identity;
use peercompute_p2p::Node;
use peercompute_p2p::fleet_hub::{self, FleetHub, ForwardTargets, HubPolicy, Reach};
use peercompute_runtime::DockerRuntime;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use applied::AppliedError;
#[cfg(feature = "testsupport")]
pub(crate) use applied::{Applied, AppliedGroup, Serving};
pub use join::{JoinError, JoinSaved, JoinStatus, save_token};

use crate::config::{Firewall, JoinTokenText};
use crate::tunnel::{GatewayP2p, TunnelHandle};

/// Most fleets one robot holds.
const MAX_FLEETS: usize = 4;
/// Most entries kept per fleet log.
const MAX_ENTRIES: usize = 50_000;
/// How often the reconciler looks again without a new entry (ports, retries).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// How soon it looks again while a leftover container could not be removed.
const RETRY_SWEEP: Duration = Duration::from_secs(2);

/// The fleet directory of a provider home.
pub fn fleet_dir(home: &Path) -> PathBuf {
    home.join("fleet")
}

/// What the fleet agent needs from the daemon.
pub(crate) struct FleetParts<'a> {
    pub(crate) home: &'a Path,
    pub(crate) identity: &'a Identity,
    /// The daemon's provider label (`crate::label`): on its fleet containers.
    pub(crate) label: peercompute_identity::PeerId,
    pub(crate) node: &'a Node,
    pub(crate) tunnel: Option<&'a TunnelHandle>,
    /// `--gateway-p2p`, resolved; else the tunnel's Welcome tells.
    pub(crate) fixed_gateway: Option<GatewayP2p>,
    pub(crate) runtime: Option<DockerRuntime>,
    pub(crate) firewall: Firewall,
    /// This robot's limits: releases are admitted against them as deploys are.
    pub(crate) limits: peercompute_runtime::Limits,
    /// The devices this machine's owner grants (releases ask for them by name).
    pub(crate) devices: crate::devices::DeviceGrants,
    /// The daemon's volume ledger, shared with the deployments.
    pub(crate) volumes: Arc<crate::volumes::Volumes>,
    /// A token from the config file, saved like `peercomputed join` does.
    pub(crate) join: Option<&'a JoinTokenText>,
    /// Release outcomes and durations, for the admin metrics.
    pub(crate) telemetry: Arc<crate::admin::Telemetry>,
    /// The machine's deployments, which an `estop --all` halts too.
    pub(crate) deploys: crate::deploy::DeployHalt,
    /// `--offline-start-wait`: the boot sync gate's limit.
    pub(crate) offline_start_wait: Duration,
}

/// Why the fleet agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetAgentError {
    #[error("cannot open the fleet logs: {0}")]
    Store(#[from] peercompute_fleet::StoreError),
    #[error(transparent)]
    Applied(#[from] AppliedError),
}

/// The running fleet agent.
pub(crate) struct FleetAgent {
    pub(crate) hub: FleetHub,
    pub(crate) join: watch::Receiver<JoinStatus>,
    /// Set (to the new peer id) when a held log retires this robot's key for its pending
    /// next key (`crate::rotate::watch`).
    pub(crate) rotated: watch::Receiver<Option<peercompute_identity::PeerId>>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

/// Opens the robot's hub and starts serving, syncing, reconciling and reporting; the tasks
/// stop when `stop` turns true.
pub(crate) fn start(
    parts: FleetParts<'_>,
    stop: &watch::Sender<bool>,
) -> Result<FleetAgent, FleetAgentError> {
    let dir = fleet_dir(parts.home);
    let policy = HubPolicy {
        // Entries are verified one by one and streams are bounded: any peer may offer them.
        admit: Arc::new(|_| true),
        accept_new_fleets: false,
        max_fleets: MAX_FLEETS,
        max_entries: MAX_ENTRIES,
    };
    let (hub, reports) = FleetHub::open(&dir, policy)?;
    for (fleet, report) in reports {
        for bad in report.bad {
            warn!(%fleet, file = %bad.file, "fleet log entry skipped: {}", bad.reason);
        }
    }
    let applied = applied::Applied::load(&dir)?;
    let key: SigningKey = parts.identity.signing_key().clone();
    if let Some(token) = parts.join {
        save_configured_token(&dir, token, &key);
    }
    let gateway = match (parts.fixed_gateway, parts.tunnel) {
        (Some(fixed), _) => watch::channel(Some(fixed)).1,
        (None, Some(tunnel)) => tunnel.gateway_p2p(),
        (None, None) => watch::channel(None).1,
    };
    let board = status::StatusBoard::load(history::history_path(&dir));
    let node = parts.node.clone();
    // New entries also go straight to the members connected to this robot (on its LAN, or
    // an admin's peerctl), not only through the gateway.
    let me = MemberKey(parts.identity.public_key_bytes());
    let members: ForwardTargets = Arc::new(move |_, log| {
        log.state()
            .map(|s| {
                s.members
                    .keys()
                    .chain(s.grants.keys())
                    .filter(|k| **k != me)
                    .filter_map(MemberKey::peer_id)
                    .collect()
            })
            .unwrap_or_default()
    });
    let mut tasks = vec![
        tokio::spawn(fleet_hub::serve(node.clone(), hub.clone())),
        tokio::spawn(fleet_hub::forward_changes(
            node.clone(),
            hub.clone(),
            members,
            Reach::Connected,
        )),
    ];
    let (join_tx, join) = watch::channel(JoinStatus::NoToken);
    let syncer = sync::Syncer::new(
        node.clone(),
        hub.clone(),
        key.clone(),
        dir.clone(),
        gateway.clone(),
        parts.tunnel.cloned(),
        join_tx,
    );
    let synced = syncer.synced();
    tasks.push(tokio::spawn(syncer.run(stop.subscribe())));
    let (rotated_tx, rotated) = watch::channel(None);
    tasks.push(tokio::spawn(crate::rotate::watch(
        hub.clone(),
        parts.home.to_owned(),
        me,
        rotated_tx,
        stop.subscribe(),
    )));
    let publisher = status::Publisher {
        node: node.clone(),
        hub: hub.clone(),
        key,
        board: board.clone(),
        gateway,
    };
    tasks.push(tokio::spawn(status::publish(publisher, stop.subscribe())));
    match parts.runtime {
        Some(runtime) => {
            hub.set_log_source(logs::source(runtime.clone(), hub.clone(), dir.clone()));
            let images = Arc::new(image_fetch::ImageFetcher::new(
                node.clone(),
                hub.clone(),
                &dir,
            ));
            tasks.push(tokio::spawn(peercompute_p2p::serve_images(
                node.clone(),
                images.shelf(),
                peercompute_p2p::fleet_authorizer(hub.clone()),
            )));
            let (routes, confirmed) = routes::RouteSink::new(parts.tunnel.cloned());
            let applier = apply::Applier {
                runtime,
                tunnel: parts.tunnel.cloned(),
                me: parts.identity.peer_id(),
                label: parts.label,
                firewall: parts.firewall,
                limits: parts.limits,
                devices: parts.devices,
                volumes: parts.volumes,
                telemetry: parts.telemetry,
                fleet_names: Vec::new(),
                dir,
                applied,
                board,
                published: HashMap::new(),
                cancel: estop::Cancel::new(),
                routes,
                group_names: Default::default(),
                images,
                untidy: false,
            };
            tasks.push(tokio::spawn(estop::run(
                hub.clone(),
                applier.runtime.clone(),
                applier.tunnel.clone(),
                applier.robot(),
                applier.cancel.clone(),
                Some(parts.deploys.clone()),
                stop.subscribe(),
            )));
            let gate = BootGate {
                synced,
                wait: parts.offline_start_wait,
            };
            tasks.push(tokio::spawn(reconcile(
                hub.clone(),
                applier,
                gate,
                confirmed,
                stop.subscribe(),
            )));
        }
        None => warn!(
            "fleet: no Docker engine; releases are not applied until it is available and peercomputed restarts"
        ),
    }
    info!(fleets = hub.fleet_ids().len(), "fleet agent ready");
    Ok(FleetAgent {
        hub,
        join,
        rotated,
        tasks,
    })
}

/// Saves the config file's token unless it is the one saved already (then the join, or its
/// refusal, happened before). A bad token is logged: the daemon runs without joining.
fn save_configured_token(dir: &Path, token: &JoinTokenText, key: &SigningKey) {
    let saved = std::fs::read_to_string(dir.join(join::TOKEN_FILE)).unwrap_or_default();
    if saved.trim() == token.0.trim() {
        return;
    }
    match save_token(dir, &token.0, key, None, fleet_hub::unix_now()) {
        Ok(saved) => {
            info!(fleet = %saved.fleet, name = %saved.name, "fleet: join token from the config file saved; joining")
        }
        Err(e) => warn!("fleet: the config file's `join` token is not used: {e}"),
    }
}

/// The boot sync gate: at start, before anything is adopted or started, wait up to `wait`
/// for one sync round with any peer, so an e-stop (or a release) issued while this robot
/// was off is in its copy first.
struct BootGate {
    /// Rounds that synced every held fleet with some peer ([`sync::Syncer::synced`]).
    synced: watch::Receiver<u32>,
    wait: Duration,
}

impl BootGate {
    async fn pass(mut self, hub: &FleetHub) {
        if hub.fleet_ids().is_empty() || self.wait.is_zero() {
            return;
        }
        let begun = std::time::Instant::now();
        match tokio::time::timeout(self.wait, self.synced.wait_for(|n| *n > 0)).await {
            Ok(Ok(_)) => {
                info!(
                    ms = begun.elapsed().as_millis(),
                    "fleet: log synced with a peer; starting the fleet's apps"
                )
            }
            Ok(Err(_)) => {}
            Err(_) => warn!(
                "fleet: no peer synced within {:?} (--offline-start-wait); starting the fleet's apps from this robot's own copy of the log",
                self.wait
            ),
        }
    }
}

/// The reconciler: at start (log from disk → e-stops enforced → boot sync gate → adopt),
/// then on every new entry and every [`RECONCILE_EVERY`].
async fn reconcile(
    hub: FleetHub,
    mut applier: apply::Applier,
    gate: BootGate,
    mut confirmed: mpsc::Receiver<routes::RouteNews>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = hub.subscribe();
    let enforce = async |applier: &apply::Applier| {
        let tunnel = applier.tunnel.as_ref();
        estop::enforce(
            &hub,
            &applier.runtime,
            tunnel,
            &applier.robot(),
            None,
            &applier.cancel,
        )
        .await;
    };
    // An e-stop in the on-disk log is enforced before anything is adopted or started.
    enforce(&applier).await;
    tokio::select! {
        () = gate.pass(&hub) => {}
        _ = stop.changed() => return,
    }
    // The gate's sync may have brought a stop; adopt checks stops first.
    enforce(&applier).await;
    applier.adopt(&estop::states(&hub)).await;
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.reset();
    loop {
        let states: Vec<_> = hub
            .fleet_ids()
            .into_iter()
            .filter_map(|fleet| hub.with_log(&fleet, |l| l.state().cloned()).flatten())
            .collect();
        applier.fleet_names = states.iter().map(|s| (s.fleet, s.name.clone())).collect();
        for state in &states {
            applier.reconcile(state.fleet, state).await;
        }
        applier.record_volume_halts().await;
        applier.follow_ports().await;
        applier.sweep().await;
        applier.sync_group_names(&states).await;
        loop {
            tokio::select! {
                r = changes.recv() => {
                    if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
                _ = tick.tick() => {}
                () = tokio::time::sleep(RETRY_SWEEP), if applier.untidy => {}
                Some(news) = confirmed.recv() => {
                    // A URL (or a group name's refusal) only: recorded, no new plan needed.
                    match news {
                        routes::RouteNews::Confirmed(url) => applier.record_url(url),
                        routes::RouteNews::Group(news) => applier.record_group_name(news),
                    }
                    continue;
                }
                _ = stop.changed() => return,
            }
            break;
        }
    }
}
