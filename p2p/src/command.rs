//! What a [`Node`](crate::Node) handle asks of the event loop; each command carries the
//! channel its answer goes back on.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::node::{Found, NodeError};
use crate::path::PeerPath;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

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
    /// Refuse (or allow again) every connection of a peer; blocking closes its connections.
    Block {
        peer: PeerId,
        block: bool,
        reply: oneshot::Sender<()>,
    },
    LanPeers {
        reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}
