//! The task that owns the `Swarm`: runs commands from [`Node`](crate::Node) handles and
//! turns swarm events into their answers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, dcutr, identify, mdns, ping, relay, rendezvous};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::node::{AdmitFn, Found, NodeError};
use crate::path::{PathKind, PeerPath, is_relayed};

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: libp2p::connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) stream: libp2p_stream::Behaviour,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) rendezvous: rendezvous::client::Behaviour,
    pub(crate) rendezvous_server: Toggle<crate::gated::Gated<rendezvous::server::Behaviour>>,
}

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

pub(crate) enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: Reply<()>,
    },
    Reserve {
        relay_addr: Multiaddr,
        reply: Reply<Multiaddr>,
    },
    Register {
        server: PeerId,
        namespace: String,
        ttl: Duration,
        reply: Reply<()>,
    },
    Discover {
        server: PeerId,
        namespace: String,
        reply: Reply<Vec<Found>>,
    },
    Circuits {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Path {
        peer: PeerId,
        reply: oneshot::Sender<Option<PeerPath>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

struct Conn {
    peer: PeerId,
    address: Multiaddr,
    kind: PathKind,
    rtt: Option<Duration>,
}

/// How often slot holders are checked against the relay's `keep` rule.
const REVOKE_CHECK_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct EventLoop {
    swarm: libp2p::Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    listen: watch::Sender<Vec<Multiaddr>>,
    listeners: HashMap<ListenerId, Vec<Multiaddr>>,
    /// Add every listen address as an external one (a relay server with no announced
    /// addresses: the reservation answer must carry at least one).
    announce_listen: bool,
    hole_punch_wait: Duration,
    pending: HashMap<PeerId, Vec<Reply<()>>>,
    /// Dials answered by a relayed connection, waiting for DCUtR until the deadline.
    awaiting_punch: HashMap<PeerId, (Instant, Vec<Reply<()>>)>,
    /// Dials whose hole punch succeeded, waiting for the relayed connections being closed to
    /// be gone (so no stream is opened on one of them).
    closing_relayed: HashMap<PeerId, (HashSet<ConnectionId>, Vec<Reply<()>>)>,
    reservations: HashMap<ListenerId, (PeerId, Reply<Multiaddr>)>,
    registrations: HashMap<(PeerId, String), Vec<Reply<()>>>,
    discoveries: HashMap<(PeerId, String), Vec<Reply<Vec<Found>>>>,
    conns: HashMap<ConnectionId, Conn>,
    found_on_lan: HashSet<(PeerId, Multiaddr)>,
    circuits: HashMap<PeerId, Vec<Multiaddr>>,
    /// Relay server: whether a peer holding a slot may keep it, and the peers holding one.
    keep: Option<AdmitFn>,
    relay_users: HashSet<PeerId>,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: libp2p::Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        listen: watch::Sender<Vec<Multiaddr>>,
        bound: Vec<(ListenerId, Multiaddr)>,
        announce_listen: bool,
        hole_punch_wait: Duration,
        keep: Option<AdmitFn>,
    ) -> Self {
        let mut listeners: HashMap<ListenerId, Vec<Multiaddr>> = HashMap::new();
        for (id, addr) in bound {
            listeners.entry(id).or_default().push(addr);
        }
        Self {
            swarm,
            commands,
            listen,
            listeners,
            announce_listen,
            hole_punch_wait,
            pending: HashMap::new(),
            awaiting_punch: HashMap::new(),
            closing_relayed: HashMap::new(),
            reservations: HashMap::new(),
            registrations: HashMap::new(),
            discoveries: HashMap::new(),
            conns: HashMap::new(),
            found_on_lan: HashSet::new(),
            circuits: HashMap::new(),
            keep,
            relay_users: HashSet::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut revoke_tick = tokio::time::interval(REVOKE_CHECK_EVERY);
        revoke_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: stop.
                    None => break None,
                },
                _ = tick.tick(), if !self.awaiting_punch.is_empty() => self.expire_punch_waits(),
                _ = revoke_tick.tick(), if !self.relay_users.is_empty() => self.drop_revoked_relay_users(),
            }
        };
        // Dropping the swarm closes its listeners and connections.
        drop(self);
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }

    fn publish_listen(&self) {
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

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => {
                if self.swarm.is_connected(&peer) {
                    if let Some((_, waiting)) = self.awaiting_punch.get_mut(&peer) {
                        waiting.push(reply);
                    } else if let Some((_, waiting)) = self.closing_relayed.get_mut(&peer) {
                        // Not before the relayed connection is gone: a stream opened now
                        // could land on it.
                        waiting.push(reply);
                    } else {
                        let _ = reply.send(Ok(()));
                    }
                    return;
                }
                if let Some(waiting) = self.pending.get_mut(&peer) {
                    // A dial of this peer is under way: its outcome answers this one too
                    // (the swarm refuses a second dial while one is in progress).
                    waiting.push(reply);
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .extend_addresses_through_behaviour()
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) => self.pending.entry(peer).or_default().push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Dial {
                            peer,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Reserve { relay_addr, reply } => {
                let Some(relay) = relay_addr.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                }) else {
                    let _ = reply.send(Err(NodeError::Setup(format!(
                        "relay address {relay_addr} does not end in /p2p/<relay peer id>"
                    ))));
                    return;
                };
                match self
                    .swarm
                    .listen_on(relay_addr.clone().with(Protocol::P2pCircuit))
                {
                    Ok(id) => {
                        self.reservations.insert(id, (relay, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::RelayRefused {
                            relay,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Register {
                server,
                namespace,
                ttl,
                reply,
            } => {
                let fail = |reason: String| NodeError::Rendezvous { server, reason };
                let ns = match rendezvous::Namespace::new(namespace.clone()) {
                    Ok(ns) => ns,
                    Err(e) => {
                        let _ = reply.send(Err(fail(e.to_string())));
                        return;
                    }
                };
                match self.swarm.behaviour_mut().rendezvous.register(
                    ns,
                    server,
                    Some(ttl.as_secs()),
                ) {
                    Ok(()) => self
                        .registrations
                        .entry((server, namespace))
                        .or_default()
                        .push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(fail(e.to_string())));
                    }
                }
            }
            Command::Discover {
                server,
                namespace,
                reply,
            } => {
                let ns = match rendezvous::Namespace::new(namespace.clone()) {
                    Ok(ns) => ns,
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Rendezvous {
                            server,
                            reason: e.to_string(),
                        }));
                        return;
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .rendezvous
                    .discover(Some(ns), None, None, server);
                self.discoveries
                    .entry((server, namespace))
                    .or_default()
                    .push(reply);
            }
            Command::Circuits { peer, reply } => {
                let _ = reply.send(self.circuits.get(&peer).cloned().unwrap_or_default());
            }
            Command::Path { peer, reply } => {
                let best = self
                    .conns
                    .values()
                    .filter(|c| c.peer == peer)
                    .min_by_key(|c| c.kind == PathKind::Relayed);
                let _ = reply.send(best.map(|c| PeerPath {
                    address: c.address.clone(),
                    kind: c.kind,
                    rtt: c.rtt,
                }));
            }
            Command::Shutdown { .. } => unreachable!("handled by the event loop"),
        }
    }

    fn expire_punch_waits(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .awaiting_punch
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            if let Some((_, replies)) = self.awaiting_punch.remove(&peer) {
                debug!(%peer, "no direct connection in time: going on over the relay");
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    fn on_connected(&mut self, peer: PeerId, connection: ConnectionId, endpoint: ConnectedPoint) {
        let address = match endpoint {
            ConnectedPoint::Dialer { address, .. } => address,
            ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
        };
        // Relayed now, or hole punched already (both sides dial, and the relayed connection
        // may be closed by the time the second direct connection is up).
        let relayed_already = self
            .conns
            .values()
            .any(|c| c.peer == peer && matches!(c.kind, PathKind::Relayed | PathKind::HolePunched));
        let kind = if self.found_on_lan.contains(&(peer, address.clone())) {
            PathKind::DirectLan
        } else {
            match PathKind::of_address(&address) {
                // A direct connection that appears while we are relayed to the peer comes
                // from hole punching (both sides dial at once, so there may be two).
                PathKind::DirectLan | PathKind::DirectPublic if relayed_already => {
                    PathKind::HolePunched
                }
                other => other,
            }
        };
        debug!(%peer, %address, %kind, "connected");
        if kind == PathKind::HolePunched {
            // Both sides dial at once. When the peer's dial arrives first, use it now: our own
            // may be waiting out QUIC's first probe timeout (about 1 s) after the peer's NAT
            // dropped its first packet, and dcutr reports success only for our own dial.
            info!(%peer, %address, "hole punched: direct connection");
        }
        self.conns.insert(
            connection,
            Conn {
                peer,
                address,
                kind,
                rtt: None,
            },
        );
        if kind == PathKind::HolePunched {
            self.leave_relay(peer);
        }
        let replies = self.pending.remove(&peer).unwrap_or_default();
        if kind == PathKind::Relayed && !self.hole_punch_wait.is_zero() && !replies.is_empty() {
            let deadline = Instant::now() + self.hole_punch_wait;
            self.awaiting_punch
                .entry(peer)
                .or_insert_with(|| (deadline, Vec::new()))
                .1
                .extend(replies);
        } else {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn on_hole_punch(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        match event.result {
            Ok(connection) => {
                if let Some(c) = self.conns.get_mut(&connection)
                    && c.kind != PathKind::HolePunched
                {
                    c.kind = PathKind::HolePunched;
                    info!(%peer, address = %c.address, "hole punched: direct connection");
                }
                self.leave_relay(peer);
            }
            Err(e) => {
                if self
                    .conns
                    .values()
                    .any(|c| c.peer == peer && c.kind == PathKind::HolePunched)
                {
                    debug!(%peer, "a hole-punch attempt failed, but a direct connection is up: {e}");
                    return;
                }
                info!(%peer, "hole punching failed, staying relayed: {e}");
                if let Some((_, replies)) = self.awaiting_punch.remove(&peer) {
                    for reply in replies {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
        }
    }

    /// A direct connection to `peer` replaced the relayed one: if requests are waiting for
    /// it, close the relayed connection (nothing was sent over it yet) so every stream goes
    /// over the direct one, then let them go.
    fn leave_relay(&mut self, peer: PeerId) {
        let Some((_, replies)) = self.awaiting_punch.remove(&peer) else {
            return;
        };
        let relayed: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer == peer && c.kind == PathKind::Relayed)
            .map(|(id, _)| *id)
            .collect();
        let closing: HashSet<ConnectionId> = relayed
            .into_iter()
            .filter(|id| self.swarm.close_connection(*id))
            .collect();
        if closing.is_empty() {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        } else {
            let entry = self.closing_relayed.entry(peer).or_default();
            entry.0.extend(closing);
            entry.1.extend(replies);
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                info!(%address, "listening");
                let list = self.listeners.entry(listener_id).or_default();
                if !list.contains(&address) {
                    list.push(address.clone());
                }
                self.publish_listen();
                if let Some((_, reply)) = self.reservations.remove(&listener_id) {
                    let _ = reply.send(Ok(address));
                } else if self.announce_listen && !is_relayed(&address) {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ExpiredListenAddr {
                listener_id,
                address,
            } => {
                if let Some(list) = self.listeners.get_mut(&listener_id) {
                    list.retain(|a| a != &address);
                }
                self.publish_listen();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                self.listeners.remove(&listener_id);
                self.publish_listen();
                if let Some((relay, reply)) = self.reservations.remove(&listener_id) {
                    let reason = match reason {
                        Err(e) => error_chain(&e),
                        Ok(()) => "the relay closed the reservation".into(),
                    };
                    let _ = reply.send(Err(NodeError::RelayRefused { relay, reason }));
                } else if addresses.iter().any(is_relayed) {
                    warn!(?addresses, "relay reservation ended");
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connected(peer_id, connection_id, endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.conns.remove(&connection_id);
                if let Some((closing, _)) = self.closing_relayed.get_mut(&peer_id) {
                    closing.remove(&connection_id);
                    if closing.is_empty()
                        && let Some((_, replies)) = self.closing_relayed.remove(&peer_id)
                    {
                        let outcome = if num_established > 0 {
                            Ok(())
                        } else {
                            Err(NodeError::Dial {
                                peer: peer_id,
                                reason: "the connection closed".into(),
                            })
                        };
                        for reply in replies {
                            let _ = reply.send(match &outcome {
                                Ok(()) => Ok(()),
                                Err(e) => Err(NodeError::Dial {
                                    peer: peer_id,
                                    reason: e.to_string(),
                                }),
                            });
                        }
                    }
                }
                if num_established == 0 {
                    self.circuits.remove(&peer_id);
                    // Its relay slot ended with its last connection: nothing left to revoke.
                    self.relay_users.remove(&peer_id);
                    // A reservation whose relay connection died before it was answered.
                    let dead: Vec<ListenerId> = self
                        .reservations
                        .iter()
                        .filter(|(_, (relay, _))| *relay == peer_id)
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
                    if let Some((_, replies)) = self.awaiting_punch.remove(&peer_id) {
                        for reply in replies {
                            let _ = reply.send(Err(NodeError::Dial {
                                peer: peer_id,
                                reason: "the connection closed".into(),
                            }));
                        }
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                let reason = error_chain(&error);
                for reply in self.pending.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(NodeError::Dial {
                        peer,
                        reason: reason.clone(),
                    }));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    debug!(%peer, %addr, "found on the LAN");
                    self.found_on_lan.insert((peer, addr.clone()));
                    self.swarm.add_peer_address(peer, addr);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(c) = self.conns.get_mut(&connection) {
                    c.rtt = Some(rtt);
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let circuits: Vec<Multiaddr> =
                    info.listen_addrs.into_iter().filter(is_relayed).collect();
                if circuits.is_empty() {
                    self.circuits.remove(&peer_id);
                } else {
                    self.circuits.insert(peer_id, circuits);
                }
            }
            BehaviourEvent::Dcutr(event) => self.on_hole_punch(event),
            BehaviourEvent::RelayClient(event) => debug!(?event, "relay client"),
            BehaviourEvent::Relay(event) => self.on_relay_server(event),
            BehaviourEvent::Rendezvous(event) => self.on_rendezvous(event),
            BehaviourEvent::RendezvousServer(rendezvous::server::Event::PeerRegistered {
                peer,
                registration,
            }) => {
                info!(%peer, namespace = %registration.namespace, "rendezvous registration");
            }
            _ => {}
        }
    }

    fn on_rendezvous(&mut self, event: rendezvous::client::Event) {
        use rendezvous::client::Event as E;
        match event {
            E::Registered {
                rendezvous_node,
                ttl,
                namespace,
            } => {
                debug!(%rendezvous_node, %namespace, ttl, "registered");
                for reply in self
                    .registrations
                    .remove(&(rendezvous_node, namespace.to_string()))
                    .unwrap_or_default()
                {
                    let _ = reply.send(Ok(()));
                }
            }
            E::RegisterFailed {
                rendezvous_node,
                namespace,
                error,
            } => {
                for reply in self
                    .registrations
                    .remove(&(rendezvous_node, namespace.to_string()))
                    .unwrap_or_default()
                {
                    let _ = reply.send(Err(NodeError::Rendezvous {
                        server: rendezvous_node,
                        reason: format!("registration refused: {error:?}"),
                    }));
                }
            }
            E::Discovered {
                rendezvous_node,
                registrations,
                ..
            } => {
                let mut by_ns: HashMap<String, Vec<Found>> = HashMap::new();
                for r in registrations {
                    by_ns
                        .entry(r.namespace.to_string())
                        .or_default()
                        .push(Found {
                            peer: r.record.peer_id(),
                            addrs: r.record.addresses().to_vec(),
                        });
                }
                let asked: Vec<(PeerId, String)> = self
                    .discoveries
                    .keys()
                    .filter(|(s, _)| *s == rendezvous_node)
                    .cloned()
                    .collect();
                for key in asked {
                    let found = by_ns.remove(&key.1).unwrap_or_default();
                    for reply in self.discoveries.remove(&key).unwrap_or_default() {
                        let _ = reply.send(Ok(found.clone()));
                    }
                }
            }
            E::DiscoverFailed {
                rendezvous_node,
                namespace,
                error,
            } => {
                let keys: Vec<(PeerId, String)> = self
                    .discoveries
                    .keys()
                    .filter(|(s, ns)| {
                        *s == rendezvous_node
                            && namespace.as_ref().is_none_or(|n| n.to_string() == *ns)
                    })
                    .cloned()
                    .collect();
                for key in keys {
                    for reply in self.discoveries.remove(&key).unwrap_or_default() {
                        let _ = reply.send(Err(NodeError::Rendezvous {
                            server: rendezvous_node,
                            reason: format!("lookup failed: {error:?}"),
                        }));
                    }
                }
            }
            E::Expired { .. } => {}
        }
    }
}

/// Relay server bookkeeping: who holds a slot, and revocation.
impl EventLoop {
    fn on_relay_server(&mut self, event: relay::Event) {
        use relay::Event as E;
        match event {
            E::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                info!(peer = %src_peer_id, renewed, "relay slot reserved");
                self.relay_users.insert(src_peer_id);
            }
            E::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                warn!(peer = %src_peer_id, ?status, "relay reservation refused (peer not admitted or over a limit)")
            }
            E::ReservationTimedOut { src_peer_id } => {
                info!(peer = %src_peer_id, "relay reservation expired");
                self.relay_users.remove(&src_peer_id);
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

    /// Disconnects every slot holder that may no longer keep its slot (removed from the
    /// gateway's allowlist): its reservation and the circuits through it end with the
    /// connection.
    fn drop_revoked_relay_users(&mut self) {
        let Some(keep) = self.keep.clone() else {
            return;
        };
        let revoked: Vec<PeerId> = self
            .relay_users
            .iter()
            .filter(|p| !keep(p))
            .copied()
            .collect();
        for peer in revoked {
            warn!(%peer, "relay slot revoked: the peer is no longer admitted; disconnecting it");
            self.relay_users.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }
}

/// `error: cause: cause` — libp2p errors keep the useful part in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
