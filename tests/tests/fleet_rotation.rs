//! Key rotation, end to end with the real parts: a gateway whose allowlist names the robot's
//! key, a robot running the real `peercomputed` binary (joined by token, serving v1 of a
//! release from a local registry through the gateway), and the real `peerctl` binary.
//!
//! `peercomputed rotate-key --json` → token → `peerctl fleet rotate-member TOKEN` → the gateway
//! pushes the entry to the robot's old key, the robot switches keys and re-executes itself →
//! the same URL answers v1 again from the same container (no Docker `create` event), within a
//! measured time; the gateway lists the new peer id and not the old, owns the name under the
//! new key and admits it by alias (only the old key is on its allowlist). An entry signed by
//! the old key pushed raw is refused (rotated), and so is a tunnel with the old identity. Then
//! `peerctl fleet rotate-root --new-key FILE`: a grant signed by the old root pushed raw is
//! refused.
//!
//! A robot that is off when its rotation is published starts with its old key (its copy of the
//! log does not hold the rotation), syncs, switches and serves through the new key.
//! What the robot runs across a rotation: `fleet_rotation_labels.rs`.

use peercompute_tests::rotation_rig::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use peercompute_fleet::{Grant, MemberKey, Op, Role};
use peercompute_identity::Identity;
use peercompute_runtime::LABEL_PROVIDER;
use peercompute_tests::docker_events::DockerEvents;
use peercompute_tests::fleet::FleetMember;
use peercompute_tests::fleet_rig::{fleet_containers, serves};
use peercompute_tests::{TestProvider, peerctl_bin, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_rotates_its_key_and_keeps_its_url_and_container_then_the_root_rotates() {
    let begun = Instant::now();
    let mut s = Serving::start(Setup::Web).await;
    let adm = s.admin_home.path();
    eprintln!(
        "rotation: robot serving v1 after {:.1} s",
        begun.elapsed().as_secs_f64()
    );

    // The robot makes its next key; asked twice, it gives the same token.
    let asked = s.rotate_key().await;
    assert_eq!(s.rotate_key().await, asked, "rotate-key is idempotent");
    assert_eq!(asked["old_peer_id"], s.old.to_string().as_str());
    let new = new_key(&asked);
    let token = asked["token"].as_str().expect("token");

    // The admin publishes it (the binary, spawned): the robot switches by itself.
    let events = DockerEvents::start(LABEL_PROVIDER).await;
    let spawned = Instant::now();
    let rotate_member = tokio::process::Command::new(peerctl_bin())
        .arg("--home")
        .arg(adm)
        .arg("--no-mdns")
        .args(["fleet", "rotate-member", token, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peerctl");
    let (switched, outage) = s.wait_switch(spawned, &new).await;
    let out = within(
        30,
        "peerctl fleet rotate-member",
        rotate_member.wait_with_output(),
    )
    .await
    .expect("peerctl ran");
    assert!(out.status.success(), "rotate-member: {out:?}");
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rotated["op"], "rotate-member", "{rotated}");
    assert_eq!(rotated["name"], s.name.as_str(), "{rotated}");
    assert_eq!(rotated["new"], new.to_string().as_str(), "{rotated}");
    eprintln!(
        "rotation: spawn of `peerctl fleet rotate-member` → the URL answers v1 through {new}'s tunnel and the old key is gone from /api/v1/providers: {} ms; the URL failed for {} ms of it (polled every 10 ms)",
        switched.as_millis(),
        outage.unwrap_or_default().as_millis()
    );
    assert!(
        switched <= SWITCH_BOUND,
        "the switch took {} ms (at most {} ms)",
        switched.as_millis(),
        SWITCH_BOUND.as_millis()
    );
    let running = s.robot.try_wait().expect("wait").is_none();
    assert!(running, "the daemon runs on (re-executed in place)");
    let log = std::fs::read_to_string(s.home.path().join("provider.log")).expect("robot log");
    assert!(
        log.contains(&format!("key rotated: switching to {new}")),
        "{log}"
    );

    // Same container, no new one; the key files; the name owned by the new key.
    let now_serving = fleet_containers(&s.runtime, &s.old).await;
    assert_eq!(now_serving, s.container, "the same container");
    // This robot's containers only (other tests share the engine): its first key's label.
    let label = format!("{}/fleet", s.old);
    let created: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.action == "create" && e.provider == label)
        .collect();
    assert!(created.is_empty(), "no container created: {created:?}");
    assert_eq!(Identity::load(s.home.path()).expect("key").peer_id(), new);
    let next_file = s.home.path().join(peercompute_identity::NEXT_KEY_FILE);
    assert!(!next_file.exists(), "the next key became the identity");
    let old_identity = Identity::load_file(&retired_key(s.home.path())).expect("old key");
    assert_eq!(old_identity.peer_id(), s.old);
    assert_eq!(owner_of(&s.gw, &s.route).await, Some(new.to_string()));

    // The old key: its tunnel refused, its entries refused.
    let mut impostor = TestProvider::start(old_identity.clone(), &s.gw);
    let reason = impostor.refused().await;
    assert!(reason.contains("not allowed"), "{reason}");
    eprintln!("refused as expected, a tunnel with the old key: {reason}");
    impostor.stop().await;
    let member = FleetMember::start(&s.gw.p2p_addr().await, true).await;
    let stop = Op::estop(vec!["production".into()], "forged");
    let result = push_signed(&member, &s.gw, s.fleet, old_identity.signing_key(), stop).await;
    assert_rotated_away(&result, "an e-stop signed by the robot's old key");

    // The root rotates; a grant signed by the old root is refused.
    let listed = admin(adm, &["fleet", "list", "--json"]).await;
    let old_root_path = listed[0]["fleet_key"]
        .as_str()
        .expect("the fleet key's path");
    let old_root = Identity::load_file(Path::new(old_root_path)).expect("old root");
    let new_root_path = adm.join("lekiwi-next.key");
    let new_root_arg = new_root_path.to_str().expect("utf-8 path");
    let root = admin(
        adm,
        &["fleet", "rotate-root", "--new-key", new_root_arg, "--json"],
    )
    .await;
    assert_eq!(root["op"], "rotate-root", "{root}");
    let grant = Op::Grant(Grant {
        member: MemberKey(Identity::generate().expect("id").public_key_bytes()),
        role: Role::Developer,
        groups: vec![],
        expires_at: None,
    });
    let result = push_signed(&member, &s.gw, s.fleet, old_root.signing_key(), grant).await;
    assert_rotated_away(&result, "a grant signed by the old root");
    assert!(serves(&s.client, &s.url, "v1").await, "the robot serves on");
    eprintln!(
        "fleet_rotation: {:.1} s in all",
        begun.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_that_was_off_during_its_rotation_switches_when_it_comes_back() {
    let begun = Instant::now();
    let mut s = Serving::start(Setup::Web).await;
    let asked = s.rotate_key().await;
    let new = new_key(&asked);
    stop_robot(&mut s.robot).await;

    // Published while the robot is off: the gateway moves the name to the new key at once
    // (the robot took part in the fleet), and nobody serves it.
    let token = asked["token"].as_str().expect("token");
    admin(s.admin_home.path(), &["fleet", "rotate-member", token]).await;
    within(5, "the name to move to the new key", async {
        while owner_of(&s.gw, &s.route).await != Some(new.to_string()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!serves(&s.client, &s.url, "v1").await, "nobody serves it");

    // It starts with its old key (its copy of the log does not hold the rotation), syncs, and
    // switches; its container is adopted again.
    let events = DockerEvents::start(LABEL_PROVIDER).await;
    let started = Instant::now();
    s.robot = run_robot(s.home.path(), &s.gw, "provider-again.log", "off");
    let (switched, _) = s.wait_switch(started, &new).await;
    eprintln!(
        "rotation while off: daemon started → the URL answers v1 through {new}'s tunnel: {} ms",
        switched.as_millis()
    );
    let log = std::fs::read_to_string(s.home.path().join("provider-again.log")).expect("log");
    assert!(
        log.contains(&format!("key rotated: switching to {new}")),
        "{log}"
    );
    assert_eq!(Identity::load(s.home.path()).expect("key").peer_id(), new);
    let now_serving = fleet_containers(&s.runtime, &s.old).await;
    assert_eq!(now_serving, s.container, "the same container");
    let label = format!("{}/fleet", s.old);
    let creates = events
        .all()
        .into_iter()
        .filter(|e| e.action == "create" && e.provider == label);
    assert_eq!(creates.count(), 0, "no container created");
    eprintln!(
        "fleet_rotation (off): {:.1} s in all",
        begun.elapsed().as_secs_f64()
    );
}
