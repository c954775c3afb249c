//! The gateway follows the fleets' revocations: a key revoked in a fleet held here loses its
//! tunnel (GoAway NotAllowed, admin event `provider_revoked`), its relay slot (the relay's
//! keep check, every 500 ms) and its names (released as an operator release does, held from
//! it for 24 h), through [`Allowlist::deny`](crate::allow::Allowlist::deny).
//!
//! Consent rule, so a fleet cannot cut strangers: a gateway follows `Revoke{M}` in fleet F only
//! when M took part in F — F's log holds an entry M wrote (its join, or any other), or this
//! gateway received a status of F signed by M (a robot an admin enrolled by key never writes an
//! entry). Anyone can `Enroll` a stranger's key in a fleet of their own; that key then neither
//! wrote there nor reported there. Status consent is kept per fleet in
//! `<state>/fleets/<fleet>/consent.json` (atomic writes); the denial is recomputed from the
//! logs and those files at start. [`denied_in`] is the pure rule.
//!
//! Key rotations follow the same consent rule ([`rotated_in`]): when a fleet held here
//! retired `old` for `new` (`RotateMember`) and `old` took part in it, `old`'s names move to
//! `new` ([`NameStore::transfer`](crate::names::NameStore::transfer), one atomic write) and
//! `new` is admitted wherever `old` was ([`Allowlist::alias`](crate::allow::Allowlist::alias)).
//! The rotation entry is pushed at once to `old` when it holds a tunnel here (the gateway
//! forwards entries to members, and `old` is no member any more), so the robot switches keys
//! without waiting for its next sync. `old` is denied once `new` has had a tunnel here, so the
//! app keeps serving until the robot has restarted with its new key.
//!
//! Every change of a fleet's log also checks that fleet's group names again
//! ([`crate::fleet_names::sweep`]): a robot moved out of its group, revoked, or whose group
//! now runs another app stops receiving the group's visitors.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peercompute_fleet::{FleetId, FleetLog, MemberKey, Op};
use peercompute_p2p::fleet_hub::{self, FleetHub};
use peercompute_p2p::{Node, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::events::EventKind;
use crate::state::Shared;

/// How often robots' statuses held by the hub are read for consent (and rotated keys'
/// successors looked for among the tunnels).
const CONSENT_EVERY: Duration = Duration::from_secs(1);
/// How long the push of a rotation entry to the old key may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
const CONSENT_FILE: &str = "consent.json";

/// The keys revoked in `log` that took part in it (wrote an entry, or are in `reported`: they
/// sent this gateway a status of the fleet), each with the text a denial carries.
pub(crate) fn denied_in(log: &FleetLog, reported: &BTreeSet<PeerId>) -> BTreeMap<PeerId, String> {
    let Some(state) = log.state() else {
        return BTreeMap::new();
    };
    if state.revoked.is_empty() {
        return BTreeMap::new();
    }
    let authors: BTreeSet<_> = log.iter().map(|e| e.entry().author).collect();
    state
        .revoked
        .iter()
        .filter_map(|(key, reason)| {
            let peer = key.peer_id()?;
            let took_part = authors.contains(key) || reported.contains(&peer);
            took_part.then(|| {
                let why = format!("revoked in fleet {}: {reason}", state.name);
                (peer, why)
            })
        })
        .collect()
}

/// A key a fleet retired for another, as the gateway follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// The keys it went to, in order (a key rotated again later goes on): each is admitted
    /// wherever the one before it is; the last one owns the names.
    pub(crate) chain: Vec<PeerId>,
    /// The `RotateMember` entry's bytes, to push to the old key (none for a root's).
    pub(crate) entry: Option<Vec<u8>>,
    /// The text the old key's denial carries.
    pub(crate) why: String,
}

impl Rotation {
    /// The key at the end of the chain.
    fn last(&self) -> PeerId {
        *self
            .chain
            .last()
            .expect("a rotation goes to at least one key")
    }
}

