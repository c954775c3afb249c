//! A libp2p node run by an event-loop task that owns the `Swarm`; [`Node`] is the cloneable
//! handle the rest of the program talks to (the rust-libp2p "client + event loop" pattern).
//!
//! Every node speaks TCP and QUIC, identify, ping, generic streams, the circuit relay v2
//! client, DCUtR and the rendezvous client; a gateway also runs the relay server (with an
//! admission check) and the rendezvous server.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use libp2p::swarm::SwarmEvent;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, dcutr, identify, mdns, noise, ping, relay, rendezvous, tcp,
    yamux,
};
use peercompute_identity::Identity;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::event_loop::{Behaviour, Command, EventLoop};
use crate::lan::{MDNS_QUERY_INTERVAL, MDNS_TTL, PEER_EVENTS, PeerEvent};
use crate::liveness::{PING_INTERVAL, PING_TIMEOUT};
use crate::path::PeerPath;

/// The control protocol id, `/peercompute/control/1`.
pub fn control_protocol() -> StreamProtocol {
    StreamProtocol::new(peercompute_tunnel_proto::CONTROL_PLANE_PROTOCOL)
}

/// Decides whether a peer may reserve a relay slot.
pub type AdmitFn = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

/// A rendezvous directory and who may use it (register or look up).
#[derive(Clone)]
pub struct Directory {
    pub admit: AdmitFn,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

/// Limits of the circuit relay server (gateways). Sized for control traffic: a control
/// session is small but may last (deploy progress, `logs -f`), and bulk data never crosses
/// a relay (visitors' traffic goes through the QUIC tunnel).
#[derive(Clone)]
pub struct RelayServerSettings {
    /// Most reservations held at once.
    pub max_reservations: usize,
    /// How long a reservation lasts before the client must renew it.
    pub reservation_duration: Duration,
    /// Most circuits open at once, and per peer.
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    /// A circuit is closed after this long...
    pub max_circuit_duration: Duration,
    /// ...or once this many bytes crossed it (both directions).
    pub max_circuit_bytes: u64,
    /// Only peers for which this returns true may reserve a slot.
    pub admit: AdmitFn,
    /// Checked twice a second for each peer holding a slot: once it returns false (the peer was
    /// revoked), the peer is disconnected and its relayed circuits close. Defaults to `admit`.
    pub keep: AdmitFn,
}

impl fmt::Debug for RelayServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayServerSettings")
            .field("max_reservations", &self.max_reservations)
            .field("reservation_duration", &self.reservation_duration)
            .field("max_circuits", &self.max_circuits)
            .field("max_circuits_per_peer", &self.max_circuits_per_peer)
            .field("max_circuit_duration", &self.max_circuit_duration)
            .field("max_circuit_bytes", &self.max_circuit_bytes)
            .finish_non_exhaustive()
    }
}

impl RelayServerSettings {
    /// Defaults for a gateway: 30 min / 16 MiB circuits (libp2p's 2 min / 128 KiB would cut a
    /// `logs -f` or a slow deploy), 1024 reservations of 1 h.
    pub fn with_admission(admit: AdmitFn) -> Self {
        Self {
            max_reservations: 1024,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 1024,
            max_circuits_per_peer: 16,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 16 * 1024 * 1024,
            keep: admit.clone(),
            admit,
        }
    }
}

/// How the node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on (none for a pure client).
    pub listen: Vec<Multiaddr>,
    /// Announce and discover peers on the LAN.
    pub mdns: bool,
    /// Most established connections at once.
    pub max_connections: u32,
    /// Run a circuit relay server with these limits (gateways).
    pub relay_server: Option<RelayServerSettings>,
    /// Run a rendezvous server (gateways), offered only to the peers this admits (checked
    /// when a connection is established): strangers can neither list nor fill the directory.
    pub rendezvous_server: Option<Directory>,
    /// Addresses others can reach us at, announced as confirmed external addresses. When
    /// empty, a relay server announces the addresses it listens on.
    pub external: Vec<Multiaddr>,
    /// After a relayed connection is made by [`Node::dial`], how long to wait for DCUtR to
    /// upgrade it to a direct one before going on over the relay.
    pub hole_punch_wait: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            mdns: true,
            max_connections: 256,
            relay_server: None,
            rendezvous_server: None,
            external: Vec::new(),
            hole_punch_wait: Duration::from_secs(3),
        }
    }
}

/// Why the node could not start or a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot start the libp2p node: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot reach {peer}: {reason}")]
    Dial { peer: PeerId, reason: String },
    #[error("the relay {relay} refused the reservation: {reason}")]
    RelayRefused { relay: PeerId, reason: String },
    #[error("rendezvous at {server}: {reason}")]
    Rendezvous { server: PeerId, reason: String },
    #[error("the libp2p node has stopped")]
    Stopped,
}

