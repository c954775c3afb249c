//! Robots in a fleet with the real parts, for the fleet end-to-end tests and the release
//! benchmark: busybox web images in a local registry (Debian's `docker-registry`) pinned by
//! digest, `peercomputed` daemons joined by token, visitors that count failed requests, and
//! [`Rig`] — one gateway, an admin driving the `peerctl` binary, and robots in groups.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use peercompute_fleet::FleetId;
use peercompute_p2p::PeerId;
use peercompute_provider::{GatewaySpec, JoinStatus, JoinTokenText, Limits, ProviderConfig};
use peercompute_runtime::testsupport::{
    Cleanup, LocalRegistry, ScratchImage, busybox, unique_name,
};
use peercompute_runtime::{DockerRuntime, PinnedImage};

use crate::{Alpn, GatewayOptions, TestDaemon, TestGateway, https_client, run_peerctl, within};

/// The port the web images listen on.
pub const WEB_PORT: u16 = 8080;

/// Builds a busybox web image answering `version` at `/` (and `ok` at `/healthz` when
/// `healthy`; each request logged on stderr), pushes it to the registry as `repository:version` and pins it.
pub async fn web_image(
    runtime: &DockerRuntime,
    registry: &LocalRegistry,
    cleanup: &Cleanup,
    repository: &str,
    version: &str,
    healthy: bool,
) -> PinnedImage {
    push_image(runtime, registry, cleanup, repository, version, |scratch| {
        let scratch = scratch
            .file("/bin/busybox", busybox().expect("busybox"), 0o755)
            .file("/www/index.html", format!("{version}\n"), 0o644)
            .cmd([
                "/bin/busybox",
                "httpd",
                "-f",
                "-v",
                "-p",
                "8080",
                "-h",
                "/www",
            ])
            .env("PATH", "/bin")
            .expose(WEB_PORT);
        if healthy {
            scratch.file("/www/healthz", "ok\n", 0o644)
        } else {
            scratch
        }
    })
    .await
}

/// Builds the image `build` makes of an empty scratch image (under a unique local tag), pushes
/// it to the registry as `repository:version` and pins it; every tag is removed at the end.
pub async fn push_image(
    runtime: &DockerRuntime,
    registry: &LocalRegistry,
    cleanup: &Cleanup,
    repository: &str,
    version: &str,
    build: impl FnOnce(ScratchImage) -> ScratchImage,
) -> PinnedImage {
    let local = format!("{}:1", unique_name(&format!("pc-fleet-{version}")));
    cleanup.image(&local);
    build(ScratchImage::new(&local))
        .load(runtime)
        .await
        .expect("load the image");
    registry
        .push(runtime, &local, repository, version)
        .await
        .expect("push the image");
    let tagged = format!("{repository}:{version}");
    cleanup.image(&tagged);
    let pinned = runtime.resolve_digest(&tagged).await.expect("resolve");
    cleanup.image(&pinned.to_string());
    pinned
}

/// The tunnel address of `gw`, its key pinned.
pub fn gateway_spec(gw: &TestGateway) -> GatewaySpec {
    GatewaySpec {
        peer: Some(gw.peer_id),
        host: gw.tunnel.ip().to_string(),
        port: gw.tunnel.port(),
    }
}

/// Waits until the daemon's join is done: joined or refused.
pub async fn wait_join(daemon: &TestDaemon) -> JoinStatus {
    let mut join = daemon.daemon.as_ref().expect("running").join.clone();
    within(60, "the join to finish", async {
        join.wait_for(|s| matches!(s, JoinStatus::Joined { .. } | JoinStatus::Refused { .. }))
            .await
            .map(|s| s.clone())
            .expect("the agent runs")
    })
    .await
}

/// The fleet containers of robot `peer` (running or not).
pub async fn fleet_containers(runtime: &DockerRuntime, peer: &PeerId) -> Vec<String> {
    let label = format!("{peer}/fleet");
    runtime
        .list_managed()
        .await
        .expect("list containers")
        .into_iter()
        .filter(|m| m.labels.get(peercompute_runtime::LABEL_PROVIDER) == Some(&label))
        .map(|m| m.id)
        .collect()
}

