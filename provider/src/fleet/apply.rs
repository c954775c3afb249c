//! The applier: carries out the planner's [`Action`]s with Docker and the tunnel.
//!
//! Applying a release: fetch the image pinned by digest (a mismatch is refused) → start the
//! new container beside the old one, sandboxed like any deployment → wait until it is healthy
//! within the release's timeout → point the robot's route `<app>-<robot>` at it (the tunnel
//! client swaps a route's local target when the gateway confirms the re-registration; streams
//! already spliced keep their connection to the old container) → record the switch in
//! `applied.json` → let in-flight requests finish on the old container for [`DRAIN`] → stop
//! the old one (a daemon that dies during the drain finds the new release recorded, and
//! removes the old container at its start as any unrecorded one). A release that never becomes
//! healthy is stopped, the old one keeps serving, and the reason (what failed and the last log
//! lines) is recorded in `applied.json` and the status. Fleet containers carry the provider
//! label `<label>/fleet` (`label`: the robot's first peer id, kept across key rotations,
//! `crate::label`), so the deployments' reconciliation leaves them alone.
//!
//! Attachments: a release's named volumes live in the scope `fleet:<fleet id>`, keyed by app,
//! so every release of the app (by any admin) mounts the same data; its devices are the
//! owner's grants to the fleet. By default both containers of a switch mount the volumes.
//! With `volume_exclusive`, or an unshared device, the switch is exclusive: the old container
//! is halted (kept) before the new one starts; healthy → the route moves and the old one is
//! stopped; not healthy → the new one is stopped and the old one resumed and re-registered.
//! The gap (halt → healthy, or → resumed) is logged and recorded. Stopping a container or
//! leaving a group never removes a volume.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peercompute_fleet::{AppStatus, FleetId, FleetState, MemberKey, Phase, ReleaseRecord};
use peercompute_identity::PeerId;
use peercompute_runtime::{
    Attachments, ContainerSpec, DockerRuntime, HealthCheck, Limits, PinnedImage,
};
use tracing::{info, warn};

use super::applied::{Applied, Failure, Serving};
use super::plan::{Action, Rules, plan, resources_of};
use super::status::{StatusBoard, now_ms};
use crate::config::Firewall;
use crate::deploy::deployment_env;
use crate::devices::{DeviceGrants, Holder, Requester};
use crate::tunnel::{RegisterError, TunnelHandle};
use crate::volumes::Volumes;

/// How long in-flight requests may take to finish on the old container after the switch.
pub(crate) const DRAIN: Duration = Duration::from_secs(2);
/// How long the gateway may take to confirm a route switch.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a health check must keep passing (port checks; HTTP checks pass at once).
const PORT_SETTLE: Duration = Duration::from_secs(1);

/// The applier's state.
pub(crate) struct Applier {
    pub(crate) runtime: DockerRuntime,
    pub(crate) tunnel: Option<TunnelHandle>,
    /// This robot's key: its member key, its statuses, the containers' environment.
    pub(crate) me: PeerId,
    /// The provider label of its containers (`crate::label`): stable across key rotations.
    pub(crate) label: PeerId,
    pub(crate) firewall: Firewall,
    /// This robot's limits, which releases are admitted against as deploys are.
    pub(crate) limits: Limits,
    /// The devices this machine's owner grants.
    pub(crate) devices: DeviceGrants,
    /// The daemon's volume ledger (shared with the deployments).
    pub(crate) volumes: Arc<Volumes>,
    /// The name of every fleet this robot holds (device grants may name a fleet by name).
    pub(crate) fleet_names: Vec<(FleetId, String)>,
    /// The fleet directory (`applied.json`).
    pub(crate) dir: PathBuf,
    pub(crate) applied: Applied,
    pub(crate) board: StatusBoard,
    /// Where each serving container was last published (Docker moves it on a restart).
    pub(crate) published: HashMap<String, SocketAddr>,
    /// Release outcomes and durations, counted with the deploys.
    pub(crate) telemetry: Arc<crate::admin::Telemetry>,
    /// Set by the e-stop enforcer: an apply of a group that comes under a stop ends at once.
    pub(crate) cancel: super::estop::Cancel,
    /// Registers serving routes in the background; their URLs come back to `record_url`.
    pub(crate) routes: super::routes::RouteSink,
    /// The group names asked of the gateway (`group_names`), name → where it points.
    pub(crate) group_names: std::collections::BTreeMap<String, super::group_names::Wanted>,
    /// A leftover container could not be removed (the engine did not answer): the
    /// reconciler sweeps again soon.
    pub(crate) untidy: bool,
    /// Fetches peer-pinned images from fleet members (and serves the ones verified here).
    pub(crate) images: Arc<super::image_fetch::ImageFetcher>,
}