/// The keys `log` retired that took part in it (the consent rule of [`denied_in`]), each
/// with where it went.
pub(crate) fn rotated_in(
    log: &FleetLog,
    reported: &BTreeSet<PeerId>,
) -> BTreeMap<PeerId, Rotation> {
    let Some(state) = log.state() else {
        return BTreeMap::new();
    };
    if state.retired.is_empty() {
        return BTreeMap::new();
    }
    let authors: BTreeSet<_> = log.iter().map(|e| e.entry().author).collect();
    // Each hop is a fresh key (the fold refuses a retired one), so a chain has no loop; the
    // bound is for safety only.
    let chain_of = |old: &MemberKey| -> Option<Vec<PeerId>> {
        let mut chain = Vec::new();
        let mut at = *old;
        while let Some(next) = state.retired.get(&at) {
            if chain.len() > state.retired.len() {
                break;
            }
            chain.push(next.peer_id()?);
            at = *next;
        }
        Some(chain)
    };
    let entry_of = |old: &MemberKey| {
        log.iter()
            .find(|e| matches!(&e.entry().op, Op::RotateMember(p) if p.old == *old))
            .map(|e| e.bytes().to_vec())
    };
    state
        .retired
        .iter()
        .filter_map(|(old, next)| {
            let peer = old.peer_id()?;
            if !authors.contains(old) && !reported.contains(&peer) {
                return None;
            }
            let rotation = Rotation {
                chain: chain_of(old)?,
                entry: entry_of(old),
                why: format!("rotated to {next} in fleet {}", state.name),
            };
            Some((peer, rotation))
        })
        .collect()
}

/// What `consent.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentFile {
    /// Robots that sent this gateway a status of the fleet.
    status_signers: BTreeSet<String>,
}

/// One thing a rotation asks of the gateway ([`Follower::plan_rotations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RotationStep {
    Alias {
        new: PeerId,
        old: PeerId,
    },
    Transfer {
        old: PeerId,
        new: PeerId,
    },
    Push {
        old: PeerId,
        fleet: FleetId,
        entry: Vec<u8>,
    },
}

/// The follower's memory: consent per fleet, each fleet's denials and rotations.
struct Follower {
    root: PathBuf,
    consent: BTreeMap<FleetId, BTreeSet<PeerId>>,
    per_fleet: BTreeMap<FleetId, BTreeMap<PeerId, String>>,
    rotations: BTreeMap<FleetId, BTreeMap<PeerId, Rotation>>,
    /// Rotated keys whose successor has had a tunnel here: denied from then on.
    rotated_out: BTreeMap<PeerId, String>,
    /// (old, last) pairs whose names were moved, and old keys the entry was pushed to.
    transferred: BTreeSet<(PeerId, PeerId)>,
    pushed: BTreeSet<PeerId>,
    applied: BTreeMap<PeerId, String>,
}

impl Follower {
    fn load(root: &Path, fleets: &[FleetId]) -> Self {
        let mut consent = BTreeMap::new();
        for fleet in fleets {
            let path = root.join(fleet.to_string()).join(CONSENT_FILE);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<ConsentFile>(&bytes) {
                Ok(file) => {
                    let peers = file
                        .status_signers
                        .iter()
                        .filter_map(|p| p.parse().ok())
                        .collect();
                    consent.insert(*fleet, peers);
                }
                Err(e) => {
                    warn!(path = %path.display(), "consent file unreadable, starting it afresh: {e}")
                }
            }
        }
        Follower {
            root: root.to_owned(),
            consent,
            per_fleet: BTreeMap::new(),
            rotations: BTreeMap::new(),
            rotated_out: BTreeMap::new(),
            transferred: BTreeSet::new(),
            pushed: BTreeSet::new(),
            applied: BTreeMap::new(),
        }
    }

    fn recompute(&mut self, hub: &FleetHub, fleet: FleetId) {
        let reported = self.consent.get(&fleet).cloned().unwrap_or_default();
        let (denied, rotated) = hub
            .with_log(&fleet, |log| {
                (denied_in(log, &reported), rotated_in(log, &reported))
            })
            .unwrap_or_default();
        self.per_fleet.insert(fleet, denied);
        self.rotations.insert(fleet, rotated);
    }

