//! Emergency stop, robot side. When this robot's copy of a fleet log has an e-stop in force
//! for a group it is in, the group's fleet containers are stopped at once, all in parallel:
//! restart policy `no` first (so nothing, not even the engine after a reboot, starts them
//! again), then SIGKILL, no grace; their routes are withdrawn. The containers are **kept**
//! (their writable layer, labels and volumes): `applied.json` marks the serving record
//! stopped, and on resume the reconciler starts the same container again (restart policy
//! back to on-failure), or applies the group's current release when the container is gone.
//! The planner starts nothing of a stopped group until a later resume ([`super::plan`]).
//!
//! The enforcer is a task of its own beside the reconciler, woken by the hub's change
//! subscription, so an apply in flight does not delay a stop (it also cancels that apply,
//! [`super::apply::Cancel`]). It selects containers by label, not from `applied.json`: this
//! robot's fleet provider label and the group label `<fleet>/<group>`
//! ([`LABEL_FLEET_GROUP`]), or for containers from before that label the route
//! `<app>-<robot>` of the group's apps. So a container an apply has just created is caught
//! too; while a stop is in force it looks again every [`RECHECK`], so one an apply in flight
//! starts later dies within that. At daemon start the reconciler runs it once from the on-disk
//! log before it adopts or starts anything. A stop with `everything` (`estop --all`) also
//! halts the machine's deployments outside the fleet ([`DeployHalt`]) until it is lifted.
use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use std::sync::Arc;

use peercompute_fleet::{
    AppStatus, EntryHash, FleetId, FleetState, MemberKey, Phase, ReleaseRecord,
};
use peercompute_identity::PeerId;
use peercompute_p2p::fleet_hub::FleetHub;
use peercompute_runtime::{
    ContainerState, DockerRuntime, LABEL_FLEET_GROUP, LABEL_NAME, LABEL_PROVIDER, RestartAfter,
};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use super::applied::Serving;
use super::apply::{Applier, fleet_provider_label};
use super::status::now_ms;
use crate::deploy::DeployHalt;
use crate::tunnel::TunnelHandle;

/// Who this robot is to the enforcer: its key (`me`: its member key in the logs) and the
/// provider label its fleet containers carry (`label`: its first key, which a key rotation
/// does not change, `crate::label`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Robot {
    pub(crate) me: PeerId,
    pub(crate) label: PeerId,
}

/// How often the enforcer looks again while a stop is in force.
const RECHECK: Duration = Duration::from_millis(250);
/// How long it sleeps without a stop when nothing changes.
const IDLE: Duration = Duration::from_secs(3600);

/// The groups under an e-stop (`<fleet>/<group>`), published by the enforcer; an apply in
/// flight of one of them is cancelled (dropped between two engine calls), so a stop never
/// waits behind a health timeout. A container that apply created is caught by its group label.
#[derive(Debug, Clone)]
pub(crate) struct Cancel(Arc<watch::Sender<Vec<String>>>);

impl Cancel {
    pub(crate) fn new() -> Self {
        Cancel(Arc::new(watch::channel(Vec::new()).0))
    }

    /// The groups stopped now (labels `<fleet>/<group>`).
    pub(crate) fn set(&self, stopped: Vec<String>) {
        self.0.send_if_modified(|now| {
            let changed = *now != stopped;
            *now = stopped;
            changed
        });
    }

    /// Whether `label`'s group is stopped now (as the enforcer last saw it).
    pub(crate) fn is_stopped(&self, label: &str) -> bool {
        self.0.borrow().iter().any(|l| l == label)
    }

    /// Resolves once `label`'s group is stopped.
    pub(crate) fn stopped(&self, label: String) -> impl Future<Output = ()> + use<> {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| stopped.contains(&label)).await;
        }
    }
}

/// One container to stop now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StopAction {
    pub(crate) container: String,
    /// Its route (`<app>-<robot>`), withdrawn at the gateway.
    pub(crate) route: String,
    pub(crate) group: String,
    pub(crate) reason: String,
}

/// The reason of the e-stop in force for `group` of `state`, if any.
pub(crate) fn stop_for<'a>(state: &'a FleetState, group: &str) -> Option<&'a str> {
    state.stop_for(group).map(|s| s.reason.as_str())
}

