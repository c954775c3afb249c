//! `--hostile`: issue 17's B7 with the gateway in a process of its own — does a hostile
//! provider move an honest provider's p99 by less than 20 %?
//!
//! The test `tests/tests/tunnel_hostile.rs` runs the same ten misbehaviours against an
//! in-process gateway and asserts their bounds; there the gateway, both providers and every
//! visitor share two cores, so the honest p99 reflects the machine as much as the gateway.
//! Here the parts sit where a deployment has them:
//!
//! - the real gateway binary alone on CPU 0 (`taskset`, with `--pin`, the default when the
//!   machine has two CPUs or more);
//! - the honest side on CPU 1: the real `peercomputed` serving the backend, and this process
//!   sending the honest visitors' open-loop GETs (`--rate`, default 200/s);
//! - each hostile provider in a process of its own (`tunnel-bench hostile-peer`, this program
//!   re-executed) under `SCHED_IDLE` (`chrt -i 0`, else `nice -n 19`), also on CPU 1: the
//!   attacker's machine is not ours, so its own CPU must not be taken from the honest side,
//!   while everything it sends reaches the gateway. Its name's visitors (20 GET/s) live in
//!   that process too.
//!
//! Per behaviour a quiet window (the baseline next to it) is followed by an attack window; the
//! honest p99 of each is compared, and the spread of the quiet windows among themselves is
//! printed as the noise floor of the same run. The gateway's resident memory is sampled every
//! 100 ms (peak over the quiet level) and its CPU time read from `/proc` per window.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use peercompute_identity::{Identity, PeerId};
use peercompute_tests::hostile_provider::{Behaviour, HostileProvider, StreamMode};
use peercompute_tests::https_client_to;
use peercompute_tests::open_loop::{Visit, p99, visit, visit_loop};
use peercompute_tunnel_proto::ControlMessage;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

use super::setup::{Binaries, Stack, StackOptions};
use peercompute_tests::procfs;

/// The bound on the honest provider's p99 under attack.
const P99_BOUND: f64 = 1.2;
/// Visitors of the hostile name: one GET every 50 ms.
const HOSTILE_EVERY: Duration = Duration::from_millis(50);
/// Past the gateway's default per-tunnel stream cap (1024): the burst that holds streams.
const STREAM_BURST: usize = 1100;
/// How often the gateway's resident memory is read.
const RSS_EVERY: Duration = Duration::from_millis(100);

/// How the phase runs.
#[derive(Debug, Clone)]
pub(crate) struct HostileSettings {
    pub(crate) quiet: Duration,
    pub(crate) attack: Duration,
    /// Honest GETs per second.
    pub(crate) rate: u32,
    /// Gateway alone on CPU 0, the rest on CPU 1.
    pub(crate) pin: bool,
    pub(crate) behaviours: Vec<Behaviour>,
}

/// `tunnel-bench hostile-peer`: one hostile provider and its name's visitors, for `--attack`;
/// prints a [`PeerReport`] as one JSON line.
#[derive(clap::Args, Debug)]
pub(crate) struct PeerArgs {
    #[arg(long, value_enum)]
    behaviour: Behaviour,
    /// The provider key (an identity file).
    #[arg(long)]
    key: PathBuf,
    /// The gateway's peer id.
    #[arg(long)]
    gateway: String,
    /// The gateway's QUIC tunnel address.
    #[arg(long)]
    tunnel: SocketAddr,
    /// The gateway's HTTPS address, and the CA its certificate chains to.
    #[arg(long)]
    https: SocketAddr,
    #[arg(long)]
    ca: PathBuf,
    /// The name to register (a label under the bench's domain).
    #[arg(long)]
    name: String,
    #[arg(long, value_parser = humantime::parse_duration)]
    attack: Duration,
}

/// What a hostile peer saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PeerReport {
    /// Its name's visitors: status (or "error") → count.
    statuses: BTreeMap<String, usize>,
    slowest_ms: u64,
    /// What the misbehaviour amounted to.
    action: String,
    /// "up", or the gateway's close reason.
    end: String,
}

