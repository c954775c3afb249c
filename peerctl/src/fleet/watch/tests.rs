//! Tests of `watch`'s pure parts: resolving what is watched (versions, hash prefixes, the
//! latest, rollbacks), each robot's progress from its status, and the changes printed.

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    AppStatus, EntryHash, FleetId, FleetLog, HealthCheck, Op, Outcome, Release, Rollback,
    SignedStatus, StatusReport,
};
use peercompute_tunnel_proto::DeployRequest;

use super::*;

const NOW: u64 = 1_800_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A fleet with releases v1, v2 to production, v1 to staging, then a rollback of
/// production to v1 when `rollback`.
fn log(rollback: bool) -> FleetLog {
    let fk = key(1);
    let fleet = FleetId(fk.verifying_key().to_bytes());
    let mut log = FleetLog::new(fleet);
    let mut write = |op: Op, at: u64| {
        let e = log.author(&fk, op, at).expect("author");
        log.insert(e, NOW + 100).expect("insert");
    };
    write(Op::Genesis { name: "f".into() }, NOW);
    let release = |group: &str, seq: u64, version: &str| {
        let mut spec =
            DeployRequest::new(format!("127.0.0.1:5000/web@sha256:{}", "ab".repeat(32)), 80);
        spec.name = Some("web".into());
        Op::Release(Release {
            group: group.into(),
            seq,
            version: version.into(),
            spec,
            health: HealthCheck {
                path: None,
                timeout_secs: 30,
            },
        })
    };
    write(release("production", 1, "v1"), NOW + 1);
    write(release("production", 2, "v2"), NOW + 2);
    write(release("staging", 1, "v1"), NOW + 3);
    if rollback {
        write(
            Op::Rollback(Rollback {
                group: "production".into(),
                seq: 3,
                to_version: None,
            }),
            NOW + 4,
        );
    }
    log
}

fn release_hash(log: &FleetLog, group: &str, version: &str) -> EntryHash {
    let gs = &log.state().expect("state").groups[group];
    gs.releases
        .iter()
        .find(|r| r.release.version == version)
        .expect("released")
        .hash
}

#[test]
fn a_release_is_named_by_version_hash_prefix_or_nothing() {
    let log = log(false);
    let v2 = release_hash(&log, "production", "v2");
    let t = resolve(&log, Some("v2"), None).expect("v2");
    assert_eq!(
        (t.release, t.entry, t.kind, t.at),
        (v2, v2, "release", NOW + 2)
    );
    let prefix = v2.to_string()[..8].to_owned();
    assert_eq!(
        resolve(&log, Some(&prefix), None).expect("prefix").release,
        v2
    );
    // v1 went to two groups: the group must be said.
    let e = resolve(&log, Some("v1"), None).expect_err("ambiguous");
    assert_eq!(e.kind, Kind::Ambiguous);
    assert!(e.message.contains("production, staging"), "{}", e.message);
    let t = resolve(&log, Some("v1"), Some("staging")).expect("v1 of staging");
    assert_eq!(t.release, release_hash(&log, "staging", "v1"));
    // Nothing: the latest change (staging's v1); with a group, that group's.
    assert_eq!(resolve(&log, None, None).expect("latest").group, "staging");
    assert_eq!(
        resolve(&log, None, Some("production"))
            .expect("latest")
            .release,
        v2
    );
    let e = resolve(&log, Some("v9"), None).expect_err("unknown");
    assert_eq!(e.kind, Kind::NotFound);
    assert!(
        resolve(&log, None, Some("lab")).is_err(),
        "no release in lab"
    );
}

