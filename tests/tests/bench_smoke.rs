//! Smoke test of the benchmark: the measurement code of `tunnel-bench`
//! (`tests/src/bin/tunnel_bench/`) in a very short run, against the in-process gateway and
//! provider of the harness instead of the release binaries, so a broken benchmark shows up in
//! CI within a few seconds. It checks that every phase completes, without errors, with
//! figures that make sense; it does not judge the figures (the benchmark program does).

#[allow(
    dead_code,
    reason = "child-process management is used by the binary only"
)]
#[path = "../src/bin/tunnel_bench/mod.rs"]
mod tunnel_bench;

use std::time::Duration;

use peercompute_tests::{
    Backend, DOMAIN, GatewayOptions, TestGateway, TestProvider, publish, within,
};
use tunnel_bench::procfs::Watched;
use tunnel_bench::suite::{self, Rig, Settings};
use tunnel_bench::target::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_runs_without_errors_direct_and_through_the_tunnel() {
    let id = TestProvider::identity();
    let id_tcp = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id(), id_tcp.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(id, &gw);
    provider
        .register("bench", backend.addr)
        .await
        .expect("register");
    let provider_tcp =
        TestProvider::start_over(id_tcp, &gw, peercompute_provider::TransportMode::Tcp);
    provider_tcp
        .register("bench-tcp", backend.addr)
        .await
        .expect("register over TCP");

    let host = format!("bench.{DOMAIN}");
    let me = std::process::id();
    let rig = Rig {
        ceiling: None,
        direct: Target::plain("direct", backend.addr, &host),
        through: Target::https("through", gw.https, &host, &gw.ca_pem).expect("through target"),
        through_tcp: Some(
            Target::https(
                "through-tcp",
                gw.https,
                &format!("bench-tcp.{DOMAIN}"),
                &gw.ca_pem,
            )
            .expect("through-tcp target"),
        ),
        alternative: None,
        // Gateway and provider run inside this test process.
        gateway_pid: me,
        provider_pid: me,
        watched: vec![Watched {
            label: "test".into(),
            pid: me,
        }],
        admin: Some(gw.admin),
    };
    let settings = Settings {
        connections: 8,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(500),
        rate: 200,
        rate_duration: Duration::from_millis(500),
        rate_connections: 4,
        bulk_bytes: 8 << 20,
        concurrent: 50,
        handshake_parallel: 10,
        path: "/".into(),
    };
    let report = within(90, "the benchmark phases", suite::run(&rig, &settings))
        .await
        .expect("benchmark phases");

    assert!(
        tunnel_bench::report::print(&report, true),
        "a correctness check failed: see the printed report"
    );
    for closed in [&report.closed.direct.result, &report.closed.through.result] {
        assert!(
            closed.requests > 0 && closed.req_per_sec() > 0.0,
            "{closed:?}"
        );
    }
    for open in [&report.open.direct.result, &report.open.through.result] {
        assert_eq!(open.scheduled, 100);
        assert_eq!(
            open.completed, open.scheduled,
            "every scheduled request answered"
        );
        assert!(open.latency.percentile(99.0) >= open.service.percentile(50.0));
    }
    for bulk in [&report.bulk.direct.result, &report.bulk.through.result] {
        assert!(bulk.ok(), "{bulk:?}");
        assert!(bulk.gbit_per_sec() > 0.0);
    }
    let (tcp_closed, tcp_bulk) = report.tcp.as_ref().expect("the TCP rows were measured");
    assert!(tcp_closed.result.requests > 0, "{:?}", tcp_closed.result);
    assert!(tcp_bulk.result.ok(), "{:?}", tcp_bulk.result);
    let held = &report.held;
    assert_eq!((held.open, held.failed, held.non_2xx), (50, 0, 0));
    assert!(
        held.gateway_gauge.is_some_and(|g| g >= 50),
        "the gateway counted the held connections: {:?}",
        held.gateway_gauge
    );
    assert!(held.gateway_open.rss_kib > 0);
}

