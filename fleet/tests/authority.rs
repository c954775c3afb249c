//! Who may write what, checked the way every robot checks it: entries signed with raw keys
//! (not through peerctl) are refused with the reason, next to a positive control that the
//! same entry from someone allowed is accepted.

mod support;

use peercompute_fleet::{InsertError, Op, Refusal, Role};
use support::*;

fn desired_version(w: &World, group: &str) -> Option<String> {
    let state = w.log.state()?;
    Some(state.groups.get(group)?.desired()?.release.version.clone())
}

#[test]
fn a_non_member_cannot_release_and_the_fleet_key_can() {
    let mut w = World::new();
    let stranger = key(9);
    let r = refusal(w.write(&stranger, release("production", 1, "v1")));
    assert_eq!(r, Refusal::NotAuthorized(member(&stranger)));
    assert_eq!(desired_version(&w, "production"), None);
    let fk = w.fleet_key.clone();
    w.write(&fk, release("production", 1, "v1"))
        .expect("positive control");
    assert_eq!(desired_version(&w, "production").as_deref(), Some("v1"));
}

#[test]
fn a_viewer_cannot_release_and_a_developer_can() {
    let mut w = World::new();
    let (viewer, dev) = (key(10), key(11));
    w.grant(&viewer, Role::Viewer, &[], None);
    w.grant(&dev, Role::Developer, &[], None);
    let r = refusal(w.write(&viewer, release("production", 1, "v1")));
    assert!(
        matches!(
            r,
            Refusal::RoleMayNot {
                role: Role::Viewer,
                action: "release",
                ..
            }
        ),
        "{r}"
    );
    w.write(&dev, release("production", 1, "v1"))
        .expect("positive control");
}

#[test]
fn a_developer_cannot_enrol_or_grant_and_an_admin_can() {
    let mut w = World::new();
    let (dev, admin, robot) = (key(11), key(12), key(20));
    w.grant(&dev, Role::Developer, &[], None);
    w.grant(&admin, Role::Admin, &[], None);
    let enroll = Op::Enroll {
        member: member(&robot),
        name: "lekiwi-1".into(),
        groups: vec!["production".into()],
    };
    let r = refusal(w.write(&dev, enroll.clone()));
    assert!(
        matches!(
            r,
            Refusal::RoleMayNot {
                action: "enrol robots",
                ..
            }
        ),
        "{r}"
    );
    let grant = Op::Grant(peercompute_fleet::Grant {
        member: member(&dev),
        role: Role::Admin,
        groups: vec![],
        expires_at: None,
    });
    let r = refusal(w.write(&dev, grant.clone()));
    assert!(
        matches!(
            r,
            Refusal::RoleMayNot {
                action: "grant roles",
                ..
            }
        ),
        "{r}"
    );
    w.write(&admin, enroll).expect("positive control: enrol");
    w.write(&admin, grant).expect("positive control: grant");
    assert_eq!(w.log.state().expect("genesis in").members.len(), 1);
}

#[test]
fn a_developer_releases_only_in_its_groups() {
    let mut w = World::new();
    let dev = key(11);
    w.grant(&dev, Role::Developer, &["staging"], None);
    let r = refusal(w.write(&dev, release("production", 1, "v1")));
    assert!(
        matches!(r, Refusal::OutsideGroups { ref group, .. } if group == "production"),
        "{r}"
    );
    w.write(&dev, release("staging", 1, "v1"))
        .expect("positive control");
}

#[test]
fn an_expired_grant_is_not_honoured() {
    let mut w = World::new();
    let dev = key(11);
    w.grant(&dev, Role::Developer, &[], Some(NOW + 100));
    let r = refusal(w.write_at(&dev, release("production", 1, "v1"), NOW + 101));
    assert!(
        matches!(r, Refusal::GrantExpired { expired_at, .. } if expired_at == NOW + 100),
        "{r}"
    );
    w.write_at(&dev, release("production", 1, "v1"), NOW + 100)
        .expect("positive control");
}

