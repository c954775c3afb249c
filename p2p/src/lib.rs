//! The libp2p side of Peer Compute's control plane, shared by `peercomputed` (server),
//! `peerctl` (client) and the gateway (relay and rendezvous server).
//!
//! - [`node`]: a libp2p node — TCP and QUIC, Noise + Yamux, identify, ping, optional mDNS,
//!   connection limits, generic streams, circuit relay v2 client, DCUtR hole punching and
//!   rendezvous client, plus the relay and rendezvous servers on gateways — run by an event
//!   loop task; a cloneable [`Node`] handle dials peers, reserves relay slots, registers and
//!   looks up peers at a rendezvous server, reports how a peer was reached and opens or
//!   accepts streams.
//! - `event_loop`: the task that owns the swarm and dispatches its events to `dialing` (dial
//!   and hole-punch bookkeeping, sans-IO, `now` passed in), `rendezvous_match` (rendezvous
//!   replies), `relay_slots` (relay-slot revocation), `listening` (listen addresses, relay
//!   reservations) and `liveness` (ping results: connections whose pings fail are closed,
//!   sans-IO); `command`: what a [`Node`] handle asks of it.
//! - `image_service`: serving peer-pinned images (`/peercompute/image/1`) to members and
//!   grantees of a held fleet, for digests of its recent releases only; 4 streams per peer,
//!   16 in all.
//! - `lan`: peers mDNS found on the LAN and the [`PeerEvent`]s a node publishes.
//! - `fleet_revoked`: the keys held fleets revoked ([`FleetHub::revoked_peers`](fleet_hub::FleetHub::revoked_peers))
//!   and [`block_revoked`], which keeps a robot's block list equal to them.
//! - `gated`: a behaviour offered only to admitted peers (the gateway's rendezvous server).
//! - [`path`]: what kind of path a connection is (direct LAN / public, hole punched, relayed).
//! - [`framed`]: control-plane frames (`type | length | JSON`, codec in
//!   `peercompute-tunnel-proto`) read from and written to a libp2p stream, every buffer bounded
//!   by the codec's maximum frame size.
//! - [`fleet_hub`]: the fleet logs a node holds, the `/peercompute/fleet/1` service, anti-entropy
//!   and forwarding.
//! - `fleet_logs`: a robot's answer to `LogsRequest` — the asker's role checked, then its
//!   [`LogSource`](fleet_hub::LogSource) read.
//! - `fleet`: fleet exchange frames (`/peercompute/fleet/1`, codec in `peercompute-fleet`) on a
//!   libp2p stream, the length checked before the body is buffered.

mod command;
mod dialing;
mod event_loop;
mod fleet;
mod fleet_client;
pub mod fleet_hub;
mod fleet_logs;
mod fleet_revoked;
mod framed;
mod gated;
mod image_service;
mod lan;
mod listening;
mod liveness;
mod node;
pub mod path;
mod relay_slots;
mod rendezvous_match;

pub use fleet::{FleetStream, FleetStreamError, fleet_protocol};
pub use fleet_revoked::block_revoked;
pub use framed::{FrameError, Framed};
pub use image_service::{
    BlobSource, ImageAuthorizer, ImageShelf, ImageStream, ImageStreamError, MAX_STREAMS,
    MAX_STREAMS_PER_PEER, SERVED_RELEASES, fleet_authorizer, image_protocol, may_fetch_image,
    serve_images,
};
pub use lan::PeerEvent;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId, StreamProtocol};
pub use node::{
    AdmitFn, Directory, Found, Node, NodeConfig, NodeError, RelayServerSettings, control_protocol,
};
pub use path::{PathKind, PeerPath, quic_first};
