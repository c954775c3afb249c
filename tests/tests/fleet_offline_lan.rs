//! A fleet that keeps working with its WAN cut (issue 13), in network namespaces: a gateway on
//! a public host, robots r1..r3 (real `peercomputed`) and a laptop (real `peerctl`, the fleet's
//! admin) on a site LAN behind a NAT router (see `peercompute_tests::site`). One Docker engine
//! is shared; its container events (with the engine's own clock) are what the test asserts on.
//!
//! - WAN cut: `peerctl fleet estop` from the laptop stops every robot's container within 1 s
//!   of its spawn (engine `die` events; measured and printed), and resume starts them again;
//! - a robot off the LAN during a stop applies it when it is back, before starting anything;
//! - partition of 5 s while the laptop releases v2 on the LAN: after healing, every robot's
//!   copy of the log equals the laptop's within 10 s, and v2 is created once per robot;
//! - revoking r3 from the laptop (WAN still cut): r1 and r2 refuse its connections (their
//!   logs say so) within 5 s;
//! - a robot started with no gateway joins by token over the LAN and the laptop lists it.

use std::time::{Duration, Instant, SystemTime};

use peercompute_tests::docker_events::{ContainerEvent, DockerEvents, of, unix_nanos};
use peercompute_tests::site::{SiteImages, SiteWorld};
use peercompute_tests::within;

/// Runs `peerctl fleet estop` on the laptop; the ms from its spawn to the last robot's
/// container `die` (engine clock).
async fn estop_latency(site: &SiteWorld, events: &DockerEvents, robots: &[usize]) -> f64 {
    let from = events.all().len();
    let labels: Vec<String> = robots
        .iter()
        .map(|i| site.robots[*i].label.clone())
        .collect();
    let spawned = SystemTime::now();
    let started = Instant::now();
    let mut cmd = site.peerctl_command(&["fleet", "estop", "--reason", "site test", "--json"]);
    let child = cmd.output();
    let dies = async {
        events
            .wait_for(10, "every robot's container to die", |e| {
                labels.iter().all(|l| !of(e, from, l, "die").is_empty())
            })
            .await
    };
    let (out, all) = tokio::join!(child, dies);
    let out = out.expect("peerctl runs");
    assert!(out.status.success(), "estop: {out:?}");
    eprintln!(
        "estop: {}\n{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let last = labels
        .iter()
        .map(|l| of(&all, from, l, "die")[0].at_nanos)
        .max()
        .expect("robots");
    let ms = (last - unix_nanos(spawned)) as f64 / 1e6;
    eprintln!(
        "e-stop over the LAN, WAN cut: spawn -> last die {ms:.0} ms (peerctl exited after {:?})",
        started.elapsed()
    );
    ms
}

#[tokio::test]
async fn with_the_wan_cut_the_laptop_stops_and_resumes_the_robots_and_logs_converge() {
    let t0 = Instant::now();
    let images = SiteImages::start("site-web", &["v1", "v2"]).await;
    let mut site = SiteWorld::start(3).await;
    for r in &site.robots {
        images
            .cleanup
            .containers_labelled(peercompute_runtime::LABEL_PROVIDER, &r.label);
    }
    let events = DockerEvents::start(peercompute_runtime::LABEL_PROVIDER).await;
    eprintln!("site up with 3 robots joined: {:?}", t0.elapsed());

    // v1 everywhere, with the WAN up; healthy as the laptop sees it.
    let from = events.all().len();
    site.release(&images.image("v1"), "v1", &[]).await;
    site.each_robot(&events, from, "start", 60).await;
    site.wait_healthy("v1", 60).await;
    eprintln!("v1 healthy on 3 robots: {:?}", t0.elapsed());

    // WAN cut: the stop goes over the LAN only.
    site.cut_wan();
    let ms = estop_latency(&site, &events, &[0, 1, 2]).await;
    assert!(
        ms <= 1000.0,
        "e-stop took {ms:.0} ms from spawn to the last die"
    );
    let from = events.all().len();
    site.ok(&["fleet", "resume", "--json"]).await;
    site.each_robot(&events, from, "start", 30).await;

    // r3 off the LAN during a stop: it stops when back, before it starts anything.
    let r3 = &site.robots[2];
    site.isolate(&r3.host);
    estop_latency(&site, &events, &[0, 1]).await;
    let from = events.all().len();
    site.rejoin(&r3.host);
    let all = events
        .wait_for(20, "r3's container to die after rejoining", |e| {
            !of(e, from, &r3.label, "die").is_empty()
        })
        .await;
    let r3_events: Vec<&ContainerEvent> = all[from..]
        .iter()
        .filter(|e| e.provider == r3.label)
        .collect();
    assert_eq!(
        r3_events[0].action, "die",
        "r3 started something first: {r3_events:?}"
    );
    let from = events.all().len();
    site.ok(&["fleet", "resume", "--json"]).await;
    site.each_robot(&events, from, "start", 30).await;

    // A partition of 5 s while the laptop releases v2 on the LAN (WAN still cut).
    let from = events.all().len();
    site.isolate(&r3.host);
    site.release(&images.image("v2"), "v2", &[]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    site.rejoin(&r3.host);
    let healed = Instant::now();
    let laptop = site.laptop_log_hashes();
    within(10, "every robot's log to equal the laptop's", async {
        loop {
            if site
                .robots
                .iter()
                .all(|r| r.log_hashes(&site.fleet) == laptop)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    eprintln!("partition healed: logs equal after {:?}", healed.elapsed());
    site.each_robot(&events, from, "start", 60).await;
    site.assert_created_once(&events, from, "v2");

    // Revoking r3 from the laptop over the LAN: r1 and r2 cut it off at their nodes.
    let revoked = Instant::now();
    site.ok(&[
        "fleet",
        "revoke",
        &r3.peer.to_string(),
        "--reason",
        "site test",
    ])
    .await;
    within(5, "r1 and r2 to refuse r3's connections", async {
        loop {
            let cut = site.robots[..2].iter().all(|r| {
                std::fs::read_to_string(&r.log).is_ok_and(|log| {
                    log.lines().any(|l| {
                        l.contains("revoked by the fleet") && l.contains(&r3.peer.to_string())
                    })
                })
            });
            if cut {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eprintln!(
        "revoke of r3: blocked on r1 and r2 within {:?} of the command",
        revoked.elapsed()
    );

    // A robot with no gateway at all joins over the LAN (WAN still cut): it fetches the log
    // from the robots there, and the laptop lists it.
    let token = site.invite(1).await;
    let joining = Instant::now();
    let r4 = site.start_gatewayless_robot(&token).await;
    images
        .cleanup
        .containers_labelled(peercompute_runtime::LABEL_PROVIDER, &site.robots[r4].label);
    let r4_peer = site.robots[r4].peer.to_string();
    let listed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (code, out, _) = site.peerctl(&["fleet", "members", "--json"]).await;
            if code == 0 && out.contains(&r4_peer) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        listed.is_ok(),
        "the gateway-less robot was not listed within 10 s; its log:\n{}",
        std::fs::read_to_string(&site.robots[r4].log).unwrap_or_default()
    );
    eprintln!(
        "gateway-less robot joined over the LAN in {:?}",
        joining.elapsed()
    );
    site.heal_wan();
    eprintln!("whole test: {:?}", t0.elapsed());
}