#[test]
fn an_ungranted_or_revoked_key_is_refused_later_but_its_earlier_entries_stand() {
    let mut w = World::new();
    let (dev, ops) = (key(11), key(13));
    w.grant(&dev, Role::Developer, &[], None);
    w.grant(&ops, Role::Operator, &[], None);
    w.write(&dev, release("production", 1, "v1"))
        .expect("before the ungrant");
    let fk = w.fleet_key.clone();
    w.write(
        &fk,
        Op::Ungrant {
            member: member(&dev),
        },
    )
    .expect("ungrant");
    let r = refusal(w.write(&dev, release("production", 2, "v2")));
    assert_eq!(r, Refusal::NotAuthorized(member(&dev)));
    w.write(
        &fk,
        Op::Revoke {
            member: member(&ops),
            reason: "laptop stolen".into(),
        },
    )
    .expect("revoke");
    let r = refusal(w.write(&ops, rollback("production", 3, None)));
    assert_eq!(r, Refusal::Revoked(member(&ops)));
    assert_eq!(desired_version(&w, "production").as_deref(), Some("v1"));
}

#[test]
fn an_older_release_replayed_is_refused_and_a_signed_rollback_is_not() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    w.write(&fk, release("production", 1, "v1"))
        .expect("accepted");
    w.write(&fk, release("production", 2, "v2"))
        .expect("accepted");
    // The v1 release signed again with its old sequence number (a rollback attack).
    let r = refusal(w.write(&fk, release("production", 1, "v1")));
    assert!(
        matches!(
            r,
            Refusal::StaleSequence {
                seq: 1,
                current: 2,
                ..
            }
        ),
        "{r}"
    );
    // The same entry bytes again are a duplicate, not a second release.
    let v3 = w
        .write(&fk, release("production", 3, "v3"))
        .expect("accepted");
    assert_eq!(
        w.log.insert(v3, NOW).expect("accepted"),
        peercompute_fleet::Inserted::Duplicate
    );
    assert_eq!(desired_version(&w, "production").as_deref(), Some("v3"));
    // An operator may roll back, to a named version or to the previous one.
    let ops = key(13);
    w.grant(&ops, Role::Operator, &[], None);
    let r = refusal(w.write(&ops, release("production", 4, "v4")));
    assert!(
        matches!(
            r,
            Refusal::RoleMayNot {
                action: "release",
                ..
            }
        ),
        "{r}"
    );
    w.write(&ops, rollback("production", 4, Some("v1")))
        .expect("accepted");
    assert_eq!(desired_version(&w, "production").as_deref(), Some("v1"));
    // v1 is the group's first release: there is nothing before it.
    let r = refusal(w.write(&ops, rollback("production", 5, None)));
    assert!(matches!(r, Refusal::NoRollbackTarget { .. }), "{r}");
    w.write(&ops, rollback("production", 5, Some("v3")))
        .expect("accepted");
    w.write(&ops, rollback("production", 6, None))
        .expect("v2 is before v3");
    assert_eq!(desired_version(&w, "production").as_deref(), Some("v2"));
}

#[test]
fn rollback_to_a_version_the_group_never_had_is_refused() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let r = refusal(w.write(&fk, rollback("production", 1, None)));
    assert!(matches!(r, Refusal::NoRollbackTarget { .. }), "{r}");
    w.write(&fk, release("production", 1, "v1"))
        .expect("accepted");
    let r = refusal(w.write(&fk, rollback("production", 2, Some("v9"))));
    assert!(
        matches!(r, Refusal::NoRollbackTarget { ref what, .. } if what == "v9"),
        "{r}"
    );
    let r = refusal(w.write(&fk, rollback("production", 2, None)));
    assert!(matches!(r, Refusal::NoRollbackTarget { .. }), "{r}");
}

