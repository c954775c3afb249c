//! Revoked keys: which peers the fleets held here have revoked, and the task that keeps the
//! node's block list equal to that set (a robot refuses a revoked key's connections, so
//! nothing of it reaches the hub, the control protocol or the tunnel's peers).
//!
//! A revoke lives in one fleet's log, and may name any key. So a key is blocked at the node
//! only when it took part in the fleet that revoked it (it authored an entry of that log: its
//! join, a release, a stop) — as the gateway's consent rule, otherwise an admin of one fleet
//! a robot holds could cut that robot off from another fleet's members or from its gateway.
//! Every revoked key is refused per fleet by the hub ([`FleetHub::is_revoked_in`]). A gateway,
//! which holds strangers' fleets, does not block at the node: its follower acts on its
//! allowlist.

use std::collections::BTreeSet;

use libp2p::PeerId;
use peercompute_fleet::{FleetId, FleetMessage, MemberKey};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::fleet_hub::FleetHub;
use crate::node::Node;

impl FleetHub {
    /// Every peer a fleet held here has revoked after it took part in that fleet (it
    /// authored an entry of its log): the keys to block at the node.
    pub fn revoked_peers(&self) -> BTreeSet<PeerId> {
        let mut out = BTreeSet::new();
        for fleet in self.fleet_ids() {
            self.with_log(&fleet, |log| {
                let Some(state) = log.state() else {
                    return;
                };
                if state.revoked.is_empty() {
                    return;
                }
                let authors: BTreeSet<MemberKey> = log.iter().map(|e| e.entry().author).collect();
                out.extend(
                    state
                        .revoked
                        .keys()
                        .filter(|k| authors.contains(k))
                        .filter_map(MemberKey::peer_id),
                );
            });
        }
        out
    }

    /// Whether a fleet held here has revoked `peer`.
    pub fn is_revoked(&self, peer: &PeerId) -> bool {
        let Some(key) = MemberKey::from_peer_id(peer) else {
            return false;
        };
        self.fleet_ids()
            .iter()
            .any(|fleet| self.revoked_in(fleet, &key))
    }

    /// Whether `fleet` (held here) has revoked `peer`.
    pub fn is_revoked_in(&self, fleet: &FleetId, peer: &PeerId) -> bool {
        MemberKey::from_peer_id(peer).is_some_and(|key| self.revoked_in(fleet, &key))
    }

    fn revoked_in(&self, fleet: &FleetId, key: &MemberKey) -> bool {
        self.with_log(fleet, |log| {
            log.state().is_some_and(|s| s.revoked.contains_key(key))
        })
        .unwrap_or(false)
    }
}

/// Why the hub refuses an exchange `peer` opens with `first`: the fleet it names revoked the
/// peer (its pushes, pulls, statuses and requests are refused, in that fleet only).
pub(crate) fn refusal(hub: &FleetHub, peer: &PeerId, first: &FleetMessage) -> Option<String> {
    let fleet = match first {
        FleetMessage::Push { fleet, .. }
        | FleetMessage::Pull { fleet, .. }
        | FleetMessage::StatusRequest { fleet }
        | FleetMessage::LogsRequest { fleet, .. } => fleet,
        FleetMessage::Status(status) => &status.report.fleet,
        _ => return None,
    };
    hub.is_revoked_in(fleet, peer)
        .then(|| format!("fleet {fleet} revoked {peer}: refused"))
}