#[test]
fn a_rollback_is_watched_as_the_release_it_returns_to_timed_from_the_rollback() {
    let log = log(true);
    let t = resolve(&log, None, Some("production")).expect("latest");
    assert_eq!(t.kind, "rollback");
    assert_eq!(t.release, release_hash(&log, "production", "v1"));
    assert_eq!((t.version.as_str(), t.at), ("v1", NOW + 4));
    let by_hash = resolve(&log, Some(&t.entry.to_string()[..10]), None).expect("by hash");
    assert_eq!(by_hash, t);
    // Naming v2's release entry still watches v2.
    let v2 = resolve(&log, Some("v2"), None).expect("v2");
    assert_eq!((v2.kind, v2.version.as_str()), ("release", "v2"));
}

fn target() -> Target {
    Target {
        group: "production".into(),
        release: EntryHash([3; 32]),
        version: "v3".into(),
        entry: EntryHash([3; 32]),
        kind: "release",
        at: NOW,
    }
}

fn status(apps: Vec<AppStatus>, history: Vec<Outcome>) -> SignedStatus {
    let robot = key(9);
    let report = StatusReport {
        fleet: FleetId([1; 32]),
        robot: MemberKey(robot.verifying_key().to_bytes()),
        at_ms: NOW * 1000,
        agent: "t".into(),
        uptime_secs: 1,
        log_len: 1,
        apps,
        cpu_permille: 0,
        memory_used_bytes: 0,
        memory_total_bytes: 0,
        disk_free_bytes: 0,
        history,
        group_names: Vec::new(),
    };
    SignedStatus::sign(report, &robot)
}

fn app(release: u8, version: &str, phase: Phase, serving: Option<&str>) -> AppStatus {
    AppStatus {
        group: "production".into(),
        release: EntryHash([release; 32]),
        version: version.into(),
        phase,
        serving: serving.map(Into::into),
        url: None,
        apply_ms: phase.is_final().then_some(1100),
        reason: (phase == Phase::RolledBack).then(|| "health check: 404\nlog line".into()),
        changed_at_ms: NOW * 1000 + 1230,
    }
}

#[test]
fn a_robots_progress_comes_from_its_status() {
    let t = target();
    let p = |s: Option<&SignedStatus>| progress(&t, s).progress;
    assert_eq!(p(None), Progress::NotSeen);
    assert_eq!(
        p(Some(&status(vec![], vec![]))),
        Progress::PENDING,
        "no app yet"
    );
    let older = status(vec![app(2, "v2", Phase::Healthy, Some("v2"))], vec![]);
    assert_eq!(p(Some(&older)), Progress::PENDING, "an older release");
    for phase in [
        Phase::Fetching,
        Phase::Starting,
        Phase::Healthy,
        Phase::RolledBack,
    ] {
        let s = status(vec![app(3, "v3", phase, Some("v2"))], vec![]);
        assert_eq!(p(Some(&s)), Progress::At(phase));
    }
    // Idle on another release but serving the target's version: for a rollback's target
    // (kept after a rolled-back release) nothing to do, healthy; a release may reuse a
    // version, so for a release that is still pending.
    let kept = status(vec![app(4, "v4", Phase::RolledBack, Some("v3"))], vec![]);
    assert_eq!(p(Some(&kept)), Progress::PENDING);
    let rollback = Target {
        kind: "rollback",
        ..target()
    };
    let seen = progress(&rollback, Some(&kept));
    assert_eq!(
        (seen.progress, seen.apply_ms, seen.reason),
        (Progress::HEALTHY, None, None)
    );
    // Moved on to a newer release: the history says how the target ended, if after the entry.
    let outcome = |at_ms| Outcome {
        group: "production".into(),
        release: EntryHash([3; 32]),
        version: "v3".into(),
        phase: Phase::RolledBack,
        apply_ms: Some(5000),
        at_ms,
    };
    let newer = app(4, "v4", Phase::Fetching, Some("v2"));
    let moved = status(vec![newer.clone()], vec![outcome(NOW * 1000 + 500)]);
    assert_eq!(p(Some(&moved)), Progress::At(Phase::RolledBack));
    let before = status(vec![newer], vec![outcome(NOW * 1000 - 5000)]);
    assert_eq!(
        p(Some(&before)),
        Progress::PENDING,
        "an outcome before the entry is another apply"
    );
}

