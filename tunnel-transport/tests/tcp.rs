//! What only the TCP tunnel (yamux over a loopback socket) has to get right: a peer whose
//! socket goes away, streams past the peer's limit, a close that flushes what was written, and
//! a session nobody holds any more.

mod support;

use std::time::{Duration, Instant};

use peercompute_tunnel_proto::GoAwayCode;
use peercompute_tunnel_transport::{CloseReason, ConnError, Mode, MuxHandle, MuxLimits};
use support::{
    body, hash_all, send_all, sha256, stream_between, tcp_pair, tcp_pair_with, tcp_sockets, within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How soon a loopback peer's end must be noticed.
const PROMPT: Duration = Duration::from_secs(2);

/// The peer's socket closes (its driver task is stopped: connection and socket dropped at
/// once, no GoAway): the session, its streams and new opens end promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_peer_socket_ends_everything() {
    let pair = tcp_pair(16).await;
    let (a, b) = (pair.a, pair.b);
    let (_, b_driver) = pair.drivers.expect("tcp drivers");
    let (mut s, _t) = stream_between(&a, &b, b"x").await;
    // A read is waiting on a's side when the peer goes.
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        s.read(&mut buf).await
    });
    let accepter = tokio::spawn({
        let a = a.clone();
        async move { a.accept_bi().await }
    });

    let started = Instant::now();
    b_driver.abort();
    let reason = within("a notices", a.closed()).await;
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(
        matches!(
            reason,
            CloseReason::Peer { code: None, .. } | CloseReason::Lost(_)
        ),
        "{reason:?}"
    );
    let read = within("the waiting read", reader).await.expect("task");
    assert!(
        read.is_err(),
        "a read on a dead session must fail: {read:?}"
    );
    let accepted = within("the waiting accept", accepter).await.expect("task");
    assert!(matches!(accepted, Err(ConnError::Closed { .. })));
    assert!(matches!(
        within("open", a.open_bi()).await,
        Err(ConnError::Closed { .. })
    ));
    // b's own handles see their driver gone too.
    assert!(matches!(
        within("b closed", b.closed()).await,
        CloseReason::Lost(_)
    ));
}

/// A raw socket that is simply dropped (a crashed peer): the yamux side ends promptly.
#[tokio::test]
async fn raw_socket_drop_ends_the_session() {
    let (a_io, raw) = tcp_sockets().await;
    let remote = a_io.peer_addr().expect("peer addr");
    let (a, _task) = MuxHandle::spawn(a_io, remote, Mode::Client, MuxLimits::default());
    let mut s = a.open_bi().await.expect("open");
    s.write_all(b"hello").await.expect("write");
    let started = Instant::now();
    drop(raw);
    let reason = within("closed", a.closed()).await;
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(!reason.to_string().is_empty());
    let mut buf = [0u8; 4];
    assert!(within("read", s.read(&mut buf)).await.is_err());
}

/// Streams the peer opens past `max_inbound` are reset; the session and the streams within
/// the limit go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_streams_past_max_inbound_are_reset() {
    let a_limits = MuxLimits::default();
    let b_limits = MuxLimits {
        max_inbound: 2,
        ..MuxLimits::default()
    };
    let pair = tcp_pair_with(a_limits, b_limits).await;
    let (a, b) = (pair.a, pair.b);
    let mut ours = Vec::new();
    for i in 0..4u8 {
        let mut s = a.open_bi().await.expect("open");
        s.write_all(&[i]).await.expect("write");
        ours.push(s);
    }
    // b holds the first two (accepted, not dropped): the other two are reset.
    let mut t0 = within("accept 0", b.accept_bi()).await.expect("accept");
    let _t1 = within("accept 1", b.accept_bi()).await.expect("accept");
    for (i, s) in ours.iter_mut().enumerate().skip(2) {
        let mut buf = [0u8; 4];
        let read = within("read a refused stream", s.read(&mut buf)).await;
        assert!(read.is_err(), "stream {i} must be reset, got {read:?}");
    }
    // The first stream works both ways.
    let mut got = [0u8];
    t0.read_exact(&mut got).await.expect("read");
    assert_eq!(got, [0]);
    t0.write_all(b"pong").await.expect("answer");
    let mut answer = [0u8; 4];
    within("answer", ours[0].read_exact(&mut answer))
        .await
        .expect("read answer");
    assert_eq!(&answer, b"pong");
    assert_eq!(a.close_reason(), None);
    assert_eq!(b.close_reason(), None);
}

