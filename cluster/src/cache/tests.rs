use super::*;

fn name(name: &str, rev: i64, owner: Option<&str>) -> Update {
    Update::Name {
        name: name.to_owned(),
        rev,
        record: owner.map(|owner| NameRecord {
            owner: owner.to_owned(),
            at: 1,
            by: "gw".to_owned(),
        }),
    }
}

fn revoke(peer: &str, rev: i64, reason: Option<&str>) -> Update {
    Update::Peer {
        set: PeerSet::Revoked,
        peer: peer.to_owned(),
        rev,
        record: reason.map(|reason| PeerRecord {
            reason: reason.to_owned(),
            by: "gw".to_owned(),
        }),
    }
}

fn owner(cache: &Cache, n: &str) -> Option<String> {
    cache.names.get(n).map(|r| r.owner.clone())
}

const NAMES: Changed = Changed {
    names: true,
    peers: false,
};
const PEERS: Changed = Changed {
    names: false,
    peers: true,
};
const NONE: Changed = Changed {
    names: false,
    peers: false,
};

#[test]
fn watch_events_apply_in_order_and_say_what_changed() {
    let mut cache = Cache::default();
    assert_eq!(cache.replace(vec![name("blog", 3, Some("a"))], 5), NAMES);
    assert_eq!(cache.revision(), 5);
    // (events of one response, its revision, what it changed, blog's owner after)
    let table: [(Vec<Update>, i64, Changed, Option<&str>); 6] = [
        (vec![name("blog", 6, None)], 6, NAMES, None),
        (vec![name("blog", 7, Some("b"))], 7, NAMES, Some("b")),
        // The same put again (a watch restarted from an older revision): nothing new.
        (vec![name("blog", 7, Some("b"))], 7, NONE, Some("b")),
        // A rewrite with the same value: readers see no change.
        (vec![name("blog", 8, Some("b"))], 8, NONE, Some("b")),
        (vec![revoke("p", 9, Some("stolen"))], 9, PEERS, Some("b")),
        (
            vec![name("blog", 10, None), revoke("p", 10, None)],
            10,
            Changed {
                names: true,
                peers: true,
            },
            None,
        ),
    ];
    for (i, (updates, rev, changed, want)) in table.into_iter().enumerate() {
        assert_eq!(cache.apply_watch(updates, rev), changed, "row {i}");
        assert_eq!(owner(&cache, "blog").as_deref(), want, "row {i}");
        assert_eq!(cache.revision(), rev, "row {i}");
    }
}

#[test]
fn an_answer_newer_than_the_watch_shows_at_once_and_older_events_do_not_undo_it() {
    let mut cache = Cache::default();
    cache.replace(vec![], 5);
    // Our claim won at revision 8: the cache knows before the watch says so.
    assert_eq!(cache.apply_answer(name("blog", 8, Some("a")), 8), NAMES);
    assert_eq!(owner(&cache, "blog").as_deref(), Some("a"));
    // The watch then delivers older history of the key, then the put itself.
    assert_eq!(cache.apply_watch(vec![name("blog", 6, Some("x"))], 6), NONE);
    assert_eq!(cache.apply_watch(vec![name("blog", 7, None)], 7), NONE);
    assert_eq!(cache.apply_watch(vec![name("blog", 8, Some("a"))], 8), NONE);
    assert_eq!(owner(&cache, "blog").as_deref(), Some("a"));
}

#[test]
fn a_release_answer_leaves_a_tombstone_until_the_watch_passes_it() {
    let mut cache = Cache::default();
    cache.replace(vec![name("blog", 3, Some("a"))], 5);
    assert_eq!(cache.apply_answer(name("blog", 9, None), 9), NAMES);
    assert_eq!(owner(&cache, "blog"), None);
    // The put at 3 is replayed by a watch still behind: the tombstone at 9 wins.
    assert_eq!(cache.apply_watch(vec![name("blog", 3, Some("a"))], 6), NONE);
    assert_eq!(owner(&cache, "blog"), None);
    assert_eq!(cache.apply_watch(vec![name("blog", 9, None)], 9), NONE);
    // Past 9 the tombstone is gone; a later claim shows as usual.
    assert!(cache.names.tombstones.is_empty());
    assert_eq!(
        cache.apply_watch(vec![name("blog", 10, Some("b"))], 10),
        NAMES
    );
}

