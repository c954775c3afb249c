//! The fold rules of issue 13, each next to a positive control: an e-stop naming no group is
//! fleet-wide and covers groups released later; a resume lifts only the stops in its causal
//! past, so a stop written concurrently with a resume stays in force on every member whatever
//! order they learn the two in; a revoke is permanent and voids the revoked key's entries that
//! are not its ancestors (stored, skipped by the fold); a stop from a robot whose clock lags is
//! taken, a resume from the far future is not.

mod support;

use peercompute_fleet::{
    FleetLog, FleetState, InsertError, MAX_FUTURE_SECS, Op, Refusal, Role, SignedEntry,
};
use support::*;

fn groups(g: &[&str]) -> Vec<String> {
    g.iter().map(|s| s.to_string()).collect()
}

fn state(log: &FleetLog) -> &FleetState {
    log.state().expect("genesis in")
}

/// A second copy of `w`'s log (another member, or another branch).
fn fork(w: &World) -> World {
    World {
        fleet_key: w.fleet_key.clone(),
        log: w.log.clone(),
    }
}

#[test]
fn a_stop_naming_no_group_covers_groups_released_later() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    w.write(&fk, release("production", 1, "v1"))
        .expect("release");
    let stop = w.write(&fk, Op::estop(vec![], "fire drill")).expect("stop");
    w.write(&fk, release("staging", 1, "v1")).expect("release");
    let s = state(&w.log);
    for group in ["production", "staging", "never-released"] {
        let found = s.stop_for(group).expect("stopped");
        assert_eq!(
            (found.reason.as_str(), found.by),
            ("fire drill", stop.hash())
        );
    }
    assert_eq!(s.stopped_all().map(|x| x.by), Some(stop.hash()));
    // A resume of one group does not lift a fleet-wide stop; a resume of every group does.
    w.write(
        &fk,
        Op::Resume {
            groups: groups(&["staging"]),
        },
    )
    .expect("resume staging");
    assert!(state(&w.log).stop_for("staging").is_some());
    w.write(&fk, Op::Resume { groups: vec![] })
        .expect("resume all");
    let s = state(&w.log);
    assert!(s.stop_for("staging").is_none() && s.stopped_all().is_none());
    assert!(s.groups.keys().all(|g| s.stop_for(g).is_none()));
}

#[test]
fn a_group_stop_and_a_fleet_wide_stop_report_the_later_one() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let all = w.write(&fk, Op::estop(vec![], "all")).expect("stop");
    let own = w
        .write(&fk, Op::estop(groups(&["production"]), "arm"))
        .expect("stop");
    assert_eq!(
        state(&w.log).stop_for("production").map(|s| s.by),
        Some(own.hash())
    );
    assert_eq!(
        state(&w.log).stop_for("staging").map(|s| s.by),
        Some(all.hash())
    );
    // Lifting the group's own stop leaves the fleet-wide one in force.
    w.write(
        &fk,
        Op::Resume {
            groups: groups(&["production"]),
        },
    )
    .expect("resume");
    assert_eq!(
        state(&w.log).stop_for("production").map(|s| s.by),
        Some(all.hash())
    );
}

#[test]
fn a_stop_concurrent_with_a_resume_wins_in_every_order() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let ops = key(13);
    w.grant(&ops, Role::Operator, &[], None);
    w.write(&fk, Op::estop(groups(&["production"]), "first"))
        .expect("stop");
    let base = w.log.clone();
    // Branch a resumes the first stop; branch b, not having seen the resume, stops again.
    let (mut a, mut b) = (fork(&w), fork(&w));
    let resume = a
        .write(
            &fk,
            Op::Resume {
                groups: groups(&["production"]),
            },
        )
        .expect("resume");
    let again = b
        .write(&ops, Op::estop(groups(&["production"]), "second"))
        .expect("stop");
    assert_eq!(resume.entry().clock, again.entry().clock, "concurrent");
    let x = insert_all(&base, &[&resume, &again]);
    let y = insert_all(&base, &[&again, &resume]);
    assert_eq!(x.state(), y.state());
    assert_eq!(x.heads(), y.heads());
    let stop = state(&x).stop_for("production").expect("still stopped");
    assert_eq!((stop.reason.as_str(), stop.by), ("second", again.hash()));
    // Positive control: a resume that has seen the second stop lifts it.
    let mut merged = World {
        fleet_key: fk.clone(),
        log: x,
    };
    merged
        .write(
            &ops,
            Op::Resume {
                groups: groups(&["production"]),
            },
        )
        .expect("resume on both");
    assert!(state(&merged.log).stop_for("production").is_none());
}

