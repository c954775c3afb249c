//! The programs under test: the release binaries `peercompute-gateway`, `peercomputed` and
//! `peerctl` (built with cargo, or found), and the long-running ones as child processes whose
//! stderr goes, line by line, to a log file and to the [`Timeline`]. A child is killed when
//! its handle is dropped, so an error or a panic leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::timeline::{Source, Timeline};

pub(crate) const GATEWAY_BIN: &str = "peercompute-gateway";
pub(crate) const PROVIDER_BIN: &str = "peercomputed";
pub(crate) const PEERCTL_BIN: &str = "peerctl";
const PACKAGES: [&str; 3] = ["peercompute-gateway", "peercompute-provider", "peerctl"];

/// The three binaries under test and how they were obtained.
#[derive(Debug)]
pub(crate) struct Binaries {
    pub(crate) gateway: PathBuf,
    pub(crate) provider: PathBuf,
    pub(crate) peerctl: PathBuf,
    pub(crate) how: String,
}

impl Binaries {
    /// Builds the release binaries with cargo (unless `no_build`) and finds them, or takes
    /// them from `bin_dir`.
    pub(crate) fn get(bin_dir: Option<&Path>, no_build: bool) -> anyhow::Result<Self> {
        let (dir, how) = match bin_dir {
            Some(dir) => (dir.to_path_buf(), format!("taken from {}", dir.display())),
            None => {
                let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .context("the tests package lives inside the workspace")?;
                let target = target_dir(root);
                let how = if no_build {
                    "not rebuilt (--no-build)".to_owned()
                } else {
                    build(root, &target)?
                };
                (target.join("release"), how)
            }
        };
        let bins = Self {
            gateway: dir.join(GATEWAY_BIN),
            provider: dir.join(PROVIDER_BIN),
            peerctl: dir.join(PEERCTL_BIN),
            how: format!("{how}; in {}", dir.display()),
        };
        for bin in [&bins.gateway, &bins.provider, &bins.peerctl] {
            if !bin.is_file() {
                bail!(
                    "{} not found; build it with `cargo build --release -p {}` or pass --bin-dir",
                    bin.display(),
                    PACKAGES.join(" -p ")
                );
            }
        }
        Ok(bins)
    }
}

/// Builds into `target` (so the binaries are found where they were built).
fn build(root: &Path, target: &Path) -> anyhow::Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build", "--release"];
    for package in PACKAGES {
        args.extend(["-p", package]);
    }
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("building the binaries under test: {shown}");
    let status = std::process::Command::new(&cargo)
        .args(&args)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(format!("built with `{shown}`"))
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else the one this program was
/// built into when it is a release build (`<target>/release/deploy-bench`), else the
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

/// A long-running child; killed when dropped.
#[derive(Debug)]
pub(crate) struct ChildProc {
    pub(crate) name: &'static str,
    pub(crate) pid: u32,
    child: Child,
    log: PathBuf,
    reader: JoinHandle<()>,
}

impl ChildProc {
    /// Starts `cmd` with stdin and stdout closed and stderr read line by line into `log` and
    /// the timeline (as `source`).
    pub(crate) fn spawn(
        name: &'static str,
        source: Source,
        cmd: &mut Command,
        log: PathBuf,
        timeline: &Timeline,
    ) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let pid = child.id().context("a just-started child has a pid")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let (timeline, path) = (timeline.clone(), log.clone());
        let reader = tokio::spawn(async move {
            let mut file = match tokio::fs::File::create(&path).await {
                Ok(file) => Some(file),
                Err(e) => {
                    eprintln!("deploy-bench: cannot write {}: {e}", path.display());
                    None
                }
            };
            let mut lines = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let arrived = SystemTime::now();
                if let Some(file) = file.as_mut() {
                    let _ = file.write_all(&line).await;
                }
                let text = String::from_utf8_lossy(&line);
                timeline.record_line(source, text.trim_end(), arrived);
            }
            if let Some(mut file) = file {
                let _ = file.flush().await;
            }
        });
        Ok(Self {
            name,
            pid,
            child,
            log,
            reader,
        })
    }

    /// The exit status, if it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails if the child has exited (it should run until we stop it).
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            Some(status) => bail!(
                "{} exited ({status}); its last log lines:\n{}",
                self.name,
                self.log_tail(20)
            ),
            None => Ok(()),
        }
    }

    /// The last `n` lines of its log file.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Kills the child and waits for it (bounded), so its log is complete.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
    }
}

/// Runs a short command to completion within `limit`; its stdout and stderr are returned,
/// and its stderr lines go to the timeline as `source`. Killed if the limit passes.
pub(crate) async fn output(
    cmd: &mut Command,
    what: &str,
    limit: Duration,
    source: Source,
    timeline: &Timeline,
) -> anyhow::Result<Output> {
    let out = tokio::time::timeout(
        limit,
        cmd.stdin(Stdio::null())
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{what} did not finish within {limit:?}"))?
    .with_context(|| format!("run {what}"))?;
    let ended = SystemTime::now();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        timeline.record_line(source, line, ended);
    }
    Ok(out)
}

/// Like [`output`], but a non-zero exit is an error carrying its stderr; returns stdout.
pub(crate) async fn stdout_of(
    cmd: &mut Command,
    what: &str,
    limit: Duration,
    source: Source,
    timeline: &Timeline,
) -> anyhow::Result<String> {
    let out = output(cmd, what, limit, source, timeline).await?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
