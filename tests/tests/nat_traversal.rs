//! Reaching a provider behind NAT by its peer id alone, in an emulated internet of network
//! namespaces (see `peercompute_tests::netns`): the real gateway binary on a public host, the
//! provider daemon in the root namespace (where Docker publishes container ports) behind an
//! nftables NAT, and the real `peerctl` binary on laptops behind other NATs.
//!
//! - behind a symmetric NAT the laptop deploys through the gateway's relay and the URL
//!   answers; the provider's own address is unreachable from the laptop;
//! - behind an endpoint-independent NAT, DCUtR replaces the relayed path by a direct one
//!   (the connection's remote address is not a circuit);
//! - two providers on one LAN find each other with mDNS, and peerctl on that LAN prefers
//!   mDNS over a gateway.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use peercompute_identity::{Identity, PeerId};
use peercompute_p2p::PathKind;
use peercompute_tests::daemon::{TestDaemon, peerctl_bin, workspace_bin};
use peercompute_tests::gateway::DOMAIN;
use peercompute_tests::image::{TEST_PORT, TestImage};
use peercompute_tests::nat::{
    HTTPS_PORT, P2P_PORT, TUNNEL_PORT, reach_once, start_gateway, start_provider,
};
use peercompute_tests::netns::{Host, NatKind, World};
use peercompute_tests::within;

