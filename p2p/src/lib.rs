//! The libp2p side of Peer Compute's control plane, shared by `peercomputed` (server) and
//! `peerctl` (client).
//!
//! - [`node`]: a libp2p node — TCP + Noise + Yamux, identify, ping, optional mDNS, connection
//!   limits and generic streams — run by an event loop task; a cloneable [`Node`] handle dials
//!   peers, reports how a peer was reached and opens or accepts streams.
//! - [`framed`]: control-plane frames (`type | length | JSON`, codec in
//!   `peercompute-tunnel-proto`) read from and written to a libp2p stream, every buffer bounded
//!   by the codec's maximum frame size.

mod framed;
mod node;

pub use framed::{FrameError, Framed};
pub use libp2p::{Multiaddr, PeerId, StreamProtocol};
pub use node::{Node, NodeConfig, NodeError, PeerPath, control_protocol};