#[test]
fn the_tracker_reports_each_change_once_and_knows_when_all_are_final() {
    let t = target();
    let (a, b) = (MemberKey([1; 32]), MemberKey([2; 32]));
    let mut tracker = Tracker::default();
    let seen = |pa: Seen, pb: Seen| {
        vec![
            (a, "lekiwi-1".to_owned(), pa),
            (b, "lekiwi-2".to_owned(), pb),
        ]
    };
    let now = NOW * 1000 + 400;
    let first = tracker.step(
        &t,
        &seen(Seen::bare(Progress::PENDING), Seen::bare(Progress::NotSeen)),
        now,
    );
    let words: Vec<(&str, &str, u64)> = first
        .iter()
        .map(|c| (c.robot.as_str(), c.phase.word(), c.since_entry_ms))
        .collect();
    assert_eq!(
        words,
        [("lekiwi-1", "pending", 400), ("lekiwi-2", "not seen", 400)]
    );
    assert!(
        tracker
            .step(
                &t,
                &seen(Seen::bare(Progress::PENDING), Seen::bare(Progress::NotSeen)),
                now
            )
            .is_empty()
    );
    assert!(!tracker.done());
    let healthy = progress(
        &t,
        Some(&status(
            vec![app(3, "v3", Phase::Healthy, Some("v3"))],
            vec![],
        )),
    );
    let rolled = progress(
        &t,
        Some(&status(
            vec![app(3, "v3", Phase::RolledBack, Some("v2"))],
            vec![],
        )),
    );
    let mut healthy = healthy;
    healthy.changed_at_ms = Some(NOW * 1000 + 2000);
    let changes = tracker.step(&t, &seen(healthy, rolled), now + 5000);
    let lines: Vec<String> = changes.iter().map(line).collect();
    assert_eq!(
        lines,
        [
            "+1.23s  lekiwi-2  rolled back  v3  (apply 1.10s; serving v2; health check: 404)",
            "+2.00s  lekiwi-1  healthy  v3  (apply 1.10s)",
        ]
    );
    assert!(tracker.done());
    assert_eq!(
        summary(&t, &tracker.counts()),
        "release v3 to production: 1 healthy, 1 rolled back of 2 robots"
    );
    let json = serde_json::to_value(&changes[0]).expect("json");
    assert_eq!(json["phase"], "rolled_back");
    assert_eq!(json["since_entry_ms"], 1230);
}

#[test]
fn reasons_are_cut_to_one_readable_line() {
    let id = "9d584cd24d3f".repeat(6)[..64].to_owned();
    let reason = format!(
        "the new container never became healthy: container {id} was not healthy within 3s; last probe: it answered HTTP 404; its last log lines:\n  boom"
    );
    assert_eq!(
        short_reason(&reason),
        "the new container never became healthy: container 9d584cd24d3f was not healthy within 3s; last probe: it answered HTTP 404; its last log lines"
    );
    let long = "x".repeat(300);
    let cut = short_reason(&long);
    assert_eq!(cut.chars().count(), REASON_CHARS);
    assert!(cut.ends_with('…'));
}

#[test]
fn a_waiting_robot_says_why() {
    let t = target();
    let mut stopped = app(3, "v3", Phase::Pending, Some("v2"));
    stopped.reason = Some("emergency stop: brakes".into());
    let seen = progress(&t, Some(&status(vec![stopped], vec![])));
    let changes = Tracker::default().step(
        &t,
        &[(MemberKey([1; 32]), "lekiwi-1".into(), seen)],
        NOW * 1000,
    );
    assert_eq!(
        line(&changes[0]),
        "+1.23s  lekiwi-1  pending  v3  (emergency stop: brakes)"
    );
}

#[test]
fn times_read_as_people_read_them() {
    assert_eq!(since(1234), "+1.23s");
    assert_eq!(since(125_000), "+2m05s");
    assert_eq!(seconds(1100), "1.10s");
}
