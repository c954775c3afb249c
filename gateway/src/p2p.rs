//! The gateway as the control plane's meeting point: a libp2p node with a circuit relay v2
//! server (reservations only for admitted providers, limits sized for control traffic) and a
//! rendezvous server where providers register under their own peer id, so `peerctl` finds a
//! provider behind NAT knowing only its id and the gateway.

use std::sync::Arc;

use peercompute_identity::Identity;
use peercompute_p2p::{Directory, Multiaddr, Node, NodeConfig, Protocol, RelayServerSettings};
use tracing::info;

use crate::GatewayError;
use crate::state::Shared;

/// File in the state dir listing the p2p addresses clients add, one `PEERID@ADDR` a line.
pub const P2P_ADDRESSES_FILE: &str = "p2p-addresses";

/// Starts the node when `p2p_listen` is not empty; records the addresses providers are told.
pub(crate) async fn start(
    identity: &Identity,
    shared: &Arc<Shared>,
) -> Result<Option<Node>, GatewayError> {
    let config = &shared.config;
    if config.p2p_listen.is_empty() {
        let _ = shared.p2p_addrs.set(Vec::new());
        return Ok(None);
    }
    let parse = |list: &[String]| -> Result<Vec<Multiaddr>, GatewayError> {
        list.iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| GatewayError::P2p(format!("{s:?} is not a multiaddr: {e}")))
            })
            .collect()
    };
    let listen = parse(&config.p2p_listen)?;
    let announce = parse(&config.p2p_announce)?;
    let admit_shared = Arc::downgrade(shared);
    let mut relay = RelayServerSettings::with_admission(Arc::new(move |peer| {
        admit_shared
            .upgrade()
            .is_some_and(|s| !s.is_draining() && s.allow.allows(peer))
    }));
    // A provider removed from the allowlist loses its slot within a second: the tunnel accept
    // loop re-reads a changed file every 500 ms and the relay checks its slot holders against
    // that list as often. Draining does not take slots away: relayed control sessions finish.
    let keep_shared = Arc::downgrade(shared);
    relay.keep = Arc::new(move |peer| {
        keep_shared
            .upgrade()
            .is_some_and(|s| s.allow.allows_cached(peer))
    });
    let directory_shared = Arc::downgrade(shared);
    let directory: peercompute_p2p::AdmitFn = Arc::new(move |peer| {
        directory_shared
            .upgrade()
            .is_some_and(|s| s.allow.allows(peer))
    });
    relay.max_reservations = config.relay_max_reservations;
    relay.max_circuit_bytes = config.relay_max_circuit_bytes;
    relay.max_circuit_duration = config.relay_max_circuit_duration;
    relay.reservation_duration = config.relay_reservation_duration;
    let node = Node::start(
        identity,
        NodeConfig {
            listen: listen.clone(),
            mdns: false,
            max_connections: 4096,
            relay_server: Some(relay),
            rendezvous_server: Some(Directory { admit: directory }),
            external: announce.clone(),
            ..NodeConfig::default()
        },
    )
    .await
    .map_err(|e| GatewayError::P2p(e.to_string()))?;
    let told: Vec<Multiaddr> = if announce.is_empty() {
        with_bound_ports(&listen, &node.listen_addrs())
    } else {
        announce
    };
    info!(
        listen = ?node.listen_addrs(),
        announced = ?told.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "p2p meeting point ready (relay v2 + rendezvous); clients add it with `peerctl gateways add {}@<address>`",
        node.peer_id()
    );
    let _ = shared
        .p2p_addrs
        .set(told.iter().map(ToString::to_string).collect());
    // What `peerctl gateways add` takes, for the operator and for scripts (ports chosen by
    // the kernel included).
    let lines: String = told
        .iter()
        .map(|a| format!("{}@{a}\n", node.peer_id()))
        .collect();
    let path = config.state_dir.join(P2P_ADDRESSES_FILE);
    if let Err(e) = peercompute_identity::write_atomic(&path, lines.as_bytes(), 0o644) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
    Ok(Some(node))
}

/// The configured listen addresses with port 0 replaced by the bound port of the same
/// transport. Unspecified IPs (0.0.0.0) stay: providers put the address they reached the
/// gateway's tunnel at in their place.
fn with_bound_ports(configured: &[Multiaddr], bound: &[Multiaddr]) -> Vec<Multiaddr> {
    let transport = |a: &Multiaddr| {
        let udp = a.iter().any(|p| matches!(p, Protocol::Udp(_)));
        let v6 = a.iter().any(|p| matches!(p, Protocol::Ip6(_)));
        (udp, v6)
    };
    let port_of = |a: &Multiaddr| {
        a.iter().find_map(|p| match p {
            Protocol::Tcp(port) | Protocol::Udp(port) => Some(port),
            _ => None,
        })
    };
    configured
        .iter()
        .map(|c| {
            let Some(port) = bound
                .iter()
                .find(|b| transport(b) == transport(c))
                .and_then(port_of)
            else {
                return c.clone();
            };
            c.iter()
                .map(|p| match p {
                    Protocol::Tcp(0) => Protocol::Tcp(port),
                    Protocol::Udp(0) => Protocol::Udp(port),
                    other => other,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|s| s.parse().expect("multiaddr")).collect()
    }

    #[test]
    fn ports_filled_per_transport() {
        let configured = addrs(&["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]);
        let bound = addrs(&[
            "/ip4/127.0.0.1/udp/5002/quic-v1",
            "/ip4/127.0.0.1/tcp/5001",
            "/ip4/10.0.0.1/tcp/5001",
        ]);
        assert_eq!(
            with_bound_ports(&configured, &bound),
            addrs(&["/ip4/0.0.0.0/tcp/5001", "/ip4/0.0.0.0/udp/5002/quic-v1"])
        );
        // A fixed port is kept as is.
        let fixed = addrs(&["/ip4/0.0.0.0/tcp/4001"]);
        assert_eq!(with_bound_ports(&fixed, &bound), fixed);
    }
}