#[test]
fn an_answer_the_watch_has_already_passed_is_ignored() {
    let mut cache = Cache::default();
    cache.replace(vec![], 5);
    // The watch saw the put at 6 and the release at 7; an answer read at 6 arrives late.
    cache.apply_watch(vec![name("blog", 6, Some("a")), name("blog", 7, None)], 7);
    assert_eq!(cache.apply_answer(name("blog", 6, Some("a")), 6), NONE);
    assert_eq!(owner(&cache, "blog"), None);
}

#[test]
fn a_snapshot_replaces_everything_and_reports_only_real_differences() {
    let mut cache = Cache::default();
    cache.replace(
        vec![name("blog", 3, Some("a")), revoke("p", 4, Some("r"))],
        5,
    );
    // A compaction forced a re-read: same contents, nothing to tell.
    assert_eq!(
        cache.replace(
            vec![name("blog", 3, Some("a")), revoke("p", 4, Some("r"))],
            40
        ),
        NONE
    );
    assert_eq!(cache.replace(vec![name("blog", 3, Some("a"))], 41), PEERS);
    assert_eq!(cache.replace(vec![], 42), NAMES);
    assert_eq!(cache.revision(), 42);
}

#[test]
fn contents_round_trip_and_etcd_wins_over_a_loaded_mirror() {
    let mut cache = Cache::default();
    cache.replace(
        vec![name("blog", 3, Some("a")), revoke("p", 4, Some("r"))],
        5,
    );
    let contents = cache.contents();
    let text = serde_json::to_string(&contents).expect("serialise");
    let back: Contents = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, contents);
    let mut loaded = Cache::from_contents(back);
    assert_eq!(owner(&loaded, "blog").as_deref(), Some("a"));
    assert_eq!(loaded.revision(), 0);
    assert_eq!(
        loaded.apply_answer(name("blog", 1, Some("b")), 1),
        NAMES,
        "anything from etcd is newer than the file"
    );
}

#[test]
fn decode_reads_our_keys_and_refuses_values_it_cannot_read() {
    let keys = Keys::new("example.net").expect("domain");
    let value = br#"{"owner":"a","at":7,"by":"gw","later":"ignored"}"#;
    assert_eq!(
        decode(
            &keys,
            b"/peercompute/v1/example.net/names/blog",
            value,
            4,
            false
        ),
        Ok(Some(Update::Name {
            name: "blog".into(),
            rev: 4,
            record: Some(NameRecord {
                owner: "a".into(),
                at: 7,
                by: "gw".into()
            })
        }))
    );
    assert_eq!(
        decode(
            &keys,
            b"/peercompute/v1/example.net/revoked/p",
            b"",
            9,
            true
        ),
        Ok(Some(revoke("p", 9, None)))
    );
    assert_eq!(
        decode(&keys, b"/peercompute/v1/example.net/schema", b"1", 1, false),
        Ok(None)
    );
    assert_eq!(
        decode(
            &keys,
            b"/peercompute/v1/example.net/acme/lock",
            b"x",
            1,
            false
        ),
        Ok(None)
    );
    assert!(
        decode(
            &keys,
            b"/peercompute/v1/example.net/allow/p",
            b"{",
            1,
            false
        )
        .is_err()
    );
}

#[test]
fn holds_are_name_state_and_found_by_name() {
    let keys = Keys::new("example.net").expect("domain");
    let hold = decode(
        &keys,
        b"/peercompute/v1/example.net/released/blog/peer-1",
        br#"{"at":5,"by":"gw"}"#,
        7,
        false,
    )
    .expect("decode")
    .expect("a hold");
    let mut cache = Cache::default();
    cache.replace(vec![], 5);
    assert_eq!(cache.apply_watch(vec![hold], 7), NAMES);
    let (key, record) = cache.holds.first_with_prefix("blog/").expect("held");
    assert_eq!((key.as_str(), record.at), ("blog/peer-1", 5));
    assert!(cache.holds.first_with_prefix("blo/").is_none());
    assert!(cache.holds.first_with_prefix("blogs/").is_none());
    let lifted = Update::Hold {
        name: "blog".into(),
        owner: "peer-1".into(),
        rev: 8,
        record: None,
    };
    assert_eq!(cache.apply_watch(vec![lifted], 8), NAMES);
    assert!(cache.holds.first_with_prefix("blog/").is_none());
}
