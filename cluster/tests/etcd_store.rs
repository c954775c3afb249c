//! The cluster store against a real etcd (Debian's etcd-server): two stores stand for two
//! gateways. Racing claims, release and re-claim, a revocation seen across gateways, and
//! etcd killed and restarted under a store that keeps answering from its cache.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use peercompute_cluster::{Claim, ClusterError, ClusterOptions, ClusterStore, ClusterTls, Release};
use support::etcd::EtcdServer;
use tokio::sync::{Barrier, watch};

/// How long the other gateway's cache may take to hear of a change.
const AGREE_WITHIN: Duration = Duration::from_secs(1);

async fn store(
    etcd: &EtcdServer,
    gateway: &str,
    mirror: Option<std::path::PathBuf>,
) -> ClusterStore {
    let mut options = ClusterOptions::new("example.net", gateway);
    options.mirror = mirror;
    ClusterStore::connect(&[etcd.endpoint()], options)
        .await
        .expect("connect to the test etcd")
}

/// An etcd and two stores on it, "gw-a" and "gw-b"; `None` when the test is skipped.
async fn two_gateways() -> Option<(EtcdServer, ClusterStore, ClusterStore)> {
    let etcd = EtcdServer::start().await;
    let a = store(&etcd, "gw-a", None).await;
    let b = store(&etcd, "gw-b", None).await;
    Some((etcd, a, b))
}

/// Waits until `check` holds, woken by `changes` (a store's change counter), at most `within`;
/// how long it took.
async fn eventually(
    mut changes: watch::Receiver<u64>,
    within: Duration,
    what: &str,
    check: impl Fn() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        changes.mark_unchanged();
        if check() {
            return start.elapsed();
        }
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{what}: the store went away"),
            Err(_) => panic!("{what}: not within {within:?}"),
        }
    }
}