    /// Records the robots whose statuses the hub holds; recomputes fleets that gained one.
    fn take_consent(&mut self, hub: &FleetHub) {
        for fleet in hub.fleet_ids() {
            let signers: BTreeSet<PeerId> = hub
                .statuses(&fleet)
                .iter()
                .filter_map(|s| s.report.robot.peer_id())
                .collect();
            let known = self.consent.entry(fleet).or_default();
            if signers.is_subset(known) {
                continue;
            }
            known.extend(signers);
            let file = ConsentFile {
                status_signers: known.iter().map(ToString::to_string).collect(),
            };
            let path = self.root.join(fleet.to_string()).join(CONSENT_FILE);
            let saved = serde_json::to_vec_pretty(&file)
                .map_err(std::io::Error::other)
                .and_then(|bytes| peercompute_identity::write_atomic(&path, &bytes, 0o644));
            if let Err(e) = saved {
                warn!(path = %path.display(), "cannot save the fleet's consent file: {e}");
            }
            self.recompute(hub, fleet);
        }
    }

    /// What the rotations ask for now, given which keys hold a tunnel here: the aliases
    /// (every time; the allowlist ignores repeats), names moved (once per chain end, and again
    /// when the old key is denied, for names it took meanwhile), the entry pushed to a
    /// connected old key whose successor has no tunnel yet (once), and the old key denied
    /// once its successor has a tunnel (from then on, kept in `rotated_out`).
    fn plan_rotations(&mut self, has_tunnel: impl Fn(&PeerId) -> bool) -> Vec<RotationStep> {
        let mut steps = Vec::new();
        for (fleet, rotations) in &self.rotations {
            for (old, rotation) in rotations {
                let last = rotation.last();
                let mut before = *old;
                for key in &rotation.chain {
                    steps.push(RotationStep::Alias {
                        new: *key,
                        old: before,
                    });
                    before = *key;
                }
                let successor_here = has_tunnel(&last);
                if successor_here && !self.rotated_out.contains_key(old) {
                    // The old key and every key between it and the last.
                    for key in std::iter::once(old)
                        .chain(&rotation.chain)
                        .filter(|k| **k != last)
                    {
                        self.rotated_out.insert(*key, rotation.why.clone());
                    }
                    self.transferred.remove(&(*old, last));
                }
                if self.transferred.insert((*old, last)) {
                    steps.push(RotationStep::Transfer {
                        old: *old,
                        new: last,
                    });
                }
                if let Some(entry) = &rotation.entry
                    && !successor_here
                    && has_tunnel(old)
                    && self.pushed.insert(*old)
                {
                    steps.push(RotationStep::Push {
                        old: *old,
                        fleet: *fleet,
                        entry: entry.clone(),
                    });
                }
            }
        }
        steps
    }

    /// Follows the rotations ([`Follower::plan_rotations`]).
    fn follow_rotations(&mut self, shared: &Arc<Shared>, node: &Node) {
        let steps = self.plan_rotations(|peer| !shared.tunnels.of_peer(peer).is_empty());
        for step in steps {
            match step {
                RotationStep::Alias { new, old } => {
                    shared.allow.alias(new, old);
                }
                RotationStep::Transfer { old, new } => transfer_names(shared, &old, &new),
                RotationStep::Push { old, fleet, entry } => push_rotation(node, old, fleet, entry),
            }
        }
    }

    /// Brings the allowlist's deny set in step; a newly denied key's names are released.
    fn apply(&mut self, shared: &Arc<Shared>, node: &Node) {
        self.follow_rotations(shared, node);
        let mut wanted: BTreeMap<PeerId, String> = self.rotated_out.clone();
        for denied in self.per_fleet.values() {
            for (peer, why) in denied {
                wanted.entry(*peer).or_insert_with(|| why.clone());
            }
        }
        for peer in self.applied.keys().filter(|p| !wanted.contains_key(p)) {
            shared.allow.undeny(peer);
            info!(%peer, "no longer revoked in any fleet held here: the allowlist decides again");
        }
        for (peer, why) in &wanted {
            if self.applied.contains_key(peer) {
                continue;
            }
            shared.allow.deny(*peer, why);
            if self.rotated_out.contains_key(peer) {
                info!(%peer, "{why}: the new key has a tunnel, the old one is refused from now on");
                continue;
            }
            warn!(%peer, "{why}: tunnel, relay slot and names dropped");
            release_names(shared, peer);
        }
        self.applied = wanted;
    }
}

