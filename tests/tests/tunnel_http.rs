//! Visitor → gateway → QUIC tunnel → provider → backend, over real TLS and QUIC.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use peercompute_tests::{
    Alpn, Backend, GatewayOptions, Published, TestGateway, TestProvider, WsBackend,
    download_sha256, https_client, publish, raw_tls, within,
};
use sha2::{Digest, Sha256};

async fn setup() -> (TestGateway, TestProvider, Backend) {
    let Published {
        gw,
        provider,
        backend,
    } = publish(GatewayOptions::default(), "app").await;
    (gw, provider, backend)
}

#[tokio::test]
async fn http1_round_trip_sets_forwarding_headers() {
    let (gw, _p, backend) = setup().await;
    let client = https_client(&gw, &["app"], Alpn::H1);
    let resp = client
        .get(gw.url("app", "/echo?x=1"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let body = resp.text().await.expect("body");
    assert!(body.starts_with("GET /echo?x=1\n"), "{body}");
    assert!(body.contains("host: app.apps.test\n"), "{body}");
    assert!(
        body.contains("x-forwarded-for: 127.0.0.1\n"),
        "forged XFF replaced: {body}"
    );
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
    assert!(body.contains("x-forwarded-host: app.apps.test\n"), "{body}");
    assert!(
        body.contains("forwarded: for=127.0.0.1;host=app.apps.test;proto=https\n"),
        "{body}"
    );
    assert!(
        !body.contains("x-drop-me"),
        "Connection-named header stripped: {body}"
    );
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn http2_is_translated_to_http1_origin_form() {
    let (gw, _p, _backend) = setup().await;
    let client = https_client(&gw, &["app"], Alpn::H2);
    for i in 0..3 {
        let resp = client
            .post(gw.url("app", &format!("/echo?i={i}")))
            .body("payload")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.expect("body");
        assert!(
            body.starts_with(&format!("POST /echo?i={i}\n")),
            "origin-form: {body}"
        );
        assert!(body.contains("host: app.apps.test\n"), "Host added: {body}");
    }
}

#[tokio::test]
async fn unknown_host_is_404_and_no_provider_is_contacted() {
    let (gw, _p, backend) = setup().await;
    let client = https_client(&gw, &["nope", "app"], Alpn::H1);
    let resp = client
        .get(gw.url("nope", "/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.expect("body");
    assert!(
        body.contains("no app is published at nope.apps.test"),
        "{body}"
    );
    assert_eq!(backend.requests(), 0, "backend must not see unknown hosts");
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("peercompute_gateway_streams_open 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn websocket_echo_through_the_tunnel() {
    let id = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let ws_backend = WsBackend::start().await;
    let provider = TestProvider::start(id, &gw);
    provider
        .register("ws", ws_backend.addr)
        .await
        .expect("register");
    let tls = raw_tls(&gw, "ws").await;
    let url = gw.url("ws", "/socket").replace("https://", "wss://");
    let (mut ws, resp) = within(
        10,
        "websocket handshake",
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .expect("websocket upgrade through the gateway");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let msg = format!("ping {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .expect("send");
        let echo = within(5, "echo", ws.next())
            .await
            .expect("open")
            .expect("frame");
        assert_eq!(echo.into_text().expect("text").as_str(), msg);
    }
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn sse_events_arrive_before_the_response_ends() {
    let (gw, _p, _backend) = setup().await;
    let client = https_client(&gw, &["app"], Alpn::H1);
    let started = Instant::now();
    let resp = client
        .get(gw.url("app", "/sse?n=3&ms=1000"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = within(5, "first event", stream.next())
        .await
        .expect("a chunk")
        .expect("bytes");
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("data: event 0"));
    let mut rest = Vec::new();
    while let Some(chunk) = within(10, "remaining events", stream.next()).await {
        rest.extend_from_slice(&chunk.expect("bytes"));
    }
    let total = started.elapsed();
    assert!(String::from_utf8_lossy(&rest).contains("data: event 2"));
    assert!(
        first_at < Duration::from_millis(900),
        "first event after {first_at:?}"
    );
    assert!(
        total >= Duration::from_millis(1900),
        "response ended after {total:?}"
    );
}

#[tokio::test]
async fn large_upload_and_download_keep_their_sha256() {
    const SIZE: u64 = 256 * 1024 * 1024;
    // The response head comes after the whole upload: allow for a slow, loaded machine.
    let Published {
        gw,
        provider: _provider,
        backend: _backend,
    } = publish(
        GatewayOptions {
            upstream_timeout: Duration::from_secs(120),
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;
    let client = https_client(&gw, &["app"], Alpn::H1);

    // Upload: a streamed body with no Content-Length (chunked), hashed on both ends.
    let chunk = bytes::Bytes::from(vec![0x5au8; 1 << 20]);
    let mut expected = Sha256::new();
    for _ in 0..SIZE >> 20 {
        expected.update(&chunk);
    }
    let expected = hex::encode(expected.finalize());
    let body_stream = futures_util::stream::iter(
        (0..SIZE >> 20).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = within(
        240,
        "256 MiB upload",
        client
            .post(gw.url("app", "/upload"))
            .body(reqwest::Body::wrap_stream(body_stream))
            .send(),
    )
    .await
    .expect("upload");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        format!("{expected} {SIZE}")
    );

    // Download, hashed while streaming.
    let resp = client
        .get(gw.url("app", &format!("/download?bytes={SIZE}")))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = within(60, "download chunk", stream.next()).await {
        let chunk = chunk.expect("bytes");
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!(n, SIZE);
    assert_eq!(hex::encode(h.finalize()), download_sha256(SIZE));
}

/// `openssl s_client` against the gateway with `args`: whether the handshake completed, and
/// what it printed.
async fn s_client(gw: &TestGateway, args: &[&str]) -> (bool, String) {
    let ca = gw.state.path().join("s_client-ca.pem");
    std::fs::write(&ca, &gw.ca_pem).expect("write the dev CA");
    let out = within(
        20,
        "openssl s_client",
        tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &gw.https.to_string()])
            .args(["-servername", "app.apps.test", "-CAfile"])
            .arg(&ca)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("run openssl (Debian: openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A completed handshake prints the negotiated session; a refused one does not.
    let done = out.status.success() && text.contains("Verify return code: 0 (ok)");
    (done, text)
}

/// Checklist S7 with the stock client every distribution has: TLS 1.2 and 1.3 only, no CBC
/// suites, ALPN h2 or http/1.1 (nothing else), and a chain that verifies.
#[tokio::test]
async fn tls_offers_only_modern_versions_suites_and_the_two_http_alpns() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no openssl program");
        return;
    }
    let (gw, _p, _backend) = setup().await;
    for (version, printed) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (done, text) = s_client(&gw, &[version]).await;
        assert!(done, "{version} refused: {text}");
        assert!(
            text.contains(&format!("Protocol  : {printed}"))
                || text.contains(&format!(", {printed},")),
            "{version}: {text}"
        );
    }
    // Refusals must come from the gateway (its alert), not from this openssl's own policy.
    let refused_by_server = |text: &str| text.contains("alert");
    for old in ["-tls1", "-tls1_1"] {
        let (done, text) = s_client(&gw, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]).await;
        assert!(!done && refused_by_server(&text), "{old}: {text}");
    }
    // TLS 1.2 CBC suites for the gateway's ECDSA key: refused (static-RSA suites cannot
    // apply to an ECDSA certificate at all).
    for weak in [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-ECDSA-AES128-SHA256",
    ] {
        let (done, text) = s_client(&gw, &["-tls1_2", "-cipher", weak]).await;
        assert!(
            !done && refused_by_server(&text),
            "TLS 1.2 suite {weak}: {text}"
        );
    }
    for alpn in ["h2", "http/1.1"] {
        let (done, text) = s_client(&gw, &["-alpn", alpn]).await;
        assert!(done, "{alpn}: {text}");
        assert!(
            text.contains(&format!("ALPN protocol: {alpn}")),
            "{alpn}: {text}"
        );
    }
    let (done, text) = s_client(&gw, &["-alpn", "spdy/3"]).await;
    assert!(!done && refused_by_server(&text), "an unknown ALPN: {text}");
}
