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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peercompute_fleet::{FleetId, FleetLog};
use peercompute_p2p::PeerId;
use peercompute_p2p::fleet_hub::FleetHub;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::state::Shared;

/// How often robots' statuses held by the hub are read for consent.
const CONSENT_EVERY: Duration = Duration::from_secs(1);
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

/// What `consent.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentFile {
    /// Robots that sent this gateway a status of the fleet.
    status_signers: BTreeSet<String>,
}

/// The follower's memory: consent per fleet and each fleet's denials.
struct Follower {
    root: PathBuf,
    consent: BTreeMap<FleetId, BTreeSet<PeerId>>,
    per_fleet: BTreeMap<FleetId, BTreeMap<PeerId, String>>,
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
            applied: BTreeMap::new(),
        }
    }

    fn recompute(&mut self, hub: &FleetHub, fleet: FleetId) {
        let reported = self.consent.get(&fleet).cloned().unwrap_or_default();
        let denied = hub
            .with_log(&fleet, |log| denied_in(log, &reported))
            .unwrap_or_default();
        self.per_fleet.insert(fleet, denied);
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

    /// Brings the allowlist's deny set in step; a newly denied key's names are released.
    fn apply(&mut self, shared: &Shared) {
        let mut wanted: BTreeMap<PeerId, String> = BTreeMap::new();
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
            warn!(%peer, "{why}: tunnel, relay slot and names dropped");
            release_names(shared, peer);
        }
        self.applied = wanted;
    }
}

/// Releases every name `peer` owns here.
fn release_names(shared: &Shared, peer: &PeerId) {
    let owner = peer.to_string();
    for (name, _) in shared
        .names
        .owners()
        .into_iter()
        .filter(|(_, o)| *o == owner)
    {
        if let Err(e) = shared.release_name(&name) {
            warn!(route = %name, %peer, "cannot release the revoked key's name: {e}");
        }
    }
}

/// Follows `hub` until it closes: at start, on every change of a fleet's log, and every
/// [`CONSENT_EVERY`] for statuses.
pub(crate) async fn follow(hub: FleetHub, shared: Arc<Shared>, root: PathBuf) {
    let mut changes = hub.subscribe();
    let fleets = hub.fleet_ids();
    let mut follower = Follower::load(&root, &fleets);
    for fleet in fleets {
        follower.recompute(&hub, fleet);
    }
    follower.take_consent(&hub);
    follower.apply(&shared);
    let mut consent_tick = tokio::time::interval(CONSENT_EVERY);
    consent_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => follower.recompute(&hub, change.fleet),
                Err(RecvError::Lagged(_)) => {
                    for fleet in hub.fleet_ids() {
                        follower.recompute(&hub, fleet);
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = consent_tick.tick() => follower.take_consent(&hub),
        }
        follower.apply(&shared);
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use peercompute_fleet::{FleetLog, Grant, Op, Role};

    use super::*;

    const NOW: u64 = 1_780_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn mk(k: &SigningKey) -> peercompute_fleet::MemberKey {
        peercompute_fleet::MemberKey(k.verifying_key().to_bytes())
    }

    fn write(log: &mut FleetLog, by: &SigningKey, op: Op) {
        let e = log.author(by, op, NOW).expect("valid");
        log.insert(e, NOW).expect("accepted");
    }

    /// A fleet that enrolled robot 3 (it never writes) and granted person 4 (who releases
    /// nothing but stops a group: an entry of its own), then revoked both.
    fn fleet() -> FleetLog {
        let root = key(1);
        let mut log = FleetLog::new(peercompute_fleet::FleetId(mk(&root).0));
        write(&mut log, &root, Op::Genesis { name: "lab".into() });
        let enroll = Op::Enroll {
            member: mk(&key(3)),
            name: "r3".into(),
            groups: vec!["g".into()],
        };
        write(&mut log, &root, enroll);
        let grant = Op::Grant(Grant {
            member: mk(&key(4)),
            role: Role::Operator,
            groups: vec![],
            expires_at: None,
        });
        write(&mut log, &root, grant);
        write(&mut log, &key(4), Op::estop(vec!["g".into()], "drill"));
        for (k, why) in [(3, "stolen"), (4, "left")] {
            let revoke = Op::Revoke {
                member: mk(&key(k)),
                reason: why.into(),
            };
            write(&mut log, &root, revoke);
        }
        log
    }

    fn peer(seed: u8) -> PeerId {
        mk(&key(seed)).peer_id().expect("an ed25519 key")
    }

    #[test]
    fn a_revoked_key_is_cut_only_if_it_took_part_in_the_fleet() {
        let log = fleet();
        // Person 4 wrote an entry here: cut. Robot 3 never wrote nor reported: not cut.
        let denied = denied_in(&log, &BTreeSet::new());
        assert_eq!(denied.keys().copied().collect::<Vec<_>>(), [peer(4)]);
        assert_eq!(denied[&peer(4)], "revoked in fleet lab: left");
        // Once robot 3 has sent this gateway a status of the fleet, it is cut too.
        let denied = denied_in(&log, &BTreeSet::from([peer(3)]));
        assert_eq!(denied.len(), 2);
        assert_eq!(denied[&peer(3)], "revoked in fleet lab: stolen");
    }

    #[test]
    fn a_status_in_another_fleet_gives_no_consent_here() {
        // Robot 3's status of some other fleet is not in this fleet's set: still not cut.
        let log = fleet();
        let elsewhere = BTreeSet::from([peer(9)]);
        assert!(!denied_in(&log, &elsewhere).contains_key(&peer(3)));
    }
}
