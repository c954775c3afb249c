//! Revocation through the gateway, end to end with the real parts: one gateway, two
//! `peercomputed` daemons joined by token into production and serving v1 from a local
//! registry, and the `peerctl` binary.
//!
//! `peerctl fleet revoke <r2>` → r2's tunnel is gone from the admin API's
//! `/api/v1/providers` within 1 s of spawning the command (measured, printed), its name is no
//! longer owned by it and its URL stops answering, it cannot come back, `fleet status` and
//! `fleet members` show it revoked with the reason, and r1 keeps serving. A second fleet that
//! enrols r1's key (which never took part in it) and revokes it does not cut r1 at the
//! gateway. Then forged and replayed ops pushed to the gateway with raw keys: a resume by a
//! developer and by a non-member, a revoke of r1 by a developer and by a revoked operator, an
//! e-stop by a developer, by a non-member, by a revoked operator, another fleet's entry, and
//! an old e-stop replayed after its resume — each refused (or a duplicate) with its reason; a
//! status signed with the revoked robot's key is not kept; and r1 serves on.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use peercompute_fleet::{Entry, EntryHash, FleetId, MemberKey, Op, PushResult, SignedEntry};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{self, unix_now};
use peercompute_tests::fleet::FleetMember;
use peercompute_tests::fleet_rig::{Rig, rows, serves, wait_serving};
use peercompute_tests::{peerctl_bin, within};

