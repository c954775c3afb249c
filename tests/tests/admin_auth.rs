//! Who may use the gateway's admin listener: the start refuses a non-loopback listener without
//! a token file and a token file others can read; with a file, missing, wrong or garbage
//! tokens get 401 with an empty body on every API path, read tokens may only GET, admin
//! tokens may do everything, a token removed from the file stops working within 1 s, a
//! foreign Host gets 421, and no token ever reaches the logs. One gateway serves every step.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use peercompute_gateway::{GatewayConfig, Listeners, TlsMode};
use peercompute_tests::admin::{AdminClient, token, token_file};
use peercompute_tests::{GatewayOptions, TestGateway, TestProvider, within};

/// Every log line of this test binary, to look for tokens in.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,peercompute_gateway=trace,peercompute_ops=trace,axum=trace,tower=trace,hyper=debug",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    captured
}

/// `run` with `config` on fresh loopback sockets; its error text (it must fail at start).
async fn start_error(config: GatewayConfig) -> String {
    let listeners = Listeners {
        https: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        http: None,
        tunnel: std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp"),
        admin: Some(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        ),
    };
    let run = peercompute_gateway::run(config, listeners, std::future::pending());
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("run returned Ok"),
        Err(_) => panic!("run started instead of failing"),
    }
}

fn config(state: &std::path::Path) -> GatewayConfig {
    GatewayConfig {
        domain: "apps.test".into(),
        state_dir: state.to_path_buf(),
        tls: TlsMode::Dev,
        p2p_listen: Vec::new(),
        open: true,
        ..GatewayConfig::default()
    }
}