/// The provider label fleet containers carry (`label` is the daemon's provider label,
/// `crate::label`, not its current peer id), so deployments' reconciliation leaves them alone.
pub(crate) fn fleet_provider_label(label: &PeerId) -> String {
    format!("{label}/fleet")
}

/// Why one step of an apply failed.
pub(super) struct Failed {
    pub(super) phase: Phase,
    pub(super) reason: String,
    /// Refused before anything started (devices, volume space): tried again once admitted.
    pub(super) refused: bool,
}

fn failed(reason: String) -> Failed {
    Failed {
        phase: Phase::Failed,
        reason,
        refused: false,
    }
}

fn rolled_back(reason: String) -> Failed {
    Failed {
        phase: Phase::RolledBack,
        reason,
        refused: false,
    }
}

/// A release serving after a switch.
pub(super) struct Switched {
    pub(super) container: String,
    pub(super) addr: SocketAddr,
    pub(super) url: Option<String>,
    /// How long the app was down, when the switch was exclusive.
    pub(super) gap: Option<Duration>,
}

impl Applier {
    /// This robot's key and provider label, for the e-stop enforcer.
    pub(crate) fn robot(&self) -> super::estop::Robot {
        super::estop::Robot {
            me: self.me,
            label: self.label,
        }
    }

    /// Saves `applied.json` and tells the deployments which devices the fleet's serving
    /// containers hold (every change of what serves goes through here).
    pub(super) fn save(&self) {
        if let Err(e) = self.applied.save(&self.dir) {
            warn!("fleet: {e}");
        }
        self.devices
            .publish_held(Holder::Fleet, self.applied.devices());
    }

    /// Plans and carries out what `state` asks of this robot.
    pub(crate) async fn reconcile(&mut self, fleet: FleetId, state: &FleetState) {
        let Some(me) = MemberKey::from_peer_id(&self.me) else {
            return;
        };
        let Some(robot) = state.members.get(&me).map(|m| m.name.clone()) else {
            return;
        };
        let fleet_text = fleet.to_string();
        let rules = Rules {
            limits: &self.limits,
            devices: &self.devices,
        };
        // A grant naming the fleet by name is ambiguous when another joined fleet has it too.
        let requester = Requester::Fleet {
            id: fleet,
            name: state.name.clone(),
            name_shared: self
                .fleet_names
                .iter()
                .any(|(id, name)| *id != fleet && *name == state.name),
        };
        let mut actions = plan(state, &me, &fleet_text, &self.applied, rules, &requester);
        // After a resume, the planner looks again: the release may have moved on meanwhile.
        if actions.iter().any(|a| matches!(a, Action::Resume { .. })) {
            for action in std::mem::take(&mut actions) {
                if let Action::Resume { group } = action {
                    self.resume_stopped(fleet, &group).await;
                }
            }
            let rules = Rules {
                limits: &self.limits,
                devices: &self.devices,
            };
            actions = plan(state, &me, &fleet_text, &self.applied, rules, &requester);
        }
        for action in actions {
            match action {
                Action::Apply { group, release } => {
                    self.apply(&requester, &group, &release, &robot).await;
                }
                Action::Hold { group, reason } => {
                    self.hold_stopped(fleet, state, &group, &reason).await;
                }
                Action::Remove { group } => self.remove(fleet, &group).await,
                Action::Resume { group } => self.resume_stopped(fleet, &group).await,
                Action::Refuse {
                    group,
                    release,
                    reason,
                } => self.refuse(fleet, &group, &release, reason),
            }
        }
    }

