//! Peers on the LAN and what happens to peers: the addresses mDNS announced (forgotten when
//! their record expires), and the [`PeerEvent`]s [`Node::peer_events`](crate::Node::peer_events)
//! publishes. Dialling is the subscriber's decision (the fleet sync dials only fleet members).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use crate::path::PathKind;

/// How long an mDNS record lives, and how often the LAN is asked. libp2p's defaults (6 min
/// and 5 min) would leave a robot that just booted unseen for minutes.
pub(crate) const MDNS_TTL: Duration = Duration::from_secs(60);
pub(crate) const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(15);

/// Capacity of the peer-event broadcast; a subscriber that lags is told so and catches up
/// with [`Node::lan_peers`](crate::Node::lan_peers).
pub(crate) const PEER_EVENTS: usize = 64;

/// Most peers, and addresses per peer, the LAN table keeps (a host flooding mDNS answers
/// with made-up peers must not grow it without bound; records expire after a minute).
const MAX_LAN_PEERS: usize = 256;
const MAX_ADDRS_PER_PEER: usize = 8;

/// Something that happened to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// mDNS found the peer on the LAN at these addresses (every address it knows now).
    Lan { peer: PeerId, addrs: Vec<Multiaddr> },
    /// A connection to the peer is up. `fresh` when no other connection to the peer was
    /// confirmed alive by its pings (the first one, or one replacing connections whose pings
    /// failed): what the peer missed meanwhile must be caught up now.
    Connected {
        peer: PeerId,
        kind: PathKind,
        fresh: bool,
    },
    /// The last connection to the peer closed.
    Disconnected { peer: PeerId },
}

/// The peers mDNS announced and their addresses.
#[derive(Debug, Default)]
pub(crate) struct LanPeers {
    found: BTreeMap<PeerId, BTreeSet<Multiaddr>>,
}

impl LanPeers {
    /// Records an announced address; returns the peer's event when the address is new.
    pub(crate) fn discovered(&mut self, peer: PeerId, addr: Multiaddr) -> Option<PeerEvent> {
        if !self.found.contains_key(&peer) && self.found.len() >= MAX_LAN_PEERS {
            return None;
        }
        let addrs = self.found.entry(peer).or_default();
        if addrs.len() >= MAX_ADDRS_PER_PEER && !addrs.contains(&addr) {
            return None;
        }
        addrs.insert(addr).then(|| PeerEvent::Lan {
            peer,
            addrs: addrs.iter().cloned().collect(),
        })
    }

    /// The record of an address expired.
    pub(crate) fn expired(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some(addrs) = self.found.get_mut(peer) {
            addrs.remove(addr);
            if addrs.is_empty() {
                self.found.remove(peer);
            }
        }
    }

    /// Whether mDNS announced `peer` at `addr` (a connection there is a LAN one).
    pub(crate) fn contains(&self, peer: &PeerId, addr: &Multiaddr) -> bool {
        self.found.get(peer).is_some_and(|a| a.contains(addr))
    }

    /// Every peer on the LAN and its addresses.
    pub(crate) fn peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.found
            .iter()
            .map(|(p, a)| (*p, a.iter().cloned().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn addresses_come_and_expire() {
        let mut lan = LanPeers::default();
        let p = PeerId::random();
        let (a, b) = (
            addr("/ip4/10.0.0.2/tcp/1"),
            addr("/ip4/10.0.0.2/udp/1/quic-v1"),
        );
        assert_eq!(
            lan.discovered(p, a.clone()),
            Some(PeerEvent::Lan {
                peer: p,
                addrs: vec![a.clone()]
            })
        );
        assert_eq!(
            lan.discovered(p, a.clone()),
            None,
            "announced again: no event"
        );
        assert!(
            matches!(lan.discovered(p, b.clone()), Some(PeerEvent::Lan { addrs, .. }) if addrs.len() == 2)
        );
        assert!(lan.contains(&p, &a));
        lan.expired(&p, &a);
        assert!(!lan.contains(&p, &a));
        assert_eq!(lan.peers(), vec![(p, vec![b.clone()])]);
        lan.expired(&p, &b);
        assert!(lan.peers().is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut lan = LanPeers::default();
        let p = PeerId::random();
        for port in 0..20 {
            lan.discovered(p, addr(&format!("/ip4/10.0.0.2/tcp/{port}")));
        }
        assert_eq!(lan.peers()[0].1.len(), MAX_ADDRS_PER_PEER);
        for _ in 0..MAX_LAN_PEERS + 10 {
            lan.discovered(PeerId::random(), addr("/ip4/10.0.0.3/tcp/1"));
        }
        assert_eq!(lan.peers().len(), MAX_LAN_PEERS);
    }
}
