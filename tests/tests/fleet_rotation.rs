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
//!
//! Its containers and volumes keep the provider label of its first key (`<home>/provider-label`;
//! Docker cannot relabel): after the rotation a plain `peerctl deploy` made before it is still
//! adopted, listed to its owner, served and counted; an e-stop's enforcer kills the fleet
//! container by that label; a resume, and a new release (a new container), mount the volume the
//! app wrote before the rotation, every write still there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use peercompute_fleet::{Entry, FleetId, Grant, MemberKey, Op, PushResult, Role, SignedEntry};
use peercompute_identity::{Identity, PeerId};
use peercompute_p2p::fleet_hub::{self, unix_now};
use peercompute_runtime::testsupport::{Cleanup, LocalRegistry, busybox, unique_name};
use peercompute_runtime::{DockerRuntime, LABEL_PROVIDER, volume_name};
use peercompute_tests::daemon::workspace_bin;
use peercompute_tests::docker_events::DockerEvents;
use peercompute_tests::fleet::FleetMember;
use peercompute_tests::fleet_rig::{
    WEB_PORT, fleet_containers, push_image, serves, wait_serving, web_image,
};
use peercompute_tests::{
    Alpn, GatewayOptions, TestClient, TestDaemon, TestGateway, TestProvider, https_client,
    peerctl_bin, run_peerctl, within,
};

/// The switch (rotate-member spawned → the URL answers through the new key's tunnel, the old
/// one gone) must take no longer than this.
const SWITCH_BOUND: Duration = Duration::from_secs(3);

/// `peerctl --home <admin> ARGS…`, insisting on success; stdout as JSON when `--json` is in
/// the arguments, else as a string.
async fn admin(home: &Path, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = run_peerctl(home, args).await;
    assert_eq!(code, 0, "peerctl {args:?}: {stderr}");
    if args.contains(&"--json") {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    } else {
        serde_json::Value::String(stdout)
    }
}

/// The peer ids with a tunnel, as the admin API lists them.
async fn providers(gw: &TestGateway) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&gw.admin_get("/api/v1/providers").await).expect("providers JSON");
    let peers = list.as_array().into_iter().flatten();
    peers
        .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
        .collect()
}

/// The owner of route `name` in the admin API.
async fn owner_of(gw: &TestGateway, name: &str) -> Option<String> {
    let routes: serde_json::Value =
        serde_json::from_str(&gw.admin_get("/api/v1/routes").await).expect("routes JSON");
    let found = routes
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name);
    found.and_then(|r| r["owner"].as_str().map(str::to_owned))
}

/// `peercomputed join TOKEN`, then [`run_robot`].
async fn start_robot(
    home: &Path,
    gw: &TestGateway,
    token: &str,
    admin_listen: &str,
) -> tokio::process::Child {
    let joined = tokio::process::Command::new(workspace_bin("peercomputed"))
        .arg("--home")
        .arg(home)
        .args(["join", token])
        .output()
        .await
        .expect("peercomputed join runs");
    assert!(joined.status.success(), "join: {joined:?}");
    run_robot(home, gw, "provider.log", admin_listen)
}

