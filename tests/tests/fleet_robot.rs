//! A robot in a fleet, end to end with the real parts: a gateway holding the fleet log, a
//! `peercomputed` daemon that joins with a token (a second robot with the same one-use token
//! is refused, saying why), a local registry (Debian's
//! `docker-registry`) serving busybox images pinned by digest, and an admin writing entries
//! with the fleet crate. Release v1 → the robot serves it at `web-<robot>`; v2 whose health
//! path fails → the robot keeps v1 serving and reports `rolled back` with the reason; v3 →
//! switched; a rollback → v1 again, the replaced containers stopped; a restarted daemon
//! re-adopts the serving container. A visitor loop runs through every switch and rollback
//! and counts failed requests.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    FleetId, Invite, JoinToken, MemberKey, Op, Phase, PushResult, Rollback, SignedEntry,
};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{self, unix_now};
use peercompute_p2p::{Multiaddr, PeerId};
use peercompute_provider::{JoinStatus, Limits};
use peercompute_runtime::testsupport::{Cleanup, LocalRegistry, unique_name};
use peercompute_runtime::{DockerRuntime, PinnedImage};
use peercompute_tests::fleet::{FleetMember, peer_of, release_of};
use peercompute_tests::fleet_rig::{
    Rig, Visitor, fleet_containers, gateway_spec as spec, wait_join, wait_serving,
    web_image as image,
};
use peercompute_tests::{Alpn, GatewayOptions, TestDaemon, TestGateway, https_client, within};

/// The admin's copy of the fleet (a [`FleetMember`]) and the fleet key.
struct Admin {
    member: FleetMember,
    fleet_key: SigningKey,
    fleet: FleetId,
    gateway: PeerId,
}

impl Admin {
    async fn start(gateway: &Multiaddr) -> Self {
        let member = FleetMember::start(gateway, true).await;
        let fleet_key = SigningKey::from_bytes(&rand::random());
        let fleet = FleetId(fleet_key.verifying_key().to_bytes());
        Admin {
            member,
            fleet_key,
            fleet,
            gateway: peer_of(gateway),
        }
    }

    /// Writes `op` with the fleet key, stores it here and pushes it to the gateway.
    async fn write(&self, op: Op) -> SignedEntry {
        let entry = self.member.write(self.fleet, &self.fleet_key, op);
        let pushed = within(
            20,
            "push to the gateway",
            fleet_hub::push_to(
                &self.member.node,
                self.gateway,
                self.fleet,
                vec![entry.bytes().to_vec()],
            ),
        )
        .await
        .expect("push");
        assert_eq!(pushed, vec![PushResult::Stored(entry.hash())]);
        entry
    }