/// A group of this robot under an e-stop: its label value `<fleet>/<group>`, the routes
/// (`<app>-<robot>`) of its releases' apps, and the stop's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stopped {
    pub(crate) label: String,
    pub(crate) group: String,
    pub(crate) routes: Vec<String>,
    pub(crate) reason: String,
}

/// This robot's groups of `state` under an e-stop.
pub(crate) fn stopped_groups(state: &FleetState, me: &MemberKey) -> Vec<Stopped> {
    let Some(robot) = state.members.get(me).map(|m| m.name.as_str()) else {
        return Vec::new();
    };
    let mut stopped = Vec::new();
    for group in state.groups_of(me) {
        let Some(reason) = stop_for(state, group) else {
            continue;
        };
        let mut routes: Vec<String> = state
            .groups
            .get(group)
            .map(|gs| {
                gs.releases
                    .iter()
                    .map(|r| format!("{}-{robot}", r.release.app()))
                    .collect()
            })
            .unwrap_or_default();
        routes.dedup();
        stopped.push(Stopped {
            label: format!("{}/{group}", state.fleet),
            group: group.clone(),
            routes,
            reason: reason.to_owned(),
        });
    }
    stopped
}

/// The containers to stop: of those carrying `provider_label` (`running` is (container id,
/// labels) of every managed container not already exited), the ones whose group label names
/// a stopped group, or, without a group label (containers from before it), whose route is a
/// stopped group's.
pub(crate) fn stop_plan(
    states: &[FleetState],
    me: &MemberKey,
    provider_label: &str,
    running: &[(String, HashMap<String, String>)],
) -> Vec<StopAction> {
    let stopped: Vec<Stopped> = states.iter().flat_map(|s| stopped_groups(s, me)).collect();
    if stopped.is_empty() {
        return Vec::new();
    }
    running
        .iter()
        .filter(|(_, labels)| {
            labels.get(LABEL_PROVIDER).map(String::as_str) == Some(provider_label)
        })
        .filter_map(|(id, labels)| {
            let name = labels.get(LABEL_NAME)?;
            let hit = match labels.get(LABEL_FLEET_GROUP) {
                Some(label) => stopped.iter().find(|s| s.label == *label),
                None => stopped.iter().find(|s| s.routes.contains(name)),
            }?;
            Some(StopAction {
                container: id.clone(),
                route: name.clone(),
                group: hit.group.clone(),
                reason: hit.reason.clone(),
            })
        })
        .collect()
}

/// The reason of an `estop --all` in force in a fleet this robot is a member of: it halts
/// the machine's deployments outside the fleet too.
pub(crate) fn stopped_everything<'a>(states: &'a [FleetState], me: &MemberKey) -> Option<&'a str> {
    states
        .iter()
        .filter(|s| s.members.contains_key(me))
        .find_map(|s| s.stopped_everything())
        .map(|s| s.reason.as_str())
}

/// Every fleet's state as this robot holds it now.
pub(crate) fn states(hub: &FleetHub) -> Vec<FleetState> {
    hub.fleet_ids()
        .into_iter()
        .filter_map(|fleet| hub.with_log(&fleet, |l| l.state().cloned()).flatten())
        .collect()
}

/// Restart policy `no`, then SIGKILL: the container stays, and stays down.
pub(crate) async fn kill_kept(runtime: &DockerRuntime, container: &str) -> Result<(), String> {
    if let Err(e) = runtime
        .set_restart_policy(container, RestartAfter::Never)
        .await
    {
        // Killed anyway: a stop never waits on this.
        warn!(%container, "fleet: emergency stop: cannot turn its restart policy off: {e}");
    }
    runtime.kill_now(container).await.map_err(|e| e.to_string())
}