/// `peercomputed run` through `gw` (its stderr in `<home>/<log>`; its admin listener on
/// `admin_listen`, or `off`), killed when dropped.
fn run_robot(
    home: &Path,
    gw: &TestGateway,
    log: &str,
    admin_listen: &str,
) -> tokio::process::Child {
    let gateway = format!("{}@{}", gw.peer_id, gw.tunnel);
    tokio::process::Command::new(workspace_bin("peercomputed"))
        .arg("--home")
        .arg(home)
        .args(["run", "--gateway", &gateway])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--firewall", "off", "--admin-listen", admin_listen])
        .env("PEERCOMPUTE_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(home.join(log)).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("peercomputed run starts")
}

/// The robot's name once `fleet members` lists its key.
async fn joined_name(admin_home: &Path, peer: &PeerId) -> String {
    within(60, "the robot to join", async {
        loop {
            let (code, stdout, _) = run_peerctl(admin_home, &["fleet", "members", "--json"]).await;
            let members: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
            let row = members
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["peer_id"] == peer.to_string().as_str() && m["name"].is_string());
            if let (0, Some(row)) = (code, row) {
                return row["name"].as_str().expect("a name").to_owned();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// `op` signed by `key` on the heads of a fresh copy of the gateway's log of `fleet`, pushed
/// raw to the gateway: its answer.
async fn push_signed(
    member: &FleetMember,
    gw: &TestGateway,
    fleet: FleetId,
    key: &SigningKey,
    op: Op,
) -> PushResult {
    member.hub.hold(fleet).expect("hold");
    let synced = fleet_hub::sync_with(&member.node, gw.peer_id, &member.hub, fleet);
    within(15, "a copy of the log", synced)
        .await
        .expect("synced");
    let (parents, clock) = member
        .hub
        .with_log(&fleet, |l| (l.heads(), l.next_clock()))
        .expect("held");
    let author = MemberKey(key.verifying_key().to_bytes());
    let entry = Entry {
        fleet,
        parents,
        clock,
        author,
        at: unix_now(),
        op,
    };
    let bytes = SignedEntry::sign(entry, key)
        .expect("well-formed")
        .bytes()
        .to_vec();
    let pushed = fleet_hub::push_to(&member.node, gw.peer_id, fleet, vec![bytes]);
    let results = within(15, "the push", pushed).await.expect("an answer");
    results.into_iter().next().expect("one result")
}

fn assert_rotated_away(result: &PushResult, what: &str) {
    match result {
        PushResult::Refused { reason } if reason.contains("was rotated to") => {
            eprintln!("refused as expected, {what}: {reason}");
        }
        other => panic!("{what} must be refused as rotated: {other:?}"),
    }
}

/// The retired key file the switch left in the robot's home.
fn retired_key(home: &Path) -> PathBuf {
    let found = std::fs::read_dir(home)
        .expect("robot home")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("identity.key.retired-"))
        });
    found.expect("the old key kept as identity.key.retired-<unix>")
}

/// What the robot of [`Serving`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// The web image v1; no admin listener.
    Web,
    /// [`logging_image`] v1 with the volume `data:/data`; the admin listener on 127.0.0.1:0.
    Volume,
}

/// A web image `version` that appends its version to `/data/log` (the volume) as it starts and
/// serves `/data` (`/` answers the version, `/log` every start so far).
async fn logging_image(
    runtime: &DockerRuntime,
    registry: &LocalRegistry,
    cleanup: &Cleanup,
    repository: &str,
    version: &str,
) {
    let start = format!(
        "echo {version} >> /data/log && echo {version} > /data/index.html && echo ok > /data/healthz && exec busybox httpd -f -p {WEB_PORT} -h /data"
    );
    push_image(runtime, registry, cleanup, repository, version, |scratch| {
        scratch
            .file("/bin/busybox", busybox().expect("busybox"), 0o755)
            .cmd(["/bin/busybox", "sh", "-c", &start])
            .env("PATH", "/bin")
            .expose(WEB_PORT)
    })
    .await;
}

/// A gateway admitting only the robot's key, a fleet made by the admin's peerctl, and the
/// robot (the real binary) serving v1 through the gateway.
struct Serving {
    // Dropped first: the daemon is killed before its containers are removed.
    robot: tokio::process::Child,
    cleanup: Cleanup,
    gw: TestGateway,
    runtime: DockerRuntime,
    registry: LocalRegistry,
    /// Where the release's images are (`<repository>:v1`).
    repository: String,
    admin_home: tempfile::TempDir,
    fleet: FleetId,
    home: tempfile::TempDir,
    old: PeerId,
    /// The robot's name in the fleet, its route and URL, and a client that reaches it.
    name: String,
    route: String,
    url: String,
    client: reqwest::Client,
    /// The container serving v1.
    container: Vec<String>,
}

impl Serving {
    async fn start(setup: Setup) -> Serving {
        let (home, old) = TestDaemon::identity();
        // Only the robot's old key is on the allowlist: the new one gets in by alias.
        let gw = TestGateway::start(GatewayOptions {
            p2p: true,
            allow: vec![old],
            ..GatewayOptions::default()
        })
        .await;
        let runtime = DockerRuntime::connect().await.expect("a Docker engine");
        let registry = LocalRegistry::start().await.expect("a local registry");
        let cleanup = Cleanup::new();
        cleanup.containers_labelled(LABEL_PROVIDER, &format!("{old}/fleet"));
        let repository = format!("{}/peercompute/{}", registry.host(), unique_name("rotate"));
        let (volume, admin_listen) = match setup {
            Setup::Web => {
                web_image(&runtime, &registry, &cleanup, &repository, "v1", true).await;
                ("", "off")
            }
            Setup::Volume => {
                logging_image(&runtime, &registry, &cleanup, &repository, "v1").await;
                // Plain deployments carry the bare peer id.
                cleanup.containers_labelled(LABEL_PROVIDER, &old.to_string());
                (" --volume data:/data:64M", "127.0.0.1:0")
            }
        };

        let admin_home = tempfile::tempdir().expect("admin home");
        let adm = admin_home.path();
        admin(adm, &["init"]).await;
        admin(adm, &["gateways", "add", &gw.p2p_addr().await.to_string()]).await;
        let created = admin(adm, &["fleet", "create", "lekiwi", "--json"]).await;
        let fleet: FleetId = created["fleet_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("id");
        if setup == Setup::Volume {
            let scope = format!("fleet:{fleet}");
            cleanup.volume(&volume_name(&old.to_string(), &scope, "web", "data"));
        }
        let invite = "fleet invite --group production --name-prefix production --json";
        let invite = admin(adm, &invite.split(' ').collect::<Vec<_>>()).await;
        let token = invite["token"].as_str().expect("token");
        let robot = start_robot(home.path(), &gw, token, admin_listen).await;
        let name = joined_name(adm, &old).await;
        // One line: the web app v1 on its port, health-gated on /healthz.
        let release = format!(
            "fleet release {repository}:v1 --group production --port {WEB_PORT} --name web --version v1 --health-path /healthz --json{volume}"
        );
        admin(adm, &release.split(' ').collect::<Vec<_>>()).await;
        let route = format!("web-{name}");
        let client = https_client(&gw, &[&route], Alpn::H1);
        let url = gw.url(&route, "/");
        wait_serving(&client, &url, "v1", 90).await;
        let container = fleet_containers(&runtime, &old).await;
        assert_eq!(container.len(), 1, "one container serves v1: {container:?}");
        Serving {
            robot,
            cleanup,
            gw,
            runtime,
            registry,
            repository,
            admin_home,
            fleet,
            home,
            old,
            name,
            route,
            url,
            client,
            container,
        }
    }

    /// `peercomputed rotate-key --json` on the robot's home.
    async fn rotate_key(&self) -> serde_json::Value {
        peercomputed_json(self.home.path(), "rotate-key").await
    }

    /// Polls (every 10 ms) until the URL answers v1 while the gateway lists `new` and not the
    /// old key: the time since `spawned`, and how long the URL failed meanwhile (from the
    /// start of the first failed request to the first success after it).
    async fn wait_switch(&self, spawned: Instant, new: &PeerId) -> (Duration, Option<Duration>) {
        let (new, old) = (new.to_string(), self.old.to_string());
        let mut failing_since = None;
        let mut outage = None;
        within(30, "the URL to answer through the new key", async {
            loop {
                let asked = Instant::now();
                if !serves(&self.client, &self.url, "v1").await {
                    failing_since.get_or_insert(asked);
                } else {
                    if let Some(since) = failing_since.take() {
                        outage = Some(outage.unwrap_or_default() + since.elapsed());
                    }
                    let listed = providers(&self.gw).await;
                    if listed.contains(&new) && !listed.contains(&old) {
                        return (spawned.elapsed(), outage);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

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
    let created: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.action == "create")
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

/// SIGTERM to the robot's daemon, and its exit (0).
async fn stop_robot(robot: &mut tokio::process::Child) {
    let pid = robot.id().expect("running");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = within(20, "the daemon to stop", robot.wait())
        .await
        .expect("exit");
    assert!(
        status.success(),
        "peercomputed exits 0 on SIGTERM: {status}"
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
    let creates = events.all().into_iter().filter(|e| e.action == "create");
    assert_eq!(creates.count(), 0, "no container created");
    eprintln!(
        "fleet_rotation (off): {:.1} s in all",
        begun.elapsed().as_secs_f64()
    );
}

/// The control-plane address the robot's daemon logged last (`control plane ready …
/// /ip4/127.0.0.1/tcp/PORT`) in `log`, and how many times it logged one (a daemon that
/// re-executed itself writes to the same file).
fn control_addr(log: &str) -> (Option<String>, usize) {
    let ready: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("control plane ready"))
        .collect();
    let addr = ready.last().and_then(|line| {
        let at = line.find("/ip4/127.0.0.1/tcp/")?;
        let addr: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "/.".contains(*c))
            .collect();
        Some(addr)
    });
    (addr, ready.len())
}

/// The new peer id `rotate-key --json` printed.
fn new_key(asked: &serde_json::Value) -> PeerId {
    let new = asked["new_peer_id"].as_str().expect("new_peer_id");
    new.parse().expect("a peer id")
}

/// `peercomputed --home HOME COMMAND --json`, insisting on success: its JSON.
async fn peercomputed_json(home: &Path, command: &str) -> serde_json::Value {
    let out = tokio::process::Command::new(workspace_bin("peercomputed"))
        .arg("--home")
        .arg(home)
        .args([command, "--json"])
        .output()
        .await
        .expect("peercomputed runs");
    assert!(out.status.success(), "{command}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Whether the engine runs container `id` now.
async fn running(runtime: &DockerRuntime, id: &str) -> bool {
    let managed = runtime.list_managed().await.expect("list containers");
    let found = managed.into_iter().find(|m| m.id == id);
    found.is_some_and(|m| m.state == peercompute_runtime::ContainerState::Running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_the_robot_keeps_its_deployment_its_estop_and_its_volume() {
    let begun = Instant::now();
    let s = Serving::start(Setup::Volume).await;
    let (adm, home) = (s.admin_home.path(), s.home.path());
    let log_url = s.gw.url(&s.route, "/log");
    let volume_log = || async {
        let got = s.client.get(&log_url).send().await.expect("GET /log");
        got.text().await.expect("body")
    };
    assert_eq!(volume_log().await, "v1\n");

    // A plain deployment beside the fleet's app, by a client the robot trusts.
    let client = TestClient::new();
    let cl = client.home.path();
    web_image(
        &s.runtime,
        &s.registry,
        &s.cleanup,
        &s.repository,
        "plain",
        true,
    )
    .await;
    admin(home, &["peers", "add", &client.peer_id().to_string()]).await;
    let log = std::fs::read_to_string(home.join("provider.log")).expect("robot log");
    let addr = control_addr(&log).0.expect("the robot's control address");
    let peers_add = ["peers", "add", &s.old.to_string(), "--addr", &addr];
    admin(cl, &[&peers_add[..], &["--name", "box"]].concat()).await;
    let image = format!("{}:plain", s.repository);
    let port = WEB_PORT.to_string();
    let deploy = ["deploy", &image, "--peer", "box", "--port", &port];
    let deployed = admin(cl, &[&deploy[..], &["--name", "plain", "--json"]].concat()).await;
    let id = deployed["id"].as_str().expect("id").to_owned();
    let plain_client = https_client(&s.gw, &["plain"], Alpn::H1);
    let plain_url = s.gw.url("plain", "/");
    wait_serving(&plain_client, &plain_url, "plain", 30).await;
    let plain_container = s
        .runtime
        .list_managed()
        .await
        .expect("list containers")
        .into_iter()
        .find(|m| m.deployment.as_ref().is_some_and(|d| d.deployment_id == id))
        .expect("the plain deployment's container")
        .id;

    // The rotation: the robot switches keys and re-executes itself.
    let asked = s.rotate_key().await;
    let new = new_key(&asked);
    let token = asked["token"].as_str().expect("token");
    let spawned = Instant::now();
    admin(adm, &["fleet", "rotate-member", token]).await;
    let (switched, _) = s.wait_switch(spawned, &new).await;
    eprintln!("labels: rotated to {new} in {} ms", switched.as_millis());
    let label_file = home.join(peercompute_provider::PROVIDER_LABEL_FILE);
    let label = std::fs::read_to_string(&label_file).expect("provider-label");
    assert_eq!(
        label.trim(),
        s.old.to_string(),
        "the label is the first key"
    );

    // The plain deployment: adopted (not dropped, its container not removed as an orphan),
    // listed to its owner by the new key, served at its URL, counted running by the admin API.
    let addr = within(10, "the re-executed daemon's control plane", async {
        loop {
            let log = std::fs::read_to_string(home.join("provider.log")).expect("log");
            if let (Some(addr), 2..) = control_addr(&log) {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let peers_add = ["peers", "add", &new.to_string(), "--addr", &addr];
    admin(cl, &[&peers_add[..], &["--name", "box2"]].concat()).await;
    let listed = admin(cl, &["ls", "--peer", "box2", "--json"]).await;
    let row = listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["id"] == id.as_str());
    let row = row.unwrap_or_else(|| panic!("the robot lists {id} after the rotation: {listed}"));
    assert_eq!(row["state"], "running", "{row}");
    assert!(
        running(&s.runtime, &plain_container).await,
        "same container"
    );
    wait_serving(&plain_client, &plain_url, "plain", 10).await;
    // `peercomputed status`: the admin API's count of the deployments by their containers.
    let status = peercomputed_json(home, "status").await;
    assert_eq!(status["peer_id"], new.to_string().as_str(), "{status}");
    assert_eq!(status["deployments"]["running"], 1, "{status}");
    let log = std::fs::read_to_string(home.join("provider.log")).expect("log");
    for never in ["removing an orphan container", "dropping the deployment"] {
        assert!(!log.contains(never), "{never}: {log}");
    }

    // An e-stop: the enforcer kills the fleet container by its (old) label.
    let stopped = Instant::now();
    let estop = "fleet estop --group production --reason test";
    admin(adm, &estop.split(' ').collect::<Vec<_>>()).await;
    within(10, "the fleet container killed", async {
        while running(&s.runtime, &s.container[0]).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!(
        "labels: e-stop after the rotation: the fleet container down {} ms after peerctl was run",
        stopped.elapsed().as_millis()
    );
    let log = std::fs::read_to_string(home.join("provider.log")).expect("log");
    let killed = format!("container={} ", s.container[0]);
    let by_enforcer = log
        .lines()
        .any(|l| l.contains("container killed (kept until resume)") && l.contains(&killed));
    assert!(by_enforcer, "the enforcer found it by label: {log}");
    assert!(running(&s.runtime, &plain_container).await, "a group stop");

    // Resume: the kept container starts on its volume; then v2, a new container, mounts the
    // same volume (made before the rotation): every write is there.
    admin(adm, &["fleet", "resume", "--group", "production"]).await;
    wait_serving(&s.client, &s.url, "v1", 20).await;
    assert_eq!(volume_log().await, "v1\nv1\n");
    logging_image(&s.runtime, &s.registry, &s.cleanup, &s.repository, "v2").await;
    let release = format!(
        "fleet release {}:v2 --group production --port {WEB_PORT} --name web --version v2 --health-path /healthz --volume data:/data:64M --json",
        s.repository
    );
    admin(adm, &release.split(' ').collect::<Vec<_>>()).await;
    wait_serving(&s.client, &s.url, "v2", 30).await;
    assert_eq!(volume_log().await, "v1\nv1\nv2\n", "the same volume");
    let kept = s
        .runtime
        .list_volumes(&s.old.to_string())
        .await
        .expect("volumes");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let made = s
        .runtime
        .list_volumes(&new.to_string())
        .await
        .expect("volumes");
    assert!(made.is_empty(), "no volume under the new key: {made:?}");
    eprintln!(
        "fleet_rotation (labels): {:.1} s in all",
        begun.elapsed().as_secs_f64()
    );
}
