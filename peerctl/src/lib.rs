//! `peerctl`: the thin client of Peer Compute. It builds signed requests, sends them to a
//! trusted provider over libp2p and prints the answers; it holds no business logic.
//!
//! - [`client`](crate::client): reach a trusted provider (stored addresses and mDNS, then a
//!   lookup and relay at the known gateways, upgraded by hole punching when possible), open a
//!   control stream, send one signed request, hand back the answers.
//! - [`places`](crate::places): the gateways peerctl knows and how each peer was last reached.
//! - [`output`](crate::output): human tables and JSON, progress lines.
//! - [`resolve`](crate::resolve): which deployment `status`/`logs`/`stop` mean, by full id,
//!   unique id prefix or name (as Docker does), from the provider's list.
//! - [`fleet`](crate::fleet): `peerctl fleet …` — the client's verified copy of its fleets'
//!   logs, entries authored and checked locally, exchanged with the gateways.
//! - [`volumes`](crate::volumes): `peerctl volumes …` (list, remove, export, import a
//!   provider's named volumes) and the `--volume`/`--device` flags of deploys and releases.
//! - [`names`](crate::names): `peerctl names grant`, an owner-signed grant letting another
//!   provider key serve a route name too.
//! - [`exit`](crate::exit): the error kinds users meet, each with its own exit code, printed
//!   as a line or (with `--json`) as one JSON object.

mod client;
pub mod exit;
pub mod fleet;
pub mod names;
pub mod output;
pub mod places;
pub mod resolve;
pub mod volumes;

pub use client::{Client, ClientOptions};
pub use exit::{CliError, Kind};
