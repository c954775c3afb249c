//! Table tests of [`Choice`]: each scenario is a list of steps at given milliseconds, each
//! with the actions it must return; no sockets, no clock.

use super::*;

#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    /// Time passed to this many milliseconds after the start.
    At(u64),
    Ev(Event),
}

use Action::{Close, DialTcp, Migrate, Retry, Serve};
use Event::{PongBack, PongLate, QuicSilent, QuicUp, SessionLost, TcpFailed, TcpUp};
use Step::{At, Ev, Start};
use Via::{Quic, Tcp};

const DIAL_QUIC: Action = Action::DialQuic { probe: false };
const PROBE_QUIC: Action = Action::DialQuic { probe: true };

/// Runs `steps` on a fresh choice; returns it and the time of the last step.
fn run(mode: TransportMode, steps: &[(Step, &[Action])]) -> (Choice, Instant) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut choice = Choice::new(mode, 7);
    for (i, (step, want)) in steps.iter().enumerate() {
        let mut got = match *step {
            Start => choice.start(now),
            At(ms) => {
                now = t0 + Duration::from_millis(ms);
                choice.on_timeout(now)
            }
            Ev(event) => choice.on(now, event),
        };
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "{mode:?} step {i} ({step:?})");
    }
    (choice, now)
}

#[test]
fn quic_that_answers_serves_and_tcp_is_never_dialled() {
    let (choice, _) = run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (At(300), &[]),
            (Ev(QuicUp), &[Serve(Quic)]),
            (At(1000), &[]),
            (At(120_000), &[]),
        ],
    );
    assert_eq!(choice.serving(), Some(Quic));
    assert_eq!(choice.next_timeout(), None);
}

#[test]
fn silent_udp_falls_back_to_tcp_after_one_second_and_probes_quic_later() {
    let (choice, now) = run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (At(999), &[]),
            (At(1000), &[DialTcp]),
            (Ev(TcpUp), &[Serve(Tcp)]),
            // QUIC's own timeout: no answer ever came.
            (At(10_000), &[]),
            (Ev(QuicSilent), &[]),
        ],
    );
    assert_eq!(choice.serving(), Some(Tcp));
    let probe = choice.next_timeout().expect("a probe scheduled");
    let wait = probe - (now - Duration::from_millis(9_000));
    assert!(
        (PROBE_EVERY..PROBE_EVERY * 2).contains(&wait),
        "probe in 30-60 s after TCP came up: {wait:?}"
    );
}

#[test]
fn a_quic_dial_that_fails_without_an_answer_dials_tcp_at_once() {
    run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (At(200), &[]),
            (Ev(QuicSilent), &[DialTcp]),
            // The happy-eyeballs timer is gone: no second TCP dial.
            (At(1000), &[]),
            (Ev(TcpUp), &[Serve(Tcp)]),
        ],
    );
}

#[test]
fn quic_that_completes_after_tcp_won_takes_over() {
    run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (At(1000), &[DialTcp]),
            (Ev(TcpUp), &[Serve(Tcp)]),
            (At(1500), &[]),
            (Ev(QuicUp), &[Migrate { to: Quic }]),
        ],
    );
}

#[test]
fn tcp_that_comes_up_after_quic_won_is_closed() {
    run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (At(1000), &[DialTcp]),
            (Ev(QuicUp), &[Serve(Quic)]),
            (Ev(TcpUp), &[Close(Tcp)]),
        ],
    );
}

#[test]
fn a_probe_that_succeeds_moves_back_to_quic_and_one_that_fails_is_tried_again() {
    let (mut choice, _) = run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (Ev(QuicSilent), &[DialTcp]),
            (Ev(TcpUp), &[Serve(Tcp)]),
        ],
    );
    let first = choice.next_timeout().expect("probe");
    assert_eq!(choice.on_timeout(first), vec![PROBE_QUIC]);
    assert_eq!(choice.on(first, QuicSilent), Vec::new());
    let second = choice.next_timeout().expect("probe again");
    assert!(second - first >= PROBE_EVERY, "{:?}", second - first);
    assert_eq!(choice.on_timeout(second), vec![PROBE_QUIC]);
    assert_eq!(choice.on(second, QuicUp), vec![Migrate { to: Quic }]);
    assert_eq!(choice.serving(), Some(Quic));
    assert_eq!(choice.next_timeout(), None, "no probing on QUIC");
}