/// Stops (in parallel) every fleet container of a stopped group and withdraws its route;
/// the groups under a stop here (`<fleet>/<group>`), empty when none is in force.
pub(crate) async fn enforce(
    hub: &FleetHub,
    runtime: &DockerRuntime,
    tunnel: Option<&TunnelHandle>,
    robot: &Robot,
    deploys: Option<&DeployHalt>,
    cancel: &Cancel,
) -> Vec<String> {
    let Some(member) = MemberKey::from_peer_id(&robot.me) else {
        return Vec::new();
    };
    let states = states(hub);
    if let Some(deploys) = deploys {
        match stopped_everything(&states, &member) {
            Some(reason) => {
                deploys.halt_all_for_estop(reason).await;
            }
            None => {
                deploys.lift_estop().await;
            }
        }
    }
    let labels: Vec<String> = states
        .iter()
        .flat_map(|s| stopped_groups(s, &member))
        .map(|s| s.label)
        .collect();
    // Published before the kills: an apply in flight ends, and adopt and resume see the
    // stop before they see its effect.
    cancel.set(labels.clone());
    if labels.is_empty() {
        return labels;
    }
    let managed = match runtime.list_managed().await {
        Ok(m) => m,
        Err(e) => {
            warn!("fleet: emergency stop: cannot list containers: {e}");
            return labels;
        }
    };
    let running: Vec<_> = managed
        .into_iter()
        .filter(|m| !matches!(m.state, ContainerState::Exited | ContainerState::Dead))
        .map(|m| (m.id, m.labels))
        .collect();
    let actions = stop_plan(
        &states,
        &member,
        &fleet_provider_label(&robot.label),
        &running,
    );
    join_all(actions.into_iter().map(|a| async move {
        let withdraw = async {
            if let Some(tunnel) = tunnel {
                tunnel.unregister(&a.route).await;
            }
        };
        let (killed, ()) = tokio::join!(kill_kept(runtime, &a.container), withdraw);
        match killed {
            Ok(()) => {
                info!(group = %a.group, route = %a.route, container = %a.container, reason = %a.reason, "fleet: emergency stop: container killed (kept until resume)")
            }
            Err(e) => {
                warn!(group = %a.group, container = %a.container, "fleet: emergency stop: cannot kill: {e}")
            }
        }
    }))
    .await;
    labels
}