#[tokio::test]
async fn tokens_roles_hosts_and_start_errors() {
    let logs = capture_logs();
    peercompute_tests::init();
    let dir = tempfile::tempdir().expect("tempdir");

    // Start errors: a non-loopback listener without a token file; a file others can read.
    let mut open = config(dir.path());
    open.admin_listen = Some(SocketAddr::from(([0, 0, 0, 0], 9180)));
    let err = start_error(open.clone()).await;
    assert!(
        err.contains("is not loopback") && err.contains("--admin-token-file"),
        "{err}"
    );
    let (read, admin_token) = (token("read"), token("admin"));
    let tokens = token_file(
        dir.path(),
        &[format!("read {read}"), format!("admin {admin_token}")],
    );
    let loose = dir.path().join("loose-tokens");
    std::fs::copy(&tokens, &loose).expect("copy");
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod 644");
    open.admin_token_file = Some(loose);
    let err = start_error(open).await;
    assert!(err.contains("chmod 600"), "{err}");

    let id = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        admin_token_file: Some(tokens.clone()),
        admin_host: vec!["admin.example".into()],
        ..GatewayOptions::default()
    })
    .await;
    let provider = TestProvider::start(id, &gw);
    provider.connected().await;
    let peer = provider.identity.peer_id().to_string();
    let anon = AdminClient::new(gw.admin);
    let reader = anon.with_token(Some(&read));
    let admin = anon.with_token(Some(&admin_token));
    let wrong = anon.with_token(Some(&token("wrong")));
    let gets = [
        "/api/v1/providers",
        "/api/v1/routes",
        "/api/v1/certificates",
        "/api/v1/traffic",
        "/api/v1/whoami",
        "/api/v1/openapi.json",
        "/metrics",
    ];
    let disconnect = format!("/api/v1/providers/{peer}/disconnect");
    let mutations = [
        (Method::DELETE, "/api/v1/names/nobody"),
        (Method::POST, disconnect.as_str()),
    ];

    // No, wrong or garbage tokens: 401, empty body, WWW-Authenticate: Bearer, on every path.
    let everything = gets
        .iter()
        .map(|p| (Method::GET, *p))
        .chain([(Method::GET, "/api/v1/events")])
        .chain(mutations.iter().cloned());
    for (method, path) in everything {
        for (who, client) in [("none", &anon), ("wrong", &wrong)] {
            let resp = client.send(method.clone(), path).await;
            assert_eq!(resp.status(), 401, "{who} {method} {path}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            assert!(
                resp.text().await.expect("body").is_empty(),
                "{who} {method} {path}"
            );
        }
        for garbage in ["Basic abc", "Bearer", "bearer  x", "Bearer \u{e9}t\u{e9}"] {
            let resp = anon
                .request(method.clone(), path)
                .header("authorization", garbage)
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 401, "{garbage:?} {method} {path}");
        }
    }

    // Read token: GETs yes, mutations 403; admin token: everything.
    for path in gets {
        assert_eq!(
            reader.send(Method::GET, path).await.status(),
            200,
            "read GET {path}"
        );
        assert_eq!(
            admin.send(Method::GET, path).await.status(),
            200,
            "admin GET {path}"
        );
    }
    assert_eq!(reader.get_json("/api/v1/whoami").await["role"], "read");
    assert_eq!(admin.get_json("/api/v1/whoami").await["role"], "admin");
    for (method, path) in &mutations {
        let resp = reader.send(method.clone(), path).await;
        assert_eq!(resp.status(), 403, "read {method} {path}");
        let text = resp.text().await.expect("body");
        assert!(text.contains("read-only; use an admin token"), "{text}");
    }
    let (status, _) = admin.delete("/api/v1/names/nobody").await;
    assert_eq!(status, 404, "admin passes auth; nobody owns the name");
    let (status, body) = admin
        .post(&disconnect, &serde_json::json!({"reason": "auth test"}))
        .await;
    assert_eq!(status, 202, "{body}");

    // Mutations must say JSON (a cross-site form cannot without a preflight).
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/names/nobody", admin.base))
        .bearer_auth(&admin_token)
        .header("content-type", "text/plain")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 415);
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // Probes and the page are open; a foreign Host gets 421 except on the probes.
    for path in ["/healthz", "/readyz", "/", "/app.js", "/app.css"] {
        assert_eq!(anon.send(Method::GET, path).await.status(), 200, "{path}");
    }
    for (host, want) in [
        ("evil.example", 421),
        ("evil.example:9180", 421),
        ("admin.example", 200),
        ("localhost:1", 200),
    ] {
        let status = |path: &'static str| {
            let req = admin.request(Method::GET, path).header("host", host);
            async move { req.send().await.expect("request").status() }
        };
        assert_eq!(status("/api/v1/providers").await, want, "{host}");
        assert_eq!(status("/").await, want, "{host} /");
        assert_eq!(status("/healthz").await, 200, "{host} /healthz");
    }

    // A token removed from the file stops working within 1 s, and its open stream ends.
    let mut stream = reader.events(None).await;
    stream.until(5, |m| m.event == "snapshot").await;
    std::fs::write(&tokens, format!("admin {admin_token}\n")).expect("rewrite tokens");
    let removed = Instant::now();
    loop {
        if reader.send(Method::GET, "/api/v1/providers").await.status() == 401 {
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(1),
            "read token still works"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "removed token refused after {} ms",
        removed.elapsed().as_millis()
    );
    within(3, "the revoked token's stream to end", async {
        while stream.next().await.is_some() {}
    })
    .await;
    println!(
        "its event stream ended after {} ms",
        removed.elapsed().as_millis()
    );
    assert_eq!(
        admin.send(Method::GET, "/api/v1/providers").await.status(),
        200
    );

    // No token in the logs (which did record the requests).
    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        text.contains("disconnected by the operator"),
        "logs captured: {} bytes",
        text.len()
    );
    for t in [&read, &admin_token, &token("wrong")] {
        assert!(!text.contains(t.as_str()), "a token in the logs");
    }
    assert!(
        !text.contains("0123456789abcdef0123456789abcdef"),
        "a token's body in the logs"
    );
}
