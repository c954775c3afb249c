//! The consent rule, the deny set and the rotations' rules, without sockets.

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetLog, Grant, Op, Role};

use super::*;

const NOW: u64 = 1_780_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn mk(k: &SigningKey) -> peercompute_fleet::MemberKey {
    peercompute_fleet::MemberKey(k.verifying_key().to_bytes())
}

fn write(log: &mut FleetLog, by: &SigningKey, op: Op) {
    let e = log.author(by, op, NOW).expect("valid");
    log.insert(e, NOW).expect("accepted");
}

/// A fleet (root key 1) that enrolled robot 3 (it never writes) and granted person 4 (who
/// releases nothing but stops a group: an entry of its own).
fn enrolled_and_granted() -> FleetLog {
    let root = key(1);
    let mut log = FleetLog::new(peercompute_fleet::FleetId(mk(&root).0));
    write(&mut log, &root, Op::Genesis { name: "lab".into() });
    let enroll = Op::Enroll {
        member: mk(&key(3)),
        name: "r3".into(),
        groups: vec!["g".into()],
    };
    write(&mut log, &root, enroll);
    let grant = Op::Grant(Grant {
        member: mk(&key(4)),
        role: Role::Operator,
        groups: vec![],
        expires_at: None,
    });
    write(&mut log, &root, grant);
    write(&mut log, &key(4), Op::estop(vec!["g".into()], "drill"));
    log
}

/// [`enrolled_and_granted`], then both revoked.
fn fleet() -> FleetLog {
    let root = key(1);
    let mut log = enrolled_and_granted();
    for (k, why) in [(3, "stolen"), (4, "left")] {
        let revoke = Op::Revoke {
            member: mk(&key(k)),
            reason: why.into(),
        };
        write(&mut log, &root, revoke);
    }
    log
}

fn peer(seed: u8) -> PeerId {
    mk(&key(seed)).peer_id().expect("an ed25519 key")
}

#[test]
fn a_revoked_key_is_cut_only_if_it_took_part_in_the_fleet() {
    let log = fleet();
    // Person 4 wrote an entry here: cut. Robot 3 never wrote nor reported: not cut.
    let denied = denied_in(&log, &BTreeSet::new());
    assert_eq!(denied.keys().copied().collect::<Vec<_>>(), [peer(4)]);
    assert_eq!(denied[&peer(4)], "revoked in fleet lab: left");
    // Once robot 3 has sent this gateway a status of the fleet, it is cut too.
    let denied = denied_in(&log, &BTreeSet::from([peer(3)]));
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[&peer(3)], "revoked in fleet lab: stolen");
}

#[test]
fn a_status_in_another_fleet_gives_no_consent_here() {
    // Robot 3's status of some other fleet is not in this fleet's set: still not cut.
    let log = fleet();
    let elsewhere = BTreeSet::from([peer(9)]);
    assert!(!denied_in(&log, &elsewhere).contains_key(&peer(3)));
}

/// [`enrolled_and_granted`], then 3 rotated to 6, and 4 to 7 then 8.
fn rotated_fleet() -> FleetLog {
    let root = key(1);
    let mut log = enrolled_and_granted();
    for (old, new) in [(3, 6), (4, 7), (7, 8)] {
        let proof = peercompute_fleet::RotationProof::new(&key(old), &key(new));
        write(&mut log, &root, Op::RotateMember(proof));
    }
    log
}

