//! A robot site for the offline-fleet tests: [`SiteWorld`] is a gateway on a public host and a
//! site LAN behind a NAT router with robots `r1..rN` (real `peercomputed` binaries, joined to
//! one fleet by token) and a laptop (the real `peerctl` binary, the fleet's admin), built from
//! [`crate::netns`]. The WAN can be cut and healed (an nftables table on the router), and one
//! host can be taken off the LAN and put back (its router-side link down / up).
//!
//! The robots share the one Docker engine, which publishes container ports on 127.0.0.1 of the
//! root namespace; each robot gets a [`PortMirror`] so that it reaches (and health-checks) its
//! own containers from its namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use peercompute_identity::{Identity, PeerId};
use peercompute_runtime::DockerRuntime;
use peercompute_runtime::testsupport::{Cleanup, LocalRegistry, unique_name};

use crate::daemon::{peerctl_bin, workspace_bin};
use crate::docker_events::{ContainerEvent, DockerEvents, of};
use crate::fleet_rig::{WEB_PORT, app_of, web_image};
use crate::nat::{HTTPS_PORT, P2P_PORT, TUNNEL_PORT};
use crate::netns::port_mirror::PortMirror;
use crate::netns::{Host, NatKind, World};
use crate::{gateway::DOMAIN, within};

/// One robot of the site.
#[derive(Debug)]
pub struct SiteRobot {
    pub host: Host,
    pub home: tempfile::TempDir,
    pub peer: PeerId,
    /// `<peer>/fleet`: the provider label of its fleet containers.
    pub label: String,
    pub log: PathBuf,
    child: tokio::process::Child,
    _mirror: PortMirror,
}

impl SiteRobot {
    /// The hashes of the entries in its copy of `fleet`'s log, sorted.
    pub fn log_hashes(&self, fleet: &str) -> Vec<String> {
        entry_hashes(&self.home.path().join("fleet").join(fleet).join("entries"))
    }
}

/// See the module docs. Dropping it stops every process and deletes the namespaces.
#[derive(Debug)]
pub struct SiteWorld {
    // Dropped first: processes before their namespaces.
    pub robots: Vec<SiteRobot>,
    _gateway: tokio::process::Child,
    pub gw_host: Host,
    pub laptop: Host,
    /// A LAN host with nothing on it yet (for [`SiteWorld::start_gatewayless_robot`]).
    pub spare: Host,
    /// The laptop's peerctl home: identity, the gateway, the fleet (its admin).
    pub laptop_home: tempfile::TempDir,
    pub gateway_state: tempfile::TempDir,
    /// The CA of the gateway's (dev) certificate.
    pub gateway_ca: PathBuf,
    /// The fleet's id (`pcf…`).
    pub fleet: String,
    router: Host,
    world: World,
}

/// The group every robot of the site joins.
pub const GROUP: &str = "floor";

/// Web images (`fleet_rig::web_image`, healthy) in a local registry, for the site's releases.
#[derive(Debug)]
pub struct SiteImages {
    pub runtime: DockerRuntime,
    pub registry: LocalRegistry,
    /// Removes the images, and the containers of the labels given to it, when dropped.
    pub cleanup: Cleanup,
    /// `<registry>/peercompute/<unique>`.
    pub repository: String,
}

impl SiteImages {
    /// Starts the registry and pushes `versions` of the web image.
    pub async fn start(prefix: &str, versions: &[&str]) -> SiteImages {
        let runtime = DockerRuntime::connect().await.expect("a Docker engine");
        let registry = LocalRegistry::start().await.expect("a local registry");
        let cleanup = Cleanup::new();
        let repository = format!("{}/peercompute/{}", registry.host(), unique_name(prefix));
        for version in versions {
            web_image(&runtime, &registry, &cleanup, &repository, version, true).await;
        }
        SiteImages {
            runtime,
            registry,
            cleanup,
            repository,
        }
    }

    /// `<repository>:<version>`.
    pub fn image(&self, version: &str) -> String {
        format!("{}:{version}", self.repository)
    }
}

