//! The rig of the key-rotation tests (`fleet_rotation.rs`, `fleet_rotation_labels.rs`): a
//! gateway whose allowlist names the robot's first key, one robot running the real
//! `peercomputed` binary serving a release through it, the admin's `peerctl` home, and the
//! helpers that rotate, wait for the switch and read what the robot did.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::daemon::workspace_bin;
use crate::fleet::FleetMember;
use crate::fleet_rig::{WEB_PORT, fleet_containers, push_image, serves, wait_serving, web_image};
use crate::{Alpn, GatewayOptions, TestDaemon, TestGateway, https_client, run_peerctl, within};
use ed25519_dalek::SigningKey;
use peercompute_fleet::{Entry, FleetId, MemberKey, Op, PushResult, SignedEntry};
use peercompute_identity::PeerId;
use peercompute_p2p::fleet_hub::{self, unix_now};
use peercompute_runtime::testsupport::{Cleanup, LocalRegistry, busybox, unique_name};
use peercompute_runtime::{DockerRuntime, LABEL_PROVIDER, volume_name};

/// The switch (rotate-member spawned → the URL answers through the new key's tunnel, the old
/// one gone) must take no longer than this.
pub const SWITCH_BOUND: Duration = Duration::from_secs(3);

/// `peerctl --home <admin> ARGS…`, insisting on success; stdout as JSON when `--json` is in
/// the arguments, else as a string.
pub async fn admin(home: &Path, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = run_peerctl(home, args).await;
    assert_eq!(code, 0, "peerctl {args:?}: {stderr}");
    if args.contains(&"--json") {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    } else {
        serde_json::Value::String(stdout)
    }
}

/// The peer ids with a tunnel, as the admin API lists them.
pub async fn providers(gw: &TestGateway) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&gw.admin_get("/api/v1/providers").await).expect("providers JSON");
    let peers = list.as_array().into_iter().flatten();
    peers
        .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
        .collect()
}

/// The owner of route `name` in the admin API.
pub async fn owner_of(gw: &TestGateway, name: &str) -> Option<String> {
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
pub async fn start_robot(
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
pub fn run_robot(
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
pub async fn joined_name(admin_home: &Path, peer: &PeerId) -> String {
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
pub async fn push_signed(
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

pub fn assert_rotated_away(result: &PushResult, what: &str) {
    match result {
        PushResult::Refused { reason } if reason.contains("was rotated to") => {
            eprintln!("refused as expected, {what}: {reason}");
        }
        other => panic!("{what} must be refused as rotated: {other:?}"),
    }
}

/// The retired key file the switch left in the robot's home.
pub fn retired_key(home: &Path) -> PathBuf {
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
pub enum Setup {
    /// The web image v1; no admin listener.
    Web,
    /// [`logging_image`] v1 with the volume `data:/data`; the admin listener on 127.0.0.1:0.
    Volume,
}

/// A web image `version` that appends its version to `/data/log` (the volume) as it starts and
/// serves `/data` (`/` answers the version, `/log` every start so far).
pub async fn logging_image(
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
#[derive(Debug)]
pub struct Serving {
    // Dropped first: the daemon is killed before its containers are removed.
    pub robot: tokio::process::Child,
    pub cleanup: Cleanup,
    pub gw: TestGateway,
    pub runtime: DockerRuntime,
    pub registry: LocalRegistry,
    /// Where the release's images are (`<repository>:v1`).
    pub repository: String,
    pub admin_home: tempfile::TempDir,
    pub fleet: FleetId,
    pub home: tempfile::TempDir,
    pub old: PeerId,
    /// The robot's name in the fleet, its route and URL, and a client that reaches it.
    pub name: String,
    pub route: String,
    pub url: String,
    pub client: reqwest::Client,
    /// The container serving v1.
    pub container: Vec<String>,
}

impl Serving {
    pub async fn start(setup: Setup) -> Serving {
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
    pub async fn rotate_key(&self) -> serde_json::Value {
        peercomputed_json(self.home.path(), "rotate-key").await
    }

    /// Polls (every 10 ms) until the URL answers v1 while the gateway lists `new` and not the
    /// old key: the time since `spawned`, and how long the URL failed meanwhile (from the
    /// start of the first failed request to the first success after it).
    pub async fn wait_switch(
        &self,
        spawned: Instant,
        new: &PeerId,
    ) -> (Duration, Option<Duration>) {
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

/// SIGTERM to the robot's daemon, and its exit (0).
pub async fn stop_robot(robot: &mut tokio::process::Child) {
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

/// The control-plane address the robot's daemon logged last (`control plane ready …
/// /ip4/127.0.0.1/tcp/PORT`) in `log`, and how many times it logged one (a daemon that
/// re-executed itself writes to the same file).
pub fn control_addr(log: &str) -> (Option<String>, usize) {
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
pub fn new_key(asked: &serde_json::Value) -> PeerId {
    let new = asked["new_peer_id"].as_str().expect("new_peer_id");
    new.parse().expect("a peer id")
}

/// `peercomputed --home HOME COMMAND --json`, insisting on success: its JSON.
pub async fn peercomputed_json(home: &Path, command: &str) -> serde_json::Value {
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
pub async fn running(runtime: &DockerRuntime, id: &str) -> bool {
    let managed = runtime.list_managed().await.expect("list containers");
    let found = managed.into_iter().find(|m| m.id == id);
    found.is_some_and(|m| m.state == peercompute_runtime::ContainerState::Running)
}