#[test]
fn a_rotated_key_is_followed_only_if_it_took_part_in_the_fleet() {
    let log = rotated_fleet();
    // Person 4 wrote an entry: followed, to the end of its chain. Robot 3 never wrote nor
    // reported, and 7 never took part itself: not followed on their own.
    let rotated = rotated_in(&log, &BTreeSet::new());
    assert_eq!(rotated.keys().copied().collect::<Vec<_>>(), [peer(4)]);
    let four = &rotated[&peer(4)];
    assert_eq!(four.chain, [peer(7), peer(8)]);
    assert!(four.why.starts_with("rotated to 12D3KooW"), "{}", four.why);
    assert!(four.why.ends_with("in fleet lab"), "{}", four.why);
    let entry = peercompute_fleet::SignedEntry::decode(four.entry.as_deref().expect("entry"))
        .expect("an entry");
    assert!(
        matches!(&entry.entry().op, Op::RotateMember(p) if p.old == mk(&key(4)) && p.new == mk(&key(7)))
    );
    // Once robot 3 has sent this gateway a status of the fleet, it is followed too.
    let rotated = rotated_in(&log, &BTreeSet::from([peer(3)]));
    assert_eq!(rotated.len(), 2);
    assert_eq!(rotated[&peer(3)].chain, [peer(6)]);
    // A log with no rotation has none.
    assert!(rotated_in(&fleet(), &BTreeSet::from([peer(3)])).is_empty());
}

/// The aliases among `steps`, sorted.
fn aliases(steps: &[RotationStep]) -> Vec<(PeerId, PeerId)> {
    let mut pairs: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            RotationStep::Alias { new, old } => Some((*new, *old)),
            _ => None,
        })
        .collect();
    pairs.sort();
    pairs
}

fn others(steps: &[RotationStep]) -> Vec<RotationStep> {
    steps
        .iter()
        .filter(|s| !matches!(s, RotationStep::Alias { .. }))
        .cloned()
        .collect()
}

fn transfer(old: u8, new: u8) -> RotationStep {
    RotationStep::Transfer {
        old: peer(old),
        new: peer(new),
    }
}

#[test]
fn names_move_at_once_and_the_old_key_is_denied_once_its_successor_has_a_tunnel() {
    let log = rotated_fleet();
    let fleet_id = peercompute_fleet::FleetId(mk(&key(1)).0);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut follower = Follower::load(dir.path(), &[]);
    let rotated = rotated_in(&log, &BTreeSet::from([peer(3)]));
    let entry_3 = rotated[&peer(3)].entry.clone().expect("entry");
    follower.rotations.insert(fleet_id, rotated);
    let denied = |f: &Follower| f.rotated_out.keys().copied().collect::<Vec<_>>();

    // Robot 3 still serves with its old key: each key of a chain is admitted where the one
    // before it is, names go to the chain's end, the entry is pushed to 3 (connected), and
    // nobody is denied yet.
    let steps = follower.plan_rotations(|p| *p == peer(3));
    let mut expected = vec![(peer(6), peer(3)), (peer(7), peer(4)), (peer(8), peer(7))];
    expected.sort();
    assert_eq!(aliases(&steps), expected);
    let push = RotationStep::Push {
        old: peer(3),
        fleet: fleet_id,
        entry: entry_3,
    };
    let mut moved = others(&steps);
    moved.sort_by_key(|s| format!("{s:?}"));
    let mut want = vec![transfer(3, 6), push, transfer(4, 8)];
    want.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(moved, want);
    assert!(denied(&follower).is_empty());

    // Looked at again (each second): the aliases only; nothing pushed twice.
    let steps = follower.plan_rotations(|p| *p == peer(3));
    assert!(others(&steps).is_empty(), "{steps:?}");

    // 6 has a tunnel (the robot restarted with its new key): 3 is denied from now on, and
    // names it took meanwhile move too.
    let steps = follower.plan_rotations(|p| [peer(3), peer(6)].contains(p));
    assert_eq!(others(&steps), [transfer(3, 6)]);
    assert_eq!(denied(&follower), [peer(3)]);
    assert_eq!(
        follower.rotated_out[&peer(3)],
        rotated_in(&log, &BTreeSet::from([peer(3)]))[&peer(3)].why
    );

    // 6 drops its tunnel: 3 stays denied.
    follower.plan_rotations(|_| false);
    assert_eq!(denied(&follower), [peer(3)]);

    // 8, the end of 4's chain, connects: 4 and 7 (between them) are denied.
    let steps = follower.plan_rotations(|p| *p == peer(8));
    assert_eq!(others(&steps), [transfer(4, 8)]);
    let mut want = vec![peer(3), peer(4), peer(7)];
    want.sort();
    assert_eq!(denied(&follower), want);
}
