//! Listen addresses and relay reservations: what the node listens on (published on a watch
//! channel for [`Node::listen_addrs`](crate::Node::listen_addrs)), and the
//! [`Node::reserve`](crate::Node::reserve) calls waiting for their relayed address.

use std::collections::HashMap;

use libp2p::core::transport::ListenerId;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::node::NodeError;
use crate::path::is_relayed;

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

pub(crate) struct Listening {
    listen: watch::Sender<Vec<Multiaddr>>,
    listeners: HashMap<ListenerId, Vec<Multiaddr>>,
    /// Add every listen address as an external one (a relay server with no announced
    /// addresses: the reservation answer must carry at least one).
    announce_listen: bool,
    reservations: HashMap<ListenerId, (PeerId, Reply<Multiaddr>)>,
}

impl Listening {
    pub(crate) fn new(
        listen: watch::Sender<Vec<Multiaddr>>,
        bound: Vec<(ListenerId, Multiaddr)>,
        announce_listen: bool,
    ) -> Self {
        let mut listeners: HashMap<ListenerId, Vec<Multiaddr>> = HashMap::new();
        for (id, addr) in bound {
            listeners.entry(id).or_default().push(addr);
        }
        Self {
            listen,
            listeners,
            announce_listen,
            reservations: HashMap::new(),
        }
    }

    /// A reservation at `relay` was asked for: `listener` is its relayed listener, or the
    /// swarm's refusal.
    pub(crate) fn reserving(
        &mut self,
        relay: PeerId,
        listener: Result<ListenerId, String>,
        reply: Reply<Multiaddr>,
    ) {
        match listener {
            Ok(id) => {
                self.reservations.insert(id, (relay, reply));
            }
            Err(reason) => {
                let _ = reply.send(Err(NodeError::RelayRefused { relay, reason }));
            }
        }
    }

    /// A listener got an address. Returns it when it must be announced as external.
    pub(crate) fn new_addr(&mut self, id: ListenerId, address: Multiaddr) -> Option<Multiaddr> {
        info!(%address, "listening");
        let list = self.listeners.entry(id).or_default();
        if !list.contains(&address) {
            list.push(address.clone());
        }
        self.publish();
        if let Some((_, reply)) = self.reservations.remove(&id) {
            let _ = reply.send(Ok(address));
            None
        } else if self.announce_listen && !is_relayed(&address) {
            Some(address)
        } else {
            None
        }
    }

    pub(crate) fn expired_addr(&mut self, id: ListenerId, address: &Multiaddr) {
        if let Some(list) = self.listeners.get_mut(&id) {
            list.retain(|a| a != address);
        }
        self.publish();
    }

    /// A listener closed: `reason` says why when it failed.
    pub(crate) fn closed(
        &mut self,
        id: ListenerId,
        addresses: &[Multiaddr],
        reason: Option<String>,
    ) {
        self.listeners.remove(&id);
        self.publish();
        if let Some((relay, reply)) = self.reservations.remove(&id) {
            let reason = reason.unwrap_or_else(|| "the relay closed the reservation".into());
            let _ = reply.send(Err(NodeError::RelayRefused { relay, reason }));
        } else if addresses.iter().any(is_relayed) {
            warn!(?addresses, "relay reservation ended");
        }
    }

    /// The last connection to `peer` closed: a reservation at it that was not answered yet
    /// fails.
    pub(crate) fn peer_gone(&mut self, peer: &PeerId) {
        let dead: Vec<ListenerId> = self
            .reservations
            .iter()
            .filter(|(_, (relay, _))| relay == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some((relay, reply)) = self.reservations.remove(&id) {
                let _ = reply.send(Err(NodeError::RelayRefused {
                    relay,
                    reason: "the connection to the relay closed".into(),
                }));
            }
        }
    }

    fn publish(&self) {
        let all: Vec<Multiaddr> = self.listeners.values().flatten().cloned().collect();
        self.listen.send_if_modified(|v| {
            if *v == all {
                false
            } else {
                *v = all;
                true
            }
        });
    }
}
