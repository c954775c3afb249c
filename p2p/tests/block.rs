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

/// A stream open on a connection that `block` closes ends at once on our side: a fleet
/// exchange with a peer revoked by the log it is handing over must fail fast, not wait for
/// its 15 s timeout (a robot joining over the LAN was held that long).
#[tokio::test]
async fn blocking_a_peer_ends_the_streams_open_with_it() {
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    let (a, b) = (node().await, node().await);
    let protocol = libp2p::StreamProtocol::new("/peercompute/test-block/1");
    let mut incoming = b.control().accept(protocol.clone()).expect("one acceptor");
    // b answers one byte, then keeps the stream open without a word more.
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                let _ = stream.write_all(b"x").await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(stream);
            });
        }
    });
    a.dial(b.peer_id(), b.listen_addrs())
        .await
        .expect("a reaches b");
    let mut stream = a
        .control()
        .open_stream(b.peer_id(), protocol)
        .await
        .expect("stream opens");
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.expect("b's first byte");
    a.block(b.peer_id()).await.expect("node runs");
    let begun = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the read ends (EOF or error) once the connection is closed, got {read:?} after {:?}",
        begun.elapsed()
    );
    eprintln!("stream ended {:?} after the block", begun.elapsed());
}