/// Moves `old`'s names to `new` (a rotation).
fn transfer_names(shared: &Arc<Shared>, old: &PeerId, new: &PeerId) {
    let (old, new) = (*old, *new);
    in_order_or_spawned(shared, async move |shared: Arc<Shared>| {
        match shared.names.transfer(&old, &new).await {
            Ok(moved) if moved.is_empty() => {}
            Ok(moved) => {
                info!(%old, %new, names = ?moved, "key rotated: its names moved to the new key")
            }
            Err(e) => warn!(%old, %new, "key rotated, but its names could not be moved: {e}"),
        }
    });
}

/// Runs `work` on the name table. Without `--cluster` the table answers at once (nothing in
/// it waits), so the work is done here, in the follower's order; with it, etcd may take up
/// to its request timeout, so the work goes to a task of its own.
fn in_order_or_spawned<F>(shared: &Arc<Shared>, work: impl FnOnce(Arc<Shared>) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let clustered = shared.names.cluster().is_some();
    let work = work(shared.clone());
    if clustered {
        tokio::spawn(work);
    } else if futures_util::FutureExt::now_or_never(work).is_none() {
        warn!("the local name table waited, which it never does: change dropped");
    }
}

/// Pushes a rotation entry to the old key, in the background.
fn push_rotation(node: &Node, old: PeerId, fleet: FleetId, entry: Vec<u8>) {
    let node = node.clone();
    tokio::spawn(async move {
        let push = fleet_hub::push_to(&node, old, fleet, vec![entry]);
        match tokio::time::timeout(PUSH_TIMEOUT, push).await {
            Ok(Ok(_)) => info!(peer = %old, %fleet, "key rotation pushed to the old key"),
            Ok(Err(e)) => info!(peer = %old, "cannot push the key rotation to the old key: {e}"),
            Err(_) => info!(peer = %old, "pushing the key rotation to the old key timed out"),
        }
    });
}

/// Releases every name `peer` owns here.
fn release_names(shared: &Arc<Shared>, peer: &PeerId) {
    let peer = *peer;
    in_order_or_spawned(shared, async move |shared: Arc<Shared>| {
        let owner = peer.to_string();
        for (name, _) in shared
            .names
            .owners()
            .into_iter()
            .filter(|(_, o)| *o == owner)
        {
            if let Err(e) = shared.release_name(&name).await {
                warn!(route = %name, %peer, "cannot release the revoked key's name: {e}");
            }
        }
    });
}

/// Follows `hub` until it closes: at start, on every change of a fleet's log, when a provider
/// connects, and every [`CONSENT_EVERY`] for statuses.
pub(crate) async fn follow(hub: FleetHub, shared: Arc<Shared>, node: Node, root: PathBuf) {
    let mut changes = hub.subscribe();
    let mut events = shared.events.subscribe();
    let fleets = hub.fleet_ids();
    let mut follower = Follower::load(&root, &fleets);
    for fleet in fleets {
        follower.recompute(&hub, fleet);
    }
    follower.take_consent(&hub);
    follower.apply(&shared, &node);
    let mut consent_tick = tokio::time::interval(CONSENT_EVERY);
    consent_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => {
                    follower.recompute(&hub, change.fleet);
                    crate::fleet_names::sweep(&shared, &change.fleet);
                }
                Err(RecvError::Lagged(_)) => {
                    for fleet in hub.fleet_ids() {
                        follower.recompute(&hub, fleet);
                        crate::fleet_names::sweep(&shared, &fleet);
                    }
                }
                Err(RecvError::Closed) => return,
            },
            event = events.recv() => match event {
                Ok(event) if !matches!(event.kind, EventKind::ProviderConnected { .. }) => continue,
                Err(RecvError::Closed) => return,
                _ => {}
            },
            _ = consent_tick.tick() => follower.take_consent(&hub),
        }
        follower.apply(&shared, &node);
    }
}

#[cfg(test)]
mod tests;
