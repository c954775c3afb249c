//! A libp2p node run by an event-loop task that owns the `Swarm`; [`Node`] is the cloneable
//! handle the rest of the program talks to (the rust-libp2p "client + event loop" pattern).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify, mdns, noise, ping, tcp, yamux};
use peercompute_identity::Identity;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

/// The control protocol id, `/peercompute/control/1`.
pub fn control_protocol() -> StreamProtocol {
    StreamProtocol::new(peercompute_tunnel_proto::CONTROL_PLANE_PROTOCOL)
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
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            mdns: true,
            max_connections: 256,
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
    #[error("the libp2p node has stopped")]
    Stopped,
}

/// How a peer was reached, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    /// Remote address of the connection in use.
    pub address: Multiaddr,
    /// Round-trip time measured by ping, once known.
    pub rtt: Option<Duration>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Path {
        peer: PeerId,
        reply: oneshot::Sender<Option<PeerPath>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to a running node.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    listen: watch::Receiver<Vec<Multiaddr>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Builds the swarm, starts listening and spawns the event loop. Returns once every
    /// listen address is bound (so callers and tests can read the real ports).
    pub async fn start(identity: &Identity, config: NodeConfig) -> Result<Self, NodeError> {
        let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
        let keypair = identity.libp2p_keypair();
        let mdns_on = config.mdns;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_dns()
            .map_err(|e| setup(&e))?
            .with_behaviour(|key| {
                let peer_id = key.public().to_peer_id();
                let mdns = if mdns_on {
                    mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id).ok()
                } else {
                    None
                };
                Behaviour {
                    limits: libp2p::connection_limits::Behaviour::new(
                        libp2p::connection_limits::ConnectionLimits::default()
                            .with_max_established(Some(config.max_connections))
                            .with_max_established_per_peer(Some(8))
                            .with_max_pending_incoming(Some(64))
                            .with_max_pending_outgoing(Some(64)),
                    ),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/peercompute/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: Toggle::from(mdns),
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while bound.len() < pending_listens {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| NodeError::Setup("listeners did not come up within 10 s".into()))?;
            match event {
                SwarmEvent::NewListenAddr { address, .. } => bound.push(address),
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    return Err(NodeError::Setup(format!("listener failed: {error}")));
                }
                _ => {}
            }
        }
        let (listen_tx, listen) = watch::channel(bound);
        let (commands, rx) = mpsc::channel(64);
        tokio::spawn(EventLoop::new(swarm, rx, listen_tx).run());
        Ok(Self {
            peer_id,
            control,
            commands,
            listen,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Addresses the node listens on now.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.borrow().clone()
    }

    /// A stream-control handle (open or accept protocol streams).
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Connects to `peer` (using `addrs` and anything mDNS found), or returns at once if
    /// already connected.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial { peer, addrs, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Stops the node: connections and listeners are closed when this returns.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// How `peer` is reached right now, if connected.
    pub async fn path(&self, peer: PeerId) -> Option<PeerPath> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Path { peer, reply })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }
}

struct EventLoop {
    swarm: libp2p::Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    listen: watch::Sender<Vec<Multiaddr>>,
    pending: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NodeError>>>>,
    paths: HashMap<PeerId, PeerPath>,
}

impl EventLoop {
    fn new(
        swarm: libp2p::Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        listen: watch::Sender<Vec<Multiaddr>>,
    ) -> Self {
        Self {
            swarm,
            commands,
            listen,
            pending: HashMap::new(),
            paths: HashMap::new(),
        }
    }

    async fn run(mut self) {
        let done = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: stop.
                    None => break None,
                },
            }
        };
        // Dropping the swarm closes its listeners and connections.
        drop(self);
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
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
            Command::Path { peer, reply } => {
                let _ = reply.send(self.paths.get(&peer).cloned());
            }
            Command::Shutdown { .. } => unreachable!("handled by the event loop"),
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen.send_modify(|v| {
                    if !v.contains(&address) {
                        v.push(address);
                    }
                });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let address = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                debug!(peer = %peer_id, %address, "connected");
                let rtt = self.paths.get(&peer_id).and_then(|p| p.rtt);
                self.paths.insert(peer_id, PeerPath { address, rtt });
                for reply in self.pending.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(()));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.paths.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                for reply in self.pending.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(NodeError::Dial {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    debug!(%peer, %addr, "found on the LAN");
                    self.swarm.add_peer_address(peer, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                if let Some(p) = self.paths.get_mut(&peer) {
                    p.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }
}
