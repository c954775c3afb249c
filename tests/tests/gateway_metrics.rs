//! The gateway's `/metrics` as an operator's Prometheus sees it, against a live gateway, a
//! provider on a real QUIC tunnel and a backend: per-app (`route`) series for registered names,
//! the cap folding later names into `route="other"`, visitor-chosen hosts adding no series,
//! and the shared process, build, certificate and transport series. One gateway serves every
//! step, so the binary takes seconds.

use std::time::{SystemTime, UNIX_EPOCH};

use peercompute_tests::{
    Alpn, Backend, GatewayOptions, TestGateway, TestProvider, https_client, within,
};

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[tokio::test]
async fn route_labels_are_capped_and_visitor_hosts_add_none() {
    let id = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        metrics_max_routes: 2,
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(id, &gw);
    for name in ["blog", "shop", "wiki"] {
        provider
            .register(name, backend.addr)
            .await
            .expect("register");
    }

    let client = https_client(&gw, &["blog", "shop", "wiki"], Alpn::H1);
    let get = |name: &str, path: &str| client.get(gw.url(name, path)).send();
    for _ in 0..3 {
        assert_eq!(get("blog", "/echo").await.expect("blog").status(), 200);
    }
    for _ in 0..2 {
        let resp = client
            .post(gw.url("shop", "/upload"))
            .body(vec![7u8; 1000])
            .send()
            .await
            .expect("shop");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body");
    }
    assert_eq!(get("wiki", "/").await.expect("wiki").status(), 200);
    // One visitor-chosen host first, so the unlabelled 404 series exists before the baseline.
    let stray = client
        .get(gw.url("blog", "/"))
        .header("host", "nobody.apps.test")
        .send()
        .await
        .expect("stray");
    assert_eq!(stray.status(), 404);

    let text = gw.admin_get("/metrics").await;
    let route = |series: &str| value(&text, &format!("peercompute_gateway_route_{series}"));
    assert_eq!(
        route("requests_total{route=\"blog\",class=\"2xx\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        route("requests_total{route=\"shop\",class=\"2xx\"}"),
        Some(2.0)
    );
    assert_eq!(
        route("body_bytes_total{route=\"shop\",direction=\"upload\"}"),
        Some(2000.0)
    );
    assert!(
        route("body_bytes_total{route=\"blog\",direction=\"download\"}").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert_eq!(
        route("response_head_seconds_count{route=\"blog\"}"),
        Some(3.0)
    );
    // The cap is 2: wiki, registered third, shares route="other".
    assert!(!text.contains("route=\"wiki\""), "{text}");
    assert_eq!(
        route("requests_total{route=\"other\",class=\"2xx\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("route=\"nobody\""), "{text}");

    // The shared series.
    assert_eq!(
        value(
            &text,
            "peercompute_gateway_tunnels_by_transport{transport=\"quic\"}"
        ),
        Some(1.0)
    );
    assert!(
        value(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("peercompute_build_info{") && l.ends_with(" 1")),
        "{text}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let not_after = value(
        &text,
        "peercompute_gateway_certificate_not_after_timestamp_seconds{certificate=\"apps.test\",source=\"dev\"}",
    )
    .expect("the dev certificate's expiry");
    assert!(not_after > now, "{not_after} <= {now}");

    // 1000 visitor-chosen hosts (404, no provider contacted) add no series at all.
    let baseline = series_count(&text);
    let before = backend.requests();
    within(60, "1000 requests to unknown hosts", async {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8u32 {
            let (client, url) = (client.clone(), gw.url("blog", "/"));
            tasks.spawn(async move {
                for i in 0..125u32 {
                    let host = format!("r{worker}x{i}-{:x}.apps.test", rand_u32(worker, i));
                    let resp = client
                        .get(&url)
                        .header("host", host)
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(resp.status(), 404);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("worker");
        }
    })
    .await;
    assert_eq!(backend.requests(), before, "no provider was contacted");
    let after = gw.admin_get("/metrics").await;
    assert_eq!(
        series_count(&after),
        baseline,
        "series appeared:\n{}",
        after
            .lines()
            .filter(|l| !text
                .lines()
                .any(|b| b.split(' ').next() == l.split(' ').next()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        value(&after, "peercompute_gateway_requests_total{status=\"404\"}"),
        Some(1001.0)
    );
}

/// A cheap deterministic spread of numbers for host names.
fn rand_u32(a: u32, b: u32) -> u32 {
    (a.wrapping_mul(2_654_435_761) ^ b.wrapping_mul(40_503)).rotate_left(7)
}
