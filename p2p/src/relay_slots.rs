//! The relay server's slot holders and their revocation (gateways): who holds a reservation,
//! and which of them the `keep` rule no longer admits.
//!
//! The event loop feeds it the relay server's events and disconnects the peers
//! [`RelaySlots::expired`] returns (their reservation and circuits end with the connection);
//! this module never touches the swarm.

use std::collections::HashSet;

use libp2p::{PeerId, relay};
use tracing::{debug, info, warn};

use crate::node::AdmitFn;

/// Who holds a relay slot, and whether each may keep it.
pub(crate) struct RelaySlots {
    users: HashSet<PeerId>,
    keep: Option<AdmitFn>,
}

impl RelaySlots {
    /// `keep` decides whether a slot holder may keep its slot (none: no relay server).
    pub(crate) fn new(keep: Option<AdmitFn>) -> Self {
        Self {
            users: HashSet::new(),
            keep,
        }
    }

    /// Whether some peer holds a slot (the loop checks them only then).
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The peer's last connection closed: its slot ended with it.
    pub(crate) fn peer_gone(&mut self, peer: &PeerId) {
        self.users.remove(peer);
    }

    /// The slot holders that may no longer keep their slot (removed from the gateway's
    /// allowlist, or revoked); forgotten here, to be disconnected by the caller.
    pub(crate) fn expired(&mut self) -> Vec<PeerId> {
        let Some(keep) = self.keep.clone() else {
            return Vec::new();
        };
        let revoked: Vec<PeerId> = self.users.iter().filter(|p| !keep(p)).copied().collect();
        for peer in &revoked {
            warn!(%peer, "relay slot revoked: the peer is no longer admitted; disconnecting it");
            self.users.remove(peer);
        }
        revoked
    }

    /// Records and logs what the relay server did.
    pub(crate) fn on_event(&mut self, event: relay::Event) {
        use relay::Event as E;
        match event {
            E::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                info!(peer = %src_peer_id, renewed, "relay slot reserved");
                self.users.insert(src_peer_id);
            }
            E::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                warn!(peer = %src_peer_id, ?status, "relay reservation refused (peer not admitted or over a limit)")
            }
            E::ReservationTimedOut { src_peer_id } => {
                info!(peer = %src_peer_id, "relay reservation expired");
                self.users.remove(&src_peer_id);
            }
            E::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => info!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit opened"),
            E::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => info!(src = %src_peer_id, dst = %dst_peer_id, ?status, "relay circuit refused"),
            E::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => info!(
                src = %src_peer_id,
                dst = %dst_peer_id,
                error = ?error.map(|e| e.to_string()),
                "relay circuit closed"
            ),
            other => debug!(?other, "relay server"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn holders_the_rule_no_longer_keeps_expire_once() {
        let denied: Arc<Mutex<HashSet<PeerId>>> = Arc::default();
        let d = denied.clone();
        let keep: AdmitFn = Arc::new(move |p| !d.lock().expect("lock").contains(p));
        let mut slots = RelaySlots::new(Some(keep));
        let (a, b) = (PeerId::random(), PeerId::random());
        for p in [a, b] {
            slots.on_event(relay::Event::ReservationReqAccepted {
                src_peer_id: p,
                renewed: false,
            });
        }
        assert!(slots.expired().is_empty());
        denied.lock().expect("lock").insert(b);
        assert_eq!(slots.expired(), vec![b]);
        assert!(slots.expired().is_empty(), "reported once");
        slots.peer_gone(&a);
        assert!(slots.is_empty());
    }

    #[test]
    fn no_rule_no_relay_server_nothing_expires() {
        let mut slots = RelaySlots::new(None);
        slots.on_event(relay::Event::ReservationReqAccepted {
            src_peer_id: PeerId::random(),
            renewed: true,
        });
        assert!(slots.expired().is_empty());
    }
}
