//! A fleet group serves one name (issue 14): every robot of group `prod` whose release is app
//! `web` serves `https://web.<domain>/` beside its own `web-<robot>` (`RegisterFleet`,
//! protocol version 3), and the gateway balances that name across the group's robots. Real
//! gateway (p2p meeting point, fleet log holder), two real `peercomputed` robots joined by
//! token, real Docker containers of a busybox image pulled from a local registry by digest,
//! visitors over real TLS.
//!
//! Checked: the name is owned by the fleet (not by a robot's key) and a plain provider cannot
//! take it; both robots answer requests for it; `peerctl fleet status` prints the group URL
//! once; a robot moved out of the group stops receiving its requests (bound measured) and
//! serves them again when moved back; a robot killed during a bounded GET loop fails no GET
//! (bodiless GETs are retried on the other robot).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use peercompute_provider::RegisterError;
use peercompute_tests::counted_gets::counted_gets;
use peercompute_tests::fleet_rig::{Rig, wait_serving};
use peercompute_tests::{Alpn, DOMAIN, TestGateway, TestProvider, https_client, within};
use peercompute_tunnel_proto::RefuseCode;

const APP: &str = "web";

/// Requests each provider's tunnel carried so far (all its names), by peer id.
async fn tunnel_requests(gw: &TestGateway) -> BTreeMap<String, u64> {
    let body = gw.admin_get("/api/v1/providers").await;
    let providers: serde_json::Value = serde_json::from_str(&body).expect("providers JSON");
    providers
        .as_array()
        .expect("a list of providers")
        .iter()
        .map(|p| {
            (
                p["peer_id"].as_str().expect("peer_id").to_owned(),
                p["requests"].as_u64().expect("requests"),
            )
        })
        .collect()
}

