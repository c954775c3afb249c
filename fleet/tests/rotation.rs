//! Key rotation in the fold (issue 13): a member's key moves to a new key it vouched for and
//! keeps its name, groups and grant; the old key is retired (later entries refused, entries
//! concurrent with the rotation void); forged proofs and keys already in the fleet are
//! refused; the root key chains to a new root and the old one is refused after it.

mod support;

use peercompute_fleet::{FleetLog, Op, Refusal, Role, RotationProof, SignedEntry, root_possession};
use support::*;

#[test]
fn a_rotated_robot_keeps_its_name_and_groups_and_its_old_key_is_retired() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let (old, new) = (key(40), key(41));
    w.enroll(&old, "lekiwi-1", &["production"]);
    let proof = RotationProof::new(&old, &new);
    w.write(&fk, Op::RotateMember(proof.clone()))
        .expect("the admin rotates it");
    let s = w.log.state().expect("state");
    let moved = &s.members[&member(&new)];
    assert_eq!(
        (moved.name.as_str(), moved.groups.as_slice(), moved.key),
        ("lekiwi-1", &["production".to_string()][..], member(&new))
    );
    assert!(!s.members.contains_key(&member(&old)));
    assert_eq!(s.retired.get(&member(&old)), Some(&member(&new)));
    // The same proof again: the old key is retired now.
    let r = refusal(w.write(&fk, Op::RotateMember(proof)));
    assert_eq!(
        r,
        Refusal::Retired {
            old: member(&old),
            new: member(&new)
        }
    );
    // The old key cannot come back by enrolment either.
    let r = refusal(w.write(
        &fk,
        Op::Enroll {
            member: member(&old),
            name: "lekiwi-9".into(),
            groups: vec![],
        },
    ));
    assert!(matches!(r, Refusal::Retired { .. }), "{r:?}");
}

#[test]
fn a_grant_moves_to_the_new_key_and_the_old_key_may_no_longer_act() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let (old, new) = (key(11), key(12));
    w.grant(&old, Role::Developer, &["staging"], None);
    w.write(&old, release("staging", 1, "v1"))
        .expect("old key releases");
    // A developer rotates its own key: an admin must write it (its vouch is not enough).
    let proof = RotationProof::new(&old, &new);
    let r = refusal(w.write(&old, Op::RotateMember(proof.clone())));
    assert!(matches!(r, Refusal::RoleMayNot { .. }), "{r:?}");
    w.write(&fk, Op::RotateMember(proof)).expect("rotated");
    let grant = &w.log.state().expect("state").grants[&member(&new)];
    assert_eq!(
        (grant.role, grant.groups.as_slice()),
        (Role::Developer, &["staging".to_string()][..])
    );
    w.write(&new, release("staging", 2, "v2"))
        .expect("new key releases");
    let r = refusal(w.write(&old, release("staging", 3, "v3")));
    assert!(matches!(r, Refusal::Retired { .. }), "{r:?}");
}

#[test]
fn forged_proofs_and_keys_in_use_are_refused() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let (old, new, other) = (key(40), key(41), key(42));
    w.enroll(&old, "lekiwi-1", &["production"]);
    w.enroll(&other, "lekiwi-2", &["production"]);
    // A thief claims the robot's name for its own key: the vouch does not cover it.
    let mut stolen = RotationProof::new(&old, &new);
    stolen.new = member(&key(66));
    assert_eq!(
        refusal(w.write(&fk, Op::RotateMember(stolen))),
        Refusal::BadRotationProof
    );
    // Signatures swapped between their roles.
    let mut swapped = RotationProof::new(&old, &new);
    std::mem::swap(&mut swapped.vouch, &mut swapped.possession);
    assert_eq!(
        refusal(w.write(&fk, Op::RotateMember(swapped))),
        Refusal::BadRotationProof
    );
    // Onto another member's key.
    let r = refusal(w.write(&fk, Op::RotateMember(RotationProof::new(&old, &other))));
    assert_eq!(r, Refusal::KeyInUse(member(&other)));
    // Onto the fleet key.
    let r = refusal(w.write(&fk, Op::RotateMember(RotationProof::new(&old, &fk))));
    assert_eq!(r, Refusal::KeyInUse(member(&fk)));
    // A stranger's key.
    let r = refusal(w.write(
        &fk,
        Op::RotateMember(RotationProof::new(&key(77), &key(78))),
    ));
    assert_eq!(r, Refusal::UnknownMember(member(&key(77))));
    // Positive control: the honest proof goes in.
    w.write(&fk, Op::RotateMember(RotationProof::new(&old, &new)))
        .expect("rotated");
}

