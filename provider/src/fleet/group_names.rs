//! The group's shared name: besides its own `<app>-<robot>`, every robot of a group serves the
//! group's app at `<app>.<domain>`, registered with `RegisterFleet` (the gateway checks the
//! fleet log it holds and balances the name's visitors across the group's robots).
//!
//! [`wanted`] is the pure rule — a group of this robot, under no e-stop, whose serving
//! container runs the group's current app, gets that app's name pointed at the container —
//! and [`diff`] what changes against the names already asked for. The applier runs both at
//! the end of every reconcile pass (so a re-adoption at start, a restarted container's new
//! port, a group left or a release of another app all follow), and re-points a group's name
//! at once when an apply switches containers. A refused group name never touches the robot's
//! own name: the refusal is logged and shown in the status (`peerctl fleet status`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use peercompute_fleet::{FleetId, FleetState, GroupName, MemberKey};
use tracing::{info, warn};

use super::applied::Applied;
use super::apply::Applier;
use super::routes::GroupNews;

/// Where a group name points: the group it serves and the serving container's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) fleet: FleetId,
    pub(crate) group: String,
    pub(crate) addr: SocketAddr,
}

/// The group names this robot should serve now (name → where), by the fleet states it holds,
/// what it runs (`applied`) and where each container is published. When two groups of this
/// robot run the same app, the first (by fleet, then group) has the name.
pub(crate) fn wanted(
    states: &[FleetState],
    me: &MemberKey,
    applied: &Applied,
    published: &HashMap<String, SocketAddr>,
) -> BTreeMap<String, Wanted> {
    let mut wanted = BTreeMap::new();
    for state in states {
        let Some(robot) = state.members.get(me).map(|m| m.name.as_str()) else {
            continue;
        };
        let fleet_text = state.fleet.to_string();
        for group in state.groups_of(me) {
            if state.stop_for(group).is_some() {
                continue;
            }
            let Some(release) = state.groups.get(group).and_then(|g| g.desired()) else {
                continue;
            };
            let app = release.release.app();
            let serving = applied
                .fleets
                .get(&fleet_text)
                .and_then(|f| f.groups.get(group))
                .and_then(|g| g.serving.as_ref())
                .filter(|s| s.stopped.is_none() && s.route == format!("{app}-{robot}"));
            let Some(addr) = serving.and_then(|s| published.get(&s.container_id)) else {
                continue;
            };
            wanted.entry(app.to_owned()).or_insert(Wanted {
                fleet: state.fleet,
                group: group.clone(),
                addr: *addr,
            });
        }
    }
    wanted
}

/// What to change: names to withdraw, and names to (re-)register where they now point.
pub(crate) fn diff(
    held: &BTreeMap<String, Wanted>,
    wanted: &BTreeMap<String, Wanted>,
) -> (Vec<String>, Vec<(String, Wanted)>) {
    let withdraw = held
        .keys()
        .filter(|n| !wanted.contains_key(*n))
        .cloned()
        .collect();
    let register = wanted
        .iter()
        .filter(|(n, w)| held.get(*n) != Some(w))
        .map(|(n, w)| (n.clone(), w.clone()))
        .collect();
    (withdraw, register)
}

impl Applier {
    /// Brings the group names asked of the gateway in step with [`wanted`].
    pub(crate) async fn sync_group_names(&mut self, states: &[FleetState]) {
        let Some(me) = MemberKey::from_peer_id(&self.me) else {
            return;
        };
        if self.tunnel.is_none() {
            return;
        }
        let wanted = wanted(states, &me, &self.applied, &self.published);
        let (withdraw, register) = diff(&self.group_names, &wanted);
        for name in withdraw {
            let Some(held) = self.group_names.remove(&name) else {
                continue;
            };
            info!(fleet = %held.fleet, group = %held.group, route = %name, "fleet: withdrawing the group name");
            if let Some(tunnel) = &self.tunnel {
                tunnel.unregister(&name).await;
            }
            self.board.remove_group_name(held.fleet, &held.group);
        }
        for (name, w) in register {
            self.ask_group_name(&name, w);
        }
    }

    /// After an apply switched `group` of `fleet` to the container at `addr`: its group name,
    /// if it has one, follows at once (the old container is about to drain and stop).
    pub(crate) fn repoint_group_name(&mut self, fleet: FleetId, group: &str, addr: SocketAddr) {
        let held = self
            .group_names
            .iter()
            .find(|(_, w)| w.fleet == fleet && w.group == group && w.addr != addr)
            .map(|(n, w)| (n.clone(), w.clone()));
        if let Some((name, w)) = held {
            self.ask_group_name(&name, Wanted { addr, ..w });
        }
    }

    fn ask_group_name(&mut self, name: &str, w: Wanted) {
        info!(fleet = %w.fleet, group = %w.group, route = %name, addr = %w.addr, "fleet: asking for the group name");
        self.routes.register_group(w.fleet, &w.group, name, w.addr);
        self.board.set_group_name(
            w.fleet,
            GroupName {
                group: w.group.clone(),
                name: name.to_owned(),
                url: None,
                refused: None,
            },
        );
        self.group_names.insert(name.to_owned(), w);
    }

    /// Records the gateway's answer for a group name, if the name still points where it was
    /// asked for (else the answer is stale).
    pub(crate) fn record_group_name(&mut self, news: GroupNews) {
        let current = self
            .group_names
            .get(&news.name)
            .is_some_and(|w| w.fleet == news.fleet && w.group == news.group && w.addr == news.addr);
        if !current {
            return;
        }
        let (url, refused) = match news.outcome {
            Ok(url) => {
                info!(fleet = %news.fleet, group = %news.group, %url, "fleet: the gateway published the group name");
                (Some(url), None)
            }
            Err(reason) => {
                warn!(fleet = %news.fleet, group = %news.group, route = %news.name, "fleet: the group name was refused (this robot's own name is unaffected): {reason}");
                (None, Some(reason))
            }
        };
        self.board.set_group_name(
            news.fleet,
            GroupName {
                group: news.group,
                name: news.name,
                url,
                refused,
            },
        );
    }
}

#[cfg(test)]
mod tests;
