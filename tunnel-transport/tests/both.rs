//! One test body per behaviour, run over QUIC and over TCP + yamux on loopback: what the
//! gateway and the provider rely on must hold for both [`TunnelConn`] kinds.

mod support;

use std::time::Duration;

use peercompute_tunnel_proto::GoAwayCode;
use peercompute_tunnel_transport::{CloseReason, ConnError, Transport, TunnelConn};
use support::{Pair, body, hash_all, send_all, sha256, stream_between, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `$body(pair)` on a QUIC pair and on a TCP pair, as two tests.
macro_rules! on_both {
    ($name:ident, $limit:expr, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                super::$body(super::support::quic_pair($limit).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                super::$body(super::support::tcp_pair($limit).await).await;
            }
        }
    };
}

const STREAMS: usize = 8;
const BODY: usize = 8 * 1024 * 1024;

on_both!(
    concurrent_streams_carry_large_bodies,
    64,
    concurrent_streams
);
/// `b` echoes every stream; `a` sends 8 MiB on each of 8 streams at once and checks what
/// comes back, byte for byte (SHA-256), while both directions run.
async fn concurrent_streams(pair: Pair) {
    let Pair { a, b, .. } = pair;
    let echo = tokio::spawn(async move {
        loop {
            let Ok(stream) = b.accept_bi().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                tokio::io::copy(&mut r, &mut w).await.expect("echo copy");
                w.shutdown().await.expect("echo finish");
            });
        }
    });
    let mut senders = Vec::new();
    for i in 0..STREAMS {
        let a = a.clone();
        senders.push(tokio::spawn(async move {
            let data = body(i as u64, BODY);
            let stream = a.open_bi().await.expect("open");
            let (r, w) = tokio::io::split(stream);
            let (sent, echoed) = tokio::join!(send_all(w, &data), hash_all(r));
            sent.expect("send");
            let (digest, len) = echoed.expect("read the echo");
            assert_eq!(len, BODY, "stream {i}: length");
            assert_eq!(digest, sha256(&data), "stream {i}: content");
        }));
    }
    within("8 × 8 MiB echoed", async {
        for s in senders {
            s.await.expect("sender task");
        }
    })
    .await;
    let (rx, tx) = a.wire_bytes();
    let total = (STREAMS * BODY) as u64;
    assert!(rx >= total && tx >= total, "wire bytes {rx}/{tx} < {total}");
    echo.abort();
}

on_both!(open_bi_waits_at_the_stream_limit, 4, stream_limit);
/// With 4 streams open, a 5th `open_bi` waits (does not fail) and completes once one ends.
async fn stream_limit(pair: Pair) {
    let Pair { a, b, .. } = pair;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..4u8 {
        let (s, t) = stream_between(&a, &b, &[i]).await;
        ours.push(s);
        theirs.push(t);
    }
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.open_bi().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the 5th open must wait, not fail");

    // End the first stream both ways: its slot frees up.
    let mut first = ours.remove(0);
    let mut first_peer = theirs.remove(0);
    first.finish().await.expect("finish");
    first_peer.finish().await.expect("peer finish");
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.expect("read to end");
    first_peer
        .read_to_end(&mut rest)
        .await
        .expect("peer read to end");
    drop((first, first_peer));

    let mut fifth = within("the 5th open after a slot freed", waiting)
        .await
        .expect("task")
        .expect("open");
    fifth.write_all(b"5").await.expect("write on the 5th");
    let mut t = within("accept the 5th", b.accept_bi())
        .await
        .expect("accept");
    let mut got = [0u8];
    t.read_exact(&mut got).await.expect("read the 5th");
    assert_eq!(&got, b"5");
}

on_both!(close_reaches_the_peer, 16, close_reaches_peer);
/// `a.close(code, reason)`: `b.closed()` resolves promptly, both sides say why, open streams
/// and new opens fail on both sides.
async fn close_reaches_peer(pair: Pair) {
    let Pair { a, b, .. } = pair;
    let (mut s, mut t) = stream_between(&a, &b, b"x").await;

    let started = std::time::Instant::now();
    a.close(GoAwayCode::Shutdown, "bye");
    let seen = within("b sees the close", b.closed()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "close took {:?}",
        started.elapsed()
    );
    let ours = CloseReason::Local {
        code: GoAwayCode::Shutdown,
        reason: "bye".into(),
    };
    assert_eq!(a.close_reason(), Some(ours.clone()));
    assert_eq!(within("a closed", a.closed()).await, ours);
    match (a.transport(), &seen) {
        (Transport::Quic, CloseReason::Peer { code, reason }) => {
            assert_eq!(
                (*code, reason.as_str()),
                (Some(GoAwayCode::Shutdown), "bye")
            );
        }
        (Transport::Tcp, CloseReason::Peer { code: None, .. }) => {}
        other => panic!("unexpected close seen by b: {other:?}"),
    }
    assert_eq!(b.close_reason(), Some(seen));

    let mut buf = [0u8; 8];
    let read = within("b's stream ends", t.read(&mut buf)).await;
    assert!(read.is_err(), "b's stream must fail, got {read:?}");
    let read = within("a's stream ends", s.read(&mut buf)).await;
    assert!(read.is_err(), "a's stream must fail, got {read:?}");
    let write = within("a writes late", s.write_all(b"late")).await;
    assert!(write.is_err(), "writing on a closed session must fail");
    let write = within("b writes late", t.write_all(b"late")).await;
    assert!(write.is_err(), "writing on a closed session must fail");
    assert_closed(within("a opens", a.open_bi()).await);
    assert_closed(within("b opens", b.open_bi()).await);
    assert_closed(within("b accepts", b.accept_bi()).await);
}

