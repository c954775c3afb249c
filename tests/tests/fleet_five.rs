//! A fleet of five robots run with the `peerctl` binary, end to end with the real parts: one
//! gateway, five `peercomputed` daemons (own homes, one Docker engine) joined by token into
//! production (3) and staging (2), and a local registry (Debian's `docker-registry`) holding
//! v1 (healthy), v2 (its health path fails) and v3 (healthy).
//!
//! Release v1 to production → its three robots serve v1, staging untouched; v2 → every
//! production robot rolls back to v1 with the reason; v3 → switched; one robot stopped, then
//! `fleet rollback --to v1` → the others return at once and the stopped one when it comes
//! back. Visitors of every production URL run throughout and count failed requests. Then the
//! attack list, pushed straight to a robot with raw keys (not through peerctl or the gateway,
//! which would refuse them first): each refused with its reason and nothing started, beside a
//! positive control that is accepted. `status` and `log --verify` are checked against what
//! happened; `watch` follows a rollout (exit 1 on a rollback, 0 when healthy), `metrics`
//! counts it, and `logs` fans out to the group.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{Entry, FleetId, Grant, MemberKey, Op, PushResult, Role, SignedEntry};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{self, unix_now};
use peercompute_p2p::{Multiaddr, PeerId};
use peercompute_tests::fleet::{FleetMember, release_of};
use peercompute_tests::fleet_rig::{Rig, Robot, Visitor, app_of, fleet_containers, wait_serving};
use peercompute_tests::within;

/// An attacker's (or a member's) in-process node, dialled to one robot, with a verified copy
/// of the fleet log pulled from the gateway to write on top of.
struct Forger {
    member: FleetMember,
    fleet: FleetId,
    robot: PeerId,
}

impl Forger {
    async fn start(rig: &Rig, robot: &Robot) -> Self {
        let gateway = rig.gw.p2p_addr().await;
        let member = FleetMember::start(&gateway, true).await;
        let addr: Multiaddr = robot.daemon.addr().parse().expect("robot address");
        within(
            15,
            "dial the robot",
            member.node.dial(robot.peer, vec![addr]),
        )
        .await
        .expect("dial the robot");
        Forger {
            member,
            fleet: rig.fleet,
            robot: robot.peer,
        }
    }

    /// Pulls the gateway's copy of the log.
    async fn refresh(&self, gateway: PeerId) {
        self.member.hub.hold(self.fleet).expect("hold");
        fleet_hub::sync_with(&self.member.node, gateway, &self.member.hub, self.fleet)
            .await
            .expect("sync with the gateway");
    }

    /// `op` signed by `key` on top of the current log, with no authority check: what anyone
    /// holding a key can make.
    fn forge(&self, key: &SigningKey, op: Op) -> SignedEntry {
        let (parents, clock) = self
            .member
            .hub
            .with_log(&self.fleet, |l| (l.heads(), l.next_clock()))
            .expect("the fleet is held");
        let entry = Entry {
            fleet: self.fleet,
            parents,
            clock,
            author: MemberKey(key.verifying_key().to_bytes()),
            at: unix_now(),
            op,
        };
        SignedEntry::sign(entry, key).expect("a well-formed entry")
    }

    /// Pushes raw entry bytes straight to the robot; its verdict.
    async fn push(&self, bytes: Vec<u8>) -> PushResult {
        let results = within(
            20,
            "push to the robot",
            fleet_hub::push_to(&self.member.node, self.robot, self.fleet, vec![bytes]),
        )
        .await
        .expect("the robot answers");
        results.into_iter().next().expect("one result")
    }
}

fn release(group: &str, seq: u64, version: &str, image: &str) -> Op {
    release_of(group, seq, version, "web", image, 10)
}

fn refused(result: &PushResult, words: &str, what: &str) {
    match result {
        PushResult::Refused { reason } => {
            assert!(
                reason.contains(words),
                "{what}: the reason says why: {reason}"
            )
        }
        other => panic!("{what} must be refused by the robot: {other:?}"),
    }
}