#[test]
fn flapping_udp_doubles_the_probe_interval_and_starts_on_tcp() {
    let (mut choice, _) = run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (Ev(QuicSilent), &[DialTcp]),
            (Ev(TcpUp), &[Serve(Tcp)]),
        ],
    );
    let mut every = PROBE_EVERY;
    for round in 0..6 {
        let probe = choice.next_timeout().expect("probe");
        assert_eq!(choice.on_timeout(probe), vec![PROBE_QUIC], "round {round}");
        assert_eq!(choice.on(probe, QuicUp), vec![Migrate { to: Quic }]);
        // UDP dies again 10 s later.
        let lost = probe + Duration::from_secs(10);
        assert_eq!(choice.on(lost, SessionLost { via: Quic }), vec![Retry]);
        every = (every * 2).min(MAX_PROBE_EVERY);
        assert_eq!(choice.probe_every(), every, "round {round}");
        // The restart goes to TCP at once.
        assert_eq!(choice.start(lost), vec![DialTcp], "round {round}");
        assert_eq!(choice.on(lost, TcpUp), vec![Serve(Tcp)]);
    }
    assert_eq!(choice.probe_every(), MAX_PROBE_EVERY);
}

#[test]
fn a_quic_session_lost_long_after_the_move_is_not_flapping() {
    let (mut choice, _) = run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (Ev(QuicSilent), &[DialTcp]),
            (Ev(TcpUp), &[Serve(Tcp)]),
        ],
    );
    let probe = choice.next_timeout().expect("probe");
    choice.on_timeout(probe);
    choice.on(probe, QuicUp);
    let lost = probe + FLAP_WINDOW + Duration::from_secs(1);
    assert_eq!(choice.on(lost, SessionLost { via: Quic }), vec![Retry]);
    assert_eq!(choice.probe_every(), PROBE_EVERY);
    assert_eq!(choice.start(lost), vec![DIAL_QUIC], "QUIC first again");
}

#[test]
fn a_late_pong_on_quic_dials_tcp_and_tcp_takes_over() {
    run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (Ev(QuicUp), &[Serve(Quic)]),
            (At(20_000), &[]),
            (Ev(PongLate), &[DialTcp]),
            (Ev(PongLate), &[]),
            (Ev(TcpUp), &[Migrate { to: Tcp }]),
        ],
    );
}

#[test]
fn a_pong_that_comes_back_keeps_quic() {
    run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (Ev(QuicUp), &[Serve(Quic)]),
            (Ev(PongLate), &[DialTcp]),
            (Ev(PongBack), &[]),
            (Ev(TcpUp), &[Close(Tcp)]),
        ],
    );
}

#[test]
fn both_failing_asks_for_a_retry_once_both_are_over() {
    run(
        TransportMode::Auto,
        &[
            (Start, &[DIAL_QUIC]),
            (At(1000), &[DialTcp]),
            (Ev(TcpFailed), &[]),
            (Ev(QuicSilent), &[DialTcp]),
            (Ev(TcpFailed), &[Retry]),
        ],
    );
}

#[test]
fn fixed_modes_never_use_the_other_transport() {
    let (choice, _) = run(
        TransportMode::Quic,
        &[
            (Start, &[DIAL_QUIC]),
            (At(5000), &[]),
            (Ev(QuicSilent), &[Retry]),
            (Start, &[DIAL_QUIC]),
            (Ev(QuicUp), &[Serve(Quic)]),
            (Ev(PongLate), &[]),
        ],
    );
    assert_eq!(choice.serving(), Some(Quic));
    let (choice, _) = run(
        TransportMode::Tcp,
        &[
            (Start, &[DialTcp]),
            (Ev(TcpFailed), &[Retry]),
            (Start, &[DialTcp]),
            (Ev(TcpUp), &[Serve(Tcp)]),
            (At(600_000), &[]),
        ],
    );
    assert_eq!(choice.serving(), Some(Tcp));
    assert_eq!(
        choice.next_timeout(),
        None,
        "no QUIC probe with --transport tcp"
    );
}

#[test]
fn the_mode_parses_with_a_helpful_error() {
    assert_eq!("auto".parse(), Ok(TransportMode::Auto));
    assert_eq!("quic".parse(), Ok(TransportMode::Quic));
    assert_eq!("tcp".parse(), Ok(TransportMode::Tcp));
    let e = "udp"
        .parse::<TransportMode>()
        .expect_err("udp is not a transport mode");
    assert!(e.contains("auto") && e.contains("tcp"), "{e}");
}
