//! The system under test as separate processes on 127.0.0.1: the real `peercompute-gateway`
//! and `peercomputed` release binaries (built with cargo, or found), and the backend (this
//! program re-executed as `tunnel-bench backend`), plus two zero-work TCP relays in front of
//! the backend (`tunnel-bench splice`) for the ceiling measurement. Ports come from binding
//! port 0 first. [`StackOptions`] can set both sides' congestion controller and put a
//! [`LossyLink`] (in this process) between the provider and the gateway.
//! Readiness is polled until the gateway answers (bounded); every child is killed when its
//! handle is dropped, so an error or a panic leaves nothing running.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use peercompute_tests::lossy_link::{LinkShape, LossyLink};
use peercompute_tunnel_proto::TunnelCongestion;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, ChildStdin, Command};

use super::gateway_proc::{GatewayProc, GatewaySpec};
use super::target::Target;

const GATEWAY_BIN: &str = "peercompute-gateway";
const PROVIDER_BIN: &str = "peercomputed";
/// The name the TCP-transport provider serves (`bench-tcp.<domain>`).
pub(crate) const TCP_NAME: &str = "bench-tcp";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(25);
/// Log filter for the children: their own default, whatever RUST_LOG the caller has.
const CHILD_LOG: &str = "info,quinn=warn,rustls=warn";

/// The two binaries under test and how they were obtained.
#[derive(Debug)]
pub(crate) struct Binaries {
    pub(crate) gateway: PathBuf,
    pub(crate) provider: PathBuf,
    pub(crate) how: String,
}

/// Builds the release binaries with cargo (unless `no_build`) and finds them, or takes them
/// from `bin_dir`.
pub(crate) fn binaries(bin_dir: Option<&Path>, no_build: bool) -> anyhow::Result<Binaries> {
    let (dir, how) = match bin_dir {
        Some(dir) => (dir.to_path_buf(), format!("taken from {}", dir.display())),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("the tests package lives inside the workspace")?;
            let target_dir = target_dir(root);
            let how = if no_build {
                "found (not rebuilt: --no-build)".to_owned()
            } else {
                build(root, &target_dir)?
            };
            (target_dir.join("release"), how)
        }
    };
    let bins = Binaries {
        gateway: dir.join(GATEWAY_BIN),
        provider: dir.join(PROVIDER_BIN),
        how: format!("{how}, in {}", dir.display()),
    };
    for bin in [&bins.gateway, &bins.provider] {
        if !bin.is_file() {
            bail!(
                "{} not found; build it with `cargo build --release -p peercompute-gateway -p peercompute-provider` or pass --bin-dir",
                bin.display()
            );
        }
    }
    Ok(bins)
}

fn build(root: &Path, target_dir: &Path) -> anyhow::Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = [
        "build",
        "--release",
        "-p",
        "peercompute-gateway",
        "-p",
        "peercompute-provider",
    ];
    eprintln!("building the binaries under test: cargo {}", args.join(" "));
    let status = std::process::Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo build of the gateway and provider failed ({status})");
    }
    Ok(format!("built with `cargo {}`", args.join(" ")))
}

/// `target/bench/` of the workspace, where benchmarks leave their CSV files.
pub(crate) fn bench_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    target_dir(&root).join("bench")
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else the one this program was
/// built into when it is a release build (`<target>/release/tunnel-bench`), else the
/// workspace's `target/`.
fn target_dir(root: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        return if dir.is_absolute() {
            dir
        } else {
            root.join(dir)
        };
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .filter(|dir| dir.ends_with("release"))
        .and_then(|dir| dir.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| root.join("target"))
}

/// A child process, killed when dropped; its stdout and stderr go to a log file.
#[derive(Debug)]
pub(crate) struct ChildProc {
    pub(crate) name: &'static str,
    pub(crate) pid: u32,
    child: Child,
    log: PathBuf,
}

impl ChildProc {
    /// Starts `cmd` with stderr (and stdout unless the caller set it) in `log`.
    pub(crate) fn spawn(
        name: &'static str,
        cmd: &mut Command,
        log: PathBuf,
        stdout_to_log: bool,
    ) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        if stdout_to_log {
            cmd.stdout(out.try_clone().context("clone the log file handle")?);
        }
        let child = cmd
            .stderr(out)
            .env("RUST_LOG", CHILD_LOG)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let pid = child.id().context("a just-started child has a pid")?;
        Ok(Self {
            name,
            pid,
            child,
            log,
        })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `n` lines of its log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n    ");
        format!(
            "--- {} log ({}):\n    {tail}",
            self.name,
            self.log.display()
        )
    }

    /// SIGKILL and reap, bounded.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// How the stack differs from the daemons' defaults.
