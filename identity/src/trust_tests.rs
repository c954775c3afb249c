//! Table tests of the trust store (`trust.rs`): editing, validation, corrupt files, and the
//! watcher applying changes without a restart.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::Identity;

fn new_peer() -> PeerId {
    Identity::generate().expect("generate").peer_id()
}

const NO_ADDRS: &[&str] = &[];

#[test]
fn missing_file_is_an_empty_store() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = TrustStore::open(home.path()).expect("open");
    assert!(store.list().is_empty());
    assert!(!store.is_trusted(&new_peer()));
    assert!(
        !home.path().join(TRUST_FILE).exists(),
        "opening writes nothing"
    );
}

#[test]
fn add_list_resolve_remove() {
    let home = tempfile::tempdir().expect("tempdir");
    let (a, b) = (new_peer(), new_peer());
    let mut store = TrustStore::open(home.path()).expect("open");
    let addr = "/ip4/192.0.2.7/tcp/9000";
    let got = store.add(&a.to_string(), Some("laptop"), &[addr]);
    assert_eq!(got.expect("add a"), AddOutcome::Added);
    let with_p2p = format!("/dns4/box.example.com/tcp/9000/p2p/{b}");
    store
        .add(&format!(" {b}\n"), None, &[with_p2p.as_str()])
        .expect("add b");

    let reopened = TrustStore::open(home.path()).expect("reopen");
    assert_eq!(reopened.list(), store.list());
    assert_eq!(reopened.list().len(), 2);
    let entry = reopened.resolve("laptop").expect("by alias");
    assert_eq!(entry.peer_id, a);
    assert_eq!(entry.addrs, vec![addr.parse::<Multiaddr>().expect("addr")]);
    assert_eq!(reopened.resolve(&b.to_string()).expect("by id").peer_id, b);
    assert!(reopened.is_trusted(&a) && reopened.is_trusted(&b));

    let mode = fs::metadata(store.path())
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = fs::read_to_string(store.path()).expect("read");
    assert!(
        text.contains(r#""version": 1"#) && text.contains(r#""alias": "laptop""#),
        "{text}"
    );

    assert_eq!(store.remove("laptop").expect("remove by alias").peer_id, a);
    assert_eq!(
        store.remove(&b.to_string()).expect("remove by id").peer_id,
        b
    );
    assert!(
        TrustStore::open(home.path())
            .expect("reopen")
            .list()
            .is_empty()
    );
    let err = store.remove("laptop").expect_err("gone");
    assert!(err.to_string().contains("peers list"), "{err}");
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut store = TrustStore::open(home.path()).expect("open");
    let peer = new_peer();
    let other = new_peer();
    let mut sha256_id = vec![0x12, 0x20];
    sha256_id.extend_from_slice(&[7; 32]);
    let hashed = PeerId::from_bytes(&sha256_id)
        .expect("sha256 peer id")
        .to_string();
    let id = peer.to_string();
    let other_p2p = format!("/ip4/192.0.2.7/tcp/9000/p2p/{other}");
    let (long_alias, other_id) = ("a".repeat(65), other.to_string());
    // (peer id, alias, address, what the message must mention)
    let cases: Vec<(&str, Option<&str>, Option<&str>, &str)> = vec![
        ("", None, None, "not a peer id"),
        ("hello", None, None, "12D3KooW"),
        ("12D3KooWbad", None, None, "not a peer id"),
        (&hashed, None, None, "not an Ed25519 peer id"),
        (&id, None, Some("192.0.2.7:9000"), "/ip4/192.0.2.7/tcp/9000"),
        (&id, None, Some("/ip4/300.1.1.1/tcp/1"), "not a multiaddr"),
        (&id, None, Some("/tcp/notaport"), "not a multiaddr"),
        (&id, None, Some("/"), "not a multiaddr"),
        (&id, None, Some(""), "empty"),
        (&id, None, Some(&other_p2p), "another peer"),
        (&id, Some(""), None, "1 to 64"),
        (&id, Some("has space"), None, "only letters"),
        (&id, Some("-x"), None, "start with"),
        (&id, Some(&long_alias), None, "1 to 64"),
        (&id, Some(&other_id), None, "is a peer id"),
    ];
    for (peer_text, alias, addr, needle) in cases {
        let addrs: Vec<&str> = addr.into_iter().collect();
        let err = store
            .add(peer_text, alias, &addrs)
            .expect_err(&format!("{peer_text:?} {alias:?} {addr:?} must be refused"));
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg} should mention {needle}");
    }
    assert!(!store.path().exists(), "nothing was written");
    // Positive control with the same peer.
    store
        .add(&id, Some("ok-alias.1"), &["/ip6/::1/udp/9000/quic-v1"])
        .expect("valid");
}