/// The admin API's view of route `name`: its owner and the peers serving it.
async fn route(gw: &TestGateway, name: &str) -> (Option<String>, Vec<String>) {
    let body = gw.admin_get("/api/v1/routes").await;
    let routes: serde_json::Value = serde_json::from_str(&body).expect("routes JSON");
    let found = routes
        .as_array()
        .expect("a list of routes")
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_default();
    let mut providers: Vec<String> = found["providers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    providers.sort();
    (found["owner"].as_str().map(str::to_owned), providers)
}

/// Polls the route set of [`APP`] every 50 ms until it is `expected` (sorted); how long that
/// took.
async fn wait_route_set(gw: &TestGateway, expected: &[String], secs: u64) -> Duration {
    let started = Instant::now();
    let mut expected = expected.to_vec();
    expected.sort();
    within(
        secs,
        &format!("{APP}'s route set to be {expected:?}"),
        async {
            while route(gw, APP).await.1 != expected {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_serves_one_name_across_its_robots() {
    let mut rig = Rig::start(&[("prod", 2)]).await;
    rig.image("v1", true).await;
    rig.release("prod", "v1", "30s").await;
    rig.wait_group_serving("prod", "v1", 120).await;
    let peers: Vec<String> = rig.robots.iter().map(|r| r.peer.to_string()).collect();
    let mut names: Vec<String> = rig
        .robots
        .iter()
        .map(|r| format!("{APP}-{}", r.name))
        .collect();
    names.push(APP.to_owned());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let client = https_client(&rig.gw, &names, Alpn::H1);
    let url = rig.gw.url(APP, "/");

    // Both robots join the group name's route set; the fleet owns the name.
    let took = wait_route_set(&rig.gw, &peers, 60).await;
    eprintln!(
        "both robots serve {APP}.{DOMAIN} {} ms after v1 served",
        took.as_millis()
    );
    wait_serving(&client, &url, "v1", 30).await;
    let (owner, _) = route(&rig.gw, APP).await;
    assert_eq!(
        owner,
        Some(rig.fleet.to_string()),
        "the fleet owns the group name"
    );

    // A plain provider key cannot take the fleet's name.
    let mut intruder = TestProvider::start(TestProvider::identity(), &rig.gw);
    let target = "127.0.0.1:9".parse().expect("addr");
    let refused = within(
        20,
        "the intruder's registration",
        intruder.register(APP, target),
    )
    .await
    .expect_err("the fleet's name is not for a plain provider");
    assert!(
        matches!(
            &refused,
            RegisterError::Refused {
                code: RefuseCode::NameOwned,
                ..
            }
        ),
        "{refused}"
    );
    intruder.kill();

    // `peerctl fleet status` prints the group URL once, with both robots serving it.
    let group_line = format!("group prod: https://{APP}.{DOMAIN}");
    let text = within(60, "fleet status to show the group URL", async {
        loop {
            let (code, stdout, _) = rig.peerctl(&["fleet", "status"]).await;
            if code == 0 && stdout.contains("(2 of 2 robots serve it)") {
                return stdout;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert_eq!(text.matches(&group_line).count(), 1, "{text}");

    // Both robots answer requests for the group name.
    let before = tunnel_requests(&rig.gw).await;
    let (served, failed, _) = counted_gets(&client, &url, 200, 8, || {}).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(served.get("v1"), Some(&200), "{served:?}");
    let after = tunnel_requests(&rig.gw).await;
    let share: Vec<u64> = peers
        .iter()
        .map(|p| after.get(p).copied().unwrap_or(0) - before.get(p).copied().unwrap_or(0))
        .collect();
    eprintln!("200 GETs of {APP}.{DOMAIN}, 8 concurrent: per robot {share:?}");
    assert_eq!(share.iter().sum::<u64>(), 200, "{share:?}");
    assert!(
        share.iter().all(|n| *n >= 20),
        "both robots answered: {share:?}"
    );

    // Robot 1 moved out of the group: the gateway drops it from the name at once.
    let moved = rig.robots[1].name.clone();
    let started = Instant::now();
    rig.ok(&["fleet", "set-groups", &moved, "lab"]).await;
    let wrote = started.elapsed();
    let dropped = wait_route_set(&rig.gw, &peers[..1], 30).await;
    eprintln!(
        "robot moved out of the group: set-groups took {} ms, then out of {APP}'s route set in {} ms",
        wrote.as_millis(),
        dropped.as_millis()
    );
    let before = tunnel_requests(&rig.gw).await;
    let (served, failed, _) = counted_gets(&client, &url, 100, 4, || {}).await;
    assert!(failed.is_empty(), "after the move: {failed:?}");
    assert_eq!(served.get("v1"), Some(&100), "{served:?}");
    let after = tunnel_requests(&rig.gw).await;
    assert_eq!(
        after.get(&peers[1]),
        before.get(&peers[1]),
        "the robot moved out receives none of {APP}'s requests"
    );

    // Moved back: it applies the release again and rejoins the name.
    let started = Instant::now();
    rig.ok(&["fleet", "set-groups", &moved, "prod"]).await;
    let back = wait_route_set(&rig.gw, &peers, 120).await;
    eprintln!(
        "robot moved back: in {APP}'s route set again {} ms after set-groups",
        started.elapsed().as_millis().max(back.as_millis())
    );

    // Robot 1 killed (its daemon crashes; the tunnel goes) halfway through a GET loop.
    let victim = &mut rig.robots[1].daemon;
    let (served, failed, took) = counted_gets(&client, &url, 600, 8, || {
        if let Some(daemon) = victim.daemon.take() {
            daemon.abort();
        }
    })
    .await;
    eprintln!(
        "600 GETs of {APP}.{DOMAIN}, 8 concurrent, robot 1 killed after 300: {served:?}, {} failed, {:.0} req/s",
        failed.len(),
        600.0 / took.as_secs_f64()
    );
    assert!(failed.is_empty(), "failed GETs: {failed:?}");
    assert_eq!(served.get("v1"), Some(&600), "{served:?}");
}