#[derive(Debug, Clone, Default)]
pub(crate) struct StackOptions {
    /// `--tunnel-congestion` of the gateway and the provider; `None`: their default.
    pub(crate) congestion: Option<TunnelCongestion>,
    /// The provider reaches the gateway through a link emulator of this shape.
    pub(crate) link: Option<LinkShape>,
    /// Also serve a WebSocket echo (the backend helper's second address) as the name `ws`.
    pub(crate) websocket: bool,
    /// The gateway's `--max-connections` (visitor connection cap); `None`: its default.
    pub(crate) max_connections: Option<usize>,
    /// The gateway's `header_read_timeout` (config file), which also ends idle keep-alive
    /// connections; `None`: its default (10 s).
    pub(crate) header_read_timeout: Option<Duration>,
    /// More provider keys the gateway admits (`--allow-provider`).
    pub(crate) extra_allowed: Vec<String>,
    /// Runs the gateway on this CPU only (`taskset -c`), away from everything else.
    pub(crate) gateway_cpu: Option<usize>,
}

/// Backend, gateway and provider, running and answering.
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) backend: ChildProc,
    /// The two relays of the ceiling measurement, nearest the load generator first.
    pub(crate) splices: [ChildProc; 2],
    pub(crate) gateway: ChildProc,
    pub(crate) provider: ChildProc,
    /// A second provider, on the TCP transport (`--transport tcp`), serving the same backend
    /// under `bench-tcp`.
    pub(crate) provider_tcp: ChildProc,
    pub(crate) backend_addr: SocketAddr,
    /// Entry of the two-hop splice chain in front of the backend.
    pub(crate) splice_addr: SocketAddr,
    pub(crate) https: SocketAddr,
    /// The gateway's QUIC tunnel listener and its peer id.
    pub(crate) tunnel: SocketAddr,
    pub(crate) gateway_id: String,
    pub(crate) admin: SocketAddr,
    pub(crate) ca_pem: Vec<u8>,
    /// The provider's admin listener (`/metrics`).
    pub(crate) provider_admin: SocketAddr,
    /// The provider's peer id (for the gateway's admin API).
    pub(crate) provider_id: String,
    /// Between provider and gateway, with [`StackOptions::link`].
    pub(crate) link: Option<LossyLink>,
    /// Helpers exit when their stdin closes, i.e. when this program does (even if killed).
    _helper_stdins: [ChildStdin; 3],
    _dir: tempfile::TempDir,
}

/// This program re-executed as a helper (`backend`, `splice ADDR`) that prints
/// `listening ADDR` once bound.
pub(crate) struct Helper;

impl Helper {
    async fn spawn(
        name: &'static str,
        exe: &Path,
        args: &[&str],
        dir: &Path,
    ) -> anyhow::Result<(ChildProc, ChildStdin, SocketAddr)> {
        let mut cmd = Command::new(exe);
        cmd.args(args);
        let (child, stdin, addrs) = Self::spawn_addrs(name, cmd, dir).await?;
        let addr = *addrs
            .first()
            .context("a helper prints at least one address")?;
        Ok((child, stdin, addr))
    }

    /// [`Helper::spawn`] of a helper that prints `listening ADDR [ADDR…]`, started as
    /// `cmd` (which may wrap this program, e.g. in `ip netns exec`).
    pub(crate) async fn spawn_addrs(
        name: &'static str,
        mut cmd: Command,
        dir: &Path,
    ) -> anyhow::Result<(ChildProc, ChildStdin, Vec<SocketAddr>)> {
        let mut child = ChildProc::spawn(
            name,
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()),
            dir.join(format!("{name}.log")),
            false,
        )?;
        let stdin = child.child.stdin.take().context("helper stdin")?;
        let stdout = child.child.stdout.take().context("helper stdout")?;
        let mut first = String::new();
        tokio::time::timeout(
            READY_TIMEOUT,
            tokio::io::BufReader::new(stdout).read_line(&mut first),
        )
        .await
        .with_context(|| format!("{name} did not report its address in time"))?
        .with_context(|| format!("read {name}'s address"))?;
        let addrs: Vec<SocketAddr> = first
            .trim()
            .strip_prefix("listening ")
            .and_then(|rest| rest.split_whitespace().map(|a| a.parse().ok()).collect())
            .filter(|addrs: &Vec<SocketAddr>| !addrs.is_empty())
            .with_context(|| format!("unexpected {name} output {first:?}"))?;
        Ok((child, stdin, addrs))
    }

    /// The `backend` helper; with `websocket`, also its WebSocket echo (a second
    /// `listening-ws ADDR` line).
    async fn spawn_backend(
        exe: &Path,
        dir: &Path,
        websocket: bool,
    ) -> anyhow::Result<(ChildProc, ChildStdin, SocketAddr, Option<SocketAddr>)> {
        let args: &[&str] = if websocket {
            &["backend", "--websocket"]
        } else {
            &["backend"]
        };
        let mut cmd = Command::new(exe);
        cmd.args(args);
        let (child, stdin, addrs) = Self::spawn_addrs("backend", cmd, dir).await?;
        let ws = if websocket {
            Some(
                *addrs
                    .get(1)
                    .context("the backend printed no WebSocket address")?,
            )
        } else {
            None
        };
        Ok((child, stdin, addrs[0], ws))
    }
}

