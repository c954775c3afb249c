//! Table tests of [`DialBook`]: each scenario is a list of steps, each with the actions it
//! must return. The first three reproduce the hole-punch bugs fixed in c006fc1, 76772f5 and
//! 7df2846, with no sockets and no clock.

use super::*;

const WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `Node::dial` with this reply id.
    Dial(u64),
    /// `Node::dial` while the connections up failed their pings lately.
    DialDoubtful(u64),
    /// The swarm refused to start the dial.
    DialFailed,
    /// The swarm took the dial asked for; its connection id.
    Started(usize),
    /// Every address of this dial failed.
    FailedConn(usize),
    /// A connection came up over the relay.
    UpRelayed(usize),
    /// A direct connection came up (either side's dial) at a public address.
    UpDirect(usize),
    /// A connection came up at an address mDNS announced.
    UpLan(usize),
    /// DCUtR reports our own dial succeeded on this connection.
    Punched(usize),
    PunchFailed,
    Closed(usize),
    /// This many milliseconds after the start.
    Tick(u64),
}

/// An expected action, in short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    Dial,
    Close(usize),
    Ok(u64),
    Err(u64),
}

use Act::{Close, Err as No, Ok as Yes};

/// A named scenario: steps, each with the actions it must return.
type Table<'a> = (&'a str, &'a [(Step, &'a [Act])]);
use Step::*;

fn peer() -> PeerId {
    "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        .parse()
        .expect("peer id")
}

fn relayed() -> Multiaddr {
    "/ip4/8.8.8.8/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
        .parse()
        .expect("multiaddr")
}

fn direct() -> Multiaddr {
    "/ip4/203.0.113.7/udp/9000/quic-v1"
        .parse()
        .expect("multiaddr")
}

fn short(actions: Vec<DialAction>) -> Vec<Act> {
    let mut out: Vec<Act> = actions
        .into_iter()
        .map(|a| match a {
            DialAction::Dial(_) => Act::Dial,
            DialAction::Close(c) => Close(format!("{c}").parse().expect("connection id")),
            DialAction::Answer {
                reply,
                outcome: Ok(()),
                ..
            } => Yes(reply.0),
            DialAction::Answer { reply, .. } => No(reply.0),
        })
        .collect();
    out.sort();
    out
}

/// Runs `steps` on a fresh book; returns the book and the kinds connections got.
fn run(name: &str, steps: &[(Step, &[Act])]) -> (DialBook, HashMap<usize, PathKind>) {
    let start = Instant::now();
    let p = peer();
    let mut book = DialBook::new(WAIT);
    let mut kinds = HashMap::new();
    let mut now = start;
    let mut up = |book: &mut DialBook, c: usize, addr: Multiaddr, lan: bool| {
        let (kind, actions) = book.connected(p, ConnectionId::new_unchecked(c), addr, lan, start);
        kinds.insert(c, kind);
        actions
    };
    for (i, (step, want)) in steps.iter().enumerate() {
        let actions = match *step {
            Dial(r) => book.dial_requested(p, ReplyId(r), false, now),
            DialDoubtful(r) => book.dial_requested(p, ReplyId(r), true, now),
            DialFailed => book.dial_failed(p, None, "no route"),
            Started(c) => {
                book.dial_started(p, ConnectionId::new_unchecked(c));
                Vec::new()
            }
            FailedConn(c) => book.dial_failed(p, Some(ConnectionId::new_unchecked(c)), "timeout"),
            UpRelayed(c) => up(&mut book, c, relayed(), false),
            UpDirect(c) => up(&mut book, c, direct(), false),
            UpLan(c) => up(&mut book, c, direct(), true),
            Punched(c) => book.punched(p, ConnectionId::new_unchecked(c)),
            PunchFailed => book.punch_failed(p).1,
            Closed(c) => book.closed(ConnectionId::new_unchecked(c)).1,
            Tick(ms) => {
                now = start + Duration::from_millis(ms);
                book.tick(now)
            }
        };
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(short(actions), want, "{name}: step {i} ({step:?})");
    }
    (book, kinds)
}

