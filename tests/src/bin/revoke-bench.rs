//! `revoke-bench`: how long a fleet revocation takes to cut a robot off at the gateway, with
//! the real parts: one gateway, `peercomputed` robots joined by token and serving a release
//! (in-process, own homes, one Docker engine), the `peerctl` binary writing the revokes, a
//! local registry holding the image. Not run in CI.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/revoke-bench --robots 12
//! ```
//!
//! Revocation is permanent, so each round revokes another robot: `peerctl fleet revoke
//! <robot> --reason bench` is spawned, and the admin API is read every 5 ms until the robot's
//! tunnel is gone from `/api/v1/providers` and its route has no owner. Figures: p50, p99 and
//! max of spawn → tunnel gone and spawn → name released, and the command's whole run beside
//! them (it pushes to the gateway as soon as it has synced, then waits up to `--lan-wait` for
//! robots on the LAN): their ratio says how much of the command the revocation waited for.
//! Target (issue 13): revocation ≤ 1 s.

use std::time::{Duration, Instant};

use clap::Parser;
use peercompute_tests::fleet_rig::Rig;
use peercompute_tests::{peerctl_bin, within};

#[derive(Parser, Debug)]
#[command(
    name = "revoke-bench",
    about = "Fleet revocation latency: peerctl fleet revoke → the robot's tunnel and name gone at the gateway",
    after_help = "Examples:\n  revoke-bench\n  revoke-bench --robots 20"
)]
struct Args {
    /// Robots started; each round revokes one (revocation is permanent), and one is kept.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(2..=40))]
    robots: u16,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn line(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        ms(samples[i.min(samples.len() - 1)])
    };
    println!(
        "{name:<44} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let rig = Rig::start(&[("production", usize::from(args.robots))]).await;
    rig.image("v1", true).await;
    rig.release("production", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 180).await;
    let (mut tunnel, mut name, mut command) = (vec![], vec![], vec![]);
    let kept = &rig.robots[0];
    for robot in &rig.robots[1..] {
        let peer = robot.peer.to_string();
        let route = format!("web-{}", robot.name);
        assert!(rig.providers().await.contains(&peer), "{peer} has a tunnel");
        let spawned = Instant::now();
        let revoke = tokio::process::Command::new(peerctl_bin())
            .arg("--home")
            .arg(rig.admin.path())
            .arg("--no-mdns")
            .args(["fleet", "revoke", &robot.name])
            .args(["--reason", "bench", "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn peerctl");
        let (mut gone, mut released) = (None, None);
        let deadline = spawned + Duration::from_secs(10);
        while (gone.is_none() || released.is_none()) && Instant::now() < deadline {
            {
                if gone.is_none() && !rig.providers().await.contains(&peer) {
                    gone = Some(spawned.elapsed());
                }
                if released.is_none() && rig.owner_of(&route).await.as_deref() != Some(&peer) {
                    released = Some(spawned.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let out = within(30, "peerctl fleet revoke", revoke.wait_with_output())
            .await
            .expect("peerctl ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "peerctl fleet revoke: {stderr}");
        let (Some(gone), Some(released)) = (gone, released) else {
            panic!(
                "{}: after 10 s the tunnel is {} and the name {} (peerctl said: {stderr})",
                robot.name,
                if gone.is_some() { "gone" } else { "still up" },
                if released.is_some() {
                    "released"
                } else {
                    "still owned"
                },
            );
        };
        let ran = spawned.elapsed();
        eprintln!(
            "{}: tunnel gone {:.0} ms, name released {:.0} ms, peerctl exited {:.0} ms",
            robot.name,
            ms(gone),
            ms(released),
            ms(ran)
        );
        tunnel.push(gone);
        name.push(released);
        command.push(ran);
    }
    assert!(
        rig.providers().await.contains(&kept.peer.to_string()),
        "the robot never revoked keeps its tunnel"
    );
    println!(
        "revoke-bench: {} revocations, one gateway, robots serving v1",
        tunnel.len()
    );
    line("spawn → tunnel gone (/api/v1/providers)", tunnel.clone());
    line("spawn → name released (/api/v1/routes)", name);
    line(
        "spawn → peerctl exited (floor: its own run)",
        command.clone(),
    );
    let ratio: Vec<f64> = tunnel
        .iter()
        .zip(&command)
        .map(|(t, c)| t.as_secs_f64() / c.as_secs_f64())
        .collect();
    let mean = ratio.iter().sum::<f64>() / ratio.len() as f64;
    println!("tunnel gone / peerctl run: {mean:.2}× (mean of rounds)");
    let worst = tunnel.iter().max().copied().unwrap_or_default();
    println!(
        "target: revocation ≤ 1000 ms — {}",
        if worst <= Duration::from_secs(1) {
            "met"
        } else {
            "missed"
        }
    );
}