/// A peer found at a rendezvous server, with the addresses its signed record lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// Handle to a running node.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    listen: watch::Receiver<Vec<Multiaddr>>,
    peer_events: broadcast::Sender<PeerEvent>,
    /// The peers [`Node::block`] blocked, for [`Node::is_blocked`].
    blocked: Arc<std::sync::RwLock<HashSet<PeerId>>>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

fn relay_config(s: &RelayServerSettings) -> relay::Config {
    let admit = s.admit.clone();
    let mut config = relay::Config {
        max_reservations: s.max_reservations,
        max_reservations_per_peer: 2,
        reservation_duration: s.reservation_duration,
        max_circuits: s.max_circuits,
        max_circuits_per_peer: s.max_circuits_per_peer,
        max_circuit_duration: s.max_circuit_duration,
        max_circuit_bytes: s.max_circuit_bytes,
        ..relay::Config::default()
    };
    // Admission runs as a "rate limiter": refusing here answers the reservation with
    // RESOURCE_LIMIT_EXCEEDED, the only refusal code relay v2 has for it.
    config
        .reservation_rate_limiters
        .push(Box::new(move |peer: PeerId, _: &Multiaddr, _| admit(&peer)));
    config
}

impl Node {
    /// Builds the swarm, starts listening and spawns the event loop. Returns once every
    /// listen address is bound (so callers and tests can read the real ports).
    pub async fn start(identity: &Identity, config: NodeConfig) -> Result<Self, NodeError> {
        let setup = |e: &dyn fmt::Display| NodeError::Setup(e.to_string());
        let keypair = identity.libp2p_keypair();
        let mdns_on = config.mdns;
        let relay_server = config.relay_server.clone();
        let rendezvous_server = config.rendezvous_server.clone();
        let max_connections = config.max_connections;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| setup(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| setup(&e))?
            .with_behaviour(|key, relay_client| {
                let peer_id = key.public().to_peer_id();
                let mdns = if mdns_on {
                    let config = mdns::Config {
                        ttl: MDNS_TTL,
                        query_interval: MDNS_QUERY_INTERVAL,
                        ..mdns::Config::default()
                    };
                    mdns::tokio::Behaviour::new(config, peer_id).ok()
                } else {
                    None
                };
                Behaviour {
                    blocked: Default::default(),
                    limits: libp2p::connection_limits::Behaviour::new(
                        libp2p::connection_limits::ConnectionLimits::default()
                            .with_max_established(Some(max_connections))
                            .with_max_established_per_peer(Some(8))
                            .with_max_pending_incoming(Some(64))
                            .with_max_pending_outgoing(Some(64)),
                    ),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/peercompute/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::new(
                        ping::Config::new()
                            .with_interval(PING_INTERVAL)
                            .with_timeout(PING_TIMEOUT),
                    ),
                    mdns: Toggle::from(mdns),
                    stream: libp2p_stream::Behaviour::new(),
                    relay_client,
                    dcutr: dcutr::Behaviour::new(peer_id),
                    relay: Toggle::from(
                        relay_server
                            .as_ref()
                            .map(|s| relay::Behaviour::new(peer_id, relay_config(s))),
                    ),
                    rendezvous: rendezvous::client::Behaviour::new(key.clone()),
                    rendezvous_server: Toggle::from(rendezvous_server.map(|directory| {
                        crate::gated::Gated::new(
                            rendezvous::server::Behaviour::new(
                                rendezvous::server::Config::default()
                                    .with_max_registration_per_peer(4)
                                    .with_max_registration_total(10_000),
                            ),
                            directory.admit,
                        )
                    })),
                }
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        if let Some(relay) = swarm.behaviour_mut().relay.as_mut() {
            // Serve reservations whether or not an external address was confirmed yet.
            relay.set_status(Some(relay::Status::Enable));
        }
        for addr in &config.external {
            swarm.add_external_address(addr.clone());
        }
        let control = swarm.behaviour().stream.new_control();
        let peer_id = *swarm.local_peer_id();

        let mut pending_listens = 0usize;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            pending_listens += 1;
        }
        let mut bound = Vec::new();
        let mut listeners_up = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listeners_up.len() < pending_listens {
            let event =
                tokio::time::timeout_at(deadline, futures::StreamExt::select_next_some(&mut swarm))
                    .await
                    .map_err(|_| {
                        NodeError::Setup("listeners did not come up within 10 s".into())
                    })?;
            match event {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    listeners_up.insert(listener_id);
                    bound.push((listener_id, address));
                }
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    return Err(NodeError::Setup(format!("listener failed: {error}")));
                }
                _ => {}
            }
        }
        let (listen_tx, listen) = watch::channel(bound.iter().map(|(_, a)| a.clone()).collect());
        let (commands, rx) = mpsc::channel(64);
        let announce_listen = config.relay_server.is_some() && config.external.is_empty();
        if announce_listen {
            for (_, addr) in &bound {
                swarm.add_external_address(addr.clone());
            }
        }
        let (peer_events, _) = broadcast::channel(PEER_EVENTS);
        tokio::spawn(
            EventLoop::new(
                swarm,
                rx,
                crate::listening::Listening::new(listen_tx, bound, announce_listen),
                config.hole_punch_wait,
                config.relay_server.map(|r| r.keep),
                peer_events.clone(),
            )
            .run(),
        );
        Ok(Self {
            peer_id,
            control,
            commands,
            listen,
            peer_events,
            blocked: Arc::default(),
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Addresses the node listens on now (relayed circuit addresses included).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.borrow().clone()
    }

    /// Watches the listen addresses (to notice a relay reservation ending).
    pub fn watch_listen_addrs(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.listen.clone()
    }

    /// A stream-control handle (open or accept protocol streams).
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Connects to `peer` (using `addrs` and anything mDNS found), or returns at once if
    /// already connected. When the connection is relayed, waits (up to the configured
    /// `hole_punch_wait`) for DCUtR to replace it with a direct one.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NodeError> {
        self.ask(|reply| Command::Dial { peer, addrs, reply })
            .await?
    }

