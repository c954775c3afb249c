//! The provider's admin listener against a real daemon, Docker engine, gateway and peerctl:
//! `/metrics` has every series after one deploy, `peercomputed status --json` (the binary)
//! exits 0 and parses, and when the Docker engine stops answering for this daemon (a
//! forwarding socket in front of the engine, stopped) `/readyz` turns 503 naming docker
//! within 7 s and `status` exits 3; when it answers again, 200. The Grafana dashboard
//! (`deploy/grafana/peercompute.json`) is checked against the same live scrapes: every metric
//! name its queries use is in the gateway's or the provider's `/metrics` after a deploy and
//! some traffic. The daemon runs with `--admin-token-file`: without the token `/metrics` and
//! `/api/v1/status` answer 401 with an empty body, the probes stay open, and `status` sends
//! `PEERCOMPUTE_ADMIN_TOKEN`; a foreign `Host` gets 421; the listener is on 0.0.0.0, so
//! `/readyz` without the token says only `ready`. One gateway and one daemon for all of it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peercompute_provider::{AdminListen, GatewaySpec, Limits};
use peercompute_tests::docker_proxy::DockerProxy;
use peercompute_tests::{
    Alpn, GatewayOptions, TEST_PORT, TestClient, TestDaemon, TestGateway, TestImage, https_client,
    run_peerctl, within,
};

/// A read token of the daemon's `--admin-token-file`.
const TOKEN: &str = "test-read-token-0123456789abcdefghijkl";

/// GET with the read token.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_as(addr, path, Some(TOKEN)).await
}

async fn get_as(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let code = resp.status().as_u16();
    (code, resp.text().await.expect("body"))
}