    async fn apply(
        &mut self,
        requester: &Requester,
        group: &str,
        record: &ReleaseRecord,
        robot: &str,
    ) {
        let Requester::Fleet { id: fleet, .. } = requester else {
            return;
        };
        let fleet = *fleet;
        let release = &record.release;
        let begun = Instant::now();
        let route = format!("{}-{robot}", release.app());
        let old = self
            .applied
            .group_mut(&fleet.to_string(), group)
            .serving
            .clone();
        info!(%fleet, %group, version = %release.version, %route, "fleet: applying release");
        let mut status = AppStatus {
            group: group.to_owned(),
            release: record.hash,
            version: release.version.clone(),
            phase: Phase::Fetching,
            serving: old.as_ref().map(|s| s.version.clone()),
            url: old.as_ref().and_then(|s| s.url.clone()),
            apply_ms: None,
            reason: None,
            changed_at_ms: now_ms(),
        };
        self.board.set(fleet, status.clone());
        let stopped = self.cancel.stopped(format!("{fleet}/{group}"));
        let applying = async {
            match self.attachments(requester, group, record).await {
                Ok(prepared) => {
                    self.exclusive_switch(fleet, group, record, &route, prepared, old.as_ref())
                        .await
                }
                Err(e) => Err(e),
            }
        };
        let outcome = tokio::select! {
            outcome = applying => outcome,
            () = stopped => {
                self.cancelled(fleet, group, record, old.as_ref()).await;
                return;
            }
        };
        status.apply_ms = Some(u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX));
        let label = match &outcome {
            Ok(_) => "ok",
            Err(f) if old.is_some() && f.phase == Phase::RolledBack => "release_rolled_back",
            Err(_) => "release_failed",
        };
        self.telemetry.record(label, begun.elapsed());
        status.changed_at_ms = now_ms();
        let fleet_text = fleet.to_string();
        let applied = self.applied.group_mut(&fleet_text, group);
        let spec_resources = resources_of(&release.spec);
        // The old container to drain and stop once the switch is recorded (halted or not).
        let mut retired = None;
        // Images no longer kept for a rollback, to be removed unless something else holds them.
        let dropped = match outcome {
            Ok(Switched {
                container: container_id,
                addr,
                url,
                gap,
            }) => {
                info!(%fleet, %group, version = %release.version, %route, ms = ?status.apply_ms, "fleet: release healthy and serving");
                retired = old
                    .clone()
                    .filter(|o| o.container_id != container_id)
                    .map(|o| (o, gap.is_some()));
                status.phase = Phase::Healthy;
                status.reason = gap.map(|g| {
                    format!(
                        "exclusive switch: the app was down {} ms (the old container halted before the new one started)",
                        g.as_millis()
                    )
                });
                status.serving = Some(release.version.clone());
                status.url = url.clone();
                applied.serving = Some(Serving {
                    release: record.hash.to_string(),
                    version: release.version.clone(),
                    route: route.clone(),
                    container_id: container_id.clone(),
                    image: release.spec.image.clone(),
                    url,
                    cpu_millis: spec_resources.cpu_millis,
                    memory_bytes: spec_resources.memory_bytes,
                    devices: release.spec.devices.clone(),
                    gap_ms: gap.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
                    stopped: None,
                });
                applied.failed = None;
                self.published.insert(container_id, addr);
                let dropped = applied.keep_image(&release.spec.image);
                self.repoint_group_name(fleet, group, addr);
                dropped
            }
            Err(Failed {
                phase,
                reason,
                refused,
            }) => {
                let phase = if old.is_some() && phase == Phase::RolledBack {
                    Phase::RolledBack
                } else {
                    Phase::Failed
                };
                warn!(%fleet, %group, version = %release.version, "fleet: release not applied ({}): {reason}", phase.as_str());
                status.phase = phase;
                status.reason = Some(reason.clone());
                applied.failed = Some(Failure {
                    release: record.hash.to_string(),
                    version: release.version.clone(),
                    reason,
                    refused,
                });
                // A release that failed is not kept for a rollback.
                vec![release.spec.image.clone()]
            }
        };
        // Recorded before the old container is drained and stopped: a daemon that dies in
        // between finds the new release serving at its start (the old container, no longer
        // recorded, is removed then), rather than applying it a second time.
        self.save();
        self.board.set(fleet, status);
        if let Some((old, halted)) = retired {
            self.retire(fleet, group, &old, halted).await;
        }
        self.prune_images(dropped).await;
    }

    /// After a switch is recorded: lets in-flight requests finish on the old container for
    /// [`DRAIN`] (not when it was halted for an exclusive switch, nor once an e-stop for the
    /// group is in force, whose enforcer kills it anyway), then stops it.
    async fn retire(&mut self, fleet: FleetId, group: &str, old: &Serving, halted: bool) {
        if !halted {
            let stopped = self.cancel.stopped(format!("{fleet}/{group}"));
            tokio::select! {
                () = tokio::time::sleep(DRAIN) => {}
                () = stopped => {}
            }
        }
        if let Err(e) = self.runtime.stop(&old.container_id).await {
            warn!(container = %old.container_id, %group, "fleet: cannot stop the old container: {e}");
        }
        self.published.remove(&old.container_id);
    }

    /// Fetch, start beside the old one, wait until healthy: the new container and address.
    pub(super) async fn start_healthy(
        &self,
        fleet: FleetId,
        group: &str,
        record: &ReleaseRecord,
        route: &str,
        attach: Attachments,
    ) -> Result<(String, SocketAddr), Failed> {
        let release = &record.release;
        let pinned = PinnedImage::parse(&release.spec.image)
            .map_err(|e| failed(format!("the release's image is not pinned: {e}")))?;
        let board = self.board.clone();
        let info = self
            .images
            .ensure(&self.runtime, fleet, &pinned, record.author, |line| {
                board.update(fleet, group, |a| a.reason = Some(line));
            })
            .await
            .map_err(|e| Failed {
                phase: Phase::Failed,
                reason: format!("fetching the image failed: {}", e.reason),
                // Nothing started; a full disk is not the release's fault: the planner
                // tries it again (each reconcile) and it applies once space is freed.
                refused: e.no_space,
            })?;
        self.board.update(fleet, group, |a| {
            a.phase = Phase::Starting;
            a.reason = None;
            a.changed_at_ms = now_ms();
        });
        if self.firewall == Firewall::Install {
            peercompute_runtime::install_egress_firewall()
                .await
                .map_err(|e| {
                    failed(format!(
                        "this robot cannot keep containers off its own network, so it starts none: {e}"
                    ))
                })?;
        }
        let owner = record
            .author
            .peer_id()
            .ok_or_else(|| failed("the release's author key is invalid".into()))?;
        let id = new_id();
        let resources = resources_of(&release.spec);
        let spec = ContainerSpec {
            deployment_id: id.clone(),
            provider: fleet_provider_label(&self.label),
            owner: owner.to_string(),
            name: route.to_owned(),
            image: self.images.start_reference(&pinned, &info),
            port: release.spec.port,
            env: deployment_env(&release.spec, &self.me, &id, route),
            cpu_millis: resources.cpu_millis,
            memory_bytes: resources.memory_bytes,
            attach,
        };
        let started = self
            .runtime
            .start(&spec)
            .await
            .map_err(|e| rolled_back(format!("starting the container failed: {e}")))?;
        let check = HealthCheck {
            path: release.health.path.clone(),
            settle: if release.health.path.is_some() {
                Duration::ZERO
            } else {
                PORT_SETTLE
            },
        };
        let timeout = Duration::from_secs(u64::from(release.health.timeout_secs));
        match self
            .runtime
            .wait_healthy(&started.id, started.addr, &check, timeout)
            .await
        {
            Ok(report) => {
                info!(container = %started.name, elapsed = ?report.elapsed, probes = report.probes, "fleet: new container healthy");
                Ok((started.id, started.addr))
            }
            Err(e) => {
                let _ = self.runtime.stop(&started.id).await;
                Err(rolled_back(format!(
                    "the new container never became healthy: {e}"
                )))
            }
        }
    }

    /// Moves the route to the new container (the old one is drained and stopped by
    /// [`Self::retire`] once the switch is recorded).
    /// Without a connected tunnel the route is registered in the background
    /// ([`RouteSink`](super::routes::RouteSink)) and the switch goes on at once: the release
    /// serves here with no public URL until the gateway confirms it.
    pub(super) async fn switch(
        &self,
        (fleet, group): (FleetId, &str),
        route: &str,
        container: &str,
        addr: SocketAddr,
        old: Option<&Serving>,
    ) -> Result<(String, SocketAddr, Option<String>), Failed> {
        let mut url = None;
        let offline = self.tunnel.is_some() && !self.routes.connected();
        if offline {
            info!(%route, "fleet: the gateway is not connected; serving here, the route registers when the tunnel is up");
            self.routes.register(fleet, group, container, route, addr);
        } else if let Some(tunnel) = &self.tunnel {
            let ip = addr.ip().to_string();
            match tokio::time::timeout(SWITCH_TIMEOUT, tunnel.register(route, &ip, addr.port()))
                .await
            {
                Ok(Ok(u)) => url = Some(u),
                Ok(Err(e @ RegisterError::Refused { .. })) => {
                    let _ = self.runtime.stop(container).await;
                    // A refusal withdraws the route: point it back at the old container.
                    if let Some(old) = old
                        && let Some(old_addr) = self.published.get(&old.container_id)
                    {
                        spawn_register(tunnel, &old.route, *old_addr);
                    }
                    return Err(rolled_back(format!("the gateway refused the route: {e}")));
                }
                Ok(Err(e)) => warn!(%route, "fleet: the route is not confirmed: {e}"),
                Err(_) => {
                    warn!(%route, "fleet: the gateway has not confirmed the route yet; it registers when the tunnel is up");
                    self.routes.register(fleet, group, container, route, addr);
                }
            }
        }
        if let Some(old) = old
            && old.route != route
            && let Some(tunnel) = &self.tunnel
        {
            tunnel.unregister(&old.route).await;
        }
        // Offline, the old URL is not claimed: the gateway confirms the new one later.
        let kept = old.filter(|_| !offline).and_then(|o| o.url.clone());
        Ok((container.to_owned(), addr, url.or(kept)))
    }

    async fn remove(&mut self, fleet: FleetId, group: &str) {
        let fleet_text = fleet.to_string();
        let applied = self.applied.group_mut(&fleet_text, group);
        let Some(serving) = applied.serving.take() else {
            return;
        };
        info!(%fleet, %group, route = %serving.route, "fleet: this robot left the group; stopping its app");
        if let Some(tunnel) = &self.tunnel {
            tunnel.unregister(&serving.route).await;
        }
        if let Err(e) = self.runtime.stop(&serving.container_id).await {
            warn!("fleet: cannot stop {}: {e}", serving.container_id);
        }
        self.published.remove(&serving.container_id);
        self.save();
        self.board.remove(fleet, group);
    }
}

/// Registers `route` → `addr` in the background (the tunnel applies it when it can).
pub(super) fn spawn_register(tunnel: &TunnelHandle, route: &str, addr: SocketAddr) {
    let (tunnel, route) = (tunnel.clone(), route.to_owned());
    tokio::spawn(async move {
        if let Err(e) = tunnel
            .register(&route, &addr.ip().to_string(), addr.port())
            .await
        {
            warn!(%route, "fleet: no public URL: {e}");
        }
    });
}

/// `f` + 11 random hex characters: a deployment id for one fleet container.
fn new_id() -> String {
    let bytes: [u8; 6] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("f{}", &hex[1..])
}