    /// Reserves a slot at the relay reached at `relay_addr` (which ends in `/p2p/<relay>`);
    /// returns our relayed address. The relay client renews it before it expires; when the
    /// connection to the relay drops, the address leaves [`Node::listen_addrs`].
    pub async fn reserve(&self, relay_addr: Multiaddr) -> Result<Multiaddr, NodeError> {
        self.ask(|reply| Command::Reserve { relay_addr, reply })
            .await?
    }

    /// Registers our external addresses at the rendezvous server `server` under `namespace`
    /// for `ttl` (the server bounds it: 2 h .. 72 h by default).
    pub async fn register(
        &self,
        server: PeerId,
        namespace: String,
        ttl: Duration,
    ) -> Result<(), NodeError> {
        self.ask(|reply| Command::Register {
            server,
            namespace,
            ttl,
            reply,
        })
        .await?
    }

    /// Asks the rendezvous server `server` (already connected) who registered `namespace`.
    pub async fn discover(
        &self,
        server: PeerId,
        namespace: String,
    ) -> Result<Vec<Found>, NodeError> {
        self.ask(|reply| Command::Discover {
            server,
            namespace,
            reply,
        })
        .await?
    }

    /// Relay circuit addresses `peer` announced (through identify), i.e. the gateways it
    /// is registered at.
    pub async fn announced_circuits(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.ask(|reply| Command::Circuits { peer, reply })
            .await
            .unwrap_or_default()
    }

    /// Refuses every connection of `peer` from now on and closes those it has (a key the
    /// fleet revoked).
    pub async fn block(&self, peer: PeerId) -> Result<(), NodeError> {
        self.blocked_set().insert(peer);
        self.ask(|reply| Command::Block {
            peer,
            block: true,
            reply,
        })
        .await
    }

    /// Lets `peer` connect again.
    pub async fn unblock(&self, peer: PeerId) -> Result<(), NodeError> {
        self.blocked_set().remove(&peer);
        self.ask(|reply| Command::Block {
            peer,
            block: false,
            reply,
        })
        .await
    }

    /// Whether `peer` is blocked (a stream it opened just before the block is refused by
    /// the services that check this).
    pub fn is_blocked(&self, peer: &PeerId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(peer)
    }

    fn blocked_set(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<PeerId>> {
        self.blocked.write().unwrap_or_else(|p| p.into_inner())
    }

    /// What happens to peers from now on: found on the LAN (mDNS), connected, disconnected.
    /// A subscriber that falls more than 64 events behind is told it lagged; the LAN table
    /// is then in [`Node::lan_peers`].
    pub fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.peer_events.subscribe()
    }

    /// The peers mDNS announced on the LAN now, with their addresses (records expire after
    /// a minute unless announced again).
    pub async fn lan_peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.ask(|reply| Command::LanPeers { reply })
            .await
            .unwrap_or_default()
    }

    /// Stops the node: connections and listeners are closed when this returns.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }

    /// How `peer` is reached right now, if connected (a direct connection wins over a
    /// relayed one).
    pub async fn path(&self, peer: PeerId) -> Option<PeerPath> {
        self.ask(|reply| Command::Path { peer, reply })
            .await
            .ok()
            .flatten()
    }
}
