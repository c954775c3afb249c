//! `estop-bench`: how long a fleet emergency stop takes to kill every robot's app, with the
//! real parts: a gateway, `peercomputed` robots joined by token (own homes, one Docker
//! engine), the `peerctl` binary writing the stops, a local registry holding the image. Not
//! run in CI.
//!
//! ```text
//! cargo build --release -p peercompute-tests -p peercompute-provider -p peerctl -p peercompute-gateway --bins
//! target/release/estop-bench --path gateway --robots 3 --rounds 50
//! target/release/estop-bench --path lan --robots 3 --rounds 50      # root: network namespaces
//! ```
//!
//! Paths:
//! - `gateway`: robots in-process on loopback, the admin's peerctl with `--no-mdns`: the entry
//!   goes through the gateway, and directly to robots peerctl remembers (`lan-peers.json`);
//!   `--no-lan`, which would leave the gateway alone, is not parsed by peerctl yet.
//! - `lan`: the site of `peercompute_tests::site` (a gateway on a public host, robots and a
//!   laptop on a NAT'd LAN, each in its own network namespace) with the WAN cut: the laptop's
//!   peerctl reaches the robots over the LAN only.
//!
//! A round: `peerctl fleet estop --json`, then `fleet resume` and every robot running again.
//! The clock is the engine's: each robot's container `die` event (`timeNano`). Figures per
//! round: spawn of peerctl → the last robot's `die` ("command"), the entry's `authored_at_ms`
//! → the last `die` ("entry"), the first `die` → the last ("spread"), and spawn → peerctl's
//! exit. Printed: p50, p99 and max of each.

use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};
use peercompute_runtime::LABEL_PROVIDER;
use peercompute_tests::docker_events::{DockerEvents, of, unix_nanos};
use peercompute_tests::fleet_rig::Rig;
use peercompute_tests::site::{SiteImages, SiteWorld};
use peercompute_tests::{peerctl_bin, within};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Through the gateway (loopback), peerctl with --no-mdns.
    Gateway,
    /// Over the site LAN with the WAN cut (network namespaces: root).
    Lan,
}

#[derive(Parser, Debug)]
#[command(
    name = "estop-bench",
    about = "Fleet e-stop latency: peerctl fleet estop → every robot's container dead (engine events)",
    after_help = "Examples:\n  estop-bench\n  estop-bench --path gateway --robots 3 --rounds 50\n  estop-bench --path lan --rounds 50   (as root)"
)]
struct Args {
    /// Which way the stop travels.
    #[arg(long, value_enum, default_value_t = Path::Gateway)]
    path: Path,
    /// Robots stopped.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    robots: u16,
    /// Stop/resume rounds measured.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    rounds: u16,
}

/// One round's figures, in ms.
struct Round {
    command: f64,
    entry: f64,
    spread: f64,
    exited: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn line(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "{name:<30} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0)
    );
}

/// Runs the stop `cmd` (a `peerctl … fleet estop --json` not started yet); its figures once
/// every robot's container (`labels`) died.
async fn stop_once(
    mut cmd: tokio::process::Command,
    events: &DockerEvents,
    labels: &[String],
) -> Round {
    let from = events.all().len();
    let spawned = unix_nanos(SystemTime::now());
    let started = Instant::now();
    let out = async {
        let out = cmd.output().await;
        (out, started.elapsed())
    };
    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        events.wait_for(21, "every robot's container to die", |all| {
            labels.iter().all(|p| !of(all, from, p, "die").is_empty())
        }),
    );
    let ((out, exited), seen) = tokio::join!(within(30, "peerctl fleet estop", out), seen);
    let out = out.expect("peerctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "peerctl fleet estop: {stderr}");
    let Ok(seen) = seen else {
        panic!("not every robot's container died within 20 s; peerctl said: {stderr}");
    };
    let printed: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("estop --json prints JSON");
    let authored_ms = printed["authored_at_ms"].as_i64().expect("authored_at_ms");
    let dies: Vec<i64> = labels
        .iter()
        .filter_map(|p| of(&seen, from, p, "die").first().map(|e| e.at_nanos))
        .collect();
    let (first, last) = (
        dies.iter().copied().min().unwrap_or_default(),
        dies.iter().copied().max().unwrap_or_default(),
    );
    let ms = |nanos: i64| nanos as f64 / 1e6;
    Round {
        command: ms(last - spawned),
        entry: ms(last - authored_ms * 1_000_000),
        spread: ms(last - first),
        exited: exited.as_secs_f64() * 1e3,
    }
}