/// Runs in the `hostile-peer` process.
pub(crate) async fn run_peer(args: &PeerArgs) -> anyhow::Result<()> {
    let identity = Identity::load_file(&args.key)
        .with_context(|| format!("load the key {}", args.key.display()))?;
    let gateway: PeerId = args.gateway.parse().context("--gateway: not a peer id")?;
    let ca = std::fs::read(&args.ca).with_context(|| format!("read {}", args.ca.display()))?;
    let behaviour = args.behaviour;
    let mut hostile =
        HostileProvider::connect(&identity, gateway, args.tunnel, behaviour.windows()).await;
    match hostile.register(&args.name).await {
        ControlMessage::Registered { .. } => {}
        other => bail!("the gateway did not register {}: {other:?}", args.name),
    }
    hostile.serve(behaviour.mode());
    let client = https_client_to(&ca, args.https, &[&args.name]);
    let url = format!(
        "https://{}.{}:{}/",
        args.name,
        peercompute_tests::DOMAIN,
        args.https.port()
    );
    let deadline = Instant::now() + args.attack;
    let until = Arc::new(Mutex::new(Some(deadline)));
    let read_body = behaviour.mode() != StreamMode::EndlessBody;
    let visits = visit_loop(client.clone(), url.clone(), HOSTILE_EVERY, until, read_body);
    let (action, extra) = act(behaviour, &mut hostile, &client, &url, deadline).await;
    tokio::time::sleep_until(deadline.into()).await;
    let end = match hostile.closed_within(Duration::from_millis(1)).await {
        Some(reason) => format!("closed: {reason}"),
        None => "up".to_owned(),
    };
    // Gone: whatever its visitors still wait for ends now (502), not at the gateway's
    // 60 s upstream timeout.
    drop(hostile);
    let mut all = tokio::time::timeout(Duration::from_secs(20), visits)
        .await
        .context("the hostile name's visitors did not finish")?
        .context("visitor task")?;
    for handle in extra {
        all.push(handle.await.context("burst visitor")?);
    }
    let mut report = PeerReport {
        action,
        end,
        ..PeerReport::default()
    };
    for v in &all {
        let key = match &v.outcome {
            Ok((status, _)) => status.to_string(),
            Err(_) => "error".to_owned(),
        };
        *report.statuses.entry(key).or_default() += 1;
        report.slowest_ms = report.slowest_ms.max(v.took.as_millis() as u64);
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The misbehaviour, until `deadline`: what it amounted to, and visits it made itself.
async fn act(
    behaviour: Behaviour,
    hostile: &mut HostileProvider,
    client: &reqwest::Client,
    url: &str,
    deadline: Instant,
) -> (String, Vec<tokio::task::JoinHandle<Visit>>) {
    let left = || deadline.saturating_duration_since(Instant::now());
    let accepted = |h: &HostileProvider| h.accepted.load(std::sync::atomic::Ordering::Relaxed);
    match behaviour {
        Behaviour::OpenStreams => {
            let opened = hostile
                .open_streams(10_000, left().min(Duration::from_secs(2)), 4 << 20)
                .await;
            (format!("opened {opened} of 10000 streams"), Vec::new())
        }
        Behaviour::NeverReadStreams => {
            let burst = (0..STREAM_BURST)
                .map(|_| tokio::spawn(visit(client.clone(), url.to_owned(), true)))
                .collect();
            tokio::time::sleep(left()).await;
            (format!("held {} streams", accepted(hostile)), burst)
        }
        Behaviour::EndlessBody => {
            // One visitor reads the endless body at ~16 KiB/s; the others drop it.
            let mut read = 0usize;
            if let Ok(mut resp) = client.get(url).send().await {
                while left() > Duration::from_millis(500) {
                    match tokio::time::timeout(Duration::from_secs(2), resp.chunk()).await {
                        Ok(Ok(Some(c))) => read += c.len(),
                        _ => break,
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let written = hostile.written.load(std::sync::atomic::Ordering::Relaxed);
            let text = format!(
                "{} streams, {} MiB written, slow reader got {} KiB",
                accepted(hostile),
                written >> 20,
                read >> 10
            );
            (text, Vec::new())
        }
        Behaviour::HeadNeverEnds | Behaviour::HugeHead => {
            tokio::time::sleep(left()).await;
            (
                format!("{} streams answered", accepted(hostile)),
                Vec::new(),
            )
        }
        Behaviour::OversizedControl | Behaviour::UnknownControl | Behaviour::TruncatedControl => {
            tokio::time::sleep(Duration::from_millis(500).min(left())).await;
            if let Some(frame) = behaviour.raw_frame() {
                hostile.send_raw_control(&frame).await;
            }
            ("one broken frame".to_owned(), Vec::new())
        }
        Behaviour::RegisterChurn => {
            let churn = hostile.churn("churn", 0, 20_000);
            tokio::time::sleep(left()).await;
            let sent = churn.sent.load(std::sync::atomic::Ordering::Relaxed);
            (format!("{sent} register/unregister sent"), Vec::new())
        }
        Behaviour::PingNoRead => {
            let pings = hostile.ping_no_read();
            tokio::time::sleep(left()).await;
            let n = pings.load(std::sync::atomic::Ordering::Relaxed);
            (format!("{n} pings, no pong read"), Vec::new())
        }
    }
}

/// One quiet window and the attack after it.
#[derive(Debug)]
struct Window {
    behaviour: Behaviour,
    quiet: (Instant, Instant),
    attack: (Instant, Instant),
    /// Gateway CPU, percent of one core, over each window.
    cpu_quiet: f64,
    cpu_attack: f64,
    peer: anyhow::Result<PeerReport>,
}

/// Runs the phase; `Ok(false)` when an honest GET failed (a correctness failure).
pub(crate) async fn run(
    bins: &Binaries,
    domain: &str,
    host: &str,
    settings: &HostileSettings,
) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("tunnel-bench-hostile-")
        .tempdir()
        .context("temporary directory")?;
    let mut keys = Vec::new();
    for (i, behaviour) in settings.behaviours.iter().enumerate() {
        let identity = Identity::generate().context("generate a hostile key")?;
        let path = dir.path().join(format!("hostile-{i}.key"));
        identity
            .save_file(&path)
            .with_context(|| format!("save {}", path.display()))?;
        keys.push((*behaviour, path, identity.peer_id().to_string()));
    }
    let options = StackOptions {
        extra_allowed: keys.iter().map(|(_, _, id)| id.clone()).collect(),
        gateway_cpu: settings.pin.then_some(0),
        ..StackOptions::default()
    };
    let stack = Stack::start_with(bins, domain, host, &options).await?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &stack.ca_pem).context("write the CA for the hostile peers")?;
    let idle = idle_scheduler().await;
    println!(
        "hostile: gateway pid {} {}; honest provider pid {} and the honest visitors ({} GET/s) on CPU {}; hostile peers {} ({} each: quiet {:?}, attack {:?})",
        stack.gateway.pid,
        if settings.pin {
            "alone on CPU 0"
        } else {
            "unpinned"
        },
        stack.provider.pid,
        settings.rate,
        if settings.pin { "1" } else { "any" },
        idle.join(" "),
        settings.behaviours.len(),
        settings.quiet,
        settings.attack,
    );

    let client = https_client_to(&stack.ca_pem, stack.https, &["bench"]);
    let url = format!("https://{host}:{}/", stack.https.port());
    for _ in 0..50 {
        let r = client.get(&url).send().await.context("warm-up GET")?;
        if r.status() != 200 {
            bail!("warm-up GET: {}", r.status());
        }
    }
    let until = Arc::new(Mutex::new(None));
    let every = Duration::from_secs(1) / settings.rate.max(1);
    let honest = visit_loop(client, url, every, until.clone(), true);
    let stop = Arc::new(Mutex::new(false));
    let rss = sample_rss(stack.gateway.pid, stop.clone());

    let mut windows = Vec::new();
    for (i, (behaviour, key, _)) in keys.iter().enumerate() {
        eprintln!("  hostile {behaviour:?} …");
        let cpu0 = procfs::cpu_seconds(stack.gateway.pid).unwrap_or_default();
        let q0 = Instant::now();
        tokio::time::sleep(settings.quiet).await;
        let q1 = Instant::now();
        let cpu1 = procfs::cpu_seconds(stack.gateway.pid).unwrap_or_default();
        let mut cmd = Command::new(&idle[0]);
        cmd.args(&idle[1..])
            .arg(std::env::current_exe().context("locate this program")?)
            .arg("hostile-peer")
            .args(["--behaviour", &value_name(*behaviour)?])
            .arg("--key")
            .arg(key)
            .args(["--gateway", &stack.gateway_id])
            .args(["--tunnel", &stack.tunnel.to_string()])
            .args(["--https", &stack.https.to_string()])
            .arg("--ca")
            .arg(&ca)
            .args(["--name", &format!("evil-{i}")])
            .args(["--attack", &format!("{}ms", settings.attack.as_millis())]);
        let a0 = Instant::now();
        let log = dir.path().join(format!("hostile-{i}.log"));
        let peer = hostile_peer(cmd, settings.attack, &log).await;
        let a1 = Instant::now();
        let cpu2 = procfs::cpu_seconds(stack.gateway.pid).unwrap_or_default();
        windows.push(Window {
            behaviour: *behaviour,
            quiet: (q0, q1),
            attack: (a0, a1),
            cpu_quiet: 100.0 * (cpu1 - cpu0) / (q1 - q0).as_secs_f64(),
            cpu_attack: 100.0 * (cpu2 - cpu1) / (a1 - a0).as_secs_f64(),
            peer,
        });
    }
    *until.lock().expect("until") = Some(Instant::now());
    let visits = tokio::time::timeout(Duration::from_secs(30), honest)
        .await
        .context("the honest visitors did not finish")?
        .context("honest visitor task")?;
    *stop.lock().expect("stop") = true;
    let rss = rss.await.context("memory sampler")?;
    stack.stop().await;
    Ok(print(&windows, &visits, &rss))
}

/// `behaviour` as `--behaviour` spells it.
fn value_name(behaviour: Behaviour) -> anyhow::Result<String> {
    use clap::ValueEnum;
    Ok(behaviour
        .to_possible_value()
        .context("every behaviour has a name")?
        .get_name()
        .to_owned())
}

/// The command prefix that runs a child at the lowest CPU priority.
async fn idle_scheduler() -> Vec<String> {
    let chrt = Command::new("chrt")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if chrt.is_ok_and(|s| s.success()) {
        vec!["chrt".into(), "-i".into(), "0".into()]
    } else {
        vec!["nice".into(), "-n".into(), "19".into()]
    }
}

/// Runs one hostile peer (its stderr in `log`) and reads its report (bounded: the attack
/// plus 40 s).
async fn hostile_peer(
    mut cmd: Command,
    attack: Duration,
    log: &std::path::Path,
) -> anyhow::Result<PeerReport> {
    let stderr = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("start the hostile peer")?;
    let stdout = child.stdout.take().context("hostile peer stdout")?;
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut line = String::new();
    tokio::time::timeout(
        attack + Duration::from_secs(40),
        reader.read_line(&mut line),
    )
    .await
    .context("the hostile peer did not report in time")?
    .context("read the hostile peer's report")?;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .context("the hostile peer did not exit")?
        .context("wait for the hostile peer")?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        bail!(
            "the hostile peer failed ({status}); last lines of {}: {}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    serde_json::from_str(line.trim())
        .with_context(|| format!("the hostile peer's report {:?}", line.trim()))
}

/// The gateway's resident memory every [`RSS_EVERY`] until `stop`.
fn sample_rss(pid: u32, stop: Arc<Mutex<bool>>) -> tokio::task::JoinHandle<Vec<(Instant, u64)>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        // Bounded: an hour of samples.
        for _ in 0..36_000 {
            if *stop.lock().expect("stop") {
                break;
            }
            if let Some(m) = procfs::memory(pid) {
                samples.push((Instant::now(), m.rss_kib));
            }
            tokio::time::sleep(RSS_EVERY).await;
        }
        samples
    })
}

/// Highest sample in `from..to`, KiB.
fn peak(samples: &[(Instant, u64)], (from, to): (Instant, Instant)) -> u64 {
    samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints the table; false when an honest GET failed.
fn print(windows: &[Window], visits: &[Visit], rss: &[(Instant, u64)]) -> bool {
    println!();
    println!(
        "B7, a hostile provider beside an honest one (gateway in its own process): honest p99 per window, bound ×{P99_BOUND}"
    );
    println!(
        "{:<17} | {:>14} | {:>15} | {:>7} | {:>6} | {:>12} | {:>14} | {:<26} | hostile side",
        "behaviour",
        "quiet p99 (n)",
        "attack p99 (n)",
        "ratio",
        "",
        "gw RSS Δ MiB",
        "gw CPU % q→a",
        "its visitors: status×n"
    );
    let mut quiet_p99s = Vec::new();
    let mut met = 0;
    for w in windows {
        let (q, qn) = p99(visits, w.quiet.0, w.quiet.1);
        let (a, an) = p99(visits, w.attack.0, w.attack.1);
        quiet_p99s.push(q);
        let ratio = a.as_secs_f64() / q.as_secs_f64().max(1e-6);
        // Too few honest answers in a window say nothing (the visitors stopped or stalled).
        let pass = ratio <= P99_BOUND && qn >= 100 && an >= 100;
        met += usize::from(pass);
        let rss_delta = peak(rss, w.attack).saturating_sub(peak(rss, w.quiet)) as f64 / 1024.0;
        let (statuses, side) = match &w.peer {
            Ok(r) => (
                r.statuses
                    .iter()
                    .map(|(s, n)| format!("{s}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
                    + &format!(" ≤{:.1}s", r.slowest_ms as f64 / 1000.0),
                format!("{}; {}", r.action, r.end),
            ),
            Err(e) => ("-".to_owned(), format!("peer failed: {e:#}")),
        };
        println!(
            "{:<17} | {:>8.2} ({qn:>4}) | {:>8.2} ({an:>4}) | {ratio:>6.2}× | {:>6} | {rss_delta:>12.1} | {:>5.0} → {:>5.0} | {statuses:<26} | {side}",
            format!("{:?}", w.behaviour),
            ms(q),
            ms(a),
            if pass { "PASS" } else { "MISS" },
            w.cpu_quiet,
            w.cpu_attack,
        );
    }
    if let (Some(lo), Some(hi)) = (quiet_p99s.iter().min(), quiet_p99s.iter().max()) {
        println!(
            "noise floor: the quiet windows' p99 ranged {:.2}-{:.2} ms (max/min {:.2}×) in this run; {met} of {} behaviours within ×{P99_BOUND}",
            ms(*lo),
            ms(*hi),
            hi.as_secs_f64() / lo.as_secs_f64().max(1e-6),
            windows.len()
        );
    }
    let failed: Vec<&Visit> = visits
        .iter()
        .filter(|v| !matches!(v.outcome, Ok((200, _))))
        .collect();
    println!(
        "honest GETs: {} sent, {} not 200{}",
        visits.len(),
        failed.len(),
        failed
            .first()
            .map(|v| format!(" (first: {:?})", v.outcome))
            .unwrap_or_default()
    );
    let peers_failed = windows.iter().filter(|w| w.peer.is_err()).count();
    failed.is_empty() && peers_failed == 0
}
