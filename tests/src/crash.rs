//! Kills mid-write: [`kill_loop`] runs `state-writer write KIND DIR` (the real store code),
//! SIGKILLs it at a random moment, then checks with `state-writer check` that the file opens
//! and holds the version before or after the write that was cut.
//!
//! The window is proved, not assumed: a kill that lands inside `write_atomic` leaves the
//! writer's `.{name}.tmp-{pid}-{seq}`, and the loop counts those (by size: empty, partial or
//! full-length) before the next writer sweeps them away — which it checks too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::Rng;

/// How long a writer may take to open its store and finish its first write.
const FIRST_SAVE: Duration = Duration::from_secs(30);
/// The kill lands this long (uniform, in microseconds) after the first `saved`.
const MAX_DELAY_US: u64 = 15_000;

/// What the kills of one file kind found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CrashReport {
    pub kind: String,
    pub kills: usize,
    /// The file opened after the kill.
    pub parsed: usize,
    /// It held the last version the writer reported saved…
    pub old: usize,
    /// …or the one it was writing.
    pub new: usize,
    /// The kill left a temporary file: it landed inside `write_atomic`.
    pub interrupted: usize,
    /// Of those: killed before writing, while writing, after writing (before the rename).
    pub tmp_empty: usize,
    pub tmp_partial: usize,
    pub tmp_full: usize,
    /// Temporary files of killed writers still there after the next writer's first write.
    pub stale_after_next_write: usize,
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<12} kills {} parsed {} old {} new {} interrupted {} (tmp empty/partial/full {}/{}/{}) stale-after-next-write {}",
            self.kind,
            self.kills,
            self.parsed,
            self.old,
            self.new,
            self.interrupted,
            self.tmp_empty,
            self.tmp_partial,
            self.tmp_full,
            self.stale_after_next_write
        )
    }
}

/// `target/<profile>/state-writer`.
pub fn state_writer() -> Result<PathBuf> {
    let path = crate::daemon::workspace_bin("state-writer");
    ensure!(
        path.exists(),
        "{} is missing: run `cargo build -p peercompute-tests --bin state-writer` first",
        path.display()
    );
    Ok(path)
}

/// The temporary files `pid` left in `dir` (and `dir/entries`, the fleet log's directory, and
/// `dir/acme/certs`, the ACME certificates'),
/// with their sizes and the size of the file each would have replaced (None when absent).
fn tmp_files_of(dir: &Path, pid: Option<u32>) -> Vec<(PathBuf, u64, Option<u64>)> {
    let mut found = Vec::new();
    for d in [
        dir.to_path_buf(),
        dir.join("entries"),
        dir.join("acme").join("certs"),
    ] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((target, tail)) = name
                .strip_prefix('.')
                .and_then(|rest| rest.rsplit_once(".tmp-"))
            else {
                continue;
            };
            let writer = tail.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if writer.is_none() || pid.is_some_and(|p| Some(p) != writer) {
                continue;
            }
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            let target_size = std::fs::metadata(d.join(target)).ok().map(|m| m.len());
            found.push((e.path(), size, target_size));
        }
    }
    found
}

/// Runs `state-writer check` and returns the version it printed.
fn check(writer: &Path, kind: &str, dir: &Path) -> Result<u64> {
    let out = Command::new(writer)
        .args(["check", kind])
        .arg(dir)
        .output()
        .context("run state-writer check")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{kind} does not open after a kill ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    stdout
        .trim()
        .parse()
        .with_context(|| format!("state-writer check printed {stdout:?}"))
}

/// Kills `state-writer write KIND DIR` `rounds` times, each at a random point after its first
/// save, and checks the file after every kill. Fails on the first file that does not open or
/// holds another version; the caller asserts the counts.
pub fn kill_loop(writer: &Path, kind: &str, rounds: usize, dir: &Path) -> Result<CrashReport> {
    let mut report = CrashReport {
        kind: kind.to_owned(),
        ..CrashReport::default()
    };
    let mut rng = rand::thread_rng();
    let mut left_over: Vec<PathBuf> = Vec::new();
    for round in 0..rounds {
        let mut child = Command::new(writer)
            .args(["write", kind])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn state-writer")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("writer stdout")?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = match rx.recv_timeout(FIRST_SAVE) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().context("reap writer")?;
                bail!(
                    "round {round}: {kind} writer saved nothing ({e}): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        };
        // The sweep: whatever earlier kills left is gone once this writer has written.
        report.stale_after_next_write += left_over.iter().filter(|p| p.exists()).count();
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..MAX_DELAY_US)));
        child.kill().context("SIGKILL the writer")?;
        let status = child.wait().context("reap writer")?;
        let _ = reader.join();
        report.kills += 1;
        let last = rx.try_iter().last().unwrap_or(first);
        let saved: u64 = last
            .strip_prefix("saved ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("round {round}: writer printed {last:?} ({status})"))?;

        let tmps = tmp_files_of(dir, Some(pid));
        if !tmps.is_empty() {
            report.interrupted += 1;
        }
        for (_, size, target) in &tmps {
            match (size, target) {
                (0, _) => report.tmp_empty += 1,
                (s, Some(t)) if s < t => report.tmp_partial += 1,
                _ => report.tmp_full += 1,
            }
        }
        left_over = tmps.into_iter().map(|(p, _, _)| p).collect();

        let version = check(writer, kind, dir).with_context(|| format!("round {round}"))?;
        report.parsed += 1;
        if version == saved {
            report.old += 1;
        } else if version == saved + 1 {
            report.new += 1;
        } else {
            bail!(
                "round {round}: {kind} holds version {version}; the writer had saved {saved} and was writing {}",
                saved + 1
            );
        }
    }
    Ok(report)
}

