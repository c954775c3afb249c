//! Abuse and policy at the edge: name ownership, provider admission, rate limits, header
//! limits, slowloris.

use std::time::{Duration, Instant};

use peercompute_provider::RegisterError;
use peercompute_tests::h2raw::{h2_frame, h2_preface, h2_request_block, h2_until_goaway};
use peercompute_tests::{
    Alpn, Backend, GatewayOptions, Published, TestGateway, TestProvider, https_client, publish,
    raw_tls, raw_tls_alpn, within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn assert_owned(result: Result<String, RegisterError>) {
    match result {
        Err(RegisterError::Refused { reason, .. }) => {
            assert_eq!(reason, "name owned by another provider");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn another_key_cannot_take_a_name_online_offline_or_after_restart() {
    let (alice_id, mallory_id) = (TestProvider::identity(), TestProvider::identity());
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![alice_id.peer_id(), mallory_id.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let mut alice = TestProvider::start(alice_id.clone(), &gw);
    alice
        .register("blog", backend.addr)
        .await
        .expect("alice registers");
    let mallory = TestProvider::start(mallory_id, &gw);

    // 1. While the owner is online.
    assert_owned(mallory.register("blog", backend.addr).await);
    // 2. After the owner disconnected.
    alice.stop().await;
    assert_owned(mallory.register("blog", backend.addr).await);
    // 3. After a gateway restart.
    let gw = gw.restart().await;
    mallory.connected().await;
    assert_owned(mallory.register("blog", backend.addr).await);
    // The owner reconnecting gets its name back.
    let alice = TestProvider::start(alice_id, &gw);
    let url = alice
        .register("blog", backend.addr)
        .await
        .expect("owner gets the name back");
    assert_eq!(url, gw.url("blog", ""));
    let client = https_client(&gw, &["blog"], Alpn::H1);
    assert_eq!(
        client
            .get(gw.url("blog", "/"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
}

#[tokio::test]
async fn unlisted_provider_is_refused_with_a_reason() {
    let listed = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![listed.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let stranger = TestProvider::start(TestProvider::identity(), &gw);
    let reason = stranger.refused().await;
    assert!(reason.contains("not allowed"), "{reason}");
    assert!(
        reason.contains("--allow-provider"),
        "says how to fix: {reason}"
    );
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("peercompute_gateway_tunnels_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn allowlist_file_changes_apply_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("providers.txt");
    std::fs::write(&file, "# nobody yet\n").expect("write");
    let id = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow_file: Some(file.clone()),
        ..GatewayOptions::default()
    })
    .await;
    let provider = TestProvider::start(id.clone(), &gw);
    provider.refused().await;
    std::fs::write(&file, format!("{}\n", id.peer_id())).expect("rewrite");
    // The provider retries on its own and is now admitted.
    provider.connected().await;
}

#[tokio::test]
async fn rate_limit_429_count_matches_token_bucket() {
    const RATE: u32 = 20;
    const SENT: u32 = 120;
    let Published {
        gw,
        provider,
        backend,
    } = publish(
        GatewayOptions {
            rate_limit: RATE,
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;
    provider
        .register("other", backend.addr)
        .await
        .expect("register");
    let client = https_client(&gw, &["app", "other"], Alpn::H2);

    let started = Instant::now();
    let mut ok = 0u32;
    let mut limited = 0u32;
    let mut retry_after = None;
    let sends = (0..SENT).map(|_| client.get(gw.url("app", "/")).send());
    for resp in futures_util::future::join_all(sends).await {
        let resp = resp.expect("request");
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                retry_after = resp.headers().get("retry-after").cloned();
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Burst of RATE, then RATE per second of elapsed time (+1 for the token in progress).
    let allowed = f64::from(RATE) + f64::from(RATE) * elapsed + 1.0;
    assert!(
        f64::from(ok) <= allowed,
        "{ok} accepted, bucket allows {allowed:.1} in {elapsed:.2}s"
    );
    assert!(ok >= RATE, "the whole burst of {RATE} is served, got {ok}");
    assert_eq!(ok + limited, SENT);
    assert_eq!(
        backend.requests() as u32,
        ok,
        "refused requests never reach the provider"
    );
    assert_eq!(retry_after.expect("Retry-After on 429"), "1");
    // Another hostname has its own bucket.
    let resp = client
        .get(gw.url("other", "/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "peercompute_gateway_rate_limited_total{{kind=\"host\"}} {limited}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_header_count_is_capped() {
    let Published {
        gw,
        provider: _provider,
        backend,
    } = publish(
        GatewayOptions {
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;

    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.apps.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: app.apps.test\r\n{many}\r\n");
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: app.apps.test\r\n\r\n",
        "u".repeat(10 * 1024)
    );
    for (what, request, want) in [
        ("big header", big, "431"),
        ("200 headers", many, "431"),
        ("10 KiB URI", long_uri, "414"),
    ] {
        let mut tls = raw_tls(&gw, "app").await;
        let _ = tls.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = within(10, "answer and close", tls.read_to_end(&mut answer)).await;
        let head = String::from_utf8_lossy(&answer);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {want}")),
            "{what}: {head}"
        );
    }
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn slowloris_is_cut_at_the_header_timeout_while_others_are_served() {
    let Published {
        gw,
        provider: _provider,
        backend: _backend,
    } = publish(
        GatewayOptions {
            header_read_timeout: Duration::from_secs(1),
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;

    let mut slow = raw_tls(&gw, "app").await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.apps.test\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let trickle = async {
        let mut buf = [0u8; 512];
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        for i in 0..100 {
            tokio::select! {
                _ = tick.tick() => {
                    if slow.write_all(format!("X-{i}: y\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
                n = slow.read(&mut buf) => {
                    if matches!(n, Ok(0) | Err(_)) {
                        return;
                    }
                }
            }
        }
    };
    let client = https_client(&gw, &["app"], Alpn::H1);
    let normal = async {
        let t = Instant::now();
        let resp = client
            .get(gw.url("app", "/"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        t.elapsed()
    };
    let ((), normal_took) = within(15, "slowloris to be cut", async {
        tokio::join!(trickle, normal)
    })
    .await;
    let cut_after = started.elapsed();
    assert!(
        cut_after < Duration::from_secs(4),
        "slow connection lived {cut_after:?}"
    );
    assert!(
        normal_took < Duration::from_secs(1),
        "normal request took {normal_took:?}"
    );
}

#[tokio::test]
async fn a_provider_removed_from_the_allowlist_is_cut_off_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("providers.txt");
    let id = TestProvider::identity();
    std::fs::write(&file, format!("{}\n", id.peer_id())).expect("write");
    let gw = TestGateway::start(GatewayOptions {
        allow_file: Some(file.clone()),
        upstream_timeout: Duration::from_secs(30),
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(id.clone(), &gw);
    provider
        .register("app", backend.addr)
        .await
        .expect("register");
    let client = https_client(&gw, &["app"], Alpn::H1);
    let get = |path: &str| client.get(gw.url("app", path)).send();
    assert_eq!(get("/").await.expect("before").status(), 200);
    let in_flight = tokio::spawn(get("/slow?ms=20000"));

    std::fs::write(&file, "# nobody\n").expect("revoke");
    let revoked = Instant::now();
    let status = loop {
        let status = within(10, "request after revocation", get("/"))
            .await
            .expect("answer")
            .status();
        if status != 200 || revoked.elapsed() > Duration::from_secs(10) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cut_after = revoked.elapsed();
    eprintln!("new requests refused {cut_after:?} after the allowlist changed");
    assert_eq!(
        status, 502,
        "the app is offline once its provider is revoked"
    );
    assert!(
        cut_after < Duration::from_millis(1500),
        "revocation took {cut_after:?}"
    );
    // The request in flight on the revoked tunnel ends too, instead of running on.
    let in_flight = within(5, "in-flight request ends", in_flight)
        .await
        .expect("joined");
    assert!(
        !matches!(&in_flight, Ok(r) if r.status() != 502),
        "in-flight request: {in_flight:?}"
    );
    let reason = provider.refused().await;
    assert!(
        reason.contains("removed from this gateway's allowlist"),
        "{reason}"
    );
}

/// Checklist B6: HTTP/2 abuse on one connection ends that connection (GOAWAY), reaches the
/// provider a bounded number of times, and leaves every other visitor served.
#[tokio::test]
async fn http2_abuse_gets_goaway_and_others_are_served() {
    let Published {
        gw,
        provider: _provider,
        backend,
    } = publish(GatewayOptions::default(), "app").await;
    let client = https_client(&gw, &["app"], Alpn::H2);
    let check_others = || async {
        let started = Instant::now();
        let resp = client
            .get(gw.url("app", "/"))
            .send()
            .await
            .expect("another visitor's request");
        assert_eq!(resp.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    };

    // Rapid reset (CVE-2023-44487): open and cancel 2000 streams at once.
    let mut conn = raw_tls_alpn(&gw, "app", b"h2").await;
    let before = backend.requests();
    let mut burst = h2_preface();
    for i in 0..2000u32 {
        let stream = 2 * i + 1;
        burst.extend(h2_frame(0x1, 0x5, stream, &h2_request_block(false)));
        burst.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    let _ = conn.write_all(&burst).await;
    let code = h2_until_goaway(&mut conn, 10).await;
    assert_eq!(code, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM expected");
    let reached = backend.requests() - before;
    assert!(
        reached <= 300,
        "{reached} of 2000 reset streams reached the app"
    );
    check_others().await;

    // CONTINUATION flood: one header block that never ends, 16 KiB at a time.
    let mut conn = raw_tls_alpn(&gw, "app", b"h2").await;
    let mut start = h2_preface();
    start.extend(h2_frame(0x1, 0x1, 1, &h2_request_block(false)));
    let _ = conn.write_all(&start).await;
    // A literal header with a new name, `x-flood`, and a 16000-byte value per frame (under
    // the default 16 KiB frame size, so it is the header limit that must act).
    let mut piece = vec![0x00, 0x07];
    piece.extend(b"x-flood");
    piece.extend([0x7f, 0x81, 0x7c]); // 127 + 1 + 124 * 128 = 16000
    piece.extend(vec![b'a'; 16_000]);
    let mut sent = 0usize;
    let (mut reader, mut writer) = tokio::io::split(conn);
    let flood = async {
        for _ in 0..1024 {
            let frame = h2_frame(0x9, 0, 1, &piece);
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            sent += frame.len();
        }
    };
    let (_, code) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(10), flood),
        h2_until_goaway(&mut reader, 10)
    );
    // The header-list limit acts (not a framing error: each frame is under 16 KiB).
    assert_eq!(code, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM expected");
    // The flood stops long before its 1024 frames (16 MB): what was written is what the
    // kernel buffered before the gateway closed.
    assert!(
        sent < 8 << 20,
        "{sent} bytes of one header block were taken"
    );
    check_others().await;

    // Empty DATA frames (CVE-2019-9518): a POST whose body is 20000 empty frames.
    let mut conn = raw_tls_alpn(&gw, "app", b"h2").await;
    let mut burst = h2_preface();
    burst.extend(h2_frame(0x1, 0x4, 1, &h2_request_block(true)));
    for _ in 0..20_000 {
        burst.extend(h2_frame(0x0, 0, 1, &[]));
    }
    let _ = conn.write_all(&burst).await;
    check_others().await;
    let code = h2_until_goaway(&mut conn, 10).await;
    assert_eq!(code, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM expected");
}

/// As many visitors as the tunnel's stream cap, each sending its next request as soon as the
/// last answer arrived: every request is served. (Idle streams in the gateway's pool hold
/// stream permits too; before they were given back at the cap, a stream still on its way back
/// to the pool made a new one open, and the request after it waited a second for a permit held
/// by an idle stream and got 502 — L1's 1000 visitors against the 1024 cap found it.)
#[tokio::test]
async fn visitors_up_to_the_stream_cap_are_all_served() {
    const CAP: usize = 16;
    let Published {
        gw,
        provider: _provider,
        backend: _backend,
    } = publish(
        GatewayOptions {
            max_streams_per_tunnel: CAP,
            ..GatewayOptions::default()
        },
        "capped",
    )
    .await;
    let client = https_client(&gw, &["capped"], Alpn::H1);
    let url = gw.url("capped", "/");
    let deadline = Instant::now() + Duration::from_secs(4);
    let visitors = (0..CAP).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let (mut ok, mut other) = (0usize, Vec::new());
            // Bounded: at most 2000 requests or 4 s per visitor.
            for _ in 0..2000 {
                if Instant::now() >= deadline {
                    break;
                }
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok += 1;
                    }
                    Ok(r) => other.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => other.push(format!("{e:#}")),
                }
            }
            (ok, other)
        })
    });
    let results = within(30, "the visitors", futures_util::future::join_all(visitors)).await;
    let (mut ok, mut failed) = (0, Vec::new());
    for r in results {
        let (n, other) = r.expect("visitor task");
        ok += n;
        failed.extend(other);
    }
    println!(
        "{CAP} visitors at a cap of {CAP} streams: {ok} served, {} not",
        failed.len()
    );
    assert!(ok > 0);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {}",
        failed.len(),
        ok + failed.len(),
        failed[0]
    );
}
