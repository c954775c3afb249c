//! Emergency stop, robot side. When this robot's copy of a fleet log has an e-stop in force
//! for a group it is in, the group's fleet containers are killed at once (SIGKILL, no grace,
//! all in parallel) and removed, so no restart policy (not even the engine's after a
//! reboot) brings them back; their routes are withdrawn. The planner starts nothing of a
//! stopped group until a later resume ([`super::plan`] holds it); the hold forgets what
//! served (and a failure the stop may have caused), so on resume the reconciler applies the
//! group's current release again.
//!
//! The enforcer is a task of its own beside the reconciler, woken by the hub's change
//! subscription, so an apply in flight does not delay a stop. It selects containers by label
//! (this robot's fleet provider label and the route `<app>-<robot>` of the group's apps), not
//! from `applied.json`, so a container an apply has just created is caught too; while a stop
//! is in force it looks again every [`RECHECK`], so one an apply in flight starts later dies
//! within that. At daemon start the reconciler runs it once from the on-disk log before it
//! adopts or starts anything.
use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use peercompute_fleet::{AppStatus, EntryHash, FleetId, FleetState, MemberKey, Phase};
use peercompute_identity::PeerId;
use peercompute_p2p::fleet_hub::FleetHub;
use peercompute_runtime::{DockerRuntime, LABEL_NAME, LABEL_PROVIDER};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use super::apply::{Applier, fleet_provider_label};
use super::status::now_ms;
use crate::tunnel::TunnelHandle;

/// How often the enforcer looks again while a stop is in force.
const RECHECK: Duration = Duration::from_millis(250);
/// How long it sleeps without a stop when nothing changes.
const IDLE: Duration = Duration::from_secs(3600);

/// One container to stop now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StopAction {
    pub(crate) container: String,
    pub(crate) route: String,
    pub(crate) group: String,
    pub(crate) reason: String,
}

/// The routes (`<app>-<robot>`) of this robot's apps in groups under an e-stop, with the
/// group and the stop's reason.
pub(crate) fn stopped_routes(state: &FleetState, me: &MemberKey) -> Vec<(String, String, String)> {
    let Some(robot) = state.members.get(me).map(|m| m.name.as_str()) else {
        return Vec::new();
    };
    let mut routes = Vec::new();
    for group in state.groups_of(me) {
        let Some(gs) = state.groups.get(group) else {
            continue;
        };
        let Some(reason) = &gs.stopped else {
            continue;
        };
        for record in &gs.releases {
            let route = format!("{}-{robot}", record.release.app());
            if !routes.iter().any(|(r, _, _)| *r == route) {
                routes.push((route, group.clone(), reason.clone()));
            }
        }
    }
    routes
}

/// The containers to kill: those carrying `provider_label` whose route is a stopped one.
/// `running` is (container id, labels) of every managed container.
pub(crate) fn stop_plan(
    states: &[FleetState],
    me: &MemberKey,
    provider_label: &str,
    running: &[(String, HashMap<String, String>)],
) -> Vec<StopAction> {
    let routes: Vec<_> = states.iter().flat_map(|s| stopped_routes(s, me)).collect();
    if routes.is_empty() {
        return Vec::new();
    }
    running
        .iter()
        .filter(|(_, labels)| {
            labels.get(LABEL_PROVIDER).map(String::as_str) == Some(provider_label)
        })
        .filter_map(|(id, labels)| {
            let name = labels.get(LABEL_NAME)?;
            let (route, group, reason) = routes.iter().find(|(r, _, _)| r == name)?;
            Some(StopAction {
                container: id.clone(),
                route: route.clone(),
                group: group.clone(),
                reason: reason.clone(),
            })
        })
        .collect()
}

/// Every fleet's state as this robot holds it now.
fn states(hub: &FleetHub) -> Vec<FleetState> {
    hub.fleet_ids()
        .into_iter()
        .filter_map(|fleet| hub.with_log(&fleet, |l| l.state().cloned()).flatten())
        .collect()
}

/// Kills (in parallel) every fleet container of a stopped group and withdraws its route;
/// how many were killed, or `None` when no stop is in force here.
pub(crate) async fn enforce(
    hub: &FleetHub,
    runtime: &DockerRuntime,
    tunnel: Option<&TunnelHandle>,
    me: &PeerId,
) -> Option<usize> {
    let member = MemberKey::from_peer_id(me)?;
    let states = states(hub);
    if states.iter().all(|s| stopped_routes(s, &member).is_empty()) {
        return None;
    }
    let managed = match runtime.list_managed().await {
        Ok(m) => m,
        Err(e) => {
            warn!("fleet: emergency stop: cannot list containers: {e}");
            return Some(0);
        }
    };
    let running: Vec<_> = managed.into_iter().map(|m| (m.id, m.labels)).collect();
    let actions = stop_plan(&states, &member, &fleet_provider_label(me), &running);
    let count = actions.len();
    join_all(actions.into_iter().map(|a| async move {
        match runtime.kill_now(&a.container).await {
            Ok(()) => {
                info!(group = %a.group, route = %a.route, container = %a.container, reason = %a.reason, "fleet: emergency stop: container killed")
            }
            Err(e) => {
                warn!(group = %a.group, container = %a.container, "fleet: emergency stop: cannot kill: {e}")
            }
        }
        if let Some(tunnel) = tunnel {
            tunnel.unregister(&a.route).await;
        }
    }))
    .await;
    Some(count)
}

/// The enforcer task: once at start, then on every change of the hub's logs, and every
/// [`RECHECK`] while a stop is in force (a container an apply in flight starts meanwhile).
pub(crate) async fn run(
    hub: FleetHub,
    runtime: DockerRuntime,
    tunnel: Option<TunnelHandle>,
    me: PeerId,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = hub.subscribe();
    loop {
        let in_force = enforce(&hub, &runtime, tunnel.as_ref(), &me)
            .await
            .is_some();
        let recheck = if in_force { RECHECK } else { IDLE };
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
    /// The planner's hold of a stopped group: forgets what serves it (its container killed
    /// and removed if the enforcer has not already, its route withdrawn), so a resume applies
    /// it again, and shows the stop and its reason in the status.
    pub(crate) async fn hold_stopped(
        &mut self,
        fleet: FleetId,
        state: &FleetState,
        group: &str,
        reason: &str,
    ) {
        let applied = self.applied.group_mut(&fleet.to_string(), group);
        // An apply the stop cut short is not a failed release: resume tries it again.
        if applied.failed.take().is_some() {
            self.save();
        }
        let applied = self.applied.group_mut(&fleet.to_string(), group);
        if let Some(serving) = applied.serving.take() {
            info!(%fleet, %group, route = %serving.route, "fleet: emergency stop: the serving app stays stopped until a resume");
            if let Err(e) = self.runtime.kill_now(&serving.container_id).await {
                warn!("fleet: cannot kill {}: {e}", serving.container_id);
            }
            if let Some(tunnel) = &self.tunnel {
                tunnel.unregister(&serving.route).await;
            }
            self.published.remove(&serving.container_id);
            self.save();
        }
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
}
