//! Table tests of [`RouteBook`]: each case is a sequence of events on a book of three links
//! (or one), and what the caller waiting for `blog` ends up with.

use super::*;
use peercompute_tunnel_proto::RefuseCode;

use LinkState::{Connected, Offline, Stopped};

#[derive(Debug, Clone)]
enum Ev {
    Link(LinkId, LinkState),
    Register,
    Unregister,
    Accepted(LinkId, &'static str),
    Refused(LinkId, RefuseCode, &'static str),
    LinkStopped(LinkId),
    Withdrawn(LinkId),
}

/// What the caller got: `None` while it still waits.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Url(&'static str),
    Refused(RefuseCode, String),
    Stopped,
    Withdrawn,
}

/// What happened, the number of gateways, the events, what the caller got, what was withdrawn.
type Case = (
    &'static str,
    usize,
    Vec<Ev>,
    Option<Got>,
    Vec<(String, Vec<LinkId>)>,
);

fn run(gateways: usize, events: &[Ev]) -> (Option<Got>, Vec<(String, Vec<LinkId>)>) {
    let names = (1..=gateways).map(|i| format!("gw{i}:8443")).collect();
    let mut book: RouteBook<u32> = RouteBook::new(names);
    let mut got = None;
    let mut withdrawn = Vec::new();
    let refused = |code, reason: &str| RegisterError::Refused {
        name: "blog".into(),
        code,
        reason: reason.into(),
    };
    for ev in events {
        let settled = match ev.clone() {
            Ev::Link(i, s) => book.link_state(i, s),
            Ev::Register => book.register("blog", 7),
            Ev::Unregister => book.unregister("blog"),
            Ev::Accepted(i, url) => book.answer(i, "blog", Ok(url.into())),
            Ev::Refused(i, code, why) => book.answer(i, "blog", Err(refused(code, why))),
            Ev::LinkStopped(i) => book.answer(i, "blog", Err(RegisterError::Stopped)),
            Ev::Withdrawn(i) => book.answer(
                i,
                "blog",
                Err(RegisterError::Withdrawn {
                    name: "blog".into(),
                }),
            ),
        };
        withdrawn.extend(settled.withdraw);
        for (waiter, result) in settled.answers {
            assert_eq!(waiter, 7);
            assert!(got.is_none(), "answered twice: {result:?} after {got:?}");
            got = Some(match result {
                Ok(url) => Got::Url(if url == "https://blog.a" {
                    "https://blog.a"
                } else {
                    "https://blog.b"
                }),
                Err(RegisterError::Refused { code, reason, .. }) => Got::Refused(code, reason),
                Err(RegisterError::Stopped) => Got::Stopped,
                Err(RegisterError::Withdrawn { .. }) => Got::Withdrawn,
            });
        }
    }
    (got, withdrawn)
}

#[test]
fn what_a_registration_answers() {
    use Ev::*;
    let owned = RefuseCode::NameOwned;
    let up3 = [Link(0, Connected), Link(1, Connected), Link(2, Connected)];
    let cases: Vec<Case> = vec![
        (
            "one gateway accepts: its URL",
            1,
            vec![Link(0, Connected), Register, Accepted(0, "https://blog.a")],
            Some(Got::Url("https://blog.a")),
            vec![],
        ),
        (
            "one gateway refuses: its refusal word for word",
            1,
            vec![Link(0, Connected), Register, Refused(0, owned, "taken")],
            Some(Got::Refused(owned, "taken".into())),
            vec![],
        ),
        (
            "one gateway offline: the caller waits",
            1,
            vec![Register],
            None,
            vec![],
        ),
        (
            "first accept wins, later answers change nothing",
            3,
            [
                &up3[..],
                &[
                    Register,
                    Accepted(2, "https://blog.a"),
                    Accepted(0, "https://blog.b"),
                    Refused(1, owned, "taken"),
                ],
            ]
            .concat(),
            Some(Got::Url("https://blog.a")),
            vec![],
        ),
        (
            "one refuses, another accepts later: the URL",
            3,
            [
                &up3[..],
                &[
                    Register,
                    Refused(0, owned, "taken"),
                    Accepted(1, "https://blog.a"),
                ],
            ]
            .concat(),
            Some(Got::Url("https://blog.a")),
            vec![],
        ),
        (
            "two of three refused, the third connected and silent: still waiting",
            3,
            [
                &up3[..],
                &[
                    Register,
                    Refused(0, owned, "taken"),
                    Refused(1, RefuseCode::InvalidName, "bad"),
                ],
            ]
            .concat(),
            None,
            vec![],
        ),
        (
            "every connected gateway refused: Refused, first code, every reason",
            3,
            [
                &up3[..],
                &[
                    Register,
                    Refused(1, owned, "taken"),
                    Refused(0, owned, "mine"),
                    Refused(2, owned, "no"),
                ],
            ]
            .concat(),
            Some(Got::Refused(
                owned,
                "gw1:8443: mine; gw2:8443: taken; gw3:8443: no".into(),
            )),
            vec![],
        ),
        (
            "refused by the connected ones, one offline: Refused, withdrawn from the offline one",
            3,
            vec![
                Link(0, Connected),
                Link(1, Connected),
                Register,
                Refused(0, owned, "taken"),
                Refused(1, owned, "taken"),
            ],
            Some(Got::Refused(
                owned,
                "gw1:8443: taken; gw2:8443: taken".into(),
            )),
            vec![("blog".into(), vec![2])],
        ),
        (
            "the silent connected gateway goes offline: the refusals decide",
            3,
            [
                &up3[..],
                &[
                    Register,
                    Refused(0, owned, "taken"),
                    Refused(1, owned, "taken"),
                    Link(2, Offline),
                ],
            ]
            .concat(),
            Some(Got::Refused(
                owned,
                "gw1:8443: taken; gw2:8443: taken".into(),
            )),
            vec![("blog".into(), vec![2])],
        ),
        (
            "no gateway connected: the caller waits (as with one gateway down)",
            3,
            vec![Register, Link(1, Connected), Link(1, Offline)],
            None,
            vec![],
        ),
        (
            "TryLater never reaches the book: a link connecting later still accepts",
            2,
            vec![
                Link(0, Connected),
                Register,
                Link(1, Connected),
                Accepted(1, "https://blog.a"),
            ],
            Some(Got::Url("https://blog.a")),
            vec![],
        ),
        (
            "every link stopped: Stopped",
            2,
            vec![Register, LinkStopped(0), Link(1, Stopped)],
            Some(Got::Stopped),
            vec![],
        ),
        (
            "one link stopped, the other accepts",
            2,
            vec![
                Link(1, Connected),
                Register,
                LinkStopped(0),
                Accepted(1, "https://blog.a"),
            ],
            Some(Got::Url("https://blog.a")),
            vec![],
        ),
        (
            "withdrawn while waiting: Withdrawn, and the links' late answers are ignored",
            2,
            vec![
                Link(0, Connected),
                Register,
                Unregister,
                Withdrawn(0),
                Accepted(1, "https://blog.a"),
            ],
            Some(Got::Withdrawn),
            vec![],
        ),
    ];
    for (what, gateways, events, want, want_withdrawn) in cases {
        let (got, withdrawn) = run(gateways, &events);
        assert_eq!(got, want, "{what}");
        assert_eq!(withdrawn, want_withdrawn, "{what}");
    }
}

#[test]
fn stop_answers_every_waiter() {
    let mut book: RouteBook<u32> = RouteBook::new(vec!["a:1".into(), "b:1".into()]);
    let _ = book.register("blog", 1);
    let _ = book.register("shop", 2);
    let _ = book.register("blog", 3);
    let mut waiters: Vec<u32> = book.stop().into_iter().map(|(w, _)| w).collect();
    waiters.sort_unstable();
    assert_eq!(waiters, [1, 2, 3]);
    assert!(book.stop().is_empty());
}
