//! The file states `finish_pending` meets, with a real fleet log on disk.

use std::path::Path;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetId, FleetStore, Op};

use super::*;

/// A fleet under `<home>/fleet/<id>` whose root enrolled `robot`, and, when `to` is given,
/// rotated it to `to`.
fn fleet_with(home: &Path, robot: &SigningKey, to: Option<&SigningKey>) {
    let root = SigningKey::from_bytes(&[9; 32]);
    let fleet = FleetId(root.verifying_key().to_bytes());
    let dir = crate::fleet::fleet_dir(home).join(fleet.to_string());
    let now = unix_now();
    let (mut store, _) = FleetStore::open(&dir, fleet, now).expect("open");
    let mut write = |op: Op| {
        let entry = store.log().author(&root, op, now).expect("valid");
        store.insert(entry, now).expect("stored");
    };
    write(Op::Genesis { name: "lab".into() });
    write(Op::Enroll {
        member: MemberKey(robot.verifying_key().to_bytes()),
        name: "r1".into(),
        groups: vec!["g".into()],
    });
    if let Some(to) = to {
        write(Op::RotateMember(RotationProof::new(robot, to)));
    }
}

fn key_of(home: &Path, file: &str) -> PeerId {
    Identity::load_file(&home.join(file))
        .expect("a key")
        .peer_id()
}

