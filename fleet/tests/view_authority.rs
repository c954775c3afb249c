//! Who may read a group's logs from its robots (`FleetState::may_view`, checked by each robot
//! before it answers a `LogsRequest`): every role within its groups and before its grant
//! expires; each refusal next to its positive control.

mod support;

use peercompute_fleet::{FleetState, Op, Refusal, Role};
use support::*;

fn state(w: &World) -> FleetState {
    w.log.state().cloned().expect("a state after the genesis")
}

#[test]
fn every_role_may_view_its_groups() {
    let mut w = World::new();
    let roles = [Role::Viewer, Role::Operator, Role::Developer, Role::Admin];
    for (i, role) in roles.into_iter().enumerate() {
        let k = key(30 + i as u8);
        w.grant(&k, role, &["production"], None);
        let s = state(&w);
        assert_eq!(s.may_view(&member(&k), "production", NOW), Ok(()), "{role}");
        let r = s.may_view(&member(&k), "staging", NOW);
        assert!(
            matches!(&r, Err(Refusal::OutsideGroups { group, allowed, .. })
                if group == "staging" && allowed == &["production"]),
            "{role}: {r:?}"
        );
    }
    let fk = w.fleet_key.clone();
    assert_eq!(
        state(&w).may_view(&member(&fk), "anything", NOW),
        Ok(()),
        "the fleet key views every group"
    );
}

#[test]
fn a_grant_without_groups_covers_every_group() {
    let mut w = World::new();
    let viewer = key(40);
    w.grant(&viewer, Role::Viewer, &[], None);
    let s = state(&w);
    for group in ["production", "staging", "lab"] {
        assert_eq!(s.may_view(&member(&viewer), group, NOW), Ok(()));
    }
}

#[test]
fn strangers_and_robots_without_a_role_are_refused() {
    let mut w = World::new();
    let (stranger, robot) = (key(41), key(42));
    w.enroll(&robot, "lekiwi-1", &["production"]);
    let s = state(&w);
    for k in [&stranger, &robot] {
        assert_eq!(
            s.may_view(&member(k), "production", NOW),
            Err(Refusal::NotAuthorized(member(k)))
        );
    }
    // Positive control: the same robot once granted a viewer role.
    w.grant(&robot, Role::Viewer, &[], None);
    assert_eq!(
        state(&w).may_view(&member(&robot), "production", NOW),
        Ok(())
    );
}

#[test]
fn an_expired_grant_is_refused_and_honoured_until_it_expires() {
    let mut w = World::new();
    let viewer = key(43);
    w.grant(&viewer, Role::Viewer, &["production"], Some(NOW + 100));
    let s = state(&w);
    assert_eq!(
        s.may_view(&member(&viewer), "production", NOW + 100),
        Ok(())
    );
    let r = s.may_view(&member(&viewer), "production", NOW + 101);
    assert_eq!(
        r,
        Err(Refusal::GrantExpired {
            member: member(&viewer),
            expired_at: NOW + 100
        })
    );
    assert!(
        r.expect_err("refused").to_string().contains("expired"),
        "the reason says it"
    );
}

#[test]
fn an_ungranted_or_revoked_key_is_refused() {
    let mut w = World::new();
    let (a, b) = (key(44), key(45));
    w.grant(&a, Role::Operator, &[], None);
    w.grant(&b, Role::Operator, &[], None);
    assert_eq!(state(&w).may_view(&member(&a), "production", NOW), Ok(()));
    let fk = w.fleet_key.clone();
    w.write(&fk, Op::Ungrant { member: member(&a) })
        .expect("ungrant");
    w.write(
        &fk,
        Op::Revoke {
            member: member(&b),
            reason: "lost laptop".into(),
        },
    )
    .expect("revoke");
    let s = state(&w);
    assert_eq!(
        s.may_view(&member(&a), "production", NOW),
        Err(Refusal::NotAuthorized(member(&a)))
    );
    assert_eq!(
        s.may_view(&member(&b), "production", NOW),
        Err(Refusal::Revoked(member(&b)))
    );
}
