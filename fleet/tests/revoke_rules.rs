//! The rules that keep a stop or a revoke from being turned against the fleet (review of
//! issue 13): an e-stop from a clock far ahead does not freeze the log (its children need only
//! be as late as its parents); only the fleet key may revoke an admin; and a revoke by an
//! admin that the fleet key revoked concurrently voids nothing — it cannot void an operator's
//! stop or revoke the operator, in whatever order members learn the entries.

mod support;

use peercompute_fleet::{FleetLog, InsertError, Op, Refusal, Role, SignedEntry};
use support::*;

#[test]
fn a_stop_from_a_clock_far_ahead_does_not_freeze_the_log() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let ops = key(13);
    w.grant(&ops, Role::Operator, &[], None);
    let month_ahead = NOW + 30 * 86_400;
    let stop = w
        .log
        .author(
            &ops,
            Op::estop(vec![], "robot clock a month ahead"),
            month_ahead,
        )
        .expect("valid");
    w.log.insert(stop.clone(), NOW).expect("a stop is taken");
    assert_eq!(
        w.log.latest_time(),
        NOW,
        "the stop's own time sets no floor"
    );
    // The resume is written now, on the stop, and taken now.
    let resume = w
        .log
        .author(&fk, Op::Resume { groups: vec![] }, NOW)
        .expect("valid");
    assert_eq!(resume.entry().at, NOW);
    assert_eq!(resume.entry().parents, vec![stop.hash()]);
    w.log.insert(resume, NOW).expect("not from the future");
    assert!(w.log.state().expect("state").stopped_all().is_none());
    // A revoke and a release go in too.
    let revoke = w
        .log
        .author(
            &fk,
            Op::Revoke {
                member: member(&ops),
                reason: "its clock".into(),
            },
            NOW,
        )
        .expect("valid");
    w.log.insert(revoke, NOW).expect("revoke taken");
    // Positive control: a child is still held to its parents' own floor.
    let before = w
        .log
        .author(&fk, release("production", 1, "v1"), NOW)
        .expect("valid");
    let mut early = before.entry().clone();
    early.at = NOW - 1;
    let early = SignedEntry::sign(early, &fk).expect("signed");
    let r = w.log.insert(early, NOW);
    assert!(matches!(r, Err(InsertError::TimeBeforeParent(_))), "{r:?}");
}

#[test]
fn only_the_fleet_key_revokes_an_admin() {
    let mut w = World::new();
    let (a, b) = (key(21), key(22));
    w.grant(&a, Role::Admin, &[], None);
    w.grant(&b, Role::Admin, &[], None);
    let r = refusal(w.write(
        &b,
        Op::Revoke {
            member: member(&a),
            reason: "coup".into(),
        },
    ));
    assert_eq!(r, Refusal::AdminByRootOnly(member(&a)));
    // Positive control: the fleet key may.
    let fk = w.fleet_key.clone();
    w.write(
        &fk,
        Op::Revoke {
            member: member(&a),
            reason: "left".into(),
        },
    )
    .expect("the root revokes an admin");
}

#[test]
fn a_revoked_admins_back_dated_revoke_voids_nothing() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let (admin, ops) = (key(21), key(13));
    w.grant(&admin, Role::Admin, &[], None);
    w.grant(&ops, Role::Operator, &[], None);
    w.write(&fk, release("production", 1, "v1")).expect("v1");
    let base = w.log.clone();
    let branch = || World {
        fleet_key: fk.clone(),
        log: base.clone(),
    };
    let (mut a, mut b, mut c) = (branch(), branch(), branch());
    // a: the fleet key revokes the admin (its key leaked).
    let root_revoke = a
        .write(
            &fk,
            Op::Revoke {
                member: member(&admin),
                reason: "key leaked".into(),
            },
        )
        .expect("revoke");
    // b: the leaked admin key, back-dated onto the old heads, revokes the operator.
    let counter = b
        .write(
            &admin,
            Op::Revoke {
                member: member(&ops),
                reason: "silence the operator".into(),
            },
        )
        .expect("valid in its own past");
    // c: the operator stops production, concurrently.
    let stop = c
        .write(&ops, Op::estop(vec!["production".into()], "arm jammed"))
        .expect("stop");
    let orders: [&[&SignedEntry]; 3] = [
        &[&root_revoke, &counter, &stop],
        &[&counter, &stop, &root_revoke],
        &[&stop, &counter, &root_revoke],
    ];
    let logs: Vec<FleetLog> = orders.iter().map(|o| insert_all(&base, o)).collect();
    for log in &logs[1..] {
        assert_eq!(log.state(), logs[0].state());
    }
    let s = logs[0].state().expect("state");
    assert_eq!(
        s.stop_for("production").map(|x| x.by),
        Some(stop.hash()),
        "the operator's stop stands"
    );
    assert!(s.revoked.contains_key(&member(&admin)));
    assert!(
        !s.revoked.contains_key(&member(&ops)),
        "the counter-revoke is void"
    );
    // Positive control: without the fleet key's revoke, the admin's revoke does void the
    // operator's concurrent stop (an admin may revoke an operator).
    let without = insert_all(&base, &[&counter, &stop]);
    let s = without.state().expect("state");
    assert!(s.revoked.contains_key(&member(&ops)));
    assert!(s.stop_for("production").is_none());
}
