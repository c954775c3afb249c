//! Staying reachable behind NAT: the provider keeps a relay slot at its gateway's libp2p
//! meeting point and registers its relayed address there under its own peer id, so a
//! trusted client that knows only our peer id and the gateway finds us (and then tries to
//! punch a direct path with DCUtR, which the node runs on its own).
//!
//! The gateway's addresses come from `--gateway-p2p`, else from the tunnel's Welcome. The
//! loop re-reserves after the relay connection drops and re-registers before the rendezvous
//! registration expires; the relay client renews the reservation itself.

use std::time::Duration;

use peercompute_identity::PeerId;
use peercompute_p2p::{Multiaddr, Node, NodeError, Protocol};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::tunnel::GatewayP2p;

/// How long a rendezvous registration lives; renewed at half.
const REGISTRATION_TTL: Duration = Duration::from_secs(2 * 3600);

/// What the relay keeper is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStatus {
    /// No gateway p2p address known yet (waiting for the tunnel's Welcome).
    Waiting,
    /// Reserved and registered: clients reach us at `address`.
    Reserved {
        address: Multiaddr,
    },
    /// The last attempt failed; retrying with backoff.
    Failed {
        reason: String,
    },
    Stopped,
}

/// Where the gateway's p2p addresses come from.
pub(crate) enum Source {
    /// `--gateway-p2p`: fixed addresses, each ending in `/p2p/<gateway id>` or completed
    /// with the tunnel's pinned gateway id.
    Fixed(GatewayP2p),
    /// The tunnel's Welcome.
    Tunnel(watch::Receiver<Option<GatewayP2p>>),
}

/// Splits `--gateway-p2p` addresses into the gateway id and bare addresses.
pub(crate) fn fixed_source(
    addrs: &[Multiaddr],
    pinned: Option<PeerId>,
) -> Result<GatewayP2p, String> {
    let mut peer = pinned;
    let mut bare = Vec::new();
    for addr in addrs {
        let mut a = addr.clone();
        if let Some(Protocol::P2p(id)) = a.iter().last() {
            if peer.is_some_and(|p| p != id) {
                return Err(format!(
                    "--gateway-p2p {addr} names gateway {id}, but the tunnel's gateway is {}",
                    peer.map(|p| p.to_string()).unwrap_or_default()
                ));
            }
            peer = Some(id);
            a.pop();
        }
        bare.push(a);
    }
    let peer = peer.ok_or_else(|| {
        "--gateway-p2p needs the gateway's peer id: end the address in /p2p/<gateway id> or pin it in --gateway PEERID@HOST:PORT".to_owned()
    })?;
    Ok(GatewayP2p { peer, addrs: bare })
}

/// QUIC first: hole punching through NATs works best over UDP.
fn ordered(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut v = addrs.to_vec();
    v.sort_by_key(|a| !a.iter().any(|p| matches!(p, Protocol::QuicV1)));
    v
}