/// GETs `url` until it answers `version`, for at most `secs`.
pub async fn wait_serving(client: &reqwest::Client, url: &str, version: &str, secs: u64) {
    within(secs, &format!("{url} to serve {version}"), async {
        while !serves(client, url, version).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Whether `url` answers `version` now.
pub async fn serves(client: &reqwest::Client, url: &str, version: &str) -> bool {
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => r.text().await.is_ok_and(|b| b.trim() == version),
        _ => false,
    }
}

/// Visits a URL in a loop (every 20 ms) until stopped, counting requests that failed or
/// answered another status than 2xx.
#[derive(Debug)]
pub struct Visitor {
    url: String,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU32>,
    total: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Visitor {
    pub fn start(client: reqwest::Client, url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU32::new(0));
        let total = Arc::new(AtomicU32::new(0));
        let (s, f, t, u) = (stop.clone(), failed.clone(), total.clone(), url.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let ok = matches!(client.get(&u).send().await, Ok(r) if r.status().is_success());
                t.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Visitor {
            url,
            stop,
            failed,
            total,
            task,
        }
    }

    /// Failed and total requests so far.
    pub fn counts(&self) -> (u32, u32) {
        (
            self.failed.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Stops after the request in flight; failed and total requests.
    pub async fn stop(self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let counts = (self.failed.clone(), self.total.clone());
        let _ = self.task.await;
        (
            counts.0.load(Ordering::Relaxed),
            counts.1.load(Ordering::Relaxed),
        )
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// One robot of a [`Rig`].
#[derive(Debug)]
pub struct Robot {
    pub daemon: TestDaemon,
    pub peer: PeerId,
    /// Its name in the fleet (`<prefix>-…`, chosen at the join).
    pub name: String,
    pub group: String,
    /// Where visitors reach its `web` app.
    pub url: String,
}

/// One gateway, a local registry, an admin's peerctl home with a fleet, and robots joined by
/// token to their groups.
#[derive(Debug)]
pub struct Rig {
    // Dropped in order: robots first (their containers removed), then the images.
    pub robots: Vec<Robot>,
    pub gw: TestGateway,
    pub runtime: DockerRuntime,
    pub registry: LocalRegistry,
    pub cleanup: Cleanup,
    /// `<registry>/peercompute/<unique>`: where [`Rig::image`] pushes.
    pub repository: String,
    /// The admin's peerctl home (`peerctl init`, the gateway added, the fleet created).
    pub admin: tempfile::TempDir,
    pub fleet: FleetId,
    /// Trusts the gateway's dev CA and resolves every robot's app name to it.
    pub client: reqwest::Client,
}

impl Rig {
    /// Starts the gateway and registry, creates the fleet with `peerctl`, invites each group
    /// (`(group, robots)`; robots are named `<group>-…`) and starts its robots with the token
    /// in their configuration, then waits until every robot has joined.
    pub async fn start(groups: &[(&str, usize)]) -> Rig {
        Self::start_with(groups, |_| {}).await
    }

    /// [`start`](Self::start) with `settings` applied to every robot's configuration at its
    /// first start (device grants, volume limits); a restarted robot does not get them again.
    pub async fn start_with(
        groups: &[(&str, usize)],
        settings: impl Fn(&mut ProviderConfig) + Clone + Send + 'static,
    ) -> Rig {
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
        let admin = tempfile::tempdir().expect("admin home");
        let mut rig = Rig {
            robots: vec![],
            gw,
            runtime,
            registry,
            cleanup,
            repository,
            admin,
            fleet: FleetId([0; 32]),
            client: reqwest::Client::new(),
        };
        rig.ok(&["init"]).await;
        rig.ok(&["gateways", "add", &gateway.to_string()]).await;
        let created = rig.json(&["fleet", "create", "lekiwi", "--json"]).await;
        rig.fleet = created["fleet_id"]
            .as_str()
            .expect("fleet_id")
            .parse()
            .expect("a fleet id");

        let mut starting = vec![];
        for (group, count) in groups {
            let invite = rig
                .json(&[
                    "fleet",
                    "invite",
                    "--group",
                    group,
                    "--name-prefix",
                    group,
                    "--uses",
                    &count.to_string(),
                    "--json",
                ])
                .await;
            let token = invite["token"].as_str().expect("token").to_owned();
            for _ in 0..*count {
                let (home, peer) = TestDaemon::identity();
                rig.cleanup.containers_labelled(
                    peercompute_runtime::LABEL_PROVIDER,
                    &format!("{peer}/fleet"),
                );
                let spec = gateway_spec(&rig.gw);
                let token = JoinTokenText(token.clone());
                let group = (*group).to_owned();
                let settings = settings.clone();
                starting.push(async move {
                    let daemon = TestDaemon::start_custom(home, spec, Limits::default(), |c| {
                        c.join = Some(token);
                        settings(c);
                    })
                    .await;
                    (daemon, peer, group)
                });
            }
        }
        for (daemon, peer, group) in join_all(starting).await {
            let name = match wait_join(&daemon).await {
                JoinStatus::Joined { name, .. } => name,
                other => panic!("robot {peer} did not join: {other:?}"),
            };
            let url = rig.gw.url(&format!("web-{name}"), "/");
            rig.robots.push(Robot {
                daemon,
                peer,
                name,
                group,
                url,
            });
        }
        let routes: Vec<String> = rig
            .robots
            .iter()
            .map(|r| format!("web-{}", r.name))
            .collect();
        let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
        rig.client = https_client(&rig.gw, &routes, Alpn::H1);
        rig
    }

    /// A web image `version` in the registry (healthy: it answers `/healthz`), pinned.
    pub async fn image(&self, version: &str, healthy: bool) -> PinnedImage {
        web_image(
            &self.runtime,
            &self.registry,
            &self.cleanup,
            &self.repository,
            version,
            healthy,
        )
        .await
    }

    /// An image of the test's own making (`build` fills an empty scratch image) in the
    /// registry as `repository:version`, pinned.
    pub async fn push(
        &self,
        version: &str,
        build: impl FnOnce(ScratchImage) -> ScratchImage,
    ) -> PinnedImage {
        push_image(
            &self.runtime,
            &self.registry,
            &self.cleanup,
            &self.repository,
            version,
            build,
        )
        .await
    }

    /// Runs `peerctl --home <admin> ARGS…`: exit code, stdout, stderr.
    pub async fn peerctl(&self, args: &[&str]) -> (i32, String, String) {
        run_peerctl(self.admin.path(), args).await
    }

    /// Runs peerctl and insists on success; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.peerctl(args).await;
        assert_eq!(code, 0, "peerctl {args:?}: {stderr}");
        stdout
    }

    /// Runs peerctl and parses its stdout as JSON.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.ok(args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// `peerctl fleet release <repository>:VERSION --group G --name web …` (the tag resolved
    /// by peerctl); the release entry's hash.
    pub async fn release(&self, group: &str, version: &str, health_timeout: &str) -> String {
        let image = format!("{}:{version}", self.repository);
        self.release_image(&image, group, version, health_timeout)
            .await
    }

    /// `peerctl fleet release IMAGE --group G --name web --version V …` for any image
    /// reference (a tag, or pinned by a registry or peer digest); the release entry's hash.
    pub async fn release_image(
        &self,
        image: &str,
        group: &str,
        version: &str,
        health_timeout: &str,
    ) -> String {
        let port = WEB_PORT.to_string();
        let out = self
            .json(&[
                "fleet",
                "release",
                image,
                "--group",
                group,
                "--port",
                &port,
                "--name",
                "web",
                "--version",
                version,
                "--health-path",
                "/healthz",
                "--health-timeout",
                health_timeout,
                "--json",
            ])
            .await;
        out["hash"].as_str().expect("hash").to_owned()
    }

    /// The robots of `group`.
    pub fn group(&self, group: &str) -> impl Iterator<Item = &Robot> {
        self.robots.iter().filter(move |r| r.group == group)
    }

    /// Waits until every robot of `group` serves `version` at its URL.
    pub async fn wait_group_serving(&self, group: &str, version: &str, secs: u64) {
        join_all(
            self.group(group)
                .map(|r| wait_serving(&self.client, &r.url, version, secs)),
        )
        .await;
    }

    /// `peerctl fleet status --json`, polled until `done` holds for it (at most `secs`).
    pub async fn wait_status(
        &self,
        secs: u64,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        within(secs, what, async {
            loop {
                let (code, stdout, _) = self.peerctl(&["fleet", "status", "--json"]).await;
                if code == 0
                    && let Ok(status) = serde_json::from_str::<serde_json::Value>(&stdout)
                    && done(&status)
                {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
    }

    /// Waits until every robot of `group` reports `version` in `phase` (`fleet status`'s
    /// words: healthy, rolled back, failed); the status rows of the group.
    pub async fn wait_group_phase(
        &self,
        group: &str,
        version: &str,
        phase: &str,
    ) -> Vec<serde_json::Value> {
        let names: Vec<String> = self.group(group).map(|r| r.name.clone()).collect();
        let status = self
            .wait_status(120, &format!("{group} to report {version} {phase}"), |s| {
                names.iter().all(|n| {
                    app_of(s, n).is_some_and(|a| a["version"] == version && a["phase"] == phase)
                })
            })
            .await;
        rows(&status)
            .into_iter()
            .filter(|r| names.iter().any(|n| r["name"] == n.as_str()))
            .collect()
    }
}

/// The rows of a `fleet status --json` answer.
pub fn rows(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status.as_array().cloned().unwrap_or_default()
}

/// Robot `name`'s app in a `fleet status --json` answer (the rigs' robots are in one group
/// each, so they run one app).
pub fn app_of(status: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    rows(status)
        .into_iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["apps"].as_array().and_then(|a| a.first().cloned()))
}