/// `tunnel-bench --soak` in miniature (the soak module against the in-process stack): mixed
/// load for 20 s with a provider kick half-way, samples of the gateway's `/metrics` every
/// second. It checks that the load and the sampling work and that nothing failed outside the
/// kick; the slopes of so short a run are printed, not judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_runs_mixed_load_and_samples_the_gateway() {
    let id = TestProvider::identity();
    let provider_id = id.peer_id().to_string();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let ws = peercompute_tests::WsBackend::start().await;
    let provider = TestProvider::start(id, &gw);
    provider
        .register("bench", backend.addr)
        .await
        .expect("register");
    provider.register("ws", ws.addr).await.expect("register ws");

    let rig = tunnel_bench::soak::SoakRig {
        https: gw.https,
        ca_pem: gw.ca_pem.clone(),
        http_host: format!("bench.{DOMAIN}"),
        ws_host: format!("ws.{DOMAIN}"),
        gateway_admin: gw.admin,
        provider_admin: None,
        provider_id,
    };
    let settings = tunnel_bench::soak::SoakSettings {
        duration: Duration::from_secs(20),
        sample: Duration::from_secs(1),
        warmup: Duration::from_secs(5),
        kick_every: Duration::from_secs(10),
        rate: 20,
        csv_dir: None,
    };
    let report = within(80, "the soak", tunnel_bench::soak::run(&rig, &settings))
        .await
        .expect("soak");
    assert!(report.samples >= 15, "{report:?}");
    assert_eq!(
        report.errors, 0,
        "errors outside the kick window: {report:?}"
    );
    assert!(report.http1_ok >= 200, "{report:?}");
    assert!(report.websockets_ok >= 20, "{report:?}");
    assert!(report.downloads_ok >= 3, "{report:?}");
}

/// `tunnel-bench --l1 --l2 --l3` in miniature against in-process gateways: 20 connections for
/// half a second (L1); 40 held connections on a gateway capped at 40, then 3 more refused and
/// 3 requests on held ones answered (L2); 4 providers × 5 streams × 2 requests with every
/// response's provider id and checksum verified (L3). Figures are printed, not judged, except
/// the correctness counts, which must be exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_phases_run_in_miniature() {
    use tunnel_bench::{l1, l2, l3};

    let l3_ids: Vec<_> = (0..4).map(|_| TestProvider::identity()).collect();
    let published = publish(
        GatewayOptions {
            allow: l3_ids.iter().map(|i| i.peer_id()).collect(),
            ..GatewayOptions::default()
        },
        "bench",
    )
    .await;
    let gw = &published.gw;
    let host = format!("bench.{DOMAIN}");
    let through = Target::https("through", gw.https, &host, &gw.ca_pem).expect("through target");
    let me = std::process::id();
    let watched = [Watched {
        label: "test".into(),
        pid: me,
    }];

    let settings = l1::L1Settings {
        connections: 20,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(500),
    };
    let report = within(60, "L1", l1::run(&through, me, me, &watched, &settings))
        .await
        .expect("L1");
    assert!(l1::print(&report), "L1 counted errors: {:?}", report.result);
    assert!(report.result.requests > 0 && report.peak_rss.0 > 0);

    let settings = l3::L3Settings {
        providers: 4,
        streams: 5,
        requests: 2,
        rest: Duration::from_millis(200),
    };
    let under_test = l3::L3Gateway {
        pid: me,
        peer: gw.peer_id,
        https: gw.https,
        tunnel: gw.tunnel,
        domain: DOMAIN,
        ca_pem: &gw.ca_pem,
    };
    let report = within(60, "L3", l3::measure(&under_test, l3_ids, &settings))
        .await
        .expect("L3");
    assert!(l3::print(&report), "L3 responses: {:?}", report.tally);
    assert_eq!(report.tally.ok, 40);

    // L2 on a gateway of its own, capped at the count held.
    let capped = publish(
        GatewayOptions {
            max_connections: 40,
            header_read_timeout: l2::IDLE_ALLOWED,
            ..GatewayOptions::default()
        },
        "bench",
    )
    .await;
    let capped = &capped.gw;
    let through = Target::https("through", capped.https, &host, &capped.ca_pem).expect("target");
    let settings = l2::L2Settings {
        connections: 40,
        parallel: 10,
        attempts: 3,
        probes: 3,
    };
    let admin = capped.admin;
    let report = within(
        60,
        "L2",
        l2::run(&through, me, &settings, || async move {
            tunnel_bench::suite::connections_open(admin).await.ok()
        }),
    )
    .await;
    assert!(l2::print(&report), "L2: {report:?}");
    assert_eq!((report.open, report.refusals.refused), (40, 3));
    assert_eq!(report.answers.failed, 0);
    assert!(report.gauge.is_some_and(|g| g >= 40), "{:?}", report.gauge);
}