/// What a side wrote before its close reaches the peer before the close does: on TCP the
/// reason for a close travels as a GoAway message on the control stream, written just
/// before `close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_what_was_written_first() {
    let pair = tcp_pair(16).await;
    let (a, b) = (pair.a, pair.b);
    // Within one stream window (256 KiB): written without the peer reading.
    let data = body(3, 200 * 1024);
    let mut s = a.open_bi().await.expect("open");
    within("write", s.write_all(&data)).await.expect("write");
    within("flush", s.flush()).await.expect("flush");
    a.close(GoAwayCode::NotAllowed, "not on the allowlist");

    let mut t = within("accept", b.accept_bi()).await.expect("accept");
    let mut got = vec![0u8; data.len()];
    within("read everything", t.read_exact(&mut got))
        .await
        .expect("read what was written before the close");
    assert_eq!(sha256(&got), sha256(&data));
    assert!(matches!(
        within("b closed", b.closed()).await,
        CloseReason::Peer { code: None, .. }
    ));
    assert_eq!(
        a.close_reason(),
        Some(CloseReason::Local {
            code: GoAwayCode::NotAllowed,
            reason: "not on the allowlist".into()
        })
    );
}

/// A session whose handles and streams are all dropped closes; the peer sees it.
#[tokio::test]
async fn dropping_every_handle_closes() {
    let pair = tcp_pair(16).await;
    let (a, b) = (pair.a, pair.b);
    let (mut s, t) = stream_between(&a, &b, b"x").await;
    drop(a);
    // The stream keeps the session open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.close_reason(), None);
    s.finish().await.expect("finish");
    drop(s);
    let reason = within("b sees the session end", b.closed()).await;
    assert!(matches!(reason, CloseReason::Peer { .. }), "{reason:?}");
    drop(t);
}

/// A stream whose send side we finished still reads the peer's answer to its end: the
/// request/response shape of a tunnel data stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_then_answer() {
    let pair = tcp_pair(16).await;
    let (a, b) = (pair.a, pair.b);
    let request = body(11, 300 * 1024);
    let answer = body(12, 3 * 1024 * 1024);
    let server = tokio::spawn({
        let answer = answer.clone();
        async move {
            let t = b.accept_bi().await.expect("accept");
            let (r, w) = tokio::io::split(t);
            let (digest, _) = hash_all(r).await.expect("read request");
            send_all(w, &answer).await.expect("answer");
            digest
        }
    });
    let s = a.open_bi().await.expect("open");
    let (r, w) = tokio::io::split(s);
    send_all(w, &request).await.expect("request");
    let (digest, len) = within("answer", hash_all(r)).await.expect("read answer");
    assert_eq!((digest, len), (sha256(&answer), answer.len()));
    let seen = within("server", server).await.expect("server task");
    assert_eq!(seen, sha256(&request));
}

/// More streams in flight than yamux lets go unacknowledged (256), none answered yet: every
/// open completes at once, as on QUIC (requests waiting for a slow app must not hold up new
/// ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_unanswered_streams_do_not_hold_up_opens() {
    let pair = tcp_pair(512).await;
    let (a, b) = (pair.a, pair.b);
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 400 {
            let mut t = b.accept_bi().await.expect("accept");
            let mut got = [0u8];
            t.read_exact(&mut got).await.expect("read");
            held.push(t);
        }
        held
    });
    let mut ours = Vec::new();
    for i in 0..400u32 {
        let mut s = within(&format!("open {i}"), a.open_bi())
            .await
            .expect("open");
        s.write_all(b"?").await.expect("write");
        ours.push(s);
    }
    let held = within("accept all", accepted).await.expect("task");
    assert_eq!((ours.len(), held.len()), (400, 400));
}

/// A peer that neither reads nor closes cannot hold a local close up: the session ends within
/// the close bound (2 s) and the socket is dropped.
#[tokio::test]
async fn close_is_bounded_when_the_peer_never_answers() {
    let (a_io, mut silent) = tcp_sockets().await;
    let remote = a_io.peer_addr().expect("peer addr");
    let (a, _task) = MuxHandle::spawn(a_io, remote, Mode::Client, MuxLimits::default());
    let started = Instant::now();
    a.close(GoAwayCode::Shutdown, "bye");
    let reason = within("closed", a.closed()).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(matches!(reason, CloseReason::Local { .. }), "{reason:?}");
    // The silent peer finally reads yamux's GoAway (12 bytes), then the end of the stream.
    let mut rest = Vec::new();
    within("peer reads to the end", silent.read_to_end(&mut rest))
        .await
        .expect("read");
    assert_eq!(rest.len(), 12, "one yamux GoAway frame");
}

/// Opens abandoned while waiting at the limit (the caller's timeout fired) leave no trace:
/// once a stream ends, the next open gets its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_opens_do_not_leak_slots() {
    let pair = tcp_pair(1).await;
    let (a, b) = (pair.a, pair.b);
    let (held, _) = stream_between(&a, &b, b"1").await;
    for _ in 0..3 {
        let waited = tokio::time::timeout(Duration::from_millis(50), a.open_bi()).await;
        assert!(waited.is_err(), "the open must wait at the limit");
    }
    drop(held);
    let (_next, _) = stream_between(&a, &b, b"2").await;
}
