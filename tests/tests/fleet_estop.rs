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
//!
//! Offline (one robot): under a stop in its log, a reboot with no network starts nothing; after
//! a power cut (daemon stopped, containers SIGKILLed) it starts its release with no network
//! within 20 s (boot sync gate 2 s); a release while its tunnel is down (the log over libp2p)
//! is healthy (no URL) well before the old 20 s switch timeout, and gets its URL when the
//! gateway is back, with no redeploy.
//!
//! F5 (one robot behind a Docker socket proxy): the engine connection cut for 2 s while a
//! release waits in its health gate → the release rolls back with its reason in the status,
//! v1 serves, and exactly one container is left.

use std::time::{Duration, Instant};

use peercompute_p2p::PeerId;
use peercompute_provider::{AdminListen, Daemon, GatewaySpec, ProviderConfig};
use peercompute_runtime::{ContainerState, DockerRuntime, LABEL_PROVIDER};
use peercompute_tests::docker_proxy::DockerProxy;
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
    // And the robot has recorded it: its status says healthy only once the record is saved,
    // which the applier does after the drain. A daemon stopped before that restarts with the
    // old container as its record and applies the release again (a known window; a CI run
    // stopped the daemon in it and saw a new container at the resume).
    rig.wait_group_phase("production", "v2", "healthy").await;
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

/// Starts robot `i`'s daemon again (it must be stopped) with its tunnel pointed at a port
/// nobody answers on and its gateway libp2p address `p2p` (empty: none): no network for the
/// fleet but what `p2p` gives. The boot sync gate waits `wait`.
async fn start_cut_off(rig: &mut Rig, i: usize, p2p: Vec<peercompute_p2p::Multiaddr>, wait: u64) {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let robot = &mut rig.robots[i];
    let mut config = ProviderConfig::new(robot.daemon.home.path().to_path_buf());
    config.gateways = vec![GatewaySpec {
        peer: Some(rig.gw.peer_id),
        host: "127.0.0.1".into(),
        port,
    }];
    config.gateway_p2p = p2p;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    config.mdns = false;
    config.offline_start_wait = Duration::from_secs(wait);
    config.admin_listen = AdminListen::At("127.0.0.1:0".parse().expect("addr"));
    let daemon = within(30, "the cut-off daemon to start", Daemon::start(config))
        .await
        .expect("the daemon starts");
    robot.daemon.daemon = Some(daemon);
}

/// Stops robot `i`'s daemon (containers keep running).
async fn shut(rig: &mut Rig, i: usize) {
    if let Some(d) = rig.robots[i].daemon.daemon.take() {
        d.shutdown().await;
    }
}