#[test]
fn bug_c006fc1_the_peers_own_direct_connection_answers_during_the_wait() {
    // dcutr reports success only for our dial; the peer's dial reaching us first must end the
    // wait at once (it took ~1 s when our first QUIC packet was dropped).
    let (_, kinds) = run(
        "peer's dial first",
        &[
            (Dial(1), &[Act::Dial]),
            (UpRelayed(10), &[]),
            (UpDirect(11), &[Close(10)]),
            (Closed(10), &[Yes(1)]),
            // Our own dial lands later: also hole punched (the relayed one is gone by then).
            (UpDirect(12), &[]),
            // dcutr's verdict on our dial no longer matters, nor does a failed attempt.
            (PunchFailed, &[]),
            (Punched(12), &[]),
        ],
    );
    assert_eq!(kinds[&11], PathKind::HolePunched);
    assert_eq!(kinds[&12], PathKind::HolePunched);
}

#[test]
fn bug_76772f5_the_answer_waits_until_the_relayed_connections_are_gone() {
    let (book, _) = run(
        "closing relayed",
        &[
            (Dial(1), &[Act::Dial]),
            (UpRelayed(10), &[]),
            (UpRelayed(11), &[]),
            (UpDirect(12), &[Close(10), Close(11)]),
            (Closed(10), &[]),
            (Closed(11), &[Yes(1)]),
        ],
    );
    let path = book.path(&peer()).expect("connected");
    assert_eq!(path.kind, PathKind::HolePunched);
}

#[test]
fn bug_7df2846_a_dial_during_the_relayed_close_waits_for_it() {
    run(
        "dial while closing",
        &[
            (Dial(1), &[Act::Dial]),
            (UpRelayed(10), &[]),
            (UpDirect(11), &[Close(10)]),
            (Punched(11), &[]),
            // Connected, but the relayed connection is still there: wait.
            (Dial(2), &[]),
            (Closed(10), &[Yes(1), Yes(2)]),
            // Now a dial answers at once.
            (Dial(3), &[Yes(3)]),
        ],
    );
}

#[test]
fn dial_and_punch_tables() {
    let tables: &[Table] = &[
        (
            "direct dial answers at once",
            &[
                (Dial(1), &[Act::Dial]),
                (UpDirect(10), &[Yes(1)]),
                (Dial(2), &[Yes(2)]),
            ],
        ),
        (
            "a second dial joins the one under way",
            &[
                (Dial(1), &[Act::Dial]),
                (Dial(2), &[]),
                (UpLan(10), &[Yes(1), Yes(2)]),
            ],
        ),
        (
            "a failed dial answers every waiter",
            &[
                (Dial(1), &[Act::Dial]),
                (Dial(2), &[]),
                (DialFailed, &[No(1), No(2)]),
                (Dial(3), &[Act::Dial]),
            ],
        ),
        (
            "relayed waits for the hole punch, then goes on over the relay",
            &[
                (Dial(1), &[Act::Dial]),
                (UpRelayed(10), &[]),
                (Dial(2), &[]),
                (Tick(2_999), &[]),
                (Tick(3_000), &[Yes(1), Yes(2)]),
            ],
        ),
        (
            "a failed punch goes on over the relay",
            &[
                (Dial(1), &[Act::Dial]),
                (UpRelayed(10), &[]),
                (PunchFailed, &[Yes(1)]),
            ],
        ),
        (
            "our punch closes the relay, answered once it is gone",
            &[
                (Dial(1), &[Act::Dial]),
                (UpRelayed(10), &[]),
                (UpDirect(11), &[Close(10)]),
                (Punched(11), &[]),
                (Tick(5_000), &[]),
                (Closed(10), &[Yes(1)]),
            ],
        ),
        (
            "the last connection closing fails the waiters",
            &[
                (Dial(1), &[Act::Dial]),
                (UpRelayed(10), &[]),
                (Closed(10), &[No(1)]),
            ],
        ),
        (
            "the direct one dying during the relayed close fails the waiters",
            &[
                (Dial(1), &[Act::Dial]),
                (UpRelayed(10), &[]),
                (UpDirect(11), &[Close(10)]),
                (Closed(11), &[]),
                (Closed(10), &[No(1)]),
            ],
        ),
        (
            "a failed second address is ignored while connected",
            &[
                (Dial(1), &[Act::Dial]),
                (UpDirect(10), &[Yes(1)]),
                (DialFailed, &[]),
            ],
        ),
        (
            "a dial while the connection is doubtful makes a new one, answered by it",
            &[
                (UpLan(10), &[]),
                (DialDoubtful(1), &[Act::Dial]),
                (DialDoubtful(2), &[]),
                (UpLan(11), &[Yes(1), Yes(2)]),
                (Closed(10), &[]),
                (Dial(3), &[Yes(3)]),
            ],
        ),
        (
            "a dial replacing a doubtful connection fails when its dial fails",
            &[
                (UpLan(10), &[]),
                (DialDoubtful(1), &[Act::Dial]),
                (DialFailed, &[No(1)]),
                (Closed(10), &[]),
            ],
        ),
        (
            "closing an unknown connection does nothing",
            &[(Closed(99), &[])],
        ),
    ];
    for (name, steps) in tables {
        run(name, steps);
    }
}

