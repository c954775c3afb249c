//! The task that owns the `Swarm`: runs commands from [`Node`](crate::Node) handles and
//! dispatches swarm events to the bookkeeping that answers them — [`DialBook`] (dials and hole
//! punching, sans-IO), [`Liveness`] (ping results: a connection whose pings fail is closed,
//! sans-IO), [`RendezvousMatch`] (rendezvous replies) and [`RelaySlots`] (relay slot
//! revocation). Relay reservations and listen addresses are kept here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, dcutr, identify, mdns, ping, relay, rendezvous};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info};

pub(crate) use crate::command::Command;
use crate::command::Reply;
use crate::dialing::{DialAction, DialBook, ReplyId};
use crate::lan::{LanPeers, PeerEvent};
use crate::listening::Listening;
use crate::liveness::Liveness;
use crate::node::{AdmitFn, NodeError};
use crate::path::{PathKind, is_relayed};
use crate::relay_slots::RelaySlots;
use crate::rendezvous_match::RendezvousMatch;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) blocked: libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::BlockedPeers>,
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

/// How often slot holders are checked against the relay's `keep` rule.
const REVOKE_CHECK_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct EventLoop {
    swarm: libp2p::Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    listening: Listening,
    dials: DialBook,
    liveness: Liveness,
    /// The reply channels of the dials `dials` keeps waiting.
    dial_replies: HashMap<ReplyId, Reply<()>>,
    next_reply: u64,
    rendezvous: RendezvousMatch,
    lan: LanPeers,
    peer_events: broadcast::Sender<PeerEvent>,
    circuits: HashMap<PeerId, Vec<Multiaddr>>,
    relay_slots: RelaySlots,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: libp2p::Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        listening: Listening,
        hole_punch_wait: Duration,
        keep: Option<AdmitFn>,
        peer_events: broadcast::Sender<PeerEvent>,
    ) -> Self {
        Self {
            swarm,
            commands,
            listening,
            dials: DialBook::new(hole_punch_wait),
            liveness: Liveness::default(),
            dial_replies: HashMap::new(),
            next_reply: 0,
            rendezvous: RendezvousMatch::default(),
            lan: LanPeers::default(),
            peer_events,
            circuits: HashMap::new(),
            relay_slots: RelaySlots::new(keep),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut revoke_tick = tokio::time::interval(REVOKE_CHECK_EVERY);
        revoke_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = loop {
            let punch_deadline = self.dials.next_deadline();
            let punch_wait = async {
                match punch_deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: stop.
                    None => break None,
                },
                () = punch_wait => {
                    let actions = self.dials.tick(std::time::Instant::now());
                    self.act(actions);
                }
                _ = revoke_tick.tick(), if !self.relay_slots.is_empty() => {
                    for peer in self.relay_slots.expired() {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
        };
        // Dropping the swarm closes its listeners and connections.
        drop(self);
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }

    /// Carries out what the dial book decided.
    fn act(&mut self, actions: Vec<DialAction>) {
        for action in actions {
            match action {
                DialAction::Dial(_) => {
                    unreachable!("a dial is started by the command that asked for it")
                }
                DialAction::Close(id) => {
                    if !self.swarm.close_connection(id) {
                        // Gone already: its close will not be reported again.
                        let (_, more) = self.dials.closed(id);
                        self.act(more);
                    }
                }
                DialAction::Answer {
                    reply,
                    peer,
                    outcome,
                } => {
                    if let Some(tx) = self.dial_replies.remove(&reply) {
                        let _ = tx.send(outcome.map_err(|reason| NodeError::Dial { peer, reason }));
                    }
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => {
                let id = ReplyId(self.next_reply);
                self.next_reply += 1;
                self.dial_replies.insert(id, reply);
                let now = Instant::now();
                let doubtful = self.liveness.doubtful(&peer, now);
                let mut actions = self.dials.dial_requested(peer, id, doubtful, now);
                if let Some(at) = actions.iter().position(|a| *a == DialAction::Dial(peer)) {
                    actions.remove(at);
                    match self.dial(peer, addrs, doubtful) {
                        Ok(connection) => self.dials.dial_started(peer, connection),
                        Err(e) => actions.extend(self.dials.dial_failed(peer, None, &e)),
                    }
                }
                self.act(actions);
            }
            Command::Reserve { relay_addr, reply } => self.reserve(relay_addr, reply),
            Command::Register {
                server,
                namespace,
                ttl,
                reply,
            } => {
                let client = &mut self.swarm.behaviour_mut().rendezvous;
                self.rendezvous
                    .register(client, server, namespace, ttl, reply);
            }
            Command::Discover {
                server,
                namespace,
                reply,
            } => {
                let client = &mut self.swarm.behaviour_mut().rendezvous;
                self.rendezvous.discover(client, server, namespace, reply);
            }
            Command::Circuits { peer, reply } => {
                let _ = reply.send(self.circuits.get(&peer).cloned().unwrap_or_default());
            }
            Command::Path { peer, reply } => {
                let _ = reply.send(self.dials.path(&peer));
            }
            Command::Block { peer, block, reply } => {
                let list = &mut self.swarm.behaviour_mut().blocked;
                if block {
                    list.block_peer(peer);
                } else {
                    list.unblock_peer(peer);
                }
                let _ = reply.send(());
            }
            Command::LanPeers { reply } => {
                let _ = reply.send(self.lan.peers());
            }
            Command::Shutdown { .. } => unreachable!("handled by the event loop"),
        }
    }

    /// Dials `peer` at `addrs` and the addresses the behaviours know, even while another dial
    /// of it is under way (the [`DialBook`] decides when one is stale); `replace` dials even
    /// though connected (the connections up are doubtful). The dial's connection id.
    fn dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        replace: bool,
    ) -> Result<ConnectionId, String> {
        let condition = if replace {
            PeerCondition::Always
        } else {
            PeerCondition::Disconnected
        };
        let opts = DialOpts::peer_id(peer)
            .condition(condition)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        let connection = opts.connection_id();
        self.swarm.dial(opts).map_err(|e| e.to_string())?;
        Ok(connection)
    }

    fn reserve(&mut self, relay_addr: Multiaddr, reply: Reply<Multiaddr>) {
        let Some(relay) = relay_addr.iter().find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        }) else {
            let _ = reply.send(Err(NodeError::Setup(format!(
                "relay address {relay_addr} does not end in /p2p/<relay peer id>"
            ))));
            return;
        };
        let listener = self
            .swarm
            .listen_on(relay_addr.with(Protocol::P2pCircuit))
            .map_err(|e| e.to_string());
        self.listening.reserving(relay, listener, reply);
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(external) = self.listening.new_addr(listener_id, address) {
                    self.swarm.add_external_address(external);
                }
            }
            SwarmEvent::ExpiredListenAddr {
                listener_id,
                address,
            } => self.listening.expired_addr(listener_id, &address),
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                let reason = reason.err().map(|e| error_chain(&e));
                self.listening.closed(listener_id, &addresses, reason);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let address = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                let lan = self.lan.contains(&peer_id, &address);
                let now = Instant::now();
                let fresh = !self.liveness.confirmed(&peer_id, now);
                self.liveness.opened(connection_id, peer_id, now);
                let (kind, actions) =
                    self.dials
                        .connected(peer_id, connection_id, address.clone(), lan, now);
                debug!(peer = %peer_id, %address, %kind, "connected");
                if kind == PathKind::HolePunched {
                    info!(peer = %peer_id, %address, "hole punched: direct connection");
                }
                self.act(actions);
                let _ = self.peer_events.send(PeerEvent::Connected {
                    peer: peer_id,
                    kind,
                    fresh,
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, ?connection_id, ?cause, "connection closed");
                self.liveness.closed(connection_id);
                let (gone, actions) = self.dials.closed(connection_id);
                self.act(actions);
                if let Some((peer, true)) = gone {
                    self.last_connection_closed(peer);
                    let _ = self.peer_events.send(PeerEvent::Disconnected { peer });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id: Some(peer),
                error,
            } => {
                let actions =
                    self.dials
                        .dial_failed(peer, Some(connection_id), &error_chain(&error));
                self.act(actions);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    /// Forgets what ended with the last connection to `peer`.
    fn last_connection_closed(&mut self, peer: PeerId) {
        self.circuits.remove(&peer);
        // Its relay slot ended with its last connection: nothing left to revoke.
        self.relay_slots.peer_gone(&peer);
        // A reservation whose relay connection died before it was answered.
        self.listening.peer_gone(&peer);
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_lan_found(found),
            BehaviourEvent::Mdns(mdns::Event::Expired(gone)) => {
                for (peer, addr) in gone {
                    debug!(%peer, %addr, "no longer announced on the LAN");
                    self.lan.expired(&peer, &addr);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(rtt),
                ..
            }) => {
                self.dials.set_rtt(connection, rtt);
                self.liveness.ping_ok(connection, Instant::now());
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            }) => {
                if self.liveness.ping_failed(connection) {
                    info!(%peer, ?connection, "closing a connection whose pings fail: {e}");
                    self.swarm.close_connection(connection);
                } else {
                    debug!(%peer, ?connection, "ping failed: {e}");
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
            BehaviourEvent::Relay(event) => self.relay_slots.on_event(event),
            BehaviourEvent::Rendezvous(event) => self.rendezvous.on_event(event),
            BehaviourEvent::RendezvousServer(rendezvous::server::Event::PeerRegistered {
                peer,
                registration,
            }) => {
                info!(%peer, namespace = %registration.namespace, "rendezvous registration");
            }
            _ => {}
        }
    }

    /// mDNS announced peers (new records: first seen, or again after theirs expired). The
    /// subscribers decide whom to dial; a peer whose connections are up but doubtful (pings
    /// failing: it was away, and the old TCP connection is likely dead) is dialled anew here,
    /// since to the subscribers it looks connected.
    fn on_lan_found(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        let now = Instant::now();
        let mut redial: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for (peer, addr) in found {
            debug!(%peer, %addr, "found on the LAN");
            self.swarm.add_peer_address(peer, addr.clone());
            if self.liveness.doubtful(&peer, now) {
                redial.entry(peer).or_default().push(addr.clone());
            }
            if let Some(event) = self.lan.discovered(peer, addr) {
                let _ = self.peer_events.send(event);
            }
        }
        for (peer, addrs) in redial {
            info!(%peer, "found on the LAN again while its connection fails its pings: dialling anew");
            if let Err(e) = self.dial(peer, addrs, true) {
                debug!(%peer, "dialling a rediscovered peer: {e}");
            }
        }
    }

    fn on_hole_punch(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        let actions = match event.result {
            Ok(connection) => {
                info!(%peer, "hole punched: direct connection");
                self.dials.punched(peer, connection)
            }
            Err(e) => {
                let (relayed, actions) = self.dials.punch_failed(peer);
                if relayed {
                    info!(%peer, "hole punching failed, staying relayed: {e}");
                } else {
                    debug!(%peer, "a hole-punch attempt failed, but a direct connection is up: {e}");
                }
                actions
            }
        };
        self.act(actions);
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
