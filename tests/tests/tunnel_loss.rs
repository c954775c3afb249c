//! Packet loss on the tunnel (issue 17, F4): the provider reaches the gateway through a
//! seeded user-space link emulator (`tests/src/lossy_link.rs`) that drops 1, 5 and 10 % of
//! the datagrams each way with a small delay, then 10 % with a 50 ± 10 ms delay. Through it,
//! visitors download and upload SHA-256-checked bodies and run a loop of GETs. Nothing may be
//! corrupted, nothing may hang, and the tunnel must stay up (the same connection throughout:
//! QUIC recovers the losses, the provider never reconnects). Prints goodput, req/s, p50/p99
//! and the loss measured on the link per direction.
//!
//! Sizes follow the loss-based controller's rate (Mathis: MSS/RTT · 1.22/√p; measured in a
//! debug build: ~1.5 MB/s at 1 %, ~0.5 at 5 %, ~0.25 at 10 % with 10 ms RTT, ~0.04 at 10 %
//! with 100 ms), so the whole file runs in under a minute on a busy 2-core machine.

use std::time::Duration;

use peercompute_provider::TunnelStatus;
use peercompute_tests::lossy_link::{Dir, LinkShape, LossyLink};
use peercompute_tests::tunnel_load::{self, GetPlan, Transfer, ms};
use peercompute_tests::{Backend, DOMAIN, GatewayOptions, TestGateway, TestProvider};

/// One loss step: the shape of both directions and the work done through it.
struct Case {
    loss: f64,
    delay: Duration,
    jitter: Duration,
    /// Sizes of the downloads, one after the other.
    downloads: &'static [u64],
    upload: u64,
    gets: usize,
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_survives_packet_loss_without_corruption_or_hangs() {
    let id = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        // A response head may wait behind several lost round trips at 10 %.
        upstream_timeout: Duration::from_secs(20),
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let link = LossyLink::start(
        gw.tunnel,
        LinkShape::symmetric(
            Dir::new(0.0, Duration::from_millis(5), Duration::from_millis(1)),
            17,
        ),
    )
    .await
    .expect("link emulator");
    let provider = TestProvider::start_to(id, gw.peer_id, link.addr);
    provider
        .register("lossy", backend.addr)
        .await
        .expect("register through the link");
    let session = provider.registered(1, 1).await;

    let host = format!("lossy.{DOMAIN}");
    let client = tunnel_load::client(&gw.ca_pem, gw.https, &host).expect("client");
    let base = gw.url("lossy", "");
    let short = Duration::from_millis(5);
    let one = Duration::from_millis(1);
    let cases = [
        Case {
            loss: 0.01,
            delay: short,
            jitter: one,
            downloads: &[2 * MIB, 2 * MIB, 2 * MIB],
            upload: 2 * MIB,
            gets: 100,
        },
        Case {
            loss: 0.05,
            delay: short,
            jitter: one,
            downloads: &[MIB, MIB, MIB],
            upload: MIB,
            gets: 100,
        },
        Case {
            loss: 0.10,
            delay: short,
            jitter: one,
            downloads: &[MIB, MIB / 2, MIB / 2],
            upload: MIB / 2,
            gets: 100,
        },
        Case {
            loss: 0.10,
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            downloads: &[MIB / 2],
            upload: MIB / 8,
            gets: 20,
        },
    ];
    println!(
        "loss each way | delay | downloads MB/s (each) | upload MB/s | GETs ok/sent | req/s | p50 ms | p99 ms | measured loss"
    );
    let transfer_limit = Duration::from_secs(40);
    for case in &cases {
        let shape = Dir::new(case.loss, case.delay, case.jitter);
        link.set_shape(shape, shape);
        let before = link.stats();

        let mut downloads = Vec::new();
        for &bytes in case.downloads {
            downloads.push(tunnel_load::download(&client, &base, bytes, transfer_limit).await);
        }
        let upload = tunnel_load::upload(&client, &base, case.upload, transfer_limit).await;
        let gets = tunnel_load::get_loop(
            &client,
            &format!("{base}/"),
            GetPlan {
                concurrency: 8,
                max_requests: case.gets,
                duration: Duration::from_secs(60),
                // The gateway's upstream timeout + 5 s.
                timeout: Duration::from_secs(25),
            },
        )
        .await;
        let measured = link.stats().since(&before);
        let label = format!(
            "{:>4.0} % | {} ± {} ms",
            case.loss * 100.0,
            case.delay.as_millis(),
            case.jitter.as_millis()
        );
        println!(
            "{label} | {} | {:.2} | {}/{} | {:.0} | {} | {} | {measured}",
            downloads
                .iter()
                .map(|d| format!("{:.2}", d.mb_per_sec()))
                .collect::<Vec<_>>()
                .join(" "),
            upload.mb_per_sec(),
            gets.ok,
            gets.sent(),
            gets.req_per_sec(),
            ms(gets.percentile(50.0)),
            ms(gets.percentile(99.0)),
        );

        let all: Vec<&Transfer> = downloads.iter().chain([&upload]).collect();
        let corrupted = all.iter().filter(|t| t.corrupted).count();
        let hung = all.iter().filter(|t| t.hung).count();
        assert_eq!(
            (corrupted, hung),
            (0, 0),
            "{label}: corrupted or hung transfers: {all:?}"
        );
        assert_eq!(
            (gets.ok, gets.non_200, gets.failed, gets.hung),
            (case.gets, 0, 0, 0),
            "{label}: every GET answered 200 ({gets:?})"
        );
        // The emulator really dropped about what was asked: within 4 standard deviations of a
        // binomial draw of that many datagrams, plus 0.5 %.
        for (way, dir) in [("up", measured.up), ("down", measured.down)] {
            let n = dir.received.max(1) as f64;
            let tolerance = 4.0 * (case.loss * (1.0 - case.loss) / n).sqrt() + 0.005;
            assert!(
                (dir.loss() - case.loss).abs() < tolerance,
                "{label}: {way}: {measured}"
            );
        }
        // The tunnel stayed up: still the first connection.
        match provider.handle.status() {
            TunnelStatus::Connected { session: now, .. } => {
                assert_eq!(now, session, "{label}: the provider reconnected")
            }
            other => panic!("{label}: tunnel not connected: {other:?}"),
        }
    }
}
