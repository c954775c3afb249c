//! `Node::block` on real libp2p nodes over loopback: a blocked peer's connection closes at
//! once, its dials are refused, and `unblock` lets it back; `peer_events` reports both ends.

use std::time::Duration;

use peercompute_identity::Identity;
use peercompute_p2p::{Node, NodeConfig, PeerEvent};

async fn node() -> Node {
    let identity = Identity::generate().expect("identity");
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        mdns: false,
        hole_punch_wait: Duration::ZERO,
        ..NodeConfig::default()
    };
    Node::start(&identity, config).await.expect("node starts")
}

/// The next event about `peer` matching `want`, within 5 s.
async fn event(
    events: &mut tokio::sync::broadcast::Receiver<PeerEvent>,
    want: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = events.recv().await.expect("events flow");
            if want(&e) {
                return e;
            }
        }
    })
    .await
    .expect("the event within 5 s")
}

#[tokio::test]
async fn a_blocked_peer_is_cut_off_and_refused_until_unblocked() {
    let (a, b) = (node().await, node().await);
    let mut a_events = a.peer_events();
    b.dial(a.peer_id(), a.listen_addrs())
        .await
        .expect("b reaches a");
    let bp = b.peer_id();
    event(
        &mut a_events,
        |e| matches!(e, PeerEvent::Connected { peer, .. } if *peer == bp),
    )
    .await;

    a.block(bp).await.expect("node runs");
    assert!(a.is_blocked(&bp));
    event(&mut a_events, |e| {
        *e == PeerEvent::Disconnected { peer: bp }
    })
    .await;
    assert!(a.path(bp).await.is_none(), "no connection left");
    // We do not dial it...
    assert!(
        a.dial(bp, b.listen_addrs()).await.is_err(),
        "a's own dial is refused"
    );
    // ...and its dial is closed as soon as it is up (the handshake completes on its side
    // before ours refuses it, so its dial may briefly succeed).
    let mut b_events = b.peer_events();
    let ap = a.peer_id();
    let _ = b.dial(ap, a.listen_addrs()).await;
    if b.path(ap).await.is_some() {
        event(&mut b_events, |e| {
            *e == PeerEvent::Disconnected { peer: ap }
        })
        .await;
    }
    assert!(a.path(bp).await.is_none(), "still no connection at a");
    assert!(
        !matches!(a_events.try_recv(), Ok(PeerEvent::Connected { .. })),
        "a never reports it connected"
    );

    a.unblock(bp).await.expect("node runs");
    assert!(!a.is_blocked(&bp));
    b.dial(a.peer_id(), a.listen_addrs())
        .await
        .expect("allowed again");
}