/// A new client identity: its signing key and peer id (as `peerctl init` makes).
fn someone() -> (SigningKey, String) {
    let id = Identity::generate().expect("identity");
    (id.signing_key().clone(), id.peer_id().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_robots_in_two_groups_take_releases_rollbacks_and_refuse_forgeries() {
    let mut rig = Rig::start(&[("production", 3), ("staging", 2)]).await;
    let v1 = rig.image("v1", true).await;
    rig.image("v2", false).await;
    rig.image("v3", true).await;

    // Every robot is a member of its group.
    let members = rig.json(&["fleet", "members", "--json"]).await;
    for robot in &rig.robots {
        let row = members
            .as_array()
            .and_then(|m| m.iter().find(|r| r["name"] == robot.name.as_str()))
            .unwrap_or_else(|| panic!("{} in members: {members}", robot.name));
        assert_eq!(row["groups"], serde_json::json!([robot.group]), "{row}");
        assert!(robot.name.starts_with(&robot.group), "{}", robot.name);
    }

    // v1 to production: its three robots serve it; staging runs nothing.
    rig.release("production", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 90).await;
    let rows = rig.wait_group_phase("production", "v1", "healthy").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for robot in rig.group("staging") {
        assert!(
            fleet_containers(&rig.runtime, &robot.peer).await.is_empty(),
            "{} is outside production and ignores its release",
            robot.name
        );
    }

    // Visitors of each production URL from here on.
    let visitors: Vec<Visitor> = rig
        .group("production")
        .map(|r| Visitor::start(rig.client.clone(), r.url.clone()))
        .collect();

    // v2 never becomes healthy: every production robot keeps v1, saying why.
    rig.release("production", "v2", "5s").await;
    let (code, watched, stderr) = rig
        .peerctl(&["fleet", "watch", "--group", "production", "--wait", "90s"])
        .await;
    eprintln!("fleet watch v2 (exit {code}):\n{watched}{stderr}");
    assert_eq!(
        code, 1,
        "a rolled-back release fails the watch: {watched}{stderr}"
    );
    for robot in rig.group("production") {
        assert!(
            watched
                .lines()
                .any(|l| l.contains(&robot.name) && l.contains("rolled back")),
            "watch shows {} rolled back: {watched}",
            robot.name
        );
    }
    let rows = rig
        .wait_group_phase("production", "v2", "rolled back")
        .await;
    for row in &rows {
        let app = &row["apps"][0];
        assert_eq!(app["serving"], "v1", "{row}");
        let reason = app["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("404"),
            "the reason names what failed: {row}"
        );
    }
    rig.wait_group_serving("production", "v1", 30).await;

    // v3: switched everywhere.
    rig.release("production", "v3", "30s").await;
    let (code, watched, stderr) = rig
        .peerctl(&["fleet", "watch", "v3", "--wait", "90s"])
        .await;
    eprintln!("fleet watch v3 (exit {code}):\n{watched}{stderr}");
    assert_eq!(code, 0, "{watched}{stderr}");
    for robot in rig.group("production") {
        assert!(
            watched
                .lines()
                .any(|l| l.contains(&robot.name) && l.contains("healthy")),
            "watch shows {} healthy: {watched}",
            robot.name
        );
    }
    rig.wait_group_serving("production", "v3", 90).await;
    rig.wait_group_phase("production", "v3", "healthy").await;

    // One robot stops; a rollback to v1 reaches the others now and it when it comes back.
    let mut visitors = visitors;
    let last = visitors.pop().expect("three visitors");
    let (last_failed, last_total) = last.stop().await;
    let stopped = rig
        .robots
        .iter()
        .rposition(|r| r.group == "production")
        .expect("the last production robot");
    let addr = rig.robots[stopped].daemon.stop().await;
    rig.ok(&["fleet", "rollback", "--group", "production", "--to", "v1"])
        .await;
    for robot in rig
        .group("production")
        .filter(|r| r.daemon.daemon.is_some())
    {
        wait_serving(&rig.client, &robot.url, "v1", 60).await;
    }
    rig.robots[stopped].daemon.start_again(&addr).await;
    let back = &rig.robots[stopped];
    wait_serving(&rig.client, &back.url, "v1", 90).await;
    rig.wait_group_phase("production", "v1", "healthy").await;
    visitors.push(Visitor::start(rig.client.clone(), back.url.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut failed = last_failed;
    let mut total = last_total;
    for v in visitors {
        let url = v.url().to_owned();
        let (f, t) = v.stop().await;
        eprintln!("visitor of {url}: {f} failed of {t}");
        failed += f;
        total += t;
    }
    eprintln!(
        "visitors: {failed} failed of {total} requests through a rollback, a switch and a return"
    );
    assert!(total > 30, "the visitors ran ({total} requests)");
    assert_eq!(failed, 0, "failed visitor requests: {failed} of {total}");

    // Metrics over what happened: v1 and v3 healthy on the three robots, v2 rolled back on
    // all three (the rollback to v1 re-applies v1).
    let metrics = rig
        .json(&["fleet", "metrics", "--group", "production", "--json"])
        .await;
    let production = &metrics[0];
    assert_eq!(production["group"], "production", "{metrics}");
    assert_eq!(production["robots"], 3, "{metrics}");
    let row = |version: &str| {
        production["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["version"] == version).cloned())
            .unwrap_or_else(|| panic!("a row for {version}: {metrics}"))
    };
    assert_eq!(row("v2")["rolled_back"], 3, "{metrics}");
    assert_eq!(row("v2")["healthy"], 0, "{metrics}");
    assert_eq!(row("v3")["healthy"], 3, "{metrics}");
    let rate = production["rollback_rate"].as_f64().expect("rollback rate");
    assert!(rate > 0.0 && rate < 1.0, "{metrics}");
    assert!(
        production["median_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{metrics}"
    );

    // The group's container logs, fanned out: every production robot answers, each line
    // prefixed with its name (the image logs each request).
    let logs = rig
        .ok(&["fleet", "logs", "--group", "production", "--tail", "20"])
        .await;
    for robot in rig.group("production") {
        assert!(
            logs.lines()
                .any(|l| l.starts_with(&robot.name) && l.contains(" | ") && l.contains("200")),
            "{} answered with request lines: {logs}",
            robot.name
        );
    }

    // The attack list, straight to a staging robot.
    let target = rig.group("staging").next().expect("a staging robot");
    let gateway = rig.gw.peer_id;
    let forger = Forger::start(&rig, target).await;
    let (stranger, _) = someone();
    let (viewer, viewer_id) = someone();
    let (dev, dev_id) = someone();
    let (old_dev, old_dev_id) = someone();
    rig.ok(&["fleet", "grant", &viewer_id, "--role", "viewer"])
        .await;
    rig.ok(&[
        "fleet",
        "grant",
        &dev_id,
        "--role",
        "developer",
        "--groups",
        "staging",
    ])
    .await;
    rig.ok(&[
        "fleet",
        "grant",
        &old_dev_id,
        "--role",
        "developer",
        "--groups",
        "staging",
        "--expires",
        "1s",
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    forger.refresh(gateway).await;

    let image = v1.to_string();
    let staging_v1 = || release("staging", 1, "v1", &image);
    let outsider = MemberKey(stranger.verifying_key().to_bytes());
    let attacks: Vec<(&str, SignedEntry, &str)> = vec![
        (
            "a non-member's release",
            forger.forge(&stranger, staging_v1()),
            "is not a member",
        ),
        (
            "a viewer's release",
            forger.forge(&viewer, staging_v1()),
            "a viewer may not",
        ),
        (
            "a developer enrolling",
            forger.forge(
                &dev,
                Op::Enroll {
                    member: outsider,
                    name: "staging-evil".into(),
                    groups: vec!["staging".into()],
                },
            ),
            "a developer may not",
        ),
        (
            "a developer granting",
            forger.forge(
                &dev,
                Op::Grant(Grant {
                    member: outsider,
                    role: Role::Admin,
                    groups: vec![],
                    expires_at: None,
                }),
            ),
            "a developer may not",
        ),
        (
            "a developer releasing outside its groups",
            forger.forge(&dev, release("production", 9, "v1", &image)),
            "may act only in groups",
        ),
        (
            "an expired grant's release",
            forger.forge(&old_dev, staging_v1()),
            "expired",
        ),
    ];
    let before = fleet_containers(&rig.runtime, &target.peer).await;
    for (what, entry, words) in &attacks {
        let result = forger.push(entry.bytes().to_vec()).await;
        refused(&result, words, what);
    }

    // One byte flipped in transit: refused.
    let mut tampered = forger.forge(&dev, staging_v1()).bytes().to_vec();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    match forger.push(tampered).await {
        PushResult::Refused { .. } => {}
        other => panic!("a tampered entry must be refused: {other:?}"),
    }

    // Positive control: the same release signed by the staging developer is stored and
    // served by both staging robots.
    let good = forger.forge(&dev, staging_v1());
    assert_eq!(
        forger.push(good.bytes().to_vec()).await,
        PushResult::Stored(good.hash())
    );
    assert!(
        before.is_empty(),
        "nothing ran on staging before: {before:?}"
    );
    rig.wait_group_serving("staging", "v1", 90).await;

    // A replay attack inside the developer's own groups: seq 1 again after seq 2 is refused.
    forger.refresh(gateway).await;
    let v3 = rig.image("v3", true).await.to_string();
    let newer = forger.forge(&dev, release("staging", 2, "v3", &v3));
    assert_eq!(
        forger.push(newer.bytes().to_vec()).await,
        PushResult::Stored(newer.hash())
    );
    rig.wait_group_serving("staging", "v3", 90).await;
    forger.refresh(gateway).await;
    let replay = forger.forge(&dev, release("staging", 1, "v1", &image));
    refused(
        &forger.push(replay.bytes().to_vec()).await,
        "rollback attack",
        "an older release replayed",
    );

    // A release whose image the registry does not hold under that digest: refused by each
    // staging robot (nothing pulled under the pin), v3 keeps serving.
    let zeros = format!("{}@sha256:{}", rig.repository, "0".repeat(64));
    forger.refresh(gateway).await;
    let wrong = forger.forge(&dev, release("staging", 3, "v9", &zeros));
    assert_eq!(
        forger.push(wrong.bytes().to_vec()).await,
        PushResult::Stored(wrong.hash())
    );
    let status = rig
        .wait_status(90, "staging to refuse the unknown digest", |s| {
            rig.group("staging").all(|r| {
                app_of(s, &r.name).is_some_and(|a| {
                    a["version"] == "v9" && (a["phase"] == "rolled back" || a["phase"] == "failed")
                })
            })
        })
        .await;
    for robot in rig.group("staging") {
        let app = app_of(&status, &robot.name).expect("app");
        assert_eq!(app["serving"], "v3", "{app}");
        let reason = app["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&"0".repeat(64)), "names the pin: {reason}");
        wait_serving(&rig.client, &robot.url, "v3", 10).await;
    }

    // The audit trail: every entry verifies, and it tells what happened, by whom.
    let (code, _, stderr) = rig.peerctl(&["fleet", "log", "--verify"]).await;
    assert_eq!(code, 0, "{stderr}");
    let log = rig.json(&["fleet", "log", "--json"]).await;
    let entries = log.as_array().expect("entries");
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["op"].as_str()).collect();
    let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count("release"), 6, "{kinds:?}");
    assert_eq!(count("rollback"), 1, "{kinds:?}");
    assert_eq!(count("join"), 5, "{kinds:?}");
    assert_eq!(count("grant"), 4, "{kinds:?}");
}