/// Checks for `secs` (every 100 ms) that `peer` keeps its tunnel and `url` serves v1.
async fn keeps_serving(rig: &Rig, peer: &str, url: &str, secs: u64, when: &str) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        assert!(
            rig.providers().await.iter().any(|p| p == peer),
            "{when}: {peer} lost its tunnel"
        );
        assert!(serves(&rig.client, url, "v1").await, "{when}: {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A key of someone new: its signing key and peer id.
fn someone() -> (SigningKey, String) {
    let id = Identity::generate().expect("identity");
    (id.signing_key().clone(), id.peer_id().to_string())
}

/// An in-process member with a copy of the gateway's log, pushing raw entries to it.
struct Pusher {
    member: FleetMember,
    gateway: peercompute_p2p::PeerId,
    fleet: FleetId,
}

impl Pusher {
    async fn refresh(&self) {
        self.member.hub.hold(self.fleet).expect("hold");
        let sync = fleet_hub::sync_with(
            &self.member.node,
            self.gateway,
            &self.member.hub,
            self.fleet,
        );
        within(15, "sync with the gateway", sync)
            .await
            .expect("synced");
    }

    /// `op` signed by `key` in `fleet` on the copy's heads, with no authority check.
    fn forge(&self, fleet: FleetId, key: &SigningKey, op: Op) -> SignedEntry {
        let (parents, clock) = self
            .member
            .hub
            .with_log(&self.fleet, |l| (l.heads(), l.next_clock()))
            .expect("held");
        let entry = Entry {
            fleet,
            parents,
            clock,
            author: MemberKey(key.verifying_key().to_bytes()),
            at: unix_now(),
            op,
        };
        SignedEntry::sign(entry, key).expect("well-formed")
    }

    async fn push(&self, bytes: Vec<u8>) -> PushResult {
        let push = fleet_hub::push_to(&self.member.node, self.gateway, self.fleet, vec![bytes]);
        let results = within(15, "push to the gateway", push)
            .await
            .expect("the gateway answers");
        results.into_iter().next().expect("one result")
    }

    fn entry(&self, hash: &EntryHash) -> Vec<u8> {
        self.member
            .hub
            .with_log(&self.fleet, |l| l.get(hash).map(|e| e.bytes().to_vec()))
            .flatten()
            .expect("the entry is in the copy")
    }
}

fn refused(result: &PushResult, words: &str, what: &str) {
    match result {
        PushResult::Refused { reason } => {
            assert!(reason.contains(words), "{what}: {reason}");
            eprintln!("refused as expected, {what}: {reason}");
        }
        other => panic!("{what} must be refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_robot_loses_its_tunnel_and_names_and_forged_ops_are_refused() {
    let begun = Instant::now();
    let rig = Rig::start(&[("production", 2)]).await;
    rig.image("v1", true).await;
    rig.release("production", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 90).await;
    let (r1, r2) = (&rig.robots[0], &rig.robots[1]);
    let (r1_id, r2_id) = (r1.peer.to_string(), r2.peer.to_string());
    let r2_route = format!("web-{}", r2.name);
    assert!(rig.providers().await.contains(&r2_id), "r2 has a tunnel");
    assert_eq!(
        rig.owner_of(&r2_route).await.as_deref(),
        Some(r2_id.as_str())
    );

    // Revoke r2 with the binary: spawn → its tunnel gone from the admin API.
    let spawned = Instant::now();
    let revoke = tokio::process::Command::new(peerctl_bin())
        .arg("--home")
        .arg(rig.admin.path())
        .arg("--no-mdns")
        .args(["fleet", "revoke", &r2.name, "--reason", "stolen", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn peerctl");
    let gone = within(10, "r2's tunnel to go", async {
        loop {
            if !rig.providers().await.contains(&r2_id) {
                return spawned.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let out = within(30, "peerctl fleet revoke", revoke.wait_with_output())
        .await
        .expect("peerctl ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "revoke: spawn of `peerctl fleet revoke` → tunnel gone from /api/v1/providers: {} ms",
        gone.as_millis()
    );
    assert!(out.status.success(), "peerctl fleet revoke: {stderr}");
    let printed: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("revoke --json prints JSON");
    assert_eq!(printed["op"], "revoke", "{printed}");
    assert_eq!(printed["member"], r2_id.as_str());
    assert_eq!(printed["name"], r2.name.as_str());
    assert!(
        gone <= Duration::from_millis(1000),
        "the tunnel went after {} ms (at most 1000 ms)",
        gone.as_millis()
    );

    // Its name is released, its URL answers no more, and r1 serves on.
    within(5, "r2's name to be released", async {
        while rig.owner_of(&r2_route).await.as_deref() == Some(r2_id.as_str()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        !serves(&rig.client, &r2.url, "v1").await,
        "r2's URL is dead"
    );
    assert!(serves(&rig.client, &r1.url, "v1").await, "r1 serves on");

    // `fleet status` and `fleet members` show r2 revoked with the reason.
    let status = rig.json(&["fleet", "status", "--json"]).await;
    let row = rows(&status)
        .into_iter()
        .find(|r| r["name"] == r2.name.as_str())
        .expect("r2's row");
    assert_eq!(row["revoked"], "stolen", "{row}");
    let members = rig.json(&["fleet", "members", "--json"]).await;
    let row = rows(&members)
        .into_iter()
        .find(|r| r["peer_id"] == r2_id.as_str())
        .expect("r2 listed");
    assert_eq!(row["revoked"], "stolen", "{row}");

    // A fleet that enrols r1's key (r1 never took part in it) and revokes it cuts nobody.
    rig.ok(&["fleet", "create", "other"]).await;
    let enroll = ["enroll", &r1_id, "--group", "g", "--name", "victim"];
    fn other<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["fleet", "--fleet", "other"][..], args].concat()
    }
    rig.ok(&other(&enroll)).await;
    let stranger = rig
        .json(&other(&[
            "revoke", "victim", "--reason", "hostile", "--json",
        ]))
        .await;
    assert!(
        stranger["gateways"]
            .as_array()
            .is_some_and(|g| !g.is_empty()),
        "the revoke reached the gateway: {stranger}"
    );
    keeps_serving(&rig, &r1_id, &r1.url, 2, "after a stranger fleet's revoke").await;

    // Forged and replayed ops, pushed to the gateway with raw keys.
    let gateway = rig.gw.p2p_addr().await;
    let pusher = Pusher {
        member: FleetMember::start(&gateway, true).await,
        gateway: rig.gw.peer_id,
        fleet: rig.fleet,
    };
    let (dev, dev_id) = someone();
    let (ops, ops_id) = someone();
    let (outsider, _) = someone();
    rig.ok(&["fleet", "grant", &dev_id, "--role", "developer"])
        .await;
    rig.ok(&["fleet", "grant", &ops_id, "--role", "operator"])
        .await;
    rig.ok(&["fleet", "revoke", &ops_id, "--reason", "left"])
        .await;
    let other_fleet: FleetId = rig
        .json(&["fleet", "list", "--json"])
        .await
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "other").cloned())
        .and_then(|f| f["fleet_id"].as_str().map(str::to_owned))
        .expect("the other fleet listed")
        .parse()
        .expect("a fleet id");
    pusher.refresh().await;
    let stop = || Op::estop(vec!["production".into()], "forged");
    let resume = || Op::Resume {
        groups: vec!["production".into()],
    };
    let revoke_r1 = || Op::Revoke {
        member: MemberKey::from_peer_id(&r1.peer).expect("an ed25519 peer id"),
        reason: "forged".into(),
    };
    let attacks = [
        (
            "a resume by a developer",
            pusher.forge(rig.fleet, &dev, resume()),
            "developer may not resume",
        ),
        (
            "a resume by a non-member",
            pusher.forge(rig.fleet, &outsider, resume()),
            "not a member of the fleet",
        ),
        (
            "a revoke of r1 by a developer",
            pusher.forge(rig.fleet, &dev, revoke_r1()),
            "developer may not revoke keys",
        ),
        (
            "a revoke of r1 by the revoked operator",
            pusher.forge(rig.fleet, &ops, revoke_r1()),
            "was revoked",
        ),
        (
            "an e-stop by a developer",
            pusher.forge(rig.fleet, &dev, stop()),
            "developer may not stop",
        ),
        (
            "an e-stop by a non-member",
            pusher.forge(rig.fleet, &outsider, stop()),
            "not a member of the fleet",
        ),
        (
            "an e-stop by a revoked operator",
            pusher.forge(rig.fleet, &ops, stop()),
            "was revoked",
        ),
        (
            "another fleet's e-stop",
            pusher.forge(other_fleet, &outsider, stop()),
            "belongs to fleet",
        ),
    ];
    for (what, entry, words) in &attacks {
        refused(&pusher.push(entry.bytes().to_vec()).await, words, what);
    }

    // A status signed by the revoked robot's own key (its disk read by a thief), claiming the
    // newest time: the gateway does not keep it.
    let statuses = |rig: &Rig| {
        let node = pusher.member.node.clone();
        let (gateway, fleet) = (rig.gw.peer_id, rig.fleet);
        async move {
            let asked = fleet_hub::request_statuses(&node, gateway, fleet);
            within(15, "statuses from the gateway", asked)
                .await
                .expect("the gateway answers")
        }
    };
    let mut forged = statuses(&rig)
        .await
        .first()
        .expect("r1 reports")
        .report
        .clone();
    let r2_key = Identity::load(r2.daemon.home.path()).expect("r2's key");
    forged.robot = MemberKey(r2_key.public_key_bytes());
    forged.agent = "forged".into();
    forged.at_ms = u64::MAX / 2;
    let forged = peercompute_fleet::SignedStatus::sign(forged, r2_key.signing_key());
    assert!(forged.verify(), "a well-signed status");
    let sent = fleet_hub::send_status(&pusher.member.node, rig.gw.peer_id, forged);
    within(15, "the forged status sent", sent)
        .await
        .expect("the gateway answers");
    let held = statuses(&rig).await;
    assert!(
        held.iter().all(|s| s.report.agent != "forged"),
        "the revoked robot's status is not kept"
    );

    // A real stop and its resume, then the stop replayed: a duplicate, nothing stops.
    let stopped = rig
        .json(&[
            "fleet",
            "estop",
            "--group",
            "production",
            "--reason",
            "drill",
            "--json",
        ])
        .await;
    rig.ok(&["fleet", "resume", "--group", "production"]).await;
    wait_serving(&rig.client, &r1.url, "v1", 60).await;
    let hash: EntryHash = stopped["hash"]
        .as_str()
        .expect("hash")
        .parse()
        .expect("an entry hash");
    pusher.refresh().await;
    let replay = pusher.push(pusher.entry(&hash)).await;
    assert_eq!(replay, PushResult::Duplicate(hash), "the old stop replayed");
    keeps_serving(
        &rig,
        &r1_id,
        &r1.url,
        2,
        "after the forgeries and the replay",
    )
    .await;
    assert!(
        !rig.providers().await.contains(&r2_id),
        "the revoked robot never came back"
    );
    eprintln!(
        "fleet_revoke: {:.1} s in all",
        begun.elapsed().as_secs_f64()
    );
}
