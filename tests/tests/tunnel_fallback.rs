//! The tunnel's TCP fallback, in an emulated internet (see `peercompute_tests::netns`): the
//! real gateway binary on a public host, the provider (in-process, `--transport auto`) in the
//! root namespace behind a NAT router whose nftables drops UDP to the gateway's tunnel port.
//!
//! - With UDP dropped from the start, the provider publishes over TCP (TLS to the gateway's
//!   HTTPS port) within 3 s of starting, and visitors are served through it.
//! - Once UDP passes again, the provider's QUIC probe (every 30-60 s) succeeds and the tunnel
//!   moves to QUIC within 90 s, while a loop of GETs and one long, slowly read download run
//!   across the move: no GET fails and the download arrives whole (SHA-256).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use peercompute_provider::{GatewaySpec, Transport, TransportMode, TunnelSettings, TunnelStatus};
use peercompute_tests::nat::{HTTPS_PORT, TUNNEL_PORT, start_gateway};
use peercompute_tests::netns::{Host, NatKind, World};
use peercompute_tests::{Backend, TestProvider, download_sha256, https_client_to, within};
use sha2::{Digest, Sha256};

/// The rule on the site's router that drops UDP to the gateway's tunnel port.
const BLOCK_TABLE: &str = "pc_block_udp";

fn block_udp(router: &Host) {
    router.run("nft", &["add", "table", "inet", BLOCK_TABLE]);
    router.run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            BLOCK_TABLE,
            "forward_udp",
            "{",
            "type",
            "filter",
            "hook",
            "forward",
            "priority",
            "-10",
            ";",
            "policy",
            "accept",
            ";",
            "}",
        ],
    );
    router.run(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            BLOCK_TABLE,
            "forward_udp",
            "udp",
            "dport",
            &TUNNEL_PORT.to_string(),
            "drop",
        ],
    );
}

fn unblock_udp(router: &Host) {
    router.run("nft", &["delete", "table", "inet", BLOCK_TABLE]);
}

fn transport(provider: &TestProvider) -> Option<Transport> {
    match provider.handle.status() {
        TunnelStatus::Connected { transport, .. } => Some(transport),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_blocked_serves_over_tcp_within_3s_and_returns_to_quic_without_failing_requests() {
    let world = World::new();
    let gw_host = world.public_host("gw");
    let (site, root) = world.nat_site_root("office", NatKind::EndpointIndependent);
    let id = TestProvider::identity();
    let gw = start_gateway(&gw_host, &id.peer_id()).await;
    let backend = Backend::start().await;
    block_udp(site.router());

    let mut settings = TunnelSettings::new(GatewaySpec {
        peer: Some(gw.id),
        host: gw_host.ip().to_string(),
        port: TUNNEL_PORT,
    });
    settings.transport = TransportMode::Auto;
    settings.gateways[0].https = Some((gw_host.ip().to_string(), HTTPS_PORT));
    // The gateway binary needs a moment to listen; the provider's dials retry on their own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let provider = TestProvider::start_with(id, settings);
    let url = provider
        .register("app", backend.addr)
        .await
        .expect("published with UDP blocked");
    let published = started.elapsed();
    eprintln!(
        "published over {:?} in {published:?} with UDP blocked: {url}",
        transport(&provider)
    );
    assert_eq!(transport(&provider), Some(Transport::Tcp));
    assert!(
        published < Duration::from_secs(3),
        "publishing over TCP took {published:?} (the target is 3 s)"
    );
    let _ = root;

    let https: SocketAddr = (gw_host.ip(), HTTPS_PORT).into();
    let ca = std::fs::read(&gw.ca).expect("gateway CA");
    let client = https_client_to(&ca, https, &["app"]);
    let base = format!(
        "https://app.{}:{HTTPS_PORT}",
        peercompute_tests::gateway::DOMAIN
    );
    let resp = within(
        10,
        "GET over TCP",
        client.get(format!("{base}/echo")).send(),
    )
    .await
    .expect("GET over the TCP tunnel");
    assert_eq!(resp.status(), 200);

    // The first QUIC dial, still retrying when TCP won, would take over as soon as UDP passes
    // (a late handshake moves the tunnel at once): let it give up (10 s), so that the way
    // back is the periodic probe's.
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(started.elapsed())).await;
    assert_eq!(transport(&provider), Some(Transport::Tcp));

    // UDP passes again. A download read slowly (about 1.3 MiB/s) spans the move to QUIC; a
    // GET loop runs beside it until the move is seen, and a little after.
    unblock_udp(site.router());
    let restored = Instant::now();
    const SIZE: u64 = 96 * 1024 * 1024;
    let download = {
        let client = client.clone();
        let url = format!("{base}/download?bytes={SIZE}");
        tokio::spawn(async move {
            let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
            if resp.status() != 200 {
                return Err(format!("status {}", resp.status()));
            }
            let mut stream = resp.bytes_stream();
            let (mut h, mut n) = (Sha256::new(), 0u64);
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| format!("after {n} bytes: {e}"))?;
                n += chunk.len() as u64;
                h.update(&chunk);
                // ~64 KiB per tick: about 1.3 MiB/s, so the body outlasts the probe.
                if n % (64 * 1024) < chunk.len() as u64 {
                    pace.tick().await;
                }
            }
            Ok::<_, String>((n, hex::encode(h.finalize())))
        })
    };
    let (mut ok, mut failed) = (0u32, Vec::new());
    let mut moved = None;
    let deadline = restored + Duration::from_secs(95);
    while Instant::now() < deadline {
        if moved.is_none() && transport(&provider) == Some(Transport::Quic) {
            moved = Some(restored.elapsed());
            eprintln!(
                "moved to QUIC {:?} after UDP was restored",
                restored.elapsed()
            );
        }
        if moved.is_some_and(|m| restored.elapsed() > m + Duration::from_secs(3)) {
            break;
        }
        match within(10, "GET", client.get(format!("{base}/echo")).send()).await {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => failed.push(format!("status {}", r.status())),
            Err(e) => failed.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = moved.expect("the tunnel moved back to QUIC within 95 s of UDP passing again");
    eprintln!(
        "GETs across the move: {ok} ok, {} failed {failed:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "GETs failed across the move: {failed:?}");
    assert!(ok > 20, "only {ok} GETs ran");
    assert!(
        moved < Duration::from_secs(90),
        "back to QUIC after {moved:?}"
    );
    let (n, sha) = within(120, "the long download", download)
        .await
        .expect("joined")
        .expect("the download crossed the move whole");
    assert_eq!(n, SIZE);
    assert_eq!(sha, download_sha256(SIZE));
    eprintln!(
        "download of {} MiB done {:?} after UDP was restored",
        SIZE >> 20,
        restored.elapsed()
    );
}