/// What robot `peer`'s one running fleet container answers at `/`, on this host.
async fn answers_locally(runtime: &DockerRuntime, peer: &PeerId) -> Option<String> {
    let label = format!("{peer}/fleet");
    let managed = runtime.list_managed().await.ok()?;
    let addr = managed
        .into_iter()
        .filter(|m| m.labels.get(LABEL_PROVIDER) == Some(&label))
        .find_map(|m| m.addr)?;
    let body = reqwest::get(format!("http://{addr}/"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(body.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_with_no_network_starts_its_release_after_a_power_cut_and_nothing_under_a_stop() {
    let begun = Instant::now();
    let mut rig = Rig::start(&[("production", 1)]).await;
    rig.image("v1", true).await;
    rig.image("v2", true).await;
    rig.release("production", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 90).await;
    let peer = rig.robots[0].peer;

    // A stop the robot has in its log, then a reboot with no network: nothing starts.
    rig.ok(&[
        "fleet",
        "estop",
        "--group",
        "production",
        "--reason",
        "drill",
    ])
    .await;
    within(10, "the stop to reach the robot", async {
        while !running_containers(&rig.runtime, &peer).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let addr = rig.robots[0].daemon.stop().await;
    start_cut_off(&mut rig, 0, Vec::new(), 2).await;
    production_stays_stopped(&rig, 4, "a reboot with no network under a stop").await;
    shut(&mut rig, 0).await;
    rig.robots[0].daemon.start_again(&addr).await;
    rig.ok(&["fleet", "resume", "--group", "production"]).await;
    rig.wait_group_serving("production", "v1", 60).await;

    // Power cut: the daemon and its containers die; it comes back with no network at all.
    let addr = rig.robots[0].daemon.stop().await;
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    for id in running_containers(&rig.runtime, &peer).await {
        docker
            .kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>)
            .await
            .expect("kill");
    }
    assert!(running_containers(&rig.runtime, &peer).await.is_empty());
    let booted = Instant::now();
    start_cut_off(&mut rig, 0, Vec::new(), 2).await;
    let runtime = rig.runtime.clone();
    within(20, "the release to run with no network", async {
        while answers_locally(&runtime, &peer).await.as_deref() != Some("v1") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eprintln!(
        "offline reboot: daemon start → v1 answering on the robot, no network: {} ms (boot sync gate 2 s)",
        booted.elapsed().as_millis()
    );

    // A release while the tunnel is down (the log comes over libp2p): it serves at once,
    // healthy with no URL, and the URL comes when the tunnel is back, without a redeploy.
    shut(&mut rig, 0).await;
    let p2p = rig.gw.p2p_addr().await;
    start_cut_off(&mut rig, 0, vec![p2p], 10).await;
    let name = rig.robots[0].name.clone();
    rig.wait_status(30, "v1 healthy", |s| {
        app_of(s, &name).is_some_and(|a| a["version"] == "v1" && a["phase"] == "healthy")
    })
    .await;
    let released = Instant::now();
    rig.release("production", "v2", "30s").await;
    // (`fleet status --json` carries no URL yet: asked of peerctl's owner.)
    rig.wait_status(30, "v2 healthy", |s| {
        app_of(s, &name).is_some_and(|a| a["version"] == "v2" && a["phase"] == "healthy")
    })
    .await;
    let took = released.elapsed();
    eprintln!(
        "release with the tunnel down: healthy (no public URL) {} ms after `fleet release` returned",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(15),
        "the switch waited for the gateway: {} ms",
        took.as_millis()
    );
    assert_eq!(
        answers_locally(&runtime, &peer).await.as_deref(),
        Some("v2")
    );
    let serving = running_containers(&runtime, &peer).await;
    // The gateway back (this daemon's tunnel is configured right again): the same container
    // gets its public URL, and the status carries it.
    shut(&mut rig, 0).await;
    rig.robots[0].daemon.start_again(&addr).await;
    rig.wait_group_serving("production", "v2", 30).await;
    assert_eq!(
        running_containers(&runtime, &peer).await,
        serving,
        "no redeploy"
    );
    eprintln!(
        "fleet_estop offline: {} s in all",
        begun.elapsed().as_secs()
    );
}

/// F5: the robot's connection to the Docker engine is cut while a release is being applied
/// (its health gate running) and restored 2 s later: the apply rolls back with the reason in
/// the status, the old release keeps serving, and no container is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_cut_mid_apply_leaves_no_orphan_and_the_apply_rolls_back() {
    let begun = Instant::now();
    let mut proxy = DockerProxy::start();
    let endpoint = proxy.endpoint();
    let rig = Rig::start_with(&[("production", 1)], move |c| {
        c.docker_endpoint = Some(endpoint.clone());
    })
    .await;
    rig.image("v1", true).await;
    rig.image("v2", false).await;
    rig.release("production", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 90).await;
    let (peer, name) = (rig.robots[0].peer, rig.robots[0].name.clone());

    // v2 never answers its health check: the apply waits in its gate for up to 8 s.
    rig.release("production", "v2", "8s").await;
    rig.wait_status(30, "v2 starting", |s| {
        app_of(s, &name).is_some_and(|a| a["version"] == "v2" && a["phase"] == "starting")
    })
    .await;
    proxy.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.start_again();

    let status = rig
        .wait_status(40, "v2 rolled back", |s| {
            app_of(s, &name).is_some_and(|a| a["version"] == "v2" && a["phase"] == "rolled back")
        })
        .await;
    let app = app_of(&status, &name).expect("the robot's app");
    eprintln!("F5: v2 ended rolled back: {}", app["reason"]);
    assert!(
        app["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{app}"
    );
    assert_eq!(app["serving"], "v1", "{app}");
    within(20, "no container left but v1's", async {
        while fleet_containers(&rig.runtime, &peer).await.len() != 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(running_containers(&rig.runtime, &peer).await.len(), 1);
    assert!(serves(&rig.client, &rig.robots[0].url, "v1").await);
    eprintln!("fleet_estop F5: {} s in all", begun.elapsed().as_secs());
}
