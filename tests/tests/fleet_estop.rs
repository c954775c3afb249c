//! Emergency stop through the gateway, end to end with the real parts: one gateway, three
//! `peercomputed` daemons (one Docker engine) joined by token, two in production and one in
//! staging, a local registry, and the `peerctl` binary.
//!
//! Both groups serve v1 → `peerctl fleet estop --group production --reason test` → the time
//! from spawning the command to the last production container down (the engine polled every
//! 20 ms) is at most 1000 ms, printed; the containers are kept, with restart policy `no`;
//! staging keeps serving; `fleet status` shows the stop and its reason; a release v2 to
//! production starts nothing while stopped; a production robot's daemon restarted while
//! stopped starts nothing; `fleet resume` → production serves v2. Then a production robot's
//! daemon is stopped (its container keeps running), production is stopped again, and the
//! robot, started again, kills its app once it syncs; resume → the same container serves v2.

use std::time::{Duration, Instant};

use peercompute_p2p::PeerId;
use peercompute_runtime::{ContainerState, DockerRuntime, LABEL_PROVIDER};
use peercompute_tests::fleet_rig::{Rig, app_of, fleet_containers, serves};
use peercompute_tests::{peerctl_bin, within};

/// The fleet containers of robot `peer` that run (or are about to: restarting, created).
async fn running_containers(runtime: &DockerRuntime, peer: &PeerId) -> Vec<String> {
    let label = format!("{peer}/fleet");
    runtime
        .list_managed()
        .await
        .expect("list containers")
        .into_iter()
        .filter(|m| m.labels.get(LABEL_PROVIDER) == Some(&label))
        .filter(|m| !matches!(m.state, ContainerState::Exited | ContainerState::Dead))
        .map(|m| m.id)
        .collect()
}

/// The production robots that still run a fleet container.
async fn production_left(rig: &Rig) -> Vec<String> {
    let mut left = Vec::new();
    for robot in rig.group("production") {
        if !running_containers(&rig.runtime, &robot.peer)
            .await
            .is_empty()
        {
            left.push(robot.name.clone());
        }
    }
    left
}

