//! The fleet log on disk (`FleetStore`, feature `fs`, turned on for tests by the crate's
//! dev-dependency on itself): what is saved loads again to the same state, and what is damaged
//! on disk — a flipped byte, a file under the wrong name — is named in the load report with
//! the entries that depend on it, and kept out of the state.

mod support;

use std::fs;
use std::path::Path;

use peercompute_fleet::{
    BadEntry, DecodeError, EntryHash, FleetStore, InsertError, Inserted, LoadReport, Role,
    SignedEntry, StoreError,
};
use support::*;

/// genesis → grant of a developer → the developer's release → a robot enrolled: a chain, each
/// entry on the one before.
fn history() -> (World, Vec<SignedEntry>) {
    let mut w = World::new();
    w.grant(&key(11), Role::Developer, &[], None);
    w.write(&key(11), release("production", 1, "v1"))
        .expect("the developer releases");
    w.enroll(&key(20), "lekiwi-1", &["production"]);
    let entries = w.log.iter().cloned().collect();
    (w, entries)
}

fn saved(dir: &Path) -> (World, Vec<SignedEntry>) {
    let (w, entries) = history();
    let (mut store, report) = FleetStore::open(dir, w.log.fleet(), LATER).expect("opens");
    assert_eq!(report, LoadReport::default());
    for entry in &entries {
        let inserted = store.insert(entry.clone(), LATER).expect("stored");
        assert_eq!(inserted, Inserted::New);
    }
    (w, entries)
}

fn file_of(hash: &EntryHash) -> String {
    format!("{hash}.entry")
}

fn missing_parent(entry: &SignedEntry) -> BadEntry {
    BadEntry {
        file: file_of(&entry.hash()),
        reason: InsertError::MissingParents {
            hash: entry.hash(),
            missing: entry.entry().parents.clone(),
        }
        .to_string(),
    }
}

#[test]
fn saved_entries_load_again_to_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, entries) = saved(dir.path());
    for entry in &entries {
        let path = dir.path().join("entries").join(file_of(&entry.hash()));
        assert_eq!(fs::read(&path).expect("an entry file"), entry.bytes());
    }
    let (mut store, report) = FleetStore::open(dir.path(), w.log.fleet(), LATER).expect("opens");
    assert_eq!(report, LoadReport::default());
    assert_eq!(store.log().state(), w.log.state());
    assert_eq!(store.log().heads(), w.log.heads());
    assert_eq!(store.log().len(), entries.len());
    let again = store.insert(entries[1].clone(), LATER).expect("known");
    assert_eq!(again, Inserted::Duplicate);
}

#[test]
fn a_flipped_byte_on_disk_is_named_with_the_entries_that_depend_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, entries) = saved(dir.path());
    let grant = &entries[1];
    let path = dir.path().join("entries").join(file_of(&grant.hash()));
    let mut bytes = fs::read(&path).expect("the grant's file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).expect("damaged");

    let (store, report) = FleetStore::open(dir.path(), w.log.fleet(), LATER).expect("opens");
    let damaged = BadEntry {
        file: file_of(&grant.hash()),
        reason: DecodeError::BadSignature(grant.entry().author).to_string(),
    };
    let expected = vec![
        damaged,
        missing_parent(&entries[2]),
        missing_parent(&entries[3]),
    ];
    assert_eq!(report.bad, expected);
    let state = store.log().state().expect("the genesis loads");
    assert!(state.grants.is_empty(), "{:?}", state.grants);
    assert!(state.groups.is_empty() && state.members.is_empty());
    assert_eq!(store.log().heads(), vec![entries[0].hash()]);
}

#[test]
fn a_file_under_the_wrong_name_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, entries) = saved(dir.path());
    let release = &entries[2];
    let wrong = EntryHash([0xab; 32]);
    let entries_dir = dir.path().join("entries");
    fs::rename(
        entries_dir.join(file_of(&release.hash())),
        entries_dir.join(file_of(&wrong)),
    )
    .expect("renamed");

    let (store, report) = FleetStore::open(dir.path(), w.log.fleet(), LATER).expect("opens");
    let renamed = BadEntry {
        file: file_of(&wrong),
        reason: format!("its contents hash to {}, not its name", release.hash()),
    };
    assert_eq!(report.bad, vec![renamed, missing_parent(&entries[3])]);
    let state = store.log().state().expect("the genesis loads");
    assert_eq!(state.grants.len(), 1, "the grant before it loads");
    assert!(state.groups.is_empty(), "the release is not trusted");
}

#[test]
fn a_refused_entry_is_not_written_and_other_files_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, entries) = saved(dir.path());
    let (mut store, _) = FleetStore::open(dir.path(), w.log.fleet(), LATER).expect("opens");
    let stranger = forge(store.log(), &key(9), release("production", 2, "v2"), NOW);
    match store.insert(stranger.clone(), LATER) {
        Err(StoreError::Insert(InsertError::Refused { hash, .. })) => {
            assert_eq!(hash, stranger.hash());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!store.path_of(&stranger.hash()).exists());
    assert_eq!(store.log().len(), entries.len());
    // What an interrupted atomic write leaves, and files that are not entries.
    let entries_dir = dir.path().join("entries");
    let tmp = format!(".{}.tmp-4242", file_of(&stranger.hash()));
    fs::write(entries_dir.join(tmp), stranger.bytes()).expect("written");
    fs::write(entries_dir.join("notes.txt"), b"hello").expect("written");
    let (store, report) = FleetStore::open(dir.path(), w.log.fleet(), LATER).expect("opens");
    assert_eq!(report, LoadReport::default());
    assert_eq!(store.log().state(), w.log.state());
}