/// Waits for `up` to become `want`, at most `within`; how long it took.
async fn up_becomes(store: &ClusterStore, want: bool, within: Duration) -> Duration {
    let start = Instant::now();
    let mut up = store.up();
    tokio::time::timeout(within, up.wait_for(|up| *up == want))
        .await
        .unwrap_or_else(|_| panic!("up() did not become {want} within {within:?}"))
        .expect("store alive");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_racing_for_one_name_get_exactly_one_winner_twenty_times() {
    let Some((etcd, a, b)) = two_gateways().await else {
        return;
    };
    // A third gateway that does not race: it learns each winner from its watch only (the
    // racers learn it from their own transaction's answer).
    let observer = store(&etcd, "gw-o", None).await;
    let (mut slowest, mut slowest_watch) = (Duration::ZERO, Duration::ZERO);
    for round in 0..20 {
        let name = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let claim = |store: ClusterStore, owner: &'static str| {
            let (barrier, name) = (barrier.clone(), name.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim(&name, owner).await
            })
        };
        let (ja, jb) = (claim(a.clone(), "peer-a"), claim(b.clone(), "peer-b"));
        let (ra, rb) = (ja.await.expect("task a"), jb.await.expect("task b"));
        let winner = match (&ra, &rb) {
            (Claim::Won, Claim::Owned(owner)) if owner == "peer-a" => "peer-a",
            (Claim::Owned(owner), Claim::Won) if owner == "peer-b" => "peer-b",
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        for (label, s) in [("a", &a), ("b", &b)] {
            let took = eventually(s.name_changes(), AGREE_WITHIN, label, || {
                s.owner(&name).as_deref() == Some(winner)
            })
            .await;
            slowest = slowest.max(took);
        }
        let took = eventually(observer.name_changes(), AGREE_WITHIN, "observer", || {
            observer.owner(&name).as_deref() == Some(winner)
        })
        .await;
        slowest_watch = slowest_watch.max(took);
        // etcd itself holds that owner: a third gateway connecting now reads it.
        if round == 19 {
            let c = store(&etcd, "gw-c", None).await;
            assert_eq!(c.owner(&name).as_deref(), Some(winner));
            assert_eq!(c.owners().len(), 20);
        }
    }
    println!(
        "20 races, one winner each; the racers' caches agreed within {slowest:?}, the observer's watch within {slowest_watch:?} (worst)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_frees_the_name_everywhere_and_the_next_key_takes_it() {
    let Some((_etcd, a, b)) = two_gateways().await else {
        return;
    };
    assert_eq!(a.claim("blog", "peer-1").await, Claim::Won);
    assert_eq!(a.claim("blog", "peer-1").await, Claim::Already);
    assert_eq!(b.claim("blog", "peer-1").await, Claim::Already);
    assert_eq!(
        b.release("blog", "peer-2").await.expect("release"),
        Release::OwnedBy("peer-1".into()),
        "a release for the wrong owner changes nothing"
    );
    assert_eq!(
        b.release("blog", "peer-1").await.expect("release"),
        Release::Released
    );
    assert_eq!(b.owner("blog"), None, "the releasing gateway knows at once");
    eventually(a.name_changes(), AGREE_WITHIN, "a sees the release", || {
        a.owner("blog").is_none()
    })
    .await;
    assert_eq!(
        b.release("blog", "peer-1").await.expect("again"),
        Release::Absent
    );
    // The previous owner may not take it back on its own, at any gateway.
    eventually(a.name_changes(), AGREE_WITHIN, "a sees the hold", || {
        a.hold("blog").as_deref() == Some("peer-1")
    })
    .await;
    assert_eq!(a.claim("blog", "peer-1").await, Claim::Held);
    assert_eq!(b.claim("blog", "peer-1").await, Claim::Held);
    assert_eq!(a.claim("blog", "peer-2").await, Claim::Won);
    assert_eq!(a.hold("blog"), None, "a new owner ends the hold");
    eventually(
        b.name_changes(),
        AGREE_WITHIN,
        "b sees the hold end",
        || b.hold("blog").is_none(),
    )
    .await;
    assert_eq!(
        b.claim("blog", "peer-1").await,
        Claim::Owned("peer-2".into())
    );
    eventually(
        b.name_changes(),
        AGREE_WITHIN,
        "b sees the new owner",
        || b.owner("blog").as_deref() == Some("peer-2"),
    )
    .await;
    assert_eq!(a.owners(), vec![("blog".to_owned(), "peer-2".to_owned())]);
    // A release by mistake: the operator lifts the hold and the owner registers again.
    assert_eq!(
        a.release("blog", "peer-2").await.expect("release"),
        Release::Released
    );
    assert_eq!(a.claim("blog", "peer-2").await, Claim::Held);
    assert_eq!(
        b.lift_hold("blog").await.expect("lift"),
        Some("peer-2".into())
    );
    assert_eq!(b.lift_hold("blog").await.expect("again"), None);
    assert_eq!(a.claim("blog", "peer-2").await, Claim::Won);
    // A name that cannot be a key is refused for good, not "try later".
    match a.claim("a/b", "peer-1").await {
        Claim::Unavailable(err) => assert!(!err.is_transient(), "{err}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_at_one_gateway_reaches_the_other_within_a_second() {
    let Some((_etcd, a, b)) = two_gateways().await else {
        return;
    };
    a.allow("peer-1", "").await.expect("allow");
    eventually(b.peer_changes(), AGREE_WITHIN, "b sees the allow", || {
        b.is_allowed("peer-1")
    })
    .await;
    let changes = b.peer_changes();
    let start = Instant::now();
    a.revoke("peer-1", "laptop stolen").await.expect("revoke");
    let written = start.elapsed();
    eventually(changes, AGREE_WITHIN, "b sees the revocation", || {
        b.revoked("peer-1").is_some()
    })
    .await;
    let seen = start.elapsed();
    let record = b.revoked("peer-1").expect("revoked at b");
    assert_eq!(
        (record.reason.as_str(), record.by.as_str()),
        ("laptop stolen", "gw-a")
    );
    assert_eq!(b.revoked_peers().len(), 1);
    println!(
        "revocation written at a in {written:?}, seen by b's watch {seen:?} after the call began"
    );
    assert!(seen < AGREE_WITHIN);
    assert!(b.unrevoke("peer-1").await.expect("unrevoke"));
    assert!(!b.unrevoke("peer-1").await.expect("again"));
    eventually(a.peer_changes(), AGREE_WITHIN, "a sees the lift", || {
        a.revoked("peer-1").is_none()
    })
    .await;
    assert!(a.disallow("peer-1").await.expect("disallow"));
    assert!(a.allowed_peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_killed_known_names_answer_new_ones_wait_and_all_resumes_after_restart() {
    let mut etcd = EtcdServer::start().await;
    let state = tempfile::tempdir().expect("tempdir");
    let mirror = state.path().join("cluster-names.json");
    let a = store(&etcd, "gw-a", Some(mirror.clone())).await;
    assert!(*a.up().borrow());
    assert!(a.lease_id().is_some());
    assert_eq!(a.claim("kept", "peer-1").await, Claim::Won);
    a.revoke("peer-bad", "compromised").await.expect("revoke");

    etcd.kill();
    let down_after = up_becomes(&a, false, Duration::from_secs(15)).await;
    assert_eq!(
        a.owner("kept").as_deref(),
        Some("peer-1"),
        "the cache answers"
    );
    assert!(a.revoked("peer-bad").is_some());
    let start = Instant::now();
    let refused = a.claim("new-name", "peer-2").await;
    let refused_in = start.elapsed();
    let Claim::Unavailable(err) = refused else {
        panic!("a new name while etcd is down: {refused:?}");
    };
    let text = err.to_string();
    assert!(err.is_transient(), "{text}");
    assert!(
        text.starts_with(&format!("etcd unreachable at {}", etcd.endpoint()))
            && text.contains("new names are refused until it is back"),
        "{text}"
    );
    assert!(
        refused_in < Duration::from_secs(5),
        "refused after {refused_in:?}"
    );
    assert_eq!(
        a.claim("kept", "peer-1").await,
        Claim::Already,
        "a reconnecting owner keeps its name"
    );
    assert!(matches!(
        a.release("kept", "peer-1").await,
        Err(ClusterError::Unreachable { .. })
    ));
    assert!(a.last_error().is_some());

    // A gateway restarted while etcd is down still knows the owners, from its mirror file.
    let copy = state.path().join("restarted.json");
    std::fs::copy(&mirror, &copy).expect("copy mirror");
    let start = Instant::now();
    let restarted = store(&etcd, "gw-a2", Some(copy)).await;
    println!("a store connected with etcd down in {:?}", start.elapsed());
    assert!(!*restarted.up().borrow());
    assert_eq!(restarted.owner("kept").as_deref(), Some("peer-1"));
    assert_eq!(
        restarted.revoked("peer-bad").map(|r| r.reason),
        Some("compromised".into())
    );

    etcd.restart().await;
    let back_after = up_becomes(&a, true, Duration::from_secs(20)).await;
    up_becomes(&restarted, true, Duration::from_secs(20)).await;
    assert_eq!(a.claim("new-name", "peer-2").await, Claim::Won);
    eventually(
        restarted.name_changes(),
        AGREE_WITHIN,
        "the restarted store",
        || restarted.owner("new-name").as_deref() == Some("peer-2"),
    )
    .await;
    assert_eq!(
        restarted.claim("kept", "peer-3").await,
        Claim::Owned("peer-1".into())
    );
    println!(
        "etcd killed: down after {down_after:?}, new name refused in {refused_in:?}; restarted: up after {back_after:?}"
    );
    restarted.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_etcd_is_noticed_and_claims_are_refused_within_the_request_timeout() {
    let etcd = EtcdServer::start().await;
    let a = store(&etcd, "gw-a", None).await;
    assert_eq!(a.claim("kept", "peer-1").await, Claim::Won);
    // Frozen: the connection stays open and nothing answers, so no reset tells the store.
    etcd.pause();
    let start = Instant::now();
    let refused = a.claim("new-name", "peer-2").await;
    let refused_in = start.elapsed();
    let Claim::Unavailable(err) = refused else {
        panic!("a new name while etcd is silent: {refused:?}");
    };
    assert!(
        err.to_string()
            .contains("new names are refused until it is back"),
        "{err}"
    );
    // The request timeout is 3 s; a claim never waits much longer.
    assert!(
        refused_in < Duration::from_secs(4),
        "refused after {refused_in:?}"
    );
    assert_eq!(a.claim("kept", "peer-1").await, Claim::Already);
    // The lease renewal (every 10 s / 3, answer within 3 s) notices.
    let down_after = up_becomes(&a, false, Duration::from_secs(10)).await;
    assert_eq!(a.owner("kept").as_deref(), Some("peer-1"));
    etcd.resume();
    let back_after = up_becomes(&a, true, Duration::from_secs(20)).await;
    // The claim that timed out may still have reached etcd and run once it thawed: its
    // outcome was unknown, not refused. The owner's retry then reads its own claim.
    let retried = a.claim("new-name", "peer-2").await;
    assert!(
        matches!(retried, Claim::Won | Claim::Already),
        "{retried:?}"
    );
    assert_eq!(
        a.claim("new-name", "peer-3").await,
        Claim::Owned("peer-2".into())
    );
    println!(
        "etcd frozen: claim refused in {refused_in:?}, down after {:?}; thawed: up after {back_after:?}",
        refused_in + down_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_moves_every_name_of_the_old_key_and_only_those() {
    let Some((_etcd, a, b)) = two_gateways().await else {
        return;
    };
    for (name, owner) in [("web-r1", "old"), ("api-r1", "old"), ("shop", "other")] {
        assert_eq!(a.claim(name, owner).await, Claim::Won);
    }
    assert_eq!(
        b.transfer("old", "new").await.expect("transfer"),
        ["api-r1", "web-r1"]
    );
    assert_eq!(
        b.transfer("old", "new").await.expect("again"),
        Vec::<String>::new()
    );
    assert_eq!(b.owner("web-r1").as_deref(), Some("new"));
    eventually(
        a.name_changes(),
        AGREE_WITHIN,
        "a sees the rotation",
        || {
            a.owner("api-r1").as_deref() == Some("new")
                && a.owner("web-r1").as_deref() == Some("new")
        },
    )
    .await;
    assert_eq!(a.owner("shop").as_deref(), Some("other"));
    assert_eq!(a.claim("web-r1", "old").await, Claim::Owned("new".into()));
    assert_eq!(a.claim("web-r1", "new").await, Claim::Already);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_claims_work_and_a_client_without_one_stays_down() {
    let etcd = EtcdServer::start_tls().await;
    let files = etcd.tls().expect("TLS etcd").clone();
    let endpoint = etcd.endpoint().replace("https://", "etcds://");
    let mut options = ClusterOptions::new("example.net", "gw-tls");
    options.tls = Some(ClusterTls {
        ca_pem: Some(files.ca_pem.clone()),
        client_pem: Some((files.client_cert_pem, files.client_key_pem)),
    });
    let a = ClusterStore::connect(std::slice::from_ref(&endpoint), options)
        .await
        .expect("connect over TLS");
    assert!(*a.up().borrow(), "{:?}", a.last_error());
    assert_eq!(a.claim("blog", "peer-1").await, Claim::Won);

    // Without a client certificate etcd refuses the handshake: the store starts down.
    let mut options = ClusterOptions::new("example.net", "gw-nocert");
    options.tls = Some(ClusterTls {
        ca_pem: Some(files.ca_pem),
        client_pem: None,
    });
    let b = ClusterStore::connect(&[endpoint], options)
        .await
        .expect("a refused handshake is not a start error");
    assert!(!*b.up().borrow());
    let err = b.last_error().expect("why it is down");
    println!("without a client certificate: {err}");
    assert!(matches!(
        b.claim("shop", "peer-1").await,
        Claim::Unavailable(_)
    ));
}