/// Runs [`kill_loop`] for `kind` in a fresh directory under `parent`, printing its report and
/// how long it took.
pub fn run_kind(writer: &Path, kind: &str, rounds: usize, parent: &Path) -> Result<CrashReport> {
    let dir = tempfile::tempdir_in(parent).context("tempdir")?;
    let started = Instant::now();
    let report = kill_loop(writer, kind, rounds, dir.path())?;
    println!("{report} ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(report)
}

/// What killing the real gateway while a provider registers names found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GatewayCrashReport {
    pub kills: usize,
    /// `names.json` parsed after the kill.
    pub parsed: usize,
    /// Names the gateway confirmed before its kills; every one was in `names.json`.
    pub acknowledged: usize,
    /// Kills that left a `names.json` temporary file (inside the write).
    pub interrupted: usize,
}

impl std::fmt::Display for GatewayCrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gateway names.json kills {} parsed {} acknowledged {} (all kept) interrupted {}",
            self.kills, self.parsed, self.acknowledged, self.interrupted
        )
    }
}

fn free_port() -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind")?;
    let tcp = l.local_addr()?;
    // The tunnel is UDP: a port free for both is what the gateway needs.
    std::net::UdpSocket::bind(tcp).context("the same port over UDP")?;
    Ok(tcp)
}

/// Runs the `peercompute-gateway` binary on one state directory `rounds` times; each time a
/// provider with a fresh key registers names one after another and the gateway is SIGKILLed
/// 0–40 ms after the first confirmation. After every kill `names.json` must parse and hold
/// every name the gateway confirmed, in this round and all before.
pub async fn gateway_kill_loop(rounds: usize) -> Result<GatewayCrashReport> {
    let state = tempfile::tempdir().context("state dir")?;
    let (identity, _) = peercompute_gateway::identity(state.path()).context("gateway identity")?;
    peercompute_gateway::dev_tls(state.path(), crate::DOMAIN).context("dev tls")?;
    let log_path = state.path().join("gateway.log");
    let mut report = GatewayCrashReport::default();
    let mut confirmed: Vec<String> = Vec::new();
    for round in 0..rounds {
        let (https, tunnel) = (free_port()?, free_port()?);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .context("gateway log")?;
        let mut child =
            tokio::process::Command::new(crate::daemon::workspace_bin("peercompute-gateway"))
                .args(["run", "--domain", crate::DOMAIN, "--state-dir"])
                .arg(state.path())
                .args(["--https-listen", &https.to_string(), "--no-http"])
                .args(["--tunnel-listen", &tunnel.to_string(), "--open"])
                .args(["--rate-limit", "0", "--rate-limit-ip", "0"])
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("start peercompute-gateway")?;
        let pid = child.id().context("gateway pid")?;
        let mut provider = crate::TestProvider::start_to(
            crate::TestProvider::identity(),
            identity.peer_id(),
            tunnel,
        );
        provider.connected().await;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let registering = {
            let (handle, acked) = (provider.handle.clone(), acked.clone());
            tokio::spawn(async move {
                let mut first = Some(first_tx);
                for i in 0..10_000 {
                    let name = format!("r{round}-{i}");
                    match handle.register(&name, "127.0.0.1", 9).await {
                        Ok(_) => acked.lock().expect("acked").push(name),
                        Err(_) => break,
                    }
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                }
            })
        };
        crate::within(15, "the gateway's first confirmation", first_rx)
            .await
            .context("the registration task ended")?;
        let delay = rand::thread_rng().gen_range(0..40_000);
        tokio::time::sleep(Duration::from_micros(delay)).await;
        child.start_kill().context("SIGKILL the gateway")?;
        let _ = child.wait().await;
        report.kills += 1;
        registering.abort();
        provider.kill();
        confirmed.extend(acked.lock().expect("acked").drain(..));

        if !tmp_files_of(state.path(), Some(pid)).is_empty() {
            report.interrupted += 1;
        }
        let bytes = std::fs::read(state.path().join("names.json"))
            .with_context(|| format!("round {round}: names.json"))?;
        let names: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("round {round}: names.json does not parse"))?;
        report.parsed += 1;
        let owners = names["owners"].as_object().context("owners")?;
        let lost: Vec<&String> = confirmed
            .iter()
            .filter(|n| !owners.contains_key(n.as_str()))
            .collect();
        ensure!(
            lost.is_empty(),
            "round {round}: names the gateway confirmed are missing from names.json: {lost:?}"
        );
    }
    report.acknowledged = confirmed.len();
    Ok(report)
}