#[test]
fn a_revoked_key_cannot_be_enrolled_or_granted_again() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let robot = key(20);
    w.enroll(&robot, "r1", &["production"]);
    w.write(
        &fk,
        Op::Revoke {
            member: member(&robot),
            reason: "stolen".into(),
        },
    )
    .expect("revoke");
    let enroll = Op::Enroll {
        member: member(&robot),
        name: "r1".into(),
        groups: groups(&["production"]),
    };
    assert_eq!(
        refusal(w.write(&fk, enroll)),
        Refusal::Revoked(member(&robot))
    );
    let grant = Op::Grant(peercompute_fleet::Grant {
        member: member(&robot),
        role: Role::Viewer,
        groups: vec![],
        expires_at: None,
    });
    assert_eq!(
        refusal(w.write(&fk, grant)),
        Refusal::Revoked(member(&robot))
    );
    assert_eq!(state(&w.log).revoked[&member(&robot)], "stolen");
    // Positive control: another key is enrolled under the freed name.
    w.enroll(&key(21), "r1", &["production"]);
    // The fleet key itself cannot be revoked.
    let root = Op::Revoke {
        member: member(&fk),
        reason: "x".into(),
    };
    assert_eq!(refusal(w.write(&fk, root)), Refusal::RootKey);
}

#[test]
fn a_revoke_voids_the_keys_concurrent_entries_at_any_clock() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let (dev, ops) = (key(11), key(13));
    w.grant(&dev, Role::Developer, &[], None);
    w.grant(&ops, Role::Operator, &[], None);
    let before = w.write(&dev, release("production", 1, "v1")).expect("v1");
    let base = w.log.clone();
    let (mut a, mut b) = (fork(&w), fork(&w));
    // Branch a: the admin revokes the developer and stops production.
    let revoke = a
        .write(
            &fk,
            Op::Revoke {
                member: member(&dev),
                reason: "laptop stolen".into(),
            },
        )
        .expect("revoke");
    // Branch b: the developer (not yet knowing) releases twice and the operator stops
    // staging; the developer's entries run to a higher clock than the revoke's.
    let v2 = b.write(&dev, release("production", 2, "v2")).expect("v2");
    let v3 = b.write(&dev, release("production", 3, "v3")).expect("v3");
    let stop = b
        .write(&ops, Op::estop(groups(&["staging"]), "drill"))
        .expect("stop");
    assert!(v3.entry().clock > revoke.entry().clock);
    let orders: [&[&SignedEntry]; 3] = [
        &[&revoke, &v2, &v3, &stop],
        &[&v2, &v3, &stop, &revoke],
        &[&v2, &revoke, &v3, &stop],
    ];
    let logs: Vec<FleetLog> = orders.iter().map(|o| insert_all(&base, o)).collect();
    for log in &logs[1..] {
        assert_eq!(log.state(), logs[0].state());
        assert_eq!(log.heads(), logs[0].heads());
    }
    let s = state(&logs[0]);
    // Stored (every member's set converges), skipped by the fold.
    assert!(logs[0].contains(&v2.hash()) && logs[0].contains(&v3.hash()));
    let production = &s.groups["production"];
    assert_eq!(production.desired().map(|r| r.hash), Some(before.hash()));
    assert_eq!(production.releases.len(), 1);
    // The operator's concurrent stop is not void: only the revoked key's entries are.
    assert_eq!(s.stop_for("staging").map(|x| x.by), Some(stop.hash()));
    // A later entry of the revoked key, written on every head, is refused outright.
    let mut merged = World {
        fleet_key: fk,
        log: logs[0].clone(),
    };
    let r = refusal(merged.write(&dev, release("production", 9, "v9")));
    assert_eq!(r, Refusal::Revoked(member(&dev)));
}

#[test]
fn a_stop_from_a_lagging_clock_is_taken_and_a_resume_from_the_future_is_not() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let robot_now = NOW;
    let ahead = NOW + MAX_FUTURE_SECS + 3600;
    let stop = w
        .log
        .author(
            &fk,
            Op::estop(vec![], "robot clock is an hour behind"),
            ahead,
        )
        .expect("valid");
    w.log
        .insert(stop.clone(), robot_now)
        .expect("a stop is never from the future");
    let resume = w
        .log
        .author(&fk, Op::Resume { groups: vec![] }, ahead)
        .expect("valid");
    let r = w.log.insert(resume.clone(), robot_now);
    assert!(matches!(r, Err(InsertError::FromTheFuture { .. })), "{r:?}");
    // Positive control: once the robot's clock catches up, the resume goes in.
    w.log.insert(resume, ahead).expect("in time");
    assert!(state(&w.log).stopped_all().is_none());
}

#[test]
fn a_replayed_stop_is_a_duplicate_and_does_not_stop_again() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let stop = w
        .write(&fk, Op::estop(groups(&["production"]), "x"))
        .expect("stop");
    w.write(&fk, Op::Resume { groups: vec![] }).expect("resume");
    let r = w.log.insert(stop, LATER).expect("no error");
    assert_eq!(r, peercompute_fleet::Inserted::Duplicate);
    assert!(state(&w.log).stop_for("production").is_none());
}

#[test]
fn prepare_changes_nothing_until_commit() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let entry = author(&w, &fk, release("production", 1, "v1"));
    let prepared = w.log.prepare(entry.clone(), LATER).expect("valid");
    assert!(!w.log.contains(&entry.hash()));
    assert_eq!(prepared.inserted(), peercompute_fleet::Inserted::New);
    w.log.commit(prepared);
    assert!(w.log.contains(&entry.hash()));
    assert!(state(&w.log).groups["production"].desired().is_some());
    let again = w.log.prepare(entry, LATER).expect("valid");
    assert_eq!(again.inserted(), peercompute_fleet::Inserted::Duplicate);
    assert!(again.entry().is_none());
}
