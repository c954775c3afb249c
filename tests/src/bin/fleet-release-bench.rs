//! `fleet-release-bench`: how long a fleet release takes to be served by every robot of a
//! group, and how many visitor requests fail while robots switch and roll back — with the
//! real parts: one gateway, `peercomputed` robots joined by token (in-process, own homes, one
//! Docker engine), the `peerctl` binary writing the releases, a local registry (Debian's
//! `docker-registry`) holding the images.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/fleet-release-bench --robots 5 --switches 10 --rollbacks 10
//! ```
//!
//! A switch is `peerctl fleet release` of a new healthy image: a sample is the time from
//! starting peerctl to every robot's URL answering the new version (pulled by digest, started
//! beside the old one, health-gated, route moved). A rollback is a release whose health path
//! fails: a sample runs until every robot reports `rolled back`. Visitors request every
//! robot's URL every 20 ms throughout and count failures.
//!
//! The baseline, measured in the same run, is the floor under a switch: the same image
//! started directly by the runtime crate on as many containers at once, until each answers.

use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::future::join_all;
use peercompute_runtime::ContainerSpec;
use peercompute_runtime::testsupport::unique_name;
use peercompute_tests::fleet_rig::{Rig, Visitor, WEB_PORT, app_of, serves};

#[derive(Parser, Debug)]
#[command(
    name = "fleet-release-bench",
    about = "Release → every robot healthy, and failed visitor requests over switches and rollbacks",
    after_help = "Examples:\n  fleet-release-bench\n  fleet-release-bench --robots 5 --switches 10 --rollbacks 10"
)]
struct Args {
    /// Robots in the group released to.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=20))]
    robots: u16,
    /// Releases of a new healthy image, measured.
    #[arg(long, default_value_t = 10)]
    switches: u16,
    /// Releases whose health check fails (each rolled back), measured.
    #[arg(long, default_value_t = 10)]
    rollbacks: u16,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and max, in ms.
fn summary(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    (ms(percentile(samples, 0.5)), ms(percentile(samples, 1.0)))
}

/// The floor: `n` containers of `image` started at once by the runtime, until each answers.
async fn direct(rig: &Rig, image: &str, n: usize) -> Duration {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client");
    let t0 = Instant::now();
    let started = join_all((0..n).map(|i| {
        let spec = ContainerSpec {
            deployment_id: unique_name(&format!("direct{i}")),
            provider: "fleet-release-bench".into(),
            owner: rig.robots[0].peer.to_string(),
            name: format!("direct{i}"),
            image: image.to_owned(),
            port: WEB_PORT,
            env: vec![],
            cpu_millis: peercompute_provider::DEFAULT_CPU_MILLIS,
            memory_bytes: peercompute_provider::DEFAULT_MEMORY_BYTES,
            attach: Default::default(),
        };
        let http = http.clone();
        async move {
            let started = rig.runtime.start(&spec).await.expect("direct start");
            let url = format!("http://{}/", started.addr);
            loop {
                if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            started.id
        }
    }))
    .await;
    let took = t0.elapsed();
    for id in started {
        let _ = rig.runtime.stop(&id).await;
    }
    took
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let robots = usize::from(args.robots);
    eprintln!("starting a gateway, a registry and {robots} robots…");
    let rig = Rig::start(&[("production", robots)]).await;
    let switches = usize::from(args.switches);
    let rollbacks = usize::from(args.rollbacks);
    eprintln!("building {} images…", switches + rollbacks + 1);
    let first = rig.image("s0", true).await;
    let mut healthy = vec![];
    for i in 1..=switches {
        healthy.push(format!("s{i}"));
        rig.image(&format!("s{i}"), true).await;
    }
    let mut bad = vec![];
    for i in 1..=rollbacks {
        bad.push(format!("bad{i}"));
        rig.image(&format!("bad{i}"), false).await;
    }

    // Warm-up: the first release (first pull of the base layers).
    rig.release("production", "s0", "30s").await;
    rig.wait_group_serving("production", "s0", 120).await;

    let visitors: Vec<Visitor> = rig
        .robots
        .iter()
        .map(|r| Visitor::start(rig.client.clone(), r.url.clone()))
        .collect();

    let mut floor = vec![];
    let mut switch = vec![];
    for version in &healthy {
        floor.push(direct(&rig, &first.to_string(), robots).await);
        let t0 = Instant::now();
        rig.release("production", version, "30s").await;
        loop {
            let done = join_all(
                rig.robots
                    .iter()
                    .map(|r| serves(&rig.client, &r.url, version)),
            )
            .await
            .into_iter()
            .all(|ok| ok);
            if done {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{version} not served in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = t0.elapsed();
        eprintln!("switch to {version}: {:.0} ms", ms(took));
        switch.push(took);
    }
    let serving = healthy.last().cloned().unwrap_or_else(|| "s0".into());

    let mut rolled = vec![];
    for version in &bad {
        let t0 = Instant::now();
        rig.release("production", version, "2s").await;
        rig.wait_status(120, &format!("{version} rolled back everywhere"), |s| {
            rig.robots.iter().all(|r| {
                app_of(s, &r.name).is_some_and(|a| {
                    a["version"] == version.as_str()
                        && a["phase"] == "rolled back"
                        && a["serving"] == serving.as_str()
                })
            })
        })
        .await;
        let took = t0.elapsed();
        eprintln!("rollback of {version}: {:.0} ms", ms(took));
        rolled.push(took);
    }
    let (mut failed, mut total) = (0, 0);
    for v in visitors {
        let (f, t) = v.stop().await;
        failed += f;
        total += t;
    }

    let (floor_med, floor_max) = summary(&mut floor);
    let (sw_med, sw_max) = summary(&mut switch);
    let (rb_med, rb_max) = summary(&mut rolled);
    println!("fleet-release-bench: {robots} robots, {switches} switches, {rollbacks} rollbacks");
    println!("| figure | median ms | max ms | median × floor |");
    println!("|---|---|---|---|");
    println!(
        "| floor: {robots} containers started directly until each answers | {floor_med:.0} | {floor_max:.0} | 1.0 |"
    );
    println!(
        "| release → every robot serves it | {sw_med:.0} | {sw_max:.0} | {:.1} |",
        sw_med / floor_med
    );
    println!(
        "| failing release → every robot rolled back (2 s health timeout) | {rb_med:.0} | {rb_max:.0} | {:.1} |",
        rb_med / floor_med
    );
    println!(
        "visitor requests failed: {failed} of {total} over {switches} switches and {rollbacks} rollbacks"
    );
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "targets: release → {robots} healthy ≤ 3 s median: {} ({sw_med:.0} ms); 0 failed requests: {}",
        verdict(sw_med <= 3000.0),
        verdict(failed == 0)
    );
}
