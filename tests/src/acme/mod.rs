//! ACME harness: real Debian `bind9` and `pebble` as child processes on loopback, and a
//! gateway started with `--tls acme` (or `--tls auto` on a public domain) against them.
//!
//! - [`process`]: child processes killed on drop; free loopback ports; the "what to install"
//!   check.
//! - [`dns`]: a tiny DNS client (UDP, one question) to read what bind9 serves.
//! - [`bind`]: [`Bind9`] — a throwaway primary for one zone that accepts TSIG-signed updates.
//! - [`pebble`]: [`Pebble`] — the ACME test server, its TLS made with the gateway's dev CA,
//!   validating against our bind9 and the gateway's HTTP/HTTPS ports.
//! - [`gateway`]: [`AcmeGateway`] — the gateway library with `--tls acme`, restartable on the
//!   same ports and state, with metric and TLS-handshake helpers.
//!
//! Readiness is polled with bounded deadlines (a DNS answer, the ACME directory answering),
//! never slept for.

pub mod bind;
pub mod dns;
pub mod gateway;
pub mod pebble;
pub mod process;

pub use bind::Bind9;
pub use gateway::{ACME_DOMAIN, AcmeGateway, AcmePorts};
pub use pebble::{Pebble, PebbleOptions};