fn assert_closed<T: std::fmt::Debug>(r: Result<T, ConnError>) {
    match r {
        Err(ConnError::Closed { .. }) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
}

on_both!(reset_stream_fails_on_the_peer, 16, reset_stream);
/// A stream reset by `a` fails on `b` (read and write), and the connection goes on.
async fn reset_stream(pair: Pair) {
    let Pair { a, b, .. } = pair;
    let (s, mut t) = stream_between(&a, &b, b"hello").await;
    s.reset();

    let mut buf = [0u8; 8];
    let read = within("read after the reset", t.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "reading a reset stream must fail, got {read:?}"
    );
    let write = within("write after the reset", async {
        loop {
            // The peer's stop may take a round trip to arrive.
            if let Err(e) = t.write_all(&[0u8; 1024]).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!write.to_string().is_empty());

    // The connection is unaffected.
    let mut s2 = a.open_bi().await.expect("open after a reset");
    s2.write_all(b"again").await.expect("write");
    s2.finish().await.expect("finish");
    let mut t2 = within("accept after a reset", b.accept_bi())
        .await
        .expect("accept");
    let mut all = Vec::new();
    within("read", t2.read_to_end(&mut all))
        .await
        .expect("read");
    assert_eq!(all, b"again");
}

on_both!(wire_bytes_and_identity, 16, wire_bytes_and_identity_body);
/// Byte counters grow with traffic; ids are distinct; transport, addresses and RTT answer.
async fn wire_bytes_and_identity_body(pair: Pair) {
    let Pair { a, b, .. } = pair;
    assert_ne!(a.id(), b.id());
    assert_eq!(a.transport(), b.transport());
    assert!(a.remote_address().ip().is_loopback());
    assert!(b.remote_address().ip().is_loopback());
    match a.transport() {
        Transport::Quic => assert!(a.rtt().is_some()),
        Transport::Tcp => {
            assert_eq!(a.rtt(), None);
            a.set_rtt(Duration::from_millis(12));
            assert_eq!(a.rtt(), Some(Duration::from_millis(12)));
        }
    }

    let (a_rx0, a_tx0) = a.wire_bytes();
    let (b_rx0, _) = b.wire_bytes();
    let data = body(7, 256 * 1024);
    let mut s = a.open_bi().await.expect("open");
    send_all(&mut s, &data).await.expect("send");
    let t = within("accept", b.accept_bi()).await.expect("accept");
    let (r, mut w) = tokio::io::split(t);
    let (digest, len) = within("read", hash_all(r)).await.expect("read");
    assert_eq!((digest, len), (sha256(&data), data.len()));
    w.write_all(b"ok").await.expect("answer");
    w.shutdown().await.expect("finish");
    let mut answer = Vec::new();
    within("answer", s.read_to_end(&mut answer))
        .await
        .expect("read answer");
    assert_eq!(answer, b"ok");

    let (a_rx, a_tx) = a.wire_bytes();
    let (b_rx, _) = b.wire_bytes();
    let sent = data.len() as u64;
    assert!(a_tx - a_tx0 >= sent, "a sent {} < {sent}", a_tx - a_tx0);
    assert!(b_rx - b_rx0 >= sent, "b received {} < {sent}", b_rx - b_rx0);
    assert!(a_rx > a_rx0, "a received nothing");
}

/// The ids of all connections in the process are distinct, whatever their transport.
#[tokio::test]
async fn ids_are_unique_across_transports() {
    let quic = support::quic_pair(4).await;
    let tcp = support::tcp_pair(4).await;
    let ids = [quic.a.id(), quic.b.id(), tcp.a.id(), tcp.b.id()];
    for (i, x) in ids.iter().enumerate() {
        for y in &ids[i + 1..] {
            assert_ne!(x, y);
        }
    }
    let both: [&TunnelConn; 2] = [&quic.a, &tcp.a];
    assert_eq!(both.map(|c| c.transport().as_str()), ["quic", "tcp"]);
}