#[test]
fn entries_of_the_old_key_concurrent_with_its_rotation_are_void_in_every_order() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let (old, new) = (key(11), key(12));
    w.grant(&old, Role::Developer, &[], None);
    let v1 = w.write(&old, release("production", 1, "v1")).expect("v1");
    let base = w.log.clone();
    let branch = || World {
        fleet_key: fk.clone(),
        log: base.clone(),
    };
    let (mut a, mut b) = (branch(), branch());
    let rotate = a
        .write(&fk, Op::RotateMember(RotationProof::new(&old, &new)))
        .expect("rotate");
    // The old key, copied before the rotation, keeps releasing on the old heads.
    let v2 = b.write(&old, release("production", 2, "v2")).expect("v2");
    let orders: [&[&SignedEntry]; 2] = [&[&rotate, &v2], &[&v2, &rotate]];
    let logs: Vec<FleetLog> = orders.iter().map(|o| insert_all(&base, o)).collect();
    assert_eq!(logs[0].state(), logs[1].state());
    assert_eq!(logs[0].heads(), logs[1].heads());
    let production = &logs[0].state().expect("state").groups["production"];
    assert_eq!(production.desired().map(|r| r.hash), Some(v1.hash()));
    assert!(logs[0].contains(&v2.hash()), "stored, skipped by the fold");
}

#[test]
fn the_root_chains_to_a_new_key_and_the_old_root_is_refused_after() {
    let mut w = World::new();
    let fk = w.fleet_key.clone();
    let (root2, root3, dev) = (key(50), key(51), key(11));
    let fleet = w.log.fleet();
    // Only the root may hand the fleet over, and the new key must prove it is held.
    w.grant(&key(21), Role::Admin, &[], None);
    let r = refusal(w.write(
        &key(21),
        Op::RotateRoot {
            new: member(&root2),
            possession: root_possession(&root2, fleet),
        },
    ));
    assert_eq!(r, Refusal::RootOnly);
    let r = refusal(w.write(
        &fk,
        Op::RotateRoot {
            new: member(&root2),
            possession: root_possession(&root3, fleet),
        },
    ));
    assert_eq!(r, Refusal::BadRotationProof);
    let other_fleet = peercompute_fleet::FleetId([9; 32]);
    let r = refusal(w.write(
        &fk,
        Op::RotateRoot {
            new: member(&root2),
            possession: root_possession(&root2, other_fleet),
        },
    ));
    assert_eq!(r, Refusal::BadRotationProof);
    w.write(
        &fk,
        Op::RotateRoot {
            new: member(&root2),
            possession: root_possession(&root2, fleet),
        },
    )
    .expect("root → root2");
    let grant = |who: &ed25519_dalek::SigningKey| {
        Op::Grant(peercompute_fleet::Grant {
            member: member(who),
            role: Role::Developer,
            groups: vec![],
            expires_at: None,
        })
    };
    let r = refusal(w.write(&fk, grant(&dev)));
    assert_eq!(
        r,
        Refusal::Retired {
            old: member(&fk),
            new: member(&root2)
        }
    );
    w.write(&root2, grant(&dev)).expect("the new root grants");
    let r = refusal(w.write(
        &root2,
        Op::Revoke {
            member: member(&root2),
            reason: "x".into(),
        },
    ));
    assert_eq!(r, Refusal::RootKey);
    // And on again: root2 → root3; root2 is retired in turn.
    w.write(
        &root2,
        Op::RotateRoot {
            new: member(&root3),
            possession: root_possession(&root3, fleet),
        },
    )
    .expect("root2 → root3");
    assert!(matches!(
        refusal(w.write(&root2, grant(&key(12)))),
        Refusal::Retired { .. }
    ));
    let s = w.log.state().expect("state");
    assert_eq!(s.root, member(&root3));
    // A member that learns the whole log from scratch folds the same state.
    let mut fresh = FleetLog::new(fleet);
    for e in w.log.iter() {
        fresh.insert(e.clone(), LATER).expect("accepted");
    }
    assert_eq!(fresh.state(), w.log.state());
}