#[test]
fn a_join_token_works_until_used_up_or_expired() {
    let mut w = World::new();
    let token = w.invite(&["production"], 2, NOW + 3600);
    w.join(&key(20), &token, "lekiwi-a", NOW)
        .expect("first use");
    w.join(&key(21), &token, "lekiwi-b", NOW)
        .expect("second use");
    let r = refusal(w.join(&key(22), &token, "lekiwi-c", NOW));
    assert_eq!(r, Refusal::InviteUsedUp { uses: 2 });
    let state = w.log.state().expect("genesis in");
    assert_eq!(state.members.len(), 2);
    assert_eq!(
        state.groups_of(&member(&key(20))),
        ["production".to_string()]
    );

    let later = w.invite(&["staging"], 5, NOW + 3600);
    let r = refusal(w.join(&key(23), &later, "lekiwi-d", NOW + 3601));
    assert_eq!(
        r,
        Refusal::InviteExpired {
            expired_at: NOW + 3600
        }
    );
    w.join(&key(23), &later, "lekiwi-d", NOW + 3600)
        .expect("positive control");
    let r = refusal(w.join(&key(23), &later, "lekiwi-d", NOW + 3600));
    assert_eq!(r, Refusal::AlreadyMember(member(&key(23))));
    let r = refusal(w.join(&key(24), &later, "other-e", NOW));
    assert!(matches!(r, Refusal::NamePrefix { .. }), "{r}");
    let r = refusal(w.join(&key(24), &later, "lekiwi-a", NOW));
    assert_eq!(r, Refusal::NameTaken("lekiwi-a".into()));
}

#[test]
fn a_join_proof_made_for_one_robot_does_not_serve_another() {
    let mut w = World::new();
    let token = w.invite(&["production"], 5, NOW + 3600);
    let parsed = peercompute_fleet::JoinToken::parse(&token.to_text()).expect("a whole token");
    let stolen = parsed.proof_for(&member(&key(20)));
    let thief = key(30);
    let join = Op::Join(peercompute_fleet::Join {
        invite: parsed.entry.hash(),
        name: "lekiwi-x".into(),
        proof: stolen,
    });
    let r = refusal(w.write(&thief, join));
    assert_eq!(r, Refusal::BadJoinProof);
}

#[test]
fn a_forged_token_secret_is_detected_when_parsed() {
    let mut w = World::new();
    let mut token = w.invite(&["production"], 1, NOW + 3600);
    token.secret[0] ^= 1;
    let err = peercompute_fleet::JoinToken::parse(&token.to_text()).expect_err("refused");
    assert_eq!(err, peercompute_fleet::TokenError::Forged);
    let err = peercompute_fleet::JoinToken::parse("hello").expect_err("refused");
    assert!(err.to_string().contains("not a join token"), "{err}");
    let text = token.to_text();
    let err = peercompute_fleet::JoinToken::parse(&text[..text.len() - 5]).expect_err("refused");
    assert!(
        matches!(err, peercompute_fleet::TokenError::Damaged(_)),
        "{err}"
    );
}

#[test]
fn a_second_genesis_and_a_genesis_by_another_key_are_refused() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let again = peercompute_fleet::FleetLog::new(w.log.fleet());
    let second = again
        .author(
            &fk,
            Op::Genesis {
                name: "again".into(),
            },
            NOW,
        )
        .expect("accepted");
    let r = w.log.insert(second, NOW).expect_err("refused");
    assert!(
        matches!(
            r,
            InsertError::Refused {
                refusal: Refusal::Genesis,
                ..
            }
        ),
        "{r}"
    );
    let other = key(5);
    let mut fresh = peercompute_fleet::FleetLog::new(w.log.fleet());
    let g = fresh
        .author(
            &other,
            Op::Genesis {
                name: "mine".into(),
            },
            NOW,
        )
        .expect("accepted");
    let r = fresh.insert(g, NOW).expect_err("refused");
    assert!(
        matches!(
            r,
            InsertError::Refused {
                refusal: Refusal::Genesis,
                ..
            }
        ),
        "{r}"
    );
}