#[test]
fn aliases_are_unique_and_readding_updates() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut store = TrustStore::open(home.path()).expect("open");
    let (a, b) = (new_peer(), new_peer());
    store
        .add(&a.to_string(), Some("box"), &["/ip4/10.0.0.1/tcp/9000"])
        .expect("a");
    let err = store
        .add(&b.to_string(), Some("box"), NO_ADDRS)
        .expect_err("alias taken");
    assert!(matches!(err, TrustError::AliasTaken { .. }), "{err}");
    assert!(!store.is_trusted(&b));

    let again = store.add(
        &a.to_string(),
        None,
        &["/ip4/10.0.0.2/tcp/9000", "/ip4/10.0.0.1/tcp/9000"],
    );
    assert_eq!(again.expect("re-add"), AddOutcome::Updated);
    let entry = store.resolve("box").expect("alias kept");
    assert_eq!(entry.addrs.len(), 2, "addresses merged without duplicates");
    let added_at = entry.added_at;
    store
        .add(&a.to_string(), Some("server"), NO_ADDRS)
        .expect("rename");
    assert!(store.resolve("box").is_err());
    let entry = store.resolve("server").expect("new alias");
    assert_eq!((entry.addrs.len(), entry.added_at), (2, added_at));
    assert_eq!(store.list().len(), 1);
    // The old alias is free again.
    store
        .add(&b.to_string(), Some("box"), NO_ADDRS)
        .expect("b takes box");
}

#[test]
fn changes_by_another_process_are_not_lost() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut first = TrustStore::open(home.path()).expect("open");
    let mut second = TrustStore::open(home.path()).expect("open");
    let (a, b) = (new_peer(), new_peer());
    first.add(&a.to_string(), None, NO_ADDRS).expect("a");
    second.add(&b.to_string(), None, NO_ADDRS).expect("b");
    let store = TrustStore::open(home.path()).expect("reopen");
    assert!(store.is_trusted(&a) && store.is_trusted(&b));
}

#[test]
fn corrupt_files_are_reported_and_kept() {
    let peer = new_peer();
    let entry = |fields: &str| format!(r#"{{"version":1,"peers":[{{{fields}}}]}}"#);
    let ok = format!(r#""peer_id":"{peer}","added_at":"2026-11-21T15:00:00Z""#);
    let cases = [
        "not json".to_owned(),
        String::new(),
        r#"{"version":2,"peers":[]}"#.to_owned(),
        r#"{"version":1,"peers":[],"extra":true}"#.to_owned(),
        entry(&format!(r#"{ok},"trusted":"always""#)),
        entry(r#""peer_id":"nope","added_at":"2026-11-21T15:00:00Z""#),
        entry(&format!(r#"{ok},"addrs":["not/an/addr"]"#)),
        entry(&format!(r#""peer_id":"{peer}","added_at":"yesterday""#)),
        format!(r#"{{"version":1,"peers":[{{{ok}}},{{{ok}}}]}}"#),
    ];
    for content in cases {
        let home = tempfile::tempdir().expect("tempdir");
        let path = home.path().join(TRUST_FILE);
        fs::write(&path, &content).expect("write");
        let err = TrustStore::open(home.path()).expect_err(&content);
        let msg = err.to_string();
        assert!(
            matches!(err, TrustError::Corrupt { .. }),
            "{content}: {msg}"
        );
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("mv "),
            "{msg}"
        );
        assert!(TrustWatcher::open(home.path()).is_err());
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            content,
            "never replaced"
        );
    }
    // Positive control.
    let home = tempfile::tempdir().expect("tempdir");
    fs::write(home.path().join(TRUST_FILE), entry(&ok)).expect("write");
    assert!(
        TrustStore::open(home.path())
            .expect("valid")
            .is_trusted(&peer)
    );
}

#[test]
fn edits_on_a_corrupt_file_are_refused() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut store = TrustStore::open(home.path()).expect("open");
    fs::write(store.path(), "{oops").expect("corrupt it");
    let err = store.add(&new_peer().to_string(), None, NO_ADDRS);
    assert!(matches!(err, Err(TrustError::Corrupt { .. })));
    assert!(matches!(store.remove("x"), Err(TrustError::Corrupt { .. })));
    assert_eq!(fs::read_to_string(store.path()).expect("read"), "{oops");
}

#[test]
fn watcher_applies_changes_without_restart() {
    let home = tempfile::tempdir().expect("tempdir");
    let watcher = TrustWatcher::open(home.path()).expect("watch");
    let mut store = TrustStore::open(home.path()).expect("open");
    let peer = new_peer();
    assert!(!watcher.is_trusted(&peer));

    store
        .add(&peer.to_string(), Some("p"), NO_ADDRS)
        .expect("add");
    assert!(watcher.is_trusted(&peer), "added while watching");
    let reads = watcher.state.lock().expect("lock").reads;
    for _ in 0..100 {
        assert!(watcher.is_trusted(&peer));
    }
    let unchanged = watcher.state.lock().expect("lock").reads;
    assert_eq!(unchanged, reads, "an unchanged file is not re-read");
    assert_eq!(
        watcher.peers().expect("peers")[0].alias.as_deref(),
        Some("p")
    );

    store.remove("p").expect("remove");
    assert!(!watcher.is_trusted(&peer), "removed while watching");

    store
        .add(&peer.to_string(), None, NO_ADDRS)
        .expect("re-add");
    assert!(watcher.is_trusted(&peer));
    let good = fs::read(store.path()).expect("read");
    fs::write(store.path(), b"{broken").expect("corrupt");
    assert!(!watcher.is_trusted(&peer), "a corrupt file trusts nobody");
    assert!(matches!(
        watcher.check(&peer),
        Err(TrustError::Corrupt { .. })
    ));
    write_atomic(store.path(), &good, 0o600).expect("fix");
    assert!(watcher.is_trusted(&peer), "fixed file applies again");

    fs::remove_file(store.path()).expect("delete");
    assert!(!watcher.is_trusted(&peer), "a deleted file trusts nobody");
}