/// The enforcer task: once at start, then on every change of the hub's logs, and every
/// [`RECHECK`] while a stop is in force (a container an apply in flight starts meanwhile).
/// A new stop cancels the applier's apply in flight (`cancel`).
pub(crate) async fn run(
    hub: FleetHub,
    runtime: DockerRuntime,
    tunnel: Option<TunnelHandle>,
    robot: Robot,
    cancel: Cancel,
    deploys: Option<DeployHalt>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = hub.subscribe();
    loop {
        let stopped = enforce(
            &hub,
            &runtime,
            tunnel.as_ref(),
            &robot,
            deploys.as_ref(),
            &cancel,
        )
        .await;
        let recheck = if stopped.is_empty() { IDLE } else { RECHECK };
        tokio::select! {
            _ = tokio::time::sleep(recheck) => {}
            r = changes.recv() => {
                if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

impl Applier {
    /// The planner's hold of a stopped group: the serving record is marked stopped (its
    /// container killed and kept if the enforcer has not already, its route withdrawn), so a
    /// resume starts it again; the stop and its reason show in the status.
    pub(crate) async fn hold_stopped(
        &mut self,
        fleet: FleetId,
        state: &FleetState,
        group: &str,
        reason: &str,
    ) {
        let applied = self.applied.group_mut(&fleet.to_string(), group);
        // An apply the stop cut short is not a failed release: resume tries it again.
        let mut changed = applied.failed.take().is_some();
        let newly = applied
            .serving
            .as_mut()
            .filter(|s| s.stopped.is_none())
            .map(|s| {
                s.stopped = Some(reason.to_owned());
                s.clone()
            });
        if let Some(serving) = newly {
            changed = true;
            info!(%fleet, %group, route = %serving.route, "fleet: emergency stop: the serving app stays stopped until a resume");
            if let Err(e) = kill_kept(&self.runtime, &serving.container_id).await {
                warn!("fleet: cannot kill {}: {e}", serving.container_id);
            }
            if let Some(tunnel) = &self.tunnel {
                tunnel.unregister(&serving.route).await;
            }
            self.published.remove(&serving.container_id);
        }
        if changed {
            self.save();
        }
        self.show_stopped(fleet, state, group, reason);
    }

    /// An apply an e-stop cut short: the containers it made for the group (stopped by the
    /// enforcer) are removed, the one serving before is kept, nothing is recorded as failed.
    pub(super) async fn cancelled(
        &mut self,
        fleet: FleetId,
        group: &str,
        record: &ReleaseRecord,
        old: Option<&Serving>,
    ) {
        warn!(%fleet, %group, version = %record.release.version, "fleet: emergency stop: the apply in flight is cancelled");
        let label = format!("{fleet}/{group}");
        let mine = fleet_provider_label(&self.label);
        let managed = match self.runtime.list_managed().await {
            Ok(managed) => managed,
            Err(e) => {
                warn!(
                    "fleet: cannot list the containers of a cancelled apply (removed at the next start): {e}"
                );
                return;
            }
        };
        for m in managed {
            let ours = m.labels.get(peercompute_runtime::LABEL_PROVIDER) == Some(&mine)
                && m.labels.get(peercompute_runtime::LABEL_FLEET_GROUP) == Some(&label);
            if ours
                && old.is_none_or(|o| o.container_id != m.id)
                && let Err(e) = self.runtime.stop(&m.id).await
            {
                warn!(container = %m.name, "fleet: cannot remove a cancelled apply's container: {e}");
            }
        }
    }

    /// The status of a stopped group: pending, "emergency stop: <reason>".
    fn show_stopped(&self, fleet: FleetId, state: &FleetState, group: &str, reason: &str) {
        let shown = format!("emergency stop: {reason}");
        let already = self.board.get(&fleet, group).is_some_and(|a| {
            a.phase == Phase::Pending && a.reason.as_deref() == Some(shown.as_str())
        });
        if already {
            return;
        }
        info!(%fleet, %group, %reason, "fleet: emergency stop in force; starting nothing");
        let desired = state.groups.get(group).and_then(|g| g.desired());
        let mut app = self.board.get(&fleet, group).unwrap_or_else(|| AppStatus {
            group: group.to_owned(),
            release: desired.map_or(EntryHash([0; 32]), |d| d.hash),
            version: desired
                .map(|d| d.release.version.clone())
                .unwrap_or_default(),
            phase: Phase::Pending,
            serving: None,
            url: None,
            apply_ms: None,
            reason: None,
            changed_at_ms: 0,
        });
        app.phase = Phase::Pending;
        app.serving = None;
        app.reason = Some(shown);
        app.changed_at_ms = now_ms();
        self.board.set(fleet, app);
    }

    /// After a resume: the container the stop kept starts again (restart policy back to
    /// on-failure) and serves its release; when it is gone or does not start, the record is
    /// dropped and the planner applies the group's current release.
    pub(crate) async fn resume_stopped(&mut self, fleet: FleetId, group: &str) {
        let applied = self.applied.group_mut(&fleet.to_string(), group);
        let Some(serving) = applied.serving.clone() else {
            return;
        };
        let id = &serving.container_id;
        let started = match self
            .runtime
            .set_restart_policy(id, RestartAfter::Failure)
            .await
        {
            Ok(()) => self.runtime.resume(id).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let applied = self.applied.group_mut(&fleet.to_string(), group);
        match started {
            Ok(addr) => {
                info!(%fleet, %group, version = %serving.version, route = %serving.route, "fleet: resumed; the stopped container serves again");
                if let Some(s) = applied.serving.as_mut() {
                    s.stopped = None;
                }
                self.published.insert(id.clone(), addr);
                self.routes.register(fleet, group, id, &serving.route, addr);
                self.board.set(
                    fleet,
                    AppStatus {
                        group: group.to_owned(),
                        release: serving.release.parse().unwrap_or(EntryHash([0; 32])),
                        version: serving.version.clone(),
                        phase: Phase::Healthy,
                        serving: Some(serving.version.clone()),
                        url: serving.url.clone(),
                        apply_ms: None,
                        reason: None,
                        changed_at_ms: now_ms(),
                    },
                );
            }
            Err(e) if self.cancel.is_stopped(&format!("{fleet}/{group}")) => {
                // Stopped again while it started (the enforcer killed it): kept, still stopped.
                info!(%fleet, %group, "fleet: stopped again while resuming ({e})");
            }
            Err(e) => {
                warn!(%fleet, %group, container = %id, "fleet: resumed, but the stopped container does not start ({e}); applying the release again");
                applied.serving = None;
                let _ = self.runtime.stop(id).await;
            }
        }
        self.save();
    }
}
