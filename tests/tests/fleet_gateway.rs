//! The gateway as a fleet member without keys, with real libp2p: an admin's entries reach the
//! gateway and are pushed on to an enrolled robot at once; a robot that was away catches up by
//! anti-entropy; entries the gateway cannot verify (a stranger's release, a flipped byte) are
//! refused there and never reach robots; robots' signed statuses are collected and served.

use std::time::Instant;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetId, Op, PushResult, SignedStatus, StatusReport};
use peercompute_p2p::fleet_hub::{self, FleetHub, unix_now};
use peercompute_tests::fleet::{FleetMember, release};
use peercompute_tests::{GatewayOptions, TestGateway, within};

type Member = FleetMember;

fn desired(hub: &FleetHub, fleet: &FleetId) -> Option<String> {
    hub.with_log(fleet, |log| {
        let group = log.state()?.groups.get("production")?;
        Some(group.desired()?.release.version.clone())
    })
    .flatten()
}

/// Waits until `hub` stores a new entry of `fleet` (bounded).
async fn next_change(changes: &mut tokio::sync::broadcast::Receiver<fleet_hub::FleetChange>) {
    within(10, "an entry pushed by the gateway", changes.recv())
        .await
        .expect("change");
}

#[tokio::test]
async fn the_gateway_stores_verifies_and_forwards_fleet_entries() {
    let gw = TestGateway::start(GatewayOptions {
        p2p: true,
        open: true,
        ..GatewayOptions::default()
    })
    .await;
    let gateway = gw.p2p_addr().await;
    let gw_id = gw.peer_id;

    // The admin's peerctl copy: genesis by the fleet key, the admin granted, a robot enrolled.
    let admin = Member::start(&gateway, true).await;
    let fleet = admin.found(&SigningKey::from_bytes(&[9; 32]), "lekiwi");
    let admin_key = admin.identity.signing_key().clone();
    let robot = Member::start(&gateway, false).await;
    admin.write(
        fleet,
        &admin_key,
        Op::Enroll {
            member: robot.key(),
            name: "lekiwi-1".into(),
            groups: vec!["production".into()],
        },
    );
    let sent = within(
        15,
        "admin sync",
        fleet_hub::sync_with(&admin.node, gw_id, &admin.hub, fleet),
    )
    .await
    .expect("sync with the gateway");
    assert_eq!(sent.sent, 3, "{sent:?}");

    // The robot catches up by anti-entropy once it holds the fleet (the gateway's own push of
    // those entries, racing with this, may deliver some of them first).
    robot.hub.hold(fleet).expect("hold");
    let got = within(
        15,
        "robot sync",
        fleet_hub::sync_with(&robot.node, gw_id, &robot.hub, fleet),
    )
    .await
    .expect("robot sync");
    assert!(got.refused.is_empty(), "{got:?}");
    assert_eq!(robot.hub.with_log(&fleet, |l| l.len()), Some(3), "{got:?}");

    // A release pushed to the gateway reaches the robot without the robot asking.
    let mut changes = robot.hub.subscribe();
    let v1 = admin.write(fleet, &admin_key, release("production", 1, "v1"));
    let started = Instant::now();
    let results = fleet_hub::push_to(&admin.node, gw_id, fleet, vec![v1.bytes().to_vec()])
        .await
        .expect("push");
    assert_eq!(results, vec![PushResult::Stored(v1.hash())]);
    next_change(&mut changes).await;
    eprintln!(
        "release pushed → stored on the robot in {:?}",
        started.elapsed()
    );
    assert_eq!(desired(&robot.hub, &fleet).as_deref(), Some("v1"));

    // A stranger's release, signed with a raw key: refused by the gateway, with the reason.
    let stranger = SigningKey::from_bytes(&[66; 32]);
    let forged = robot
        .hub
        .with_log(&fleet, |log| {
            log.author(&stranger, release("production", 2, "evil"), unix_now())
        })
        .expect("held")
        .expect("well-formed");
    let results = fleet_hub::push_to(&admin.node, gw_id, fleet, vec![forged.bytes().to_vec()])
        .await
        .expect("push");
    assert!(
        matches!(&results[..], [PushResult::Refused { reason }] if reason.contains("not a member")),
        "{results:?}"
    );
    // A byte flipped in transit: refused too.
    let v2 = admin.write(fleet, &admin_key, release("production", 2, "v2"));
    let mut tampered = v2.bytes().to_vec();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    let results = fleet_hub::push_to(&admin.node, gw_id, fleet, vec![tampered])
        .await
        .expect("push");
    assert!(
        matches!(&results[..], [PushResult::Refused { .. }]),
        "{results:?}"
    );
    // Positive control: the untampered v2 goes through to the robot; the forged one never did.
    fleet_hub::push_to(&admin.node, gw_id, fleet, vec![v2.bytes().to_vec()])
        .await
        .expect("push");
    next_change(&mut changes).await;
    assert_eq!(desired(&robot.hub, &fleet).as_deref(), Some("v2"));
    let robot_len = robot.hub.with_log(&fleet, |l| l.len()).expect("held");
    assert_eq!(
        robot_len, 5,
        "genesis, grant, enrol, v1, v2 — nothing forged"
    );

    // Statuses: the robot reports, the admin reads it back from the gateway, signature checked.
    let report = StatusReport {
        fleet,
        robot: robot.key(),
        at_ms: unix_now() * 1000,
        agent: "test".into(),
        uptime_secs: 1,
        log_len: robot_len as u64,
        apps: vec![],
        cpu_permille: 0,
        memory_used_bytes: 0,
        memory_total_bytes: 0,
        disk_free_bytes: 0,
        history: Vec::new(),
        group_names: Vec::new(),
    };
    let status = SignedStatus::sign(report, robot.identity.signing_key());
    fleet_hub::send_status(&robot.node, gw_id, status.clone())
        .await
        .expect("status sent");
    let mut forged_status = status.clone();
    forged_status.report.log_len = 99;
    fleet_hub::send_status(&robot.node, gw_id, forged_status)
        .await
        .expect("sent");
    let statuses = fleet_hub::request_statuses(&admin.node, gw_id, fleet)
        .await
        .expect("statuses");
    assert_eq!(statuses, vec![status], "only the genuine status is kept");
}