#[test]
fn zero_wait_answers_a_relayed_dial_at_once() {
    let p = peer();
    let mut book = DialBook::new(Duration::ZERO);
    assert_eq!(
        short(book.dial_requested(p, ReplyId(1), false, Instant::now())),
        vec![Act::Dial]
    );
    let (kind, actions) = book.connected(
        p,
        ConnectionId::new_unchecked(1),
        relayed(),
        false,
        Instant::now(),
    );
    assert_eq!(kind, PathKind::Relayed);
    assert_eq!(short(actions), vec![Yes(1)]);
    assert_eq!(book.next_deadline(), None);
}

#[test]
fn deadline_and_path() {
    let p = peer();
    let start = Instant::now();
    let mut book = DialBook::new(WAIT);
    book.dial_requested(p, ReplyId(1), false, Instant::now());
    book.connected(p, ConnectionId::new_unchecked(1), relayed(), false, start);
    assert_eq!(book.next_deadline(), Some(start + WAIT));
    book.set_rtt(ConnectionId::new_unchecked(1), Duration::from_millis(7));
    let path = book.path(&p).expect("connected");
    assert_eq!(path.kind, PathKind::Relayed);
    assert_eq!(path.rtt, Some(Duration::from_millis(7)));
    let (gone, _) = book.closed(ConnectionId::new_unchecked(1));
    assert_eq!(gone, Some((p, true)));
    assert!(book.path(&p).is_none());
}

#[test]
fn a_stale_dial_does_not_hold_back_a_new_one() {
    // The 60 s partition test: a dial sent while the peer was cut off lingers (its SYN is
    // retried for minutes); once the peer is back, a new dial must go out beside it.
    run(
        "stale dial",
        &[
            (Dial(1), &[Act::Dial]),
            (Started(1), &[]),
            // Within STALE_DIAL: joins the dial under way.
            (Tick(1000), &[]),
            (Dial(2), &[]),
            // Past it: a second dial beside the first.
            (Tick(2500), &[]),
            (Dial(3), &[Act::Dial]),
            (Started(2), &[]),
            // The first one failing does not fail the calls while the second is under way.
            (FailedConn(1), &[]),
            (UpLan(5), &[Yes(1), Yes(2), Yes(3)]),
            // A late failure of the answered dial is ignored.
            (FailedConn(2), &[]),
        ],
    );
}

#[test]
fn only_the_failure_of_the_last_own_dial_fails_the_calls() {
    run(
        "own dials only",
        &[
            (Dial(1), &[Act::Dial]),
            (Started(1), &[]),
            // Another behaviour's dial of the peer (a connection id not ours) failing.
            (FailedConn(9), &[]),
            (FailedConn(1), &[No(1)]),
            // A swarm refusal with no dial under way fails the call at once.
            (Dial(2), &[Act::Dial]),
            (DialFailed, &[No(2)]),
            // A swarm refusal of the second dial while the first is under way does not.
            (Dial(3), &[Act::Dial]),
            (Started(3), &[]),
            (Tick(3000), &[]),
            (Dial(4), &[Act::Dial]),
            (DialFailed, &[]),
            (FailedConn(3), &[No(3), No(4)]),
        ],
    );
}