/// `peercomputed --home HOME status ARGS…`: exit code and stdout.
async fn status(home: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = within(
        20,
        "peercomputed status",
        tokio::process::Command::new(peercompute_tests::daemon::workspace_bin("peercomputed"))
            .arg("--home")
            .arg(home)
            .arg("status")
            .args(args)
            .env("PEERCOMPUTE_ADMIN_TOKEN", TOKEN)
            .output(),
    )
    .await
    .expect("run peercomputed status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Polls `/readyz` until it answers `code`; the time it took.
async fn readyz_turns(addr: SocketAddr, code: u16, within_secs: u64) -> (Duration, String) {
    let started = Instant::now();
    loop {
        let (got, body) = get(addr, "/readyz").await;
        if got == code {
            return (started.elapsed(), body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(within_secs),
            "/readyz still {got} after {within_secs} s, not {code}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the series line starting with `series ` (labels included), if any.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Every `peercompute_*` and `process_*` name in the dashboard's queries.
fn dashboard_metric_names() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/peercompute.json"
    );
    let text = std::fs::read_to_string(path).expect("the Grafana dashboard");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&doc, &mut exprs);
    assert!(exprs.len() >= 15, "only {} queries", exprs.len());
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("peercompute_") || w.starts_with("process_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// The series names (without labels) of a scrape.
fn scraped_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn metrics_status_and_readiness_follow_the_daemon() {
    let mut proxy = DockerProxy::start();
    let (home, provider_id) = TestDaemon::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![provider_id],
        ..GatewayOptions::default()
    })
    .await;
    let image = TestImage::load().await;
    let endpoint = proxy.endpoint();
    let tokens = tempfile::tempdir().expect("token dir");
    let token_file = tokens.path().join("admin-tokens");
    std::fs::write(&token_file, format!("# the test's\nread {TOKEN}\n")).expect("token file");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod 600");
    let gateway = GatewaySpec {
        peer: Some(gw.peer_id),
        host: gw.tunnel.ip().to_string(),
        port: gw.tunnel.port(),
    };
    let daemon = TestDaemon::start_custom(home, gateway, Limits::default(), move |c| {
        // Off loopback, as an exposed listener (the token file is then required).
        c.admin_listen = AdminListen::At("0.0.0.0:0".parse().expect("addr"));
        c.docker_endpoint = Some(endpoint);
        c.admin_token_file = Some(token_file);
    })
    .await;
    let admin = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.admin_addr)
        .expect("the admin listener runs");
    let home = daemon.home.path().to_path_buf();
    let written = std::fs::read_to_string(home.join("state/admin.addr")).expect("admin.addr");
    assert_eq!(written.trim(), admin.to_string());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin.port()));

    assert_eq!(get_as(admin, "/healthz", None).await.0, 200);
    // Without a token an exposed listener's /readyz says only whether it is ready.
    let (_, body) = readyz_turns(admin, 200, 10).await;
    assert!(body.contains("tunnel: ok connected"), "{body}");
    assert_eq!(
        get_as(admin, "/readyz", None).await,
        (200, "ready\n".into())
    );
    for path in ["/metrics", "/api/v1/status"] {
        for token in [None, Some("wrong-token-0123456789abcdefghijklmnop")] {
            assert_eq!(
                get_as(admin, path, token).await,
                (401, String::new()),
                "{path}"
            );
        }
    }
    // A name that is not this listener's (DNS rebinding) gets 421, even with the token; the
    // probes answer whatever the name.
    let http = reqwest::Client::new();
    for (path, want) in [("/api/v1/status", 421), ("/metrics", 421), ("/readyz", 200)] {
        let resp = http
            .get(format!("http://{admin}{path}"))
            .header("host", "evil.example")
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET with a foreign Host");
        assert_eq!(resp.status().as_u16(), want, "{path}");
        if path == "/readyz" {
            // No details for a foreign name, even with the token.
            assert_eq!(resp.text().await.expect("body"), "ready\n");
        }
    }
    let (_, body) = readyz_turns(admin, 200, 10).await;
    assert!(body.contains("tunnel: ok connected"), "{body}");

    // One deploy through the real peerctl.
    let client = TestClient::new();
    daemon.trust(&client.peer_id());
    client.trust(&daemon);
    let port = TEST_PORT.to_string();
    let (code, _, err) = run_peerctl(
        client.home.path(),
        &[
            "deploy", &image.tag, "--peer", "prov", "--port", &port, "--name", "web",
        ],
    )
    .await;
    assert_eq!(code, 0, "deploy failed: {err}");

    let (code, metrics) = get(admin, "/metrics").await;
    assert_eq!(code, 200);
    for (series, want) in [
        (
            "peercompute_provider_deploys_total{outcome=\"ok\"}",
            Some(1.0),
        ),
        (
            "peercompute_provider_deploy_duration_seconds_count",
            Some(1.0),
        ),
        (
            "peercompute_provider_deployments{state=\"running\"}",
            Some(1.0),
        ),
        (
            "peercompute_provider_tunnel_state{state=\"connected\"}",
            Some(1.0),
        ),
        (
            "peercompute_provider_tunnel_state{state=\"connecting\"}",
            Some(0.0),
        ),
        ("peercompute_provider_tunnel_reconnects_total", Some(0.0)),
        ("peercompute_provider_docker_up", Some(1.0)),
        ("peercompute_provider_firewall_installed", Some(1.0)),
        ("peercompute_provider_image_pull_bytes_total", None),
        ("peercompute_provider_machine_cpu_ratio", None),
        (
            "peercompute_provider_machine_memory_bytes{state=\"total\"}",
            None,
        ),
        (
            "peercompute_provider_machine_disk_bytes{state=\"free\"}",
            None,
        ),
        ("peercompute_provider_relay_state{state=\"stopped\"}", None),
        (
            "peercompute_provider_tunnel_connected_since_timestamp_seconds",
            None,
        ),
        ("process_resident_memory_bytes", None),
        ("process_open_fds", None),
        ("process_cpu_seconds_total", None),
    ] {
        let got = value(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
        if let Some(want) = want {
            assert_eq!(got, want, "{series}");
        }
    }
    assert!(
        metrics.contains("peercompute_build_info{version=\"")
            && metrics.contains("program=\"peercomputed\"} 1"),
        "{metrics}"
    );
    assert!(value(&metrics, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);

    // Some traffic through the gateway, then the dashboard against both scrapes.
    let web = https_client(&gw, &["web"], Alpn::H1);
    for path in ["/", "/", "/missing"] {
        let resp = web.get(gw.url("web", path)).send().await.expect("GET web");
        assert!(resp.status().as_u16() < 500, "{}", resp.status());
    }
    let mut scraped = scraped_names(&gw.admin_get("/metrics").await);
    scraped.extend(scraped_names(&metrics));
    let missing: Vec<String> = dashboard_metric_names()
        .into_iter()
        .filter(|n| !scraped.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/peercompute.json uses series no scrape has: {missing:?}"
    );

    let (code, out) = status(&home, &["--json"]).await;
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    assert_eq!(doc["ready"], true, "{doc}");
    assert_eq!(doc["peer_id"], daemon.peer_id.to_string());
    assert_eq!(doc["deployments"]["running"], 1, "{doc}");
    assert_eq!(doc["deploys"]["ok"], 1, "{doc}");
    assert_eq!(doc["tunnel"]["state"], "connected", "{doc}");

    // The engine stops answering for this daemon only.
    proxy.stop();
    let (took, body) = readyz_turns(admin, 503, 7).await;
    println!("docker unready after {} ms", took.as_millis());
    assert!(body.contains("docker: FAIL"), "{body}");
    assert!(body.contains("tunnel: ok"), "{body}");
    let (code, out) = status(&home, &[]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("NO"), "{out}");
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(value(&metrics, "peercompute_provider_docker_up"), Some(0.0));
    assert_eq!(
        value(
            &metrics,
            "peercompute_provider_deployments{state=\"unknown\"}"
        ),
        Some(1.0),
        "{metrics}"
    );

    proxy.start_again();
    let (took, body) = readyz_turns(admin, 200, 7).await;
    println!("docker ready again after {} ms", took.as_millis());
    assert!(body.contains("docker: ok"), "{body}");
}