fn files(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(home)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("identity") || n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn nothing_pending_changes_nothing() {
    let home = tempfile::tempdir().expect("home");
    let (id, _) = Identity::load_or_create(home.path()).expect("identity");
    assert_eq!(
        finish_pending(home.path()).expect("finish"),
        Switch::Nothing
    );
    assert_eq!(key_of(home.path(), "identity.key"), id.peer_id());
}

#[test]
fn request_is_idempotent_and_writes_the_next_key_0600() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("home");
    let first = request(home.path()).expect("request");
    assert!(first.created);
    let again = request(home.path()).expect("again");
    assert!(!again.created);
    assert_eq!(first.token, again.token, "the same token");
    assert_eq!((first.old, first.new), (again.old, again.new));
    let proof = RotationProof::parse(&first.token).expect("a valid token");
    assert_eq!(proof.old.peer_id(), Some(first.old));
    assert_eq!(proof.new.peer_id(), Some(first.new));
    let mode = fs::metadata(home.path().join(NEXT_KEY_FILE))
        .expect("next key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(files(home.path()), ["identity.key", NEXT_KEY_FILE]);
}

#[test]
fn a_next_key_the_log_does_not_name_changes_nothing() {
    let home = tempfile::tempdir().expect("home");
    let req = request(home.path()).expect("request");
    let (current, _) = Identity::load_or_create(home.path()).expect("identity");
    // Enrolled, not rotated.
    fleet_with(home.path(), current.signing_key(), None);
    assert_eq!(
        finish_pending(home.path()).expect("finish"),
        Switch::Pending { next: req.new }
    );
    // Rotated, but to another key than the pending one.
    let other = Identity::generate().expect("other");
    let home2 = tempfile::tempdir().expect("home");
    let req2 = request(home2.path()).expect("request");
    let (current2, _) = Identity::load_or_create(home2.path()).expect("identity");
    fleet_with(
        home2.path(),
        current2.signing_key(),
        Some(other.signing_key()),
    );
    assert_eq!(
        finish_pending(home2.path()).expect("finish"),
        Switch::Pending { next: req2.new }
    );
    for (home, req) in [(&home, &req), (&home2, &req2)] {
        assert_eq!(key_of(home.path(), "identity.key"), req.old);
        assert_eq!(key_of(home.path(), NEXT_KEY_FILE), req.new);
    }
}

#[test]
fn a_rotation_in_the_log_switches_keys_once() {
    let home = tempfile::tempdir().expect("home");
    let req = request(home.path()).expect("request");
    let (current, _) = Identity::load_or_create(home.path()).expect("identity");
    let next = Identity::load_file(&home.path().join(NEXT_KEY_FILE)).expect("next");
    fleet_with(home.path(), current.signing_key(), Some(next.signing_key()));
    assert_eq!(
        finish_pending(home.path()).expect("finish"),
        Switch::Switched {
            old: Some(req.old),
            new: req.new
        }
    );
    let names = files(home.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "identity.key");
    assert!(names[1].starts_with("identity.key.retired-"), "{names:?}");
    assert_eq!(key_of(home.path(), "identity.key"), req.new);
    assert_eq!(key_of(home.path(), &names[1]), req.old);
    // Started again: nothing pending any more.
    assert_eq!(finish_pending(home.path()).expect("again"), Switch::Nothing);
}

/// A home whose switch was cut by a crash after its first rename (the old key set aside,
/// the next one not yet renamed), with the log that allowed it.
fn crashed_home() -> (tempfile::TempDir, RotationRequest) {
    let home = tempfile::tempdir().expect("home");
    let req = request(home.path()).expect("request");
    let (current, _) = Identity::load_or_create(home.path()).expect("identity");
    let next = Identity::load_file(&home.path().join(NEXT_KEY_FILE)).expect("next");
    fleet_with(home.path(), current.signing_key(), Some(next.signing_key()));
    fs::rename(
        home.path().join("identity.key"),
        home.path().join("identity.key.retired-1"),
    )
    .expect("first rename");
    (home, req)
}

#[test]
fn a_switch_cut_between_the_renames_is_finished_at_the_next_start() {
    let (home, req) = crashed_home();
    assert_eq!(
        finish_pending(home.path()).expect("finish"),
        Switch::Switched {
            old: None,
            new: req.new
        }
    );
    assert_eq!(key_of(home.path(), "identity.key"), req.new);
    assert_eq!(
        files(home.path()),
        ["identity.key", "identity.key.retired-1"]
    );
    // `rotate-key` in that state finishes the switch too, and never makes a fresh key over it.
    let (home, req) = crashed_home();
    let again = request(home.path()).expect("request after the crash");
    assert_eq!(again.old, req.new, "the switch was finished first");
    assert!(again.created);
}

#[test]
fn a_next_key_without_any_identity_becomes_the_identity() {
    // The identity crate's rule: with no identity.key the switch was cut after its first
    // rename, so it is finished whatever the log says.
    let home = tempfile::tempdir().expect("home");
    let next = Identity::generate().expect("next");
    next.save_file(&home.path().join(NEXT_KEY_FILE))
        .expect("save");
    assert_eq!(
        finish_pending(home.path()).expect("finish"),
        Switch::Switched {
            old: None,
            new: next.peer_id()
        }
    );
    assert_eq!(files(home.path()), ["identity.key"]);
}

/// What the running daemon's watch sees, over a hub opened on the robot's fleet directory.
fn seen(home: &Path) -> Seen {
    let policy = peercompute_p2p::fleet_hub::HubPolicy {
        admit: std::sync::Arc::new(|_| true),
        accept_new_fleets: false,
        max_fleets: 4,
        max_entries: 1000,
    };
    let (hub, _) = FleetHub::open(&crate::fleet::fleet_dir(home), policy).expect("hub");
    let me = Identity::load(home).expect("identity");
    rotated_here(&hub, home, &MemberKey(me.public_key_bytes()))
}

#[test]
fn the_running_daemon_switches_only_for_its_own_pending_key() {
    // Enrolled, not rotated: nothing (and the next key's file is not even read).
    let home = tempfile::tempdir().expect("home");
    let (current, _) = Identity::load_or_create(home.path()).expect("identity");
    fleet_with(home.path(), current.signing_key(), None);
    assert!(matches!(seen(home.path()), Seen::Nothing));

    // Rotated to its pending next key: switch to it.
    let home = tempfile::tempdir().expect("home");
    let req = request(home.path()).expect("request");
    let (current, _) = Identity::load_or_create(home.path()).expect("identity");
    let next = Identity::load_file(&home.path().join(NEXT_KEY_FILE)).expect("next");
    fleet_with(home.path(), current.signing_key(), Some(next.signing_key()));
    assert!(matches!(seen(home.path()), Seen::Switch(peer) if peer == req.new));

    // Rotated to a key it does not hold: no switch, said once.
    let home = tempfile::tempdir().expect("home");
    request(home.path()).expect("request");
    let (current, _) = Identity::load_or_create(home.path()).expect("identity");
    let other = Identity::generate().expect("other");
    fleet_with(
        home.path(),
        current.signing_key(),
        Some(other.signing_key()),
    );
    match seen(home.path()) {
        Seen::Elsewhere { fleet, to } => {
            assert_eq!(fleet, "lab");
            assert_eq!(to.peer_id(), Some(other.peer_id()));
        }
        _ => panic!("rotated elsewhere"),
    }
}