/// Waits until every robot (`labels`) started a container after the `from`-th event.
async fn all_started(events: &DockerEvents, from: usize, labels: &[String]) {
    events
        .wait_for(30, "every robot's container to start again", |all| {
            labels.iter().all(|p| !of(all, from, p, "start").is_empty())
        })
        .await;
}

/// The gateway path: robots on loopback, peerctl with `--no-mdns`.
async fn gateway_path(robots: usize, rounds: u16) -> Vec<Round> {
    eprintln!("starting a gateway, a registry and {robots} robots…");
    let rig = Rig::start(&[("production", robots)]).await;
    rig.image("v1", true).await;
    rig.release("production", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 120).await;
    let labels: Vec<String> = rig
        .robots
        .iter()
        .map(|r| format!("{}/fleet", r.peer))
        .collect();
    let events = DockerEvents::start(LABEL_PROVIDER).await;
    let mut measured = Vec::new();
    for i in 1..=rounds {
        let mut cmd = tokio::process::Command::new(peerctl_bin());
        cmd.arg("--home")
            .arg(rig.admin.path())
            .arg("--no-mdns")
            .args(["fleet", "estop", "--group", "production", "--json"])
            .args(["--reason", &format!("bench round {i}")])
            .kill_on_drop(true);
        let round = stop_once(cmd, &events, &labels).await;
        report(i, &round);
        measured.push(round);
        let from = events.all().len();
        rig.ok(&["fleet", "resume", "--group", "production"]).await;
        all_started(&events, from, &labels).await;
        rig.wait_group_serving("production", "v1", 60).await;
        // The next stop starts from robots at rest (their resume settled).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    measured
}

/// The LAN path: the site with its WAN cut, peerctl on the laptop.
async fn lan_path(robots: usize, rounds: u16) -> Vec<Round> {
    eprintln!("starting a site: a gateway, {robots} robots and a laptop in network namespaces…");
    let images = SiteImages::start("estop-bench", &["v1"]).await;
    let site = SiteWorld::start(robots).await;
    for r in &site.robots {
        images.cleanup.containers_labelled(LABEL_PROVIDER, &r.label);
    }
    let labels: Vec<String> = site.robots.iter().map(|r| r.label.clone()).collect();
    let events = DockerEvents::start(LABEL_PROVIDER).await;
    site.release(&images.image("v1"), "v1", &[]).await;
    site.wait_healthy("v1", 120).await;
    site.cut_wan();
    eprintln!("WAN cut; measuring");
    let mut measured = Vec::new();
    for i in 1..=rounds {
        let reason = format!("bench round {i}");
        let cmd = site.peerctl_command(&["fleet", "estop", "--reason", &reason, "--json"]);
        let round = stop_once(cmd, &events, &labels).await;
        report(i, &round);
        measured.push(round);
        let from = events.all().len();
        site.ok(&["fleet", "resume", "--json"]).await;
        all_started(&events, from, &labels).await;
        // No status over the LAN to wait on: give the started apps a moment to settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    site.heal_wan();
    measured
}

fn report(i: u16, round: &Round) {
    eprintln!(
        "round {i}: command → last die {:.1} ms, entry → last die {:.1} ms, spread {:.1} ms, peerctl exited {:.1} ms",
        round.command, round.entry, round.spread, round.exited
    );
}

#[tokio::main]
async fn main() {
    // libp2p's QUIC brings aws-lc-rs next to ring: pick one before any TLS config is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let robots = usize::from(args.robots);
    let (rounds, how) = match args.path {
        Path::Gateway => (
            gateway_path(robots, args.rounds).await,
            "through the gateway on loopback (peerctl --no-mdns; remembered robots dialled too)",
        ),
        Path::Lan => (
            lan_path(robots, args.rounds).await,
            "over the site LAN with the WAN cut (network namespaces)",
        ),
    };
    println!(
        "estop-bench: {robots} robots, {} rounds, {how}",
        rounds.len()
    );
    line(
        "command (spawn) → last die",
        rounds.iter().map(|r| r.command).collect(),
    );
    line(
        "entry (authored) → last die",
        rounds.iter().map(|r| r.entry).collect(),
    );
    line(
        "spread (first → last die)",
        rounds.iter().map(|r| r.spread).collect(),
    );
    line(
        "spawn → peerctl exited",
        rounds.iter().map(|r| r.exited).collect(),
    );
}
