//! How a peer is reached: the kind of path, for `peerctl peers list` and the tests.

use std::net::IpAddr;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::{Deserialize, Serialize};

/// The kind of connection a peer is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// Directly, to an address on the local network (found by mDNS or a private address).
    DirectLan,
    /// Directly, to a public address.
    DirectPublic,
    /// Directly, after DCUtR hole punching through both NATs.
    HolePunched,
    /// Through a relay (a gateway's circuit relay).
    Relayed,
}

impl PathKind {
    /// Human words for the kind.
    pub fn describe(self) -> &'static str {
        match self {
            Self::DirectLan => "direct LAN",
            Self::DirectPublic => "direct public",
            Self::HolePunched => "direct (hole punched)",
            Self::Relayed => "relayed",
        }
    }

    /// What an address alone says about the path (no knowledge of how it was found).
    pub fn of_address(addr: &Multiaddr) -> Self {
        if is_relayed(addr) {
            return Self::Relayed;
        }
        match ip_of(addr) {
            Some(ip) if is_private(ip) => Self::DirectLan,
            // DNS names and public addresses.
            _ => Self::DirectPublic,
        }
    }
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// How a peer was reached, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    /// Remote address of the connection in use.
    pub address: Multiaddr,
    pub kind: PathKind,
    /// Round-trip time measured by ping, once known.
    pub rtt: Option<Duration>,
}

/// `addrs` split into QUIC ones and the rest. Dial a gateway over QUIC first: the address
/// it observes for us is then a UDP one, which is what hole punching through NATs needs.
pub fn quic_first(addrs: &[Multiaddr]) -> Vec<Vec<Multiaddr>> {
    let (quic, other): (Vec<Multiaddr>, Vec<Multiaddr>) = addrs
        .iter()
        .cloned()
        .partition(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)));
    [quic, other]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect()
}

/// Whether `addr` goes through a circuit relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The first IP address in `addr`, if any.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> PathKind {
        PathKind::of_address(&s.parse().expect("multiaddr"))
    }

    #[test]
    fn kinds_of_addresses() {
        assert_eq!(kind("/ip4/192.168.1.5/tcp/9000"), PathKind::DirectLan);
        assert_eq!(kind("/ip4/10.0.0.1/udp/9000/quic-v1"), PathKind::DirectLan);
        assert_eq!(kind("/ip4/100.64.3.2/tcp/1"), PathKind::DirectLan);
        assert_eq!(kind("/ip6/fd00::1/tcp/1"), PathKind::DirectLan);
        assert_eq!(kind("/ip4/127.0.0.1/tcp/1"), PathKind::DirectLan);
        assert_eq!(kind("/ip4/8.8.8.8/tcp/1"), PathKind::DirectPublic);
        assert_eq!(kind("/ip6/2001:db8::1/tcp/1"), PathKind::DirectPublic);
        assert_eq!(kind("/dns4/example.com/tcp/1"), PathKind::DirectPublic);
        assert_eq!(
            kind(
                "/ip4/8.8.8.8/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            ),
            PathKind::Relayed
        );
    }
}