impl SiteWorld {
    /// Builds the world, starts the gateway, creates the fleet on the laptop, and starts
    /// `robots` robots joined to it (in [`GROUP`]); returns once the laptop lists them all as
    /// members.
    pub async fn start(robots: usize) -> SiteWorld {
        let world = World::new();
        let gw_host = world.public_host("gw");
        let site = world.nat_site("site", NatKind::EndpointIndependent);
        let router = site.router().clone();
        let laptop = site.host("laptop");
        let spare = site.host("spare");
        let hosts: Vec<Host> = (1..=robots).map(|i| site.host(&format!("r{i}"))).collect();
        drop(site);

        let homes: Vec<(tempfile::TempDir, PeerId)> = hosts
            .iter()
            .map(|_| {
                let home = tempfile::tempdir().expect("robot home");
                let (id, _) = Identity::load_or_create(home.path()).expect("identity");
                (home, id.peer_id())
            })
            .collect();
        let gateway_state = tempfile::tempdir().expect("gateway state");
        let (gw_identity, _) =
            peercompute_gateway::identity(gateway_state.path()).expect("gateway identity");
        let gateway_ca =
            peercompute_gateway::dev_tls(gateway_state.path(), DOMAIN).expect("dev tls");
        let gateway = start_gateway(&gw_host, gateway_state.path(), homes.iter().map(|h| h.1));
        let gw_id = gw_identity.peer_id();

        let laptop_home = tempfile::tempdir().expect("laptop home");
        let mut w = SiteWorld {
            robots: Vec::new(),
            _gateway: gateway,
            gw_host,
            laptop,
            spare,
            laptop_home,
            gateway_state,
            gateway_ca,
            fleet: String::new(),
            router,
            world,
        };
        w.ok(&["init"]).await;
        let gw_p2p = format!("{gw_id}@/ip4/{}/udp/{P2P_PORT}/quic-v1", w.gw_host.ip());
        w.ok(&["gateways", "add", &gw_p2p]).await;
        let created = w.json(&["fleet", "create", "site", "--json"]).await;
        w.fleet = created["fleet_id"].as_str().expect("fleet_id").to_owned();
        let token = w.invite(robots).await;
        let gateway_arg = format!("{gw_id}@{}:{TUNNEL_PORT}", w.gw_host.ip());
        for (host, (home, peer)) in hosts.into_iter().zip(homes) {
            let robot = start_robot(host, home, peer, &token, Some(&gateway_arg)).await;
            w.robots.push(robot);
        }
        let want = robots;
        within(60, "every robot to join the fleet", async {
            loop {
                let (code, out, _) = w.peerctl(&["fleet", "members", "--json"]).await;
                let joined = serde_json::from_str::<serde_json::Value>(&out)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .map_or(0, |rows| {
                        rows.iter()
                            .filter(|r| r["groups"].to_string().contains(GROUP))
                            .count()
                    });
                if code == 0 && joined >= want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        w
    }

    /// Starts a robot on the spare host with `token` and no gateway at all (it can only reach
    /// the fleet over the LAN); returns its index in `robots`.
    pub async fn start_gatewayless_robot(&mut self, token: &str) -> usize {
        let home = tempfile::tempdir().expect("robot home");
        let (id, _) = Identity::load_or_create(home.path()).expect("identity");
        let robot = start_robot(self.spare.clone(), home, id.peer_id(), token, None).await;
        self.robots.push(robot);
        self.robots.len() - 1
    }

    /// `fleet release IMAGE --group floor --name web --version VERSION --json …` (health at
    /// `/healthz`, 30 s) from the laptop, with `extra` arguments; insists on success; stdout.
    pub async fn release(&self, image: &str, version: &str, extra: &[&str]) -> String {
        let port = WEB_PORT.to_string();
        let mut args = vec![
            "fleet",
            "release",
            image,
            "--group",
            GROUP,
            "--port",
            &port,
            "--name",
            "web",
            "--version",
            version,
            "--health-path",
            "/healthz",
            "--health-timeout",
            "30s",
            "--json",
        ];
        args.extend_from_slice(extra);
        self.ok(&args).await
    }

    /// Each robot's first `action` container event after the `from`-th (at most `secs`).
    pub async fn each_robot(
        &self,
        events: &DockerEvents,
        from: usize,
        action: &str,
        secs: u64,
    ) -> Vec<ContainerEvent> {
        let labels: Vec<String> = self.robots.iter().map(|r| r.label.clone()).collect();
        let what = format!("a {action} on every robot");
        let waited = events.wait_for(secs + 1, &what, |e| {
            labels.iter().all(|l| !of(e, from, l, action).is_empty())
        });
        let Ok(all) = tokio::time::timeout(Duration::from_secs(secs), waited).await else {
            self.print_logs();
            panic!("timed out after {secs}s waiting for {what} (robot logs above)");
        };
        labels
            .iter()
            .map(|l| of(&all, from, l, action)[0].clone())
            .collect()
    }

    /// Prints every robot's log lines but the debug ones (when a wait failed).
    pub fn print_logs(&self) {
        for r in &self.robots {
            eprintln!("---- robot {} ({})", r.peer, r.host.ip());
            let log = std::fs::read_to_string(&r.log).unwrap_or_default();
            for line in log.lines().filter(|l| !l.contains(" DEBUG ")) {
                eprintln!("{line}");
            }
        }
    }

    /// Asserts that every robot created exactly one container after the `from`-th event
    /// (`what` names the release, for the message).
    pub fn assert_created_once(&self, events: &DockerEvents, from: usize, what: &str) {
        let all = events.all();
        for r in &self.robots {
            let creates = of(&all, from, &r.label, "create").len();
            assert_eq!(creates, 1, "{}: {what} created {creates} times", r.peer);
        }
    }

    /// Polls `fleet status --json` on the laptop until every robot reports `version` healthy
    /// (at most `secs`); the status.
    pub async fn wait_healthy(&self, version: &str, secs: u64) -> serde_json::Value {
        let want = self.robots.len();
        within(secs, &format!("every robot healthy on {version}"), async {
            loop {
                let (code, out, _) = self.peerctl(&["fleet", "status", "--json"]).await;
                let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                let healthy = status.as_array().map_or(0, |rows| {
                    rows.iter()
                        .filter_map(|r| r["name"].as_str())
                        .filter(|n| {
                            app_of(&status, n)
                                .is_some_and(|a| a["version"] == version && a["phase"] == "healthy")
                        })
                        .count()
                });
                if code == 0 && healthy == want {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await
    }

    /// A join token of [`GROUP`] for `uses` robots (named `r-…`), from the laptop.
    pub async fn invite(&self, uses: usize) -> String {
        let invite = self
            .json(&[
                "fleet",
                "invite",
                "--group",
                GROUP,
                "--name-prefix",
                "r",
                "--uses",
                &uses.to_string(),
                "--json",
            ])
            .await;
        invite["token"].as_str().expect("token").to_owned()
    }

    /// Runs `peerctl --home <laptop> ARGS…` on the laptop: exit code, stdout, stderr.
    pub async fn peerctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = within(60, &format!("peerctl {args:?}"), async {
            self.peerctl_command(args)
                .output()
                .await
                .expect("peerctl runs")
        })
        .await;
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The laptop's `peerctl ARGS…` command, not started (to time it or run it alongside).
    pub fn peerctl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.laptop.command(peerctl_bin());
        cmd.arg("--home")
            .arg(self.laptop_home.path())
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    /// peerctl on the laptop, insisting on success; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.peerctl(args).await;
        assert_eq!(code, 0, "peerctl {args:?}: {stderr}");
        stdout
    }

    /// peerctl on the laptop, its stdout parsed as JSON.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.ok(args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// The hashes of the laptop's copy of the fleet's log, sorted.
    pub fn laptop_log_hashes(&self) -> Vec<String> {
        entry_hashes(
            &self
                .laptop_home
                .path()
                .join("fleets")
                .join(&self.fleet)
                .join("entries"),
        )
    }

    /// GETs `https://<route>.<domain>/` through the gateway from the laptop (over the WAN):
    /// the body when it answers 2xx within 5 s.
    pub async fn visit(&self, route: &str) -> Option<String> {
        let host = format!("{route}.{DOMAIN}");
        let out = self
            .laptop
            .command("curl")
            .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
            .arg(&self.gateway_ca)
            .args([
                "--resolve",
                &format!("{host}:{HTTPS_PORT}:{}", self.gw_host.ip()),
            ])
            .arg(format!("https://{host}:{HTTPS_PORT}/"))
            .output()
            .await
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Cuts the site's WAN: the router drops everything to and from `wan`.
    pub fn cut_wan(&self) {
        crate::netns::sh::nft(
            self.router.netns().expect("a router has a namespace"),
            "table inet pc_cut {
    chain forward { type filter hook forward priority -10; policy accept; iifname \"wan\" drop; oifname \"wan\" drop; }
    chain input { type filter hook input priority -10; policy accept; iifname \"wan\" drop; }
    chain output { type filter hook output priority -10; policy accept; oifname \"wan\" drop; }
}
",
        );
    }

    /// Heals the WAN cut by [`SiteWorld::cut_wan`].
    pub fn heal_wan(&self) {
        self.router
            .run("nft", &["delete", "table", "inet", "pc_cut"]);
    }

    /// Takes `host` off the site's LAN (its router-side link down).
    pub fn isolate(&self, host: &Host) {
        self.router
            .run("ip", &["link", "set", &lan_port(host), "down"]);
    }

    /// Puts `host` back on the LAN.
    pub fn rejoin(&self, host: &Host) {
        self.router
            .run("ip", &["link", "set", &lan_port(host), "up"]);
    }

    /// The world the site lives in.
    pub fn world(&self) -> &World {
        &self.world
    }
}

impl Drop for SiteWorld {
    fn drop(&mut self) {
        for r in &mut self.robots {
            let _ = r.child.start_kill();
        }
    }
}

/// Saves `token` in `home` (`peercomputed join`) and starts `peercomputed run` on `host`,
/// through `gateway` when given, with its container ports mirrored into its namespace.
async fn start_robot(
    host: Host,
    home: tempfile::TempDir,
    peer: PeerId,
    token: &str,
    gateway: Option<&str>,
) -> SiteRobot {
    let joined = tokio::process::Command::new(workspace_bin("peercomputed"))
        .arg("--home")
        .arg(home.path())
        .args(["join", token])
        .output()
        .await
        .expect("peercomputed join runs");
    assert!(joined.status.success(), "join: {joined:?}");
    let log = home.path().join("provider.log");
    let ip = host.ip();
    let mut cmd = host.command(workspace_bin("peercomputed"));
    cmd.arg("--home")
        .arg(home.path())
        .arg("run")
        .args(["--listen", &format!("/ip4/{ip}/tcp/0")])
        .args(["--listen", &format!("/ip4/{ip}/udp/0/quic-v1")])
        .args(["--firewall", "off", "--admin-listen", "off"])
        .env("RUST_LOG", "info,peercompute_p2p=debug")
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true);
    if let Some(gateway) = gateway {
        cmd.args(["--gateway", gateway]);
    }
    let child = cmd.spawn().expect("peercomputed starts");
    let label = format!("{peer}/fleet");
    let mirror = PortMirror::start(&host, peercompute_runtime::LABEL_PROVIDER, &label);
    SiteRobot {
        host,
        home,
        peer,
        label,
        log,
        child,
        _mirror: mirror,
    }
}

/// The router-side port of a LAN host: `h<n>` for `10.x.k.n`.
fn lan_port(host: &Host) -> String {
    format!("h{}", host.ip().octets()[3])
}

/// The entry hashes under `dir` (`<hash>.entry` files), sorted.
fn entry_hashes(dir: &Path) -> Vec<String> {
    let mut hashes: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".entry"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    hashes.sort();
    hashes
}

/// Starts `peercompute-gateway` on `host`, admitting `providers`.
fn start_gateway(
    host: &Host,
    state: &Path,
    providers: impl Iterator<Item = PeerId>,
) -> tokio::process::Child {
    let ip = host.ip();
    let log = std::fs::File::create(state.join("gateway.log")).expect("log");
    let mut cmd = host.command(workspace_bin("peercompute-gateway"));
    cmd.args(["run", "--domain", DOMAIN, "--state-dir"])
        .arg(state)
        .args(["--https-listen", &format!("{ip}:{HTTPS_PORT}"), "--no-http"])
        .args(["--tunnel-listen", &format!("{ip}:{TUNNEL_PORT}")])
        .args(["--admin-listen", "127.0.0.1:9180"])
        .args(["--public-port", &HTTPS_PORT.to_string()])
        .args(["--rate-limit", "0", "--rate-limit-ip", "0"])
        .args(["--p2p-listen", &format!("/ip4/{ip}/tcp/{P2P_PORT}")])
        .args(["--p2p-listen", &format!("/ip4/{ip}/udp/{P2P_PORT}/quic-v1")])
        .env("RUST_LOG", "info")
        .stderr(log)
        .kill_on_drop(true);
    for p in providers {
        cmd.args(["--allow-provider", &p.to_string()]);
    }
    cmd.spawn().expect("gateway starts")
}
