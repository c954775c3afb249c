//! Group names: every robot of a fleet group serves its group's app at `<app>.<domain>` too,
//! beside its own `<app>-<robot>` (`RegisterFleet`, tunnel protocol version 3). The robots
//! join the name's route set, so the registry balances visitors across them and retries an
//! idempotent request on another robot as for any shared name.
//!
//! No signature travels with the request: the gateway holds every fleet's log as a member
//! without keys (`fleet.rs`), already verified entry by entry, and [`authorise`] decides
//! from it: the tunnel's key is a current member of `group` (not revoked, not rotated away),
//! the group's current release is app `name`, and no emergency stop holds the group. Each
//! refusal is `TryLater`: the log may still change (a robot not yet seen, a release not yet
//! arrived), and the robot withdraws the name itself once its own copy of the log agrees.
//!
//! The name is owned by the fleet ([`fleet_owner`]: the fleet id, `pcf…`, in `names.json` or
//! the cluster store), so a provider key can never take it, nor can a fleet take a provider's
//! name. When a fleet's log changes, [`sweep`] checks every group name held under that fleet
//! again and drops the routes the log no longer allows (robot moved out of the group,
//! revoked, the group released another app, an e-stop), telling each robot with an
//! unsolicited `Refused{TryLater}`.

use peercompute_fleet::{FleetId, FleetState, MemberKey};
use peercompute_identity::PeerId;
use tracing::info;

use crate::state::Shared;
use crate::tunnels::Kick;

/// What a tunnel holds a group name under: the fleet and the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FleetClaim {
    pub(crate) fleet: FleetId,
    pub(crate) group: String,
}

/// Why the fleet log does not let a robot serve a group's name (now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// This gateway does not hold the fleet's log (yet).
    NoLog,
    /// The robot's key is revoked in the fleet.
    Revoked { reason: String },
    /// The robot's key was rotated to another one.
    Retired,
    /// The key is no member of the fleet (not yet seen, or removed).
    NotMember,
    /// The robot is a member, not of this group.
    NotInGroup { groups: Vec<String> },
    /// The group has no current release.
    NoRelease,
    /// The group's current release is another app.
    OtherApp { app: String },
    /// An emergency stop holds the group.
    Stopped { reason: String },
}

impl Denied {
    /// The refusal's text, naming the fleet, group and robot.
    pub(crate) fn explain(
        &self,
        fleet: &FleetId,
        group: &str,
        robot: &PeerId,
        name: &str,
    ) -> String {
        let why = match self {
            Self::NoLog => format!("this gateway does not hold the log of fleet {fleet} yet"),
            Self::Revoked { reason } => format!("{robot} is revoked in fleet {fleet}: {reason}"),
            Self::Retired => format!("{robot} was rotated to another key in fleet {fleet}"),
            Self::NotMember => format!(
                "{robot} is not a member of fleet {fleet} in this gateway's copy of its log"
            ),
            Self::NotInGroup { groups } => {
                format!("{robot} is not in group {group} of fleet {fleet} (its groups: {groups:?})")
            }
            Self::NoRelease => format!("group {group} of fleet {fleet} has no current release"),
            Self::OtherApp { app } => {
                format!("group {group} of fleet {fleet} now runs app {app}, not {name}")
            }
            Self::Stopped { reason } => {
                format!("group {group} of fleet {fleet} is under an emergency stop: {reason}")
            }
        };
        format!("group name {name} refused for now: {why}")
    }
}

/// The owner recorded for a fleet's group names: the fleet id (`pcf…`), which no provider
/// key's peer id (`12D3KooW…`) can ever equal.
pub(crate) fn fleet_owner(fleet: &FleetId) -> String {
    fleet.to_string()
}

/// May `robot` serve `name` as a robot of `group`, by `state` (the fleet's log as this gateway
/// holds it; `None`: not held, or no genesis yet)?
pub(crate) fn authorise(
    state: Option<&FleetState>,
    robot: &PeerId,
    name: &str,
    group: &str,
) -> Result<(), Denied> {
    let state = state.ok_or(Denied::NoLog)?;
    let key = MemberKey::from_peer_id(robot).ok_or(Denied::NotMember)?;
    if let Some(reason) = state.revoked.get(&key) {
        return Err(Denied::Revoked {
            reason: reason.clone(),
        });
    }
    if state.retired.contains_key(&key) {
        return Err(Denied::Retired);
    }
    let member = state.members.get(&key).ok_or(Denied::NotMember)?;
    if !member.groups.iter().any(|g| g == group) {
        return Err(Denied::NotInGroup {
            groups: member.groups.clone(),
        });
    }
    let release = state
        .groups
        .get(group)
        .and_then(|g| g.desired())
        .ok_or(Denied::NoRelease)?;
    if release.release.app() != name {
        return Err(Denied::OtherApp {
            app: release.release.app().to_owned(),
        });
    }
    if let Some(stop) = state.stop_for(group) {
        return Err(Denied::Stopped {
            reason: stop.reason.clone(),
        });
    }
    Ok(())
}

/// Checks again every group name held under `fleet` (its log changed) and drops those the
/// log no longer allows: the route leaves the name's set at once, the robot is told with
/// `Refused{TryLater}` (it registers again if its copy of the log says otherwise). Returns
/// how many routes were dropped.
pub(crate) fn sweep(shared: &Shared, fleet: &FleetId) -> usize {
    let Some(hub) = shared.fleet.get() else {
        return 0;
    };
    let mut dropped = 0;
    for tunnel in shared.tunnels.list() {
        for (name, claim) in tunnel.fleet_names() {
            if claim.fleet != *fleet {
                continue;
            }
            let verdict = hub
                .with_log(fleet, |log| {
                    authorise(log.state(), &tunnel.peer, &name, &claim.group)
                })
                .unwrap_or(Err(Denied::NoLog));
            let Err(denied) = verdict else { continue };
            let reason = denied.explain(fleet, &claim.group, &tunnel.peer, &name);
            shared.registry.unregister(&name, tunnel.id());
            tunnel.forget(&name);
            dropped += 1;
            info!(route = %name, provider = %tunnel.peer, %reason, "group name dropped: the fleet log changed");
            if !tunnel.kick(Kick::FleetDenied { name, reason }) {
                tracing::warn!(provider = %tunnel.peer, "could not tell the robot its group name was dropped (tunnel busy or closing)");
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests;