pub(crate) fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("bind a TCP port")?
        .local_addr()?
        .port())
}

pub(crate) fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")
        .context("bind a UDP port")?
        .local_addr()?
        .port())
}

/// Runs a short command and returns its trimmed stdout.
pub(crate) async fn output(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.kill_on_drop(true).output())
        .await
        .with_context(|| format!("{what} timed out"))?
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Stack {
    /// Starts everything and waits until `https://<host>/` answers 200 through the tunnel.
    pub(crate) async fn start(bins: &Binaries, domain: &str, host: &str) -> anyhow::Result<Self> {
        Self::start_with(bins, domain, host, &StackOptions::default()).await
    }

    /// [`Stack::start`] with `options`.
    pub(crate) async fn start_with(
        bins: &Binaries,
        domain: &str,
        host: &str,
        options: &StackOptions,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tunnel-bench-")
            .tempdir()
            .context("temporary directory")?;
        let gw_state = dir.path().join("gateway");
        let home = dir.path().join("provider");
        let home_tcp = dir.path().join("provider-tcp");

        let exe = std::env::current_exe().context("locate this program")?;
        let (mut backend, backend_stdin, backend_addr, ws_addr) =
            Helper::spawn_backend(&exe, dir.path(), options.websocket).await?;
        // The ceiling: two zero-work TCP relays in front of the same backend.
        let far = backend_addr.to_string();
        let (splice_far, far_stdin, far_addr) =
            Helper::spawn("splice-far", &exe, &["splice", &far], dir.path()).await?;
        let near = far_addr.to_string();
        let (splice_near, near_stdin, splice_addr) =
            Helper::spawn("splice-near", &exe, &["splice", &near], dir.path()).await?;

        let provider_id = output(
            Command::new(&bins.provider)
                .arg("--home")
                .arg(&home)
                .arg("init"),
            "peercomputed init",
        )
        .await?;
        let provider_tcp_id = output(
            Command::new(&bins.provider)
                .arg("--home")
                .arg(&home_tcp)
                .arg("init"),
            "peercomputed init (TCP provider)",
        )
        .await?;
        let https = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let tunnel = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
        let cc_args: Vec<String> = options
            .congestion
            .map(|c| vec!["--tunnel-congestion".into(), c.to_string()])
            .unwrap_or_default();
        let mut extra = cc_args.clone();
        if let Some(cap) = options.max_connections {
            extra.extend(["--max-connections".into(), cap.to_string()]);
        }
        if let Some(timeout) = options.header_read_timeout {
            let file = dir.path().join("gateway.toml");
            let toml = format!(
                "header_read_timeout = \"{}\"\n",
                humantime::format_duration(timeout)
            );
            std::fs::write(&file, toml).context("write the gateway's config file")?;
            extra.extend(["--config".into(), file.display().to_string()]);
        }
        let spec = GatewaySpec {
            domain: domain.to_owned(),
            https,
            tunnel,
            admin,
            allow: [provider_id.clone(), provider_tcp_id]
                .into_iter()
                .chain(options.extra_allowed.iter().cloned())
                .collect(),
            allow_file: None,
            extra,
            cpu: options.gateway_cpu,
        };
        let GatewayProc {
            child: mut gateway,
            id: gateway_id,
            ca_pem,
        } = GatewayProc::start(
            &bins.gateway,
            &gw_state,
            dir.path().join("gateway.log"),
            &spec,
        )
        .await?;

        let link = match options.link {
            Some(shape) => Some(
                LossyLink::start(tunnel, shape)
                    .await
                    .context("start the link emulator")?,
            ),
            None => None,
        };
        let dial = link.as_ref().map_or(tunnel, |l| l.addr);
        let provider_admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let mut provider_cmd = Command::new(&bins.provider);
        provider_cmd
            .arg("--home")
            .arg(&home)
            .arg("run")
            .args(&cc_args)
            .args(["--gateway", &format!("{gateway_id}@{dial}")])
            .args(["--expose", &format!("bench={backend_addr}")])
            .args(["--admin-listen", &provider_admin.to_string()])
            // The control plane on loopback, no LAN announcements: the tunnel is measured.
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .stdin(Stdio::null());
        if let Some(ws) = ws_addr {
            provider_cmd.args(["--expose", &format!("ws={ws}")]);
        }
        let mut provider = ChildProc::spawn(
            "provider",
            &mut provider_cmd,
            dir.path().join("provider.log"),
            true,
        )?;
        let through = &Target::https("through", https, host, &ca_pem)?;
        wait_until(
            "200 from the route through the tunnel",
            &mut [&mut gateway, &mut provider, &mut backend],
            move || async move {
                let (status, _) = through.connect().await?.fetch(through.get("/")).await?;
                anyhow::Ok(status.is_success())
            },
        )
        .await?;
        let mut provider_tcp = ChildProc::spawn(
            "provider-tcp",
            Command::new(&bins.provider)
                .arg("--home")
                .arg(&home_tcp)
                .arg("run")
                .args(["--gateway", &format!("{gateway_id}@{tunnel}")])
                .args(["--transport", "tcp", "--gateway-https", &https.to_string()])
                .args(["--expose", &format!("{TCP_NAME}={backend_addr}")])
                // Beside the first provider on this host: its own ports, or none.
                .args([
                    "--listen",
                    "/ip4/127.0.0.1/tcp/0",
                    "--no-mdns",
                    "--no-relay",
                ])
                .args(["--admin-listen", "off"])
                .stdin(Stdio::null()),
            dir.path().join("provider-tcp.log"),
            true,
        )?;
        let tcp_host = host.replacen("bench.", &format!("{TCP_NAME}."), 1);
        let through_tcp = &Target::https("through-tcp", https, &tcp_host, &ca_pem)?;
        wait_until(
            "200 from the route through the TCP tunnel",
            &mut [&mut gateway, &mut provider_tcp, &mut backend],
            move || async move {
                let (status, _) = through_tcp
                    .connect()
                    .await?
                    .fetch(through_tcp.get("/"))
                    .await?;
                anyhow::Ok(status.is_success())
            },
        )
        .await?;

        Ok(Self {
            backend,
            splices: [splice_near, splice_far],
            gateway,
            provider,
            provider_tcp,
            backend_addr,
            splice_addr,
            https,
            tunnel,
            gateway_id,
            admin,
            ca_pem,
            provider_admin,
            provider_id,
            link,
            _helper_stdins: [backend_stdin, near_stdin, far_stdin],
            _dir: dir,
        })
    }

    /// The children's recent log lines, for an error report.
    pub(crate) fn log_tails(&self) -> String {
        [
            &self.gateway,
            &self.provider,
            &self.provider_tcp,
            &self.backend,
        ]
        .iter()
        .map(|c| c.log_tail(15))
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// Stops everything and returns `e` with the children's recent log lines.
    pub(crate) async fn fail(self, e: anyhow::Error) -> anyhow::Error {
        let logs = self.log_tails();
        self.stop().await;
        anyhow::anyhow!("{e:#}\n{logs}")
    }

    /// Kills every child and removes the temporary directory.
    pub(crate) async fn stop(self) {
        self.provider_tcp.kill().await;
        self.provider.kill().await;
        self.gateway.kill().await;
        for splice in self.splices {
            splice.kill().await;
        }
        self.backend.kill().await;
    }
}

/// Polls `probe` until it returns true, failing early (with its log) if a child exits and
/// after [`READY_TIMEOUT`] with the last probe error.
pub(crate) async fn wait_until<F, Fut>(
    what: &str,
    children: &mut [&mut ChildProc],
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    let max_attempts = READY_TIMEOUT.as_millis() / POLL_EVERY.as_millis() + 1;
    let mut last = String::from("no attempt yet");
    for _ in 0..max_attempts {
        match tokio::time::timeout(Duration::from_secs(5), probe()).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => last = "answered, not 2xx".into(),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "probe timed out".into(),
        }
        for child in children.iter_mut() {
            if let Some(status) = child.exited() {
                bail!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    child.name,
                    child.log_tail(20)
                );
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let logs: Vec<String> = children.iter().map(|c| c.log_tail(20)).collect();
    bail!(
        "timed out after {READY_TIMEOUT:?} waiting for {what} (last: {last})\n{}",
        logs.join("\n")
    )
}