/// Runs `peerctl --home HOME ARGS…` on `host`.
async fn peerctl(host: &Host, home: &Path, args: &[&str]) -> Output {
    let out = within(
        60,
        &format!("peerctl {args:?}"),
        host.command(peerctl_bin())
            .arg("--home")
            .arg(home)
            .args(args)
            .output(),
    )
    .await
    .expect("peerctl runs");
    eprintln!(
        "peerctl {args:?} on {} → {:?}\nstdout: {}\nstderr: {}",
        host.name(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "peerctl failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A client home on `host` trusting `provider` (no address) and knowing `gateway`.
async fn client_home(
    host: &Host,
    provider: &PeerId,
    gateway: Option<&str>,
) -> (tempfile::TempDir, PeerId) {
    let home = tempfile::tempdir().expect("client home");
    let id: PeerId = ok(&peerctl(host, home.path(), &["init"]).await)
        .parse()
        .expect("peer id");
    ok(&peerctl(
        host,
        home.path(),
        &["peers", "add", &provider.to_string(), "--name", "prov"],
    )
    .await);
    if let Some(gw) = gateway {
        ok(&peerctl(host, home.path(), &["gateways", "add", gw]).await);
    }
    (home, id)
}

/// The `last_path` peerctl recorded for its only peer.
async fn last_path(host: &Host, home: &Path) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&ok(&peerctl(host, home, &["peers", "list", "--json"]).await))
            .expect("peers list JSON");
    list[0]["last_path"].clone()
}

/// The last path records a plausible round-trip time (these links have no added delay).
fn assert_rtt(path: &serde_json::Value) {
    let rtt = path["rtt_ms"].as_f64().unwrap_or(-1.0);
    assert!(rtt > 0.0 && rtt < 5_000.0, "round-trip time in {path}");
}

#[tokio::test]
async fn laptops_behind_nat_reach_a_provider_behind_nat_by_peer_id() {
    let world = World::new();
    let gw_host = world.public_host("gw");
    let (home_site, root) = world.nat_site_root("home", NatKind::EndpointIndependent);
    let sym_site = world.nat_site("sym", NatKind::Symmetric);
    let sym_laptop = sym_site.host("laptop");
    let cone_site = world.nat_site("cone", NatKind::EndpointIndependent);
    let cone_laptop = cone_site.host("laptop");

    let (provider_home, provider) = TestDaemon::identity();
    let gw = start_gateway(&gw_host, &provider).await;
    let image = TestImage::load().await;
    let daemon = start_provider(provider_home, &root, &gw_host, &gw).await;
    let gw_addr = format!("{}@/ip4/{}/udp/{P2P_PORT}/quic-v1", gw.id, gw_host.ip());

    // Behind a symmetric NAT: only the relay can work.
    let (sym_home, sym_id) = client_home(&sym_laptop, &provider, Some(&gw_addr)).await;
    daemon.trust(&sym_id);
    let out = peerctl(
        &sym_laptop,
        sym_home.path(),
        &[
            "--no-mdns",
            "--timeout",
            "30s",
            "deploy",
            &image.tag,
            "--peer",
            "prov",
            "--port",
            &TEST_PORT.to_string(),
            "--name",
            "natweb",
        ],
    )
    .await;
    let url = ok(&out);
    assert_eq!(url, format!("https://natweb.{DOMAIN}:{HTTPS_PORT}"));
    let path = last_path(&sym_laptop, sym_home.path()).await;
    assert_eq!(path["kind"], "relayed", "{path}");
    assert!(
        path["address"]
            .as_str()
            .is_some_and(|a| a.contains("p2p-circuit")),
        "{path}"
    );
    assert_rtt(&path);

    // The URL answers through the gateway, for a visitor on the internet.
    let body = within(
        30,
        "the URL through the gateway",
        sym_laptop
            .command("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(&gw.ca)
            .args([
                "--resolve",
                &format!("natweb.{DOMAIN}:{HTTPS_PORT}:{}", gw_host.ip()),
                &url,
            ])
            .output(),
    )
    .await
    .expect("curl runs");
    assert!(body.status.success(), "{body:?}");
    assert_eq!(
        String::from_utf8_lossy(&body.stdout),
        "hello from the container\n"
    );

    // Neither the provider's own address nor its ports on the home NAT's public address
    // answer from outside: the NAT mapping made for the gateway does not admit anyone else.
    let own = daemon
        .daemon
        .as_ref()
        .map(|d| d.listen_addrs.clone())
        .unwrap_or_default();
    assert!(!own.is_empty(), "the daemon listens somewhere");
    let wan_ip = home_site.wan_ip().to_string();
    let mut candidates: Vec<String> = own.iter().map(ToString::to_string).collect();
    candidates.extend(own.iter().filter_map(|a| {
        let text = a.to_string();
        let ip = text.split('/').nth(2)?;
        Some(text.replacen(ip, &wan_ip, 1))
    }));
    for direct in &candidates {
        let (blind_home, blind_id) = client_home(&sym_laptop, &provider, None).await;
        daemon.trust(&blind_id);
        ok(&peerctl(
            &sym_laptop,
            blind_home.path(),
            &["peers", "add", &provider.to_string(), "--addr", direct],
        )
        .await);
        let out = peerctl(
            &sym_laptop,
            blind_home.path(),
            &["--no-mdns", "--timeout", "4s", "ls", "--peer", "prov"],
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(4),
            "reached {direct} directly from outside"
        );
    }
    assert!(
        candidates.iter().any(|c| c.contains(&wan_ip)),
        "the public address was tried: {candidates:?}"
    );

    // A PC on the provider's own LAN reaches it directly with its stored address and learns
    // the gateway the provider is registered at, for when it is away from home.
    let lan_pc = home_site.host("pc");
    let (pc_home, pc_id) = client_home(&lan_pc, &provider, None).await;
    daemon.trust(&pc_id);
    ok(&peerctl(
        &lan_pc,
        pc_home.path(),
        &[
            "peers",
            "add",
            &provider.to_string(),
            "--addr",
            &daemon.addr(),
        ],
    )
    .await);
    let out = peerctl(
        &lan_pc,
        pc_home.path(),
        &["--no-mdns", "--timeout", "30s", "ls", "--peer", "prov"],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no deployments of yours"),
        "{out:?}"
    );
    assert_eq!(
        last_path(&lan_pc, pc_home.path()).await["kind"],
        "direct-lan"
    );
    let learned = ok(&peerctl(&lan_pc, pc_home.path(), &["gateways", "list", "--json"]).await);
    let learned: serde_json::Value = serde_json::from_str(&learned).expect("gateways JSON");
    assert!(
        learned.as_array().is_some_and(|list| list.iter().any(|g| {
            g["peer_id"] == gw.id.to_string()
                && g["source"]
                    .as_str()
                    .is_some_and(|s| s.contains(&provider.to_string()))
        })),
        "the gateway was learned from the provider: {learned}"
    );

    // Behind endpoint-independent NATs on both sides, hole punching makes it direct.
    let (cone_home, cone_id) = client_home(&cone_laptop, &provider, Some(&gw_addr)).await;
    daemon.trust(&cone_id);
    let out = peerctl(
        &cone_laptop,
        cone_home.path(),
        &["--no-mdns", "--timeout", "30s", "ls", "--peer", "prov"],
    )
    .await;
    // Deployments are per owner: this client has none, but the round trip happened.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no deployments of yours"),
        "{out:?}"
    );
    let path = last_path(&cone_laptop, cone_home.path()).await;
    assert_eq!(path["kind"], "hole-punched", "{path}");
    let address = path["address"].as_str().expect("address");
    assert!(!address.contains("p2p-circuit"), "{path}");
    assert!(
        address.contains(&home_site.wan_ip().to_string()),
        "the direct path goes to the home NAT's public address: {path}"
    );
    assert_rtt(&path);

    // The punch is used as soon as either side's direct connection is up. Waiting for our
    // own dial instead took about 1 s in most runs: the home NAT dropped its first packet and
    // QUIC probes again only after its initial timeout. Five fresh clients; one slow run is
    // forgiven (a loaded machine), a second is not.
    let gateways = vec![(
        gw.id,
        vec![
            format!("/ip4/{}/udp/{P2P_PORT}/quic-v1", gw_host.ip())
                .parse()
                .expect("multiaddr"),
        ],
    )];
    let mut reaches = Vec::new();
    for _ in 0..5 {
        let reach = reach_once(
            &cone_laptop,
            provider,
            Vec::new(),
            gateways.clone(),
            Duration::from_secs(3),
            &daemon,
        )
        .await
        .expect("a fresh client reaches the provider");
        assert_eq!(reach.kind, PathKind::HolePunched, "{reach:?}");
        reaches.push(reach.reach);
    }
    let slow = reaches
        .iter()
        .filter(|r| **r >= Duration::from_millis(500))
        .count();
    assert!(
        slow <= 1,
        "reach through a hole punch, 5 fresh clients: {reaches:?}"
    );

    // Clean up the deployment (the daemon's cleanup removes its containers too).
    let list = ok(&peerctl(
        &cone_laptop,
        cone_home.path(),
        &["--no-mdns", "ls", "--peer", "prov", "--json"],
    )
    .await);
    let list: serde_json::Value = serde_json::from_str(&list).expect("ls JSON");
    if let Some(id) = list[0]["id"].as_str() {
        ok(&peerctl(
            &cone_laptop,
            cone_home.path(),
            &["--no-mdns", "stop", id, "--peer", "prov"],
        )
        .await);
    }
    drop(daemon);
    drop(image);
}

#[tokio::test]
async fn providers_on_one_lan_find_each_other_with_mdns() {
    let world = World::new();
    let lan = world.nat_site("lan", NatKind::EndpointIndependent);
    let (a_host, b_host, laptop) = (lan.host("a"), lan.host("b"), lan.host("laptop"));
    // Provider A is also registered at a working gateway, so the relay path is real too.
    let gw_host = world.public_host("gw");
    let a_home = tempfile::tempdir().expect("provider home");
    let (a_identity, _) = Identity::load_or_create(a_home.path()).expect("identity");
    let gw = start_gateway(&gw_host, &a_identity.peer_id()).await;
    let gateway_arg = format!("{}@{}:{TUNNEL_PORT}", gw.id, gw_host.ip());
    let mut providers = Vec::new();
    for (host, home) in [
        (&a_host, a_home),
        (&b_host, tempfile::tempdir().expect("provider home")),
    ] {
        let (id, _) = Identity::load_or_create(home.path()).expect("identity");
        let log_path = home.path().join("provider.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut cmd = host.command(workspace_bin("peercomputed"));
        cmd.arg("--home")
            .arg(home.path())
            .args(["run", "--listen", &format!("/ip4/{}/tcp/9000", host.ip())])
            .env("RUST_LOG", "info,peercompute_p2p=debug")
            .stderr(log);
        if id.peer_id() == a_identity.peer_id() {
            cmd.args(["--gateway", &gateway_arg]);
        }
        let child = cmd.spawn().expect("peercomputed starts");
        providers.push((home, id.peer_id(), child, log_path));
    }
    let (a_id, b_id) = (providers[0].1, providers[1].1);
    // Each provider's log shows the other found on the LAN.
    within(20, "mDNS discovery, and provider A's relay slot", async {
        loop {
            let a_log = std::fs::read_to_string(&providers[0].3).unwrap_or_default();
            let b_log = std::fs::read_to_string(&providers[1].3).unwrap_or_default();
            let found = |log: &str, peer: &PeerId| {
                log.lines()
                    .any(|l| l.contains("found on the LAN") && l.contains(&peer.to_string()))
            };
            let relayed = a_log.contains("reachable by peer id through the gateway's relay");
            if found(&a_log, &b_id) && found(&b_log, &a_id) && relayed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    // peerctl on that LAN reaches a provider with no address by mDNS, even knowing the
    // gateway where that provider holds a relay slot: mDNS wins.
    let (home, client) = client_home(
        &laptop,
        &a_id,
        Some(&format!(
            "{}@/ip4/{}/udp/{P2P_PORT}/quic-v1",
            gw.id,
            gw_host.ip()
        )),
    )
    .await;
    let mut store = peercompute_identity::TrustStore::open(providers[0].0.path()).expect("trust");
    store
        .add(&client.to_string(), None, &[] as &[&str])
        .expect("trust client");
    let out = peerctl(
        &laptop,
        home.path(),
        &["--timeout", "15s", "ls", "--peer", "prov"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let path = last_path(&laptop, home.path()).await;
    assert_eq!(path["kind"], "direct-lan", "{path}");
    assert!(
        path["address"]
            .as_str()
            .is_some_and(|a| a.contains(&a_host.ip().to_string())),
        "{path}"
    );
}