    /// Pulls from the gateway until `robot` is a member; its name.
    async fn wait_member(&self, robot: MemberKey) -> String {
        within(60, "the robot's join to reach the gateway", async {
            loop {
                let _ = fleet_hub::sync_with(
                    &self.member.node,
                    self.gateway,
                    &self.member.hub,
                    self.fleet,
                )
                .await;
                let name = self
                    .member
                    .hub
                    .with_log(&self.fleet, |l| {
                        l.state()?.members.get(&robot).map(|m| m.name.clone())
                    })
                    .flatten();
                if let Some(name) = name {
                    return name;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
    }

    /// Waits until the robot's signed status at the gateway shows `version` in a final phase.
    async fn wait_status(&self, robot: MemberKey, version: &str) -> peercompute_fleet::AppStatus {
        within(90, &format!("the robot's status for {version}"), async {
            loop {
                let statuses =
                    fleet_hub::request_statuses(&self.member.node, self.gateway, self.fleet)
                        .await
                        .unwrap_or_default();
                let app = statuses
                    .into_iter()
                    .filter(|s| s.report.robot == robot)
                    .flat_map(|s| s.report.apps)
                    .find(|a| a.version == version && a.phase.is_final());
                if let Some(app) = app {
                    return app;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
    }
}

fn release(seq: u64, version: &str, image: &PinnedImage, timeout_secs: u32) -> Op {
    release_of(
        "production",
        seq,
        version,
        "web",
        &image.to_string(),
        timeout_secs,
    )
}

#[tokio::test]
async fn a_robot_joins_by_token_and_applies_releases_behind_a_health_gate() {
    let gw = TestGateway::start(GatewayOptions {
        p2p: true,
        open: true,
        ..GatewayOptions::default()
    })
    .await;
    let gateway = gw.p2p_addr().await;
    let runtime = DockerRuntime::connect().await.expect("a Docker engine");
    let registry = LocalRegistry::start().await.expect("a local registry");
    let cleanup = Cleanup::new();
    let repository = format!(
        "{}/peercompute/{}",
        registry.host(),
        unique_name("fleet-web")
    );
    let v1 = image(&runtime, &registry, &cleanup, &repository, "v1", true).await;
    let v2 = image(&runtime, &registry, &cleanup, &repository, "v2", false).await;
    let v3 = image(&runtime, &registry, &cleanup, &repository, "v3", true).await;

    // The admin starts the fleet and invites robots into production.
    let admin = Admin::start(&gateway).await;
    admin
        .write(Op::Genesis {
            name: "lekiwi".into(),
        })
        .await;
    let invite_key = SigningKey::from_bytes(&rand::random());
    let invite = admin
        .write(Op::Invite(Invite {
            invite_key: MemberKey(invite_key.verifying_key().to_bytes()),
            groups: vec!["production".into()],
            name_prefix: Some("lekiwi".into()),
            expires_at: unix_now() + 3600,
            uses: 1,
        }))
        .await;
    let token = JoinToken {
        invite: invite.bytes().to_vec(),
        secret: invite_key.to_bytes(),
        bootstrap: vec![],
    }
    .to_text();

    // The robot: `peercomputed join TOKEN`, then the daemon.
    let (home, robot_peer) = TestDaemon::identity();
    let identity = Identity::load(home.path()).expect("robot identity");
    let saved = peercompute_provider::save_token(
        &peercompute_provider::fleet_dir(home.path()),
        &token,
        identity.signing_key(),
        None,
        unix_now(),
    )
    .expect("the token is saved");
    assert_eq!(saved.fleet, admin.fleet);
    cleanup.containers_labelled(
        peercompute_runtime::LABEL_PROVIDER,
        &format!("{robot_peer}/fleet"),
    );
    let mut robot_daemon =
        TestDaemon::start_custom(home, spec(&gw), Limits::default(), |_| {}).await;
    let joined = wait_join(&robot_daemon).await;
    let robot = MemberKey(identity.public_key_bytes());
    let name = admin.wait_member(robot).await;
    assert_eq!(name, saved.name, "joined under the name `join` printed");
    assert!(name.starts_with("lekiwi-"), "{name}");
    assert_eq!(
        joined,
        JoinStatus::Joined {
            fleet: admin.fleet,
            name: name.clone()
        }
    );

    // The token allowed one robot: a second one is refused, with the reason.
    let (home2, _) = TestDaemon::identity();
    let identity2 = Identity::load(home2.path()).expect("second identity");
    peercompute_provider::save_token(
        &peercompute_provider::fleet_dir(home2.path()),
        &token,
        identity2.signing_key(),
        None,
        unix_now(),
    )
    .expect("still unexpired, so saved");
    let second = TestDaemon::start_custom(home2, spec(&gw), Limits::default(), |_| {}).await;
    match wait_join(&second).await {
        JoinStatus::Refused { reason } => {
            assert!(
                reason.contains("already used"),
                "the reason says which: {reason}"
            )
        }
        other => panic!("a used-up token must be refused: {other:?}"),
    }
    drop(second);

    // v1: served at web-<robot>.
    let route = format!("web-{name}");
    let client = https_client(&gw, &[route.as_str()], Alpn::H1);
    let url = gw.url(&route, "/");
    admin.write(release(1, "v1", &v1, 30)).await;
    wait_serving(&client, &url, "v1", 90).await;
    let status = admin.wait_status(robot, "v1").await;
    assert_eq!(status.phase, Phase::Healthy, "{status:?}");

    // v2 never becomes healthy: v1 keeps serving, nobody sees a failed request.
    let visitor = Visitor::start(client.clone(), url.clone());
    admin.write(release(2, "v2", &v2, 5)).await;
    let status = admin.wait_status(robot, "v2").await;
    assert_eq!(status.phase, Phase::RolledBack, "{status:?}");
    let reason = status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("404"),
        "the reason names what failed: {reason}"
    );
    assert_eq!(status.serving.as_deref(), Some("v1"));
    wait_serving(&client, &url, "v1", 90).await;

    // v3: switched, still without a failed request.
    admin.write(release(3, "v3", &v3, 30)).await;
    wait_serving(&client, &url, "v3", 90).await;
    let status = admin.wait_status(robot, "v3").await;
    assert_eq!(status.phase, Phase::Healthy, "{status:?}");

    // A signed rollback returns the group to v1.
    admin
        .write(Op::Rollback(Rollback {
            group: "production".into(),
            seq: 4,
            to_version: Some("v1".into()),
        }))
        .await;
    wait_serving(&client, &url, "v1", 90).await;
    let status = admin.wait_status(robot, "v1").await;
    assert_eq!(status.phase, Phase::Healthy, "{status:?}");

    let (failed, total) = visitor.stop().await;
    eprintln!(
        "visitor: {failed} failed of {total} requests through a rollback, a switch and a return"
    );
    assert!(total > 10, "the visitor ran ({total} requests)");
    assert_eq!(failed, 0, "failed visitor requests: {failed} of {total}");

    // Old containers were stopped; a restarted daemon re-adopts the serving one (the tunnel
    // reconnects meanwhile, so visitors are not counted here).
    // (The status says healthy once the switch is recorded; the old one drains 2 s more.)
    let before = within(10, "the old containers drained and stopped", async {
        loop {
            let now = fleet_containers(&runtime, &robot_peer).await;
            if now.len() == 1 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    robot_daemon.restart().await;
    wait_serving(&client, &url, "v1", 90).await;
    assert_eq!(
        fleet_containers(&runtime, &robot_peer).await,
        before,
        "re-adopted, not started again"
    );

    // The switch is recorded before the old container drains: a daemon that dies during the
    // drain finds v4 serving at its start (re-adopted, not applied a second time), and the old
    // container, no longer recorded, is removed.
    let applied = peercompute_provider::fleet_dir(robot_daemon.home.path()).join("applied.json");
    admin.write(release(5, "v4", &v3, 30)).await;
    let running = within(90, "v4 recorded in applied.json", async {
        loop {
            let text = std::fs::read_to_string(&applied).unwrap_or_default();
            if text.contains("\"v4\"") {
                return fleet_containers(&runtime, &robot_peer).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let addr = robot_daemon.stop().await;
    assert_eq!(
        running.len(),
        2,
        "the old container still drains when the switch is recorded: {running:?}"
    );
    let v4: Vec<String> = running
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert_eq!(v4.len(), 1, "one new container: {v4:?}");
    robot_daemon.start_again(&addr).await;
    wait_serving(&client, &url, "v3", 90).await;
    within(30, "the drained container removed at start", async {
        while fleet_containers(&runtime, &robot_peer).await != v4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let status = admin.wait_status(robot, "v4").await;
    assert_eq!(status.phase, Phase::Healthy, "{status:?}");
}

/// A robot passes a new entry straight on to the fleet members connected to it (on its LAN,
/// say), not only through the gateway: an admin pushes a release to the robot alone, and a
/// second member connected to the robot gets it from the robot within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_forwards_new_entries_to_the_members_connected_to_it() {
    let rig = Rig::start(&[("production", 1)]).await;
    let robot = &rig.robots[0];
    let gateway = rig.gw.p2p_addr().await;

    // A second member, enrolled by the admin, with the log pulled from the gateway.
    let neighbour = FleetMember::start(&gateway, false).await;
    let neighbour_id = neighbour.identity.peer_id().to_string();
    rig.ok(&[
        "fleet",
        "enroll",
        &neighbour_id,
        "--group",
        "staging",
        "--name",
        "neighbour",
    ])
    .await;
    neighbour.hub.hold(rig.fleet).expect("hold the fleet");
    within(30, "the neighbour's copy to hold its enrolment", async {
        loop {
            let _ = fleet_hub::sync_with(
                &neighbour.node,
                peer_of(&gateway),
                &neighbour.hub,
                rig.fleet,
            )
            .await;
            let enrolled = neighbour
                .hub
                .with_log(&rig.fleet, |l| {
                    l.state()
                        .is_some_and(|s| s.members.contains_key(&neighbour.key()))
                })
                .unwrap_or(false);
            if enrolled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // The robot has it too (through the gateway), then the neighbour connects to the robot.
    within(30, "the robot's copy to hold the enrolment", async {
        while robot
            .daemon
            .daemon
            .as_ref()
            .expect("running")
            .fleet
            .with_log(&rig.fleet, |l| {
                l.state()
                    .is_some_and(|s| s.members.contains_key(&neighbour.key()))
            })
            != Some(true)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let robot_addr: Multiaddr = robot.daemon.addr().parse().expect("robot address");
    within(
        15,
        "dial the robot",
        neighbour.node.dial(robot.peer, vec![robot_addr.clone()]),
    )
    .await
    .expect("dial the robot");

    // The admin (the peerctl identity) writes a release and pushes it to the robot only.
    let admin = Identity::load(rig.admin.path()).expect("the admin's identity");
    let pusher = FleetMember::start(&gateway, false).await;
    within(
        15,
        "dial the robot",
        pusher.node.dial(robot.peer, vec![robot_addr]),
    )
    .await
    .expect("dial the robot");
    let image = format!("{}@sha256:{}", rig.repository, "0".repeat(64));
    let entry = neighbour
        .hub
        .with_log(&rig.fleet, |l| {
            l.author(
                admin.signing_key(),
                release_of("staging", 1, "v1", "web", &image, 10),
                unix_now(),
            )
        })
        .expect("held")
        .expect("the admin may release");
    let mut changes = neighbour.hub.subscribe();
    let pushed = within(
        15,
        "push to the robot",
        fleet_hub::push_to(
            &pusher.node,
            robot.peer,
            rig.fleet,
            vec![entry.bytes().to_vec()],
        ),
    )
    .await
    .expect("pushed");
    assert_eq!(pushed, vec![PushResult::Stored(entry.hash())]);
    let change = within(5, "the robot to pass the entry on", async {
        loop {
            let change = changes.recv().await.expect("the neighbour's hub runs");
            if change.entries.contains(&entry.hash()) {
                return change;
            }
        }
    })
    .await;
    assert_eq!(
        change.from,
        Some(robot.peer),
        "it came from the robot, not through the gateway"
    );
}