/// Keeps a reservation and a registration until `stop` turns true.
pub(crate) async fn keep_reachable(
    node: Node,
    mut source: Source,
    status: watch::Sender<RelayStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let me = node.peer_id();
    let mut backoff = Backoff::relay();
    loop {
        if *stop.borrow() {
            break;
        }
        let gateway = match &mut source {
            Source::Fixed(g) => g.clone(),
            Source::Tunnel(rx) => {
                let got = tokio::select! {
                    r = rx.wait_for(Option::is_some) => r.ok().and_then(|g| g.clone()),
                    _ = stop.changed() => None,
                };
                match got {
                    Some(g) => g,
                    None if *stop.borrow() => break,
                    // The tunnel client stopped: nothing will announce addresses any more.
                    None => {
                        status.send_replace(RelayStatus::Failed {
                            reason: "the tunnel client stopped".into(),
                        });
                        break;
                    }
                }
            }
        };
        let outcome = tokio::select! {
            r = reserve_and_register(&node, me, &gateway) => r,
            _ = stop.changed() => break,
        };
        let address = match outcome {
            Ok(address) => address,
            Err(reason) => {
                warn!("not reachable through the gateway's relay: {reason}");
                status.send_replace(RelayStatus::Failed { reason });
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        info!(%address, "reachable by peer id through the gateway's relay");
        status.send_replace(RelayStatus::Reserved {
            address: address.clone(),
        });
        backoff.reset();
        // Hold until the reservation is gone, re-registering on the way.
        let mut listen = node.watch_listen_addrs();
        let mut renew = tokio::time::interval_at(
            tokio::time::Instant::now() + REGISTRATION_TTL / 2,
            REGISTRATION_TTL / 2,
        );
        let lost = loop {
            tokio::select! {
                r = listen.changed() => {
                    if r.is_err() || !listen.borrow().contains(&address) {
                        break true;
                    }
                }
                _ = renew.tick() => {
                    if let Err(e) = node.register(gateway.peer, me.to_string(), REGISTRATION_TTL).await {
                        warn!("cannot renew the rendezvous registration: {e}");
                    }
                }
                _ = stop.changed() => break false,
            }
        };
        if !lost {
            break;
        }
        warn!("the relay reservation at the gateway ended; reserving again");
        status.send_replace(RelayStatus::Failed {
            reason: "the relay reservation ended".into(),
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => break,
        }
    }
    status.send_replace(RelayStatus::Stopped);
}

async fn reserve_and_register(
    node: &Node,
    me: PeerId,
    gateway: &GatewayP2p,
) -> Result<Multiaddr, String> {
    let shown = gateway
        .addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // QUIC first, so the gateway observes a UDP address of ours for hole punching.
    let mut dialed = Err(String::from("no address"));
    for group in peercompute_p2p::quic_first(&gateway.addrs) {
        let tried = group.clone();
        dialed = match tokio::time::timeout(Duration::from_secs(10), node.dial(gateway.peer, group))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in 10 s".into()),
        };
        match &dialed {
            Ok(()) => break,
            Err(e) => debug!("gateway {} not reached over {tried:?}: {e}", gateway.peer),
        }
    }
    dialed.map_err(|e| format!("gateway {} unreachable at {shown}: {e}", gateway.peer))?;
    let mut last = String::new();
    let mut reserved = None;
    for addr in ordered(&gateway.addrs) {
        let full = addr.with(Protocol::P2p(gateway.peer));
        match tokio::time::timeout(Duration::from_secs(20), node.reserve(full.clone())).await {
            Ok(Ok(address)) => {
                reserved = Some(address);
                break;
            }
            Ok(Err(NodeError::RelayRefused { reason, .. })) => {
                last = format!(
                    "relay refused at {full}: {reason} (the gateway admits only providers on its allowlist, and caps reservations)"
                );
            }
            Ok(Err(e)) => last = format!("relay at {full}: {e}"),
            Err(_) => last = format!("relay at {full}: no answer to the reservation in 20 s"),
        }
    }
    let address = reserved.ok_or(last)?;
    node.register(gateway.peer, me.to_string(), REGISTRATION_TTL)
        .await
        .map_err(|e| format!("reserved {address} but could not register it: {e}"))?;
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_addresses_take_the_id_from_the_address_or_the_pin() {
        let gw = peercompute_identity::Identity::generate()
            .expect("id")
            .peer_id();
        let other = peercompute_identity::Identity::generate()
            .expect("id")
            .peer_id();
        let with_id: Multiaddr = format!("/ip4/1.2.3.4/tcp/4001/p2p/{gw}")
            .parse()
            .expect("ma");
        let bare: Multiaddr = "/ip4/1.2.3.4/udp/4001/quic-v1".parse().expect("ma");
        let got = fixed_source(&[with_id.clone(), bare.clone()], None).expect("ok");
        assert_eq!(got.peer, gw);
        assert_eq!(got.addrs[0].to_string(), "/ip4/1.2.3.4/tcp/4001");
        assert_eq!(
            fixed_source(std::slice::from_ref(&bare), Some(gw))
                .expect("pin")
                .peer,
            gw
        );
        assert!(fixed_source(std::slice::from_ref(&bare), None).is_err());
        assert!(fixed_source(&[with_id], Some(other)).is_err());
        assert_eq!(
            ordered(&[got.addrs[0].clone(), bare.clone()])[0],
            bare,
            "QUIC first"
        );
    }
}