/// The engine's restart policy of `container` (`no`, `on-failure`, …).
async fn restart_policy(container: &str) -> String {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let inspect = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("inspect");
    inspect
        .host_config
        .and_then(|h| h.restart_policy)
        .and_then(|p| p.name)
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// Asserts for `secs` that no production robot runs a fleet container (checked every 200 ms).
async fn production_stays_stopped(rig: &Rig, secs: u64, when: &str) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let left = production_left(rig).await;
        assert!(left.is_empty(), "{when}: {left:?} started a container");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_estop_kills_the_groups_apps_within_a_second_and_resume_brings_them_back() {
    let begun = Instant::now();
    let mut rig = Rig::start(&[("production", 2), ("staging", 1)]).await;
    rig.image("v1", true).await;
    rig.image("v2", true).await;
    rig.release("production", "v1", "30s").await;
    rig.release("staging", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 90).await;
    rig.wait_group_serving("staging", "v1", 90).await;
    assert!(
        production_left(&rig).await.len() == 2,
        "both production robots run v1"
    );

    // The e-stop, with the binary: spawn → the last production container gone.
    let spawned = Instant::now();
    let estop = tokio::process::Command::new(peerctl_bin())
        .arg("--home")
        .arg(rig.admin.path())
        .arg("--no-mdns")
        .args([
            "fleet",
            "estop",
            "--group",
            "production",
            "--reason",
            "test",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn peerctl");
    let stopped = within(10, "the production containers to go", async {
        loop {
            if production_left(&rig).await.is_empty() {
                return spawned.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let out = within(30, "peerctl fleet estop", estop.wait_with_output())
        .await
        .expect("peerctl fleet estop ran");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!(
        "e-stop: spawn of `peerctl fleet estop` → last production container gone: {} ms",
        stopped.as_millis()
    );
    assert!(out.status.success(), "peerctl fleet estop: {stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("estop --json");
    assert_eq!(printed["op"], "e-stop", "{printed}");
    assert_eq!(printed["groups"], serde_json::json!(["production"]));
    assert_eq!(printed["reason"], "test");
    assert!(
        stopped <= Duration::from_millis(1000),
        "the e-stop took {} ms (at most 1000 ms)",
        stopped.as_millis()
    );
    // Kept, and nothing restarts them.
    for robot in rig.group("production") {
        let kept = fleet_containers(&rig.runtime, &robot.peer).await;
        assert_eq!(kept.len(), 1, "{}: {kept:?}", robot.name);
        assert_eq!(restart_policy(&kept[0]).await, "no", "{}", robot.name);
    }

    // Staging keeps serving; production answers no more.
    for robot in rig.group("staging") {
        assert!(
            serves(&rig.client, &robot.url, "v1").await,
            "{}",
            robot.name
        );
        assert!(!fleet_containers(&rig.runtime, &robot.peer).await.is_empty());
    }
    for robot in rig.group("production") {
        assert!(
            !serves(&rig.client, &robot.url, "v1").await,
            "{}",
            robot.name
        );
    }

    // The status says why.
    let names: Vec<String> = rig.group("production").map(|r| r.name.clone()).collect();
    rig.wait_status(20, "the stop in the status", |s| {
        names.iter().all(|n| {
            app_of(s, n).is_some_and(|a| {
                a["phase"] == "pending"
                    && a["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("emergency stop: test"))
            })
        })
    })
    .await;

    // A new release to production starts nothing while stopped.
    rig.release("production", "v2", "30s").await;
    production_stays_stopped(&rig, 3, "a release during the stop").await;

    // A production robot's daemon restarted while stopped starts nothing.
    let robot = rig
        .robots
        .iter_mut()
        .find(|r| r.group == "production")
        .expect("a production robot");
    robot.daemon.restart().await;
    production_stays_stopped(&rig, 4, "a daemon restarted during the stop").await;

    // Resume: production serves the current release, v2.
    let resumed = rig
        .json(&["fleet", "resume", "--group", "production", "--json"])
        .await;
    assert_eq!(resumed["op"], "resume", "{resumed}");
    rig.wait_group_serving("production", "v2", 60).await;
    for robot in rig.group("staging") {
        assert!(
            serves(&rig.client, &robot.url, "v1").await,
            "{}",
            robot.name
        );
    }

    // A robot offline during a stop kills its app when it comes back.
    let offline = rig
        .robots
        .iter()
        .position(|r| r.group == "production")
        .expect("a production robot");
    let peer = rig.robots[offline].peer;
    // After its drain the old v1 container goes: one container serves.
    within(20, "the switch to v2 to end", async {
        while running_containers(&rig.runtime, &peer).await.len() != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let addr = rig.robots[offline].daemon.stop().await;
    let serving = running_containers(&rig.runtime, &peer).await;
    assert_eq!(serving.len(), 1, "its container outlives the daemon");
    rig.ok(&[
        "fleet",
        "estop",
        "--group",
        "production",
        "--reason",
        "drill",
    ])
    .await;
    rig.robots[offline].daemon.start_again(&addr).await;
    let back = Instant::now();
    within(20, "the offline robot to kill its app", async {
        while !running_containers(&rig.runtime, &peer).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!(
        "e-stop: a robot offline during the stop killed its app {} ms after its daemon started",
        back.elapsed().as_millis()
    );
    production_stays_stopped(&rig, 2, "after the offline robot came back").await;
    rig.ok(&["fleet", "resume", "--group", "production"]).await;
    rig.wait_group_serving("production", "v2", 60).await;
    assert_eq!(
        running_containers(&rig.runtime, &peer).await,
        serving,
        "resume started the kept container again"
    );
    assert_eq!(restart_policy(&serving[0]).await, "on-failure");
    eprintln!("fleet_estop: {} s in all", begun.elapsed().as_secs());
}