/// Keeps `node`'s block list equal to [`FleetHub::revoked_peers`]: once at start, then on
/// every change of the logs (robots). Runs until the hub is dropped.
pub async fn block_revoked(node: Node, hub: FleetHub) {
    let mut changes = hub.subscribe();
    let mut blocked = BTreeSet::new();
    loop {
        let now = hub.revoked_peers();
        for peer in now.difference(&blocked) {
            info!(%peer, "revoked by the fleet: refusing its connections");
            if node.block(*peer).await.is_err() {
                return;
            }
        }
        for peer in blocked.difference(&now) {
            if node.unblock(*peer).await.is_err() {
                return;
            }
        }
        blocked = now;
        match changes.recv().await {
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("the revocation watcher lagged by {n} changes; checking all logs");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use peercompute_fleet::{FleetLog, Op};
    use peercompute_identity::Identity;

    use super::*;
    use crate::fleet_hub::{HubPolicy, unix_now};

    fn key(identity: &Identity) -> MemberKey {
        MemberKey(identity.public_key_bytes())
    }

    #[test]
    fn a_revoked_member_is_known_per_fleet_and_refused_there_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = HubPolicy {
            admit: Arc::new(|_| true),
            accept_new_fleets: true,
            max_fleets: 4,
            max_entries: 100,
        };
        let (hub, _) = FleetHub::open(dir.path(), policy).expect("hub");
        let ids: Vec<Identity> = (0..4)
            .map(|_| Identity::generate().expect("identity"))
            .collect();
        let (admin, r1, r2, other_admin) = (&ids[0], &ids[1], &ids[2], &ids[3]);
        let stranger = Identity::generate().expect("identity");
        let (fleet, other) = (FleetId(key(admin).0), FleetId(key(other_admin).0));
        let peer = |i: &Identity| key(i).peer_id().expect("peer id");
        let now = unix_now();
        let write = |fleet: FleetId, signer: &Identity, ops: Vec<Op>| {
            let mut log = FleetLog::new(fleet);
            if let Some(held) = hub.with_log(&fleet, Clone::clone) {
                log = held;
            }
            for op in ops {
                let entry = log.author(signer.signing_key(), op, now).expect("entry");
                log.insert(entry.clone(), now).expect("valid");
                let stored = hub.insert(fleet, vec![entry], None);
                assert!(
                    matches!(stored[..], [peercompute_fleet::PushResult::Stored(_)]),
                    "{stored:?}"
                );
            }
        };
        let enroll = |who: &Identity, name: &str| Op::Enroll {
            member: key(who),
            name: name.into(),
            groups: vec!["production".into()],
        };
        write(
            fleet,
            admin,
            vec![
                Op::Genesis { name: "a".into() },
                enroll(r1, "r1"),
                enroll(r2, "r2"),
            ],
        );
        write(
            other,
            other_admin,
            vec![Op::Genesis { name: "b".into() }, enroll(r2, "r2")],
        );
        assert!(hub.revoked_peers().is_empty());
        assert!(!hub.is_revoked(&peer(r2)));
        // r2 takes part: an operator, it writes a stop and a resume.
        write(
            fleet,
            admin,
            vec![Op::Grant(peercompute_fleet::Grant {
                member: key(r2),
                role: peercompute_fleet::Role::Operator,
                groups: Vec::new(),
                expires_at: None,
            })],
        );
        write(
            fleet,
            r2,
            vec![Op::estop(vec![], "drill"), Op::Resume { groups: vec![] }],
        );

        write(
            fleet,
            admin,
            vec![Op::Revoke {
                member: key(r2),
                reason: "stolen".into(),
            }],
        );
        assert_eq!(hub.revoked_peers(), BTreeSet::from([peer(r2)]));
        // A key that never took part (enrolled by the admin, say the gateway's or another
        // fleet's robot) is refused in this fleet but not blocked at the node.
        write(
            fleet,
            admin,
            vec![
                enroll(&stranger, "s"),
                Op::Revoke {
                    member: key(&stranger),
                    reason: "not ours".into(),
                },
            ],
        );
        assert_eq!(hub.revoked_peers(), BTreeSet::from([peer(r2)]));
        assert!(hub.is_revoked_in(&fleet, &peer(&stranger)));
        assert!(hub.is_revoked(&peer(r2)));
        assert!(!hub.is_revoked(&peer(r1)));
        assert!(hub.is_revoked_in(&fleet, &peer(r2)));
        assert!(
            !hub.is_revoked_in(&other, &peer(r2)),
            "the other fleet keeps it"
        );

        let pull = |fleet| FleetMessage::Pull {
            fleet,
            heads: vec![],
        };
        assert!(refusal(&hub, &peer(r2), &pull(fleet)).is_some());
        assert!(refusal(&hub, &peer(r2), &pull(other)).is_none());
        assert!(refusal(&hub, &peer(r1), &pull(fleet)).is_none());
        let status = FleetMessage::Status(crate::fleet_hub::tests::report(fleet, r2, 1));
        assert!(refusal(&hub, &peer(r2), &status).is_some());
    }
}
