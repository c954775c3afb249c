//! `--tls acme`, and `--tls auto` on a public domain, against real servers on loopback:
//! Debian's bind9 (RFC 2136 + TSIG) and pebble (RFC 8555). Each test starts its own bind9 and
//! pebble as child processes (killed on drop) and a gateway from the library; clients trust
//! only the root pebble issued from.
//!
//! Figures (time to obtain, renewal swap) are printed with `--no-capture`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peercompute_gateway::{AcmeChallenge, GatewayConfig, TlsMode, TlsSource};
use peercompute_tests::acme::{ACME_DOMAIN, AcmeGateway, Bind9, Pebble, PebbleOptions};
use peercompute_tests::{Backend, TestProvider, within};

const ISSUED: &str = "peercompute_gateway_acme_certificates_issued_total";
const ORDERS: &str = "peercompute_gateway_acme_orders_total";
const FAILURES: &str = "peercompute_gateway_acme_renewal_failures_total";
const EXPIRY: &str = "peercompute_gateway_acme_certificate_expiry_days";

/// bind9 + pebble + a gateway obtaining `acme.test` and `*.acme.test` through DNS-01.
async fn dns01_setup(
    validity_secs: Option<u64>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> (Bind9, Pebble, AcmeGateway) {
    peercompute_tests::init();
    let bind = Bind9::start(ACME_DOMAIN).await;
    let (ports, listeners) = AcmeGateway::bind().await;
    let pebble = Pebble::start(PebbleOptions {
        dns: bind.addr,
        http_port: ports.http.port(),
        tls_port: ports.https.port(),
        validity_secs,
    })
    .await;
    let state = Arc::new(tempfile::tempdir().expect("state dir"));
    let mut config = AcmeGateway::config(&state, &ports);
    config.acme_directory = pebble.directory.clone();
    config.acme_ca = Some(pebble.ca_path.clone());
    config.acme_email = Some("ops@acme.test".into());
    config.acme_challenge = Some(AcmeChallenge::Dns01);
    config.dns_server = Some(bind.addr.to_string());
    config.dns_tsig_key = Some(bind.key_path.clone());
    tweak(&mut config);
    let gw = AcmeGateway::start(state, ports, listeners, config);
    (bind, pebble, gw)
}

fn series(name: &str, certificate: &str) -> String {
    format!("{name}{{certificate=\"{certificate}\"}}")
}

#[tokio::test]
async fn dns01_wildcard_is_obtained_served_and_its_records_removed() {
    let (bind, pebble, gw) = dns01_setup(None, |_| {}).await;
    let started = Instant::now();
    gw.wait_metric(&series(ISSUED, ACME_DOMAIN), 1.0, 30).await;
    eprintln!(
        "figure: wildcard certificate from pebble via DNS-01 in {:?} after the gateway started",
        started.elapsed()
    );
    let root = pebble.root_pem().await;
    let sub = gw
        .handshake("x.acme.test", &root, &[b"h2"])
        .await
        .expect("x.acme.test verifies against pebble's root");
    let apex = gw
        .handshake(ACME_DOMAIN, &root, &[b"http/1.1"])
        .await
        .expect("acme.test verifies against pebble's root");
    assert_eq!(sub, apex, "one certificate covers D and *.D");

    // What a visitor sees: a verified HTTPS answer (the apex page, no app registered).
    let resp = gw
        .client(&root, &["x"])
        .get(format!("https://{ACME_DOMAIN}:{}/", gw.ports.https.port()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(resp.status(), 404);
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("Peer Compute gateway")
    );

    // The challenge records are gone; the probe shows the query itself works.
    assert_eq!(bind.txt("probe.acme.test").await, ["probe"]);
    assert!(bind.txt("_acme-challenge.acme.test").await.is_empty());

    for file in ["acme/account.json", "acme/certs/acme.test.pem"] {
        let mode = std::fs::metadata(gw.state.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let days = gw.metric(&series(EXPIRY, ACME_DOMAIN)).await;
    assert!(days > 300.0, "pebble's default lifetime is years: {days}");
    assert_eq!(gw.metric(FAILURES).await, 0.0);
}

#[tokio::test]
async fn restart_with_acme_server_down_serves_the_stored_certificate() {
    let (_bind, mut pebble, gw) = dns01_setup(None, |_| {}).await;
    gw.wait_metric(&series(ISSUED, ACME_DOMAIN), 1.0, 30).await;
    let root = pebble.root_pem().await;
    let before = gw
        .handshake("a.acme.test", &root, &[b"h2"])
        .await
        .expect("first handshake");
    pebble.stop();
    let gw = gw.restart().await;
    let after = gw
        .handshake("b.acme.test", &root, &[b"h2"])
        .await
        .expect("handshake after restart without pebble");
    assert_eq!(before, after, "the stored certificate is served");
    assert_eq!(
        gw.metric(ORDERS).await,
        0.0,
        "nothing is due: no order after the restart"
    );
}

#[tokio::test]
async fn renewal_swaps_in_a_new_certificate_while_a_long_request_completes() {
    // 12 s certificates: renewal is due 8 s after issue.
    let (bind, pebble, gw) = dns01_setup(Some(12), |_| {}).await;
    gw.wait_metric(&series(ISSUED, ACME_DOMAIN), 1.0, 30).await;
    let issued_at = Instant::now();
    let root = pebble.root_pem().await;
    let backend = Backend::start().await;
    let provider = TestProvider::start_to(TestProvider::identity(), gw.peer_id, gw.ports.tunnel);
    provider
        .register("app", backend.addr)
        .await
        .expect("register app");
    let first = gw
        .handshake("app.acme.test", &root, &[b"h2"])
        .await
        .expect("first certificate");

    let client = gw.client(&root, &["app"]);
    let slow_url = gw.url("app", "/slow?ms=20000");
    let slow = tokio::spawn(async move {
        let resp = client.get(slow_url).send().await.expect("long request");
        (resp.status(), resp.text().await.expect("long body"))
    });

    gw.wait_metric(&series(ISSUED, ACME_DOMAIN), 2.0, 40).await;
    eprintln!(
        "figure: renewed certificate swapped in {:?} after the first was issued (due at 2/3 of 12 s)",
        issued_at.elapsed()
    );
    assert!(
        !slow.is_finished(),
        "the long request is still in flight across the swap"
    );
    let second = gw
        .handshake("app.acme.test", &root, &[b"h2"])
        .await
        .expect("renewed certificate");
    assert_ne!(first, second, "new handshakes get the new certificate");

    let (status, body) = within(40, "long request", slow).await.expect("task");
    assert_eq!(status, 200);
    assert_eq!(body, "slept 20000 ms");
    assert!(bind.txt("_acme-challenge.acme.test").await.is_empty());
    assert_eq!(gw.metric(FAILURES).await, 0.0);
}

#[tokio::test]
async fn renewal_failure_keeps_the_old_certificate_in_service() {
    // 15 s certificates, renewal due after 10 s, by then pebble is gone.
    let (_bind, mut pebble, gw) = dns01_setup(Some(15), |c| {
        c.acme_retry_initial = Duration::from_millis(200);
    })
    .await;
    gw.wait_metric(&series(ISSUED, ACME_DOMAIN), 1.0, 30).await;
    let root = pebble.root_pem().await;
    let before = gw
        .handshake("a.acme.test", &root, &[b"h2"])
        .await
        .expect("first handshake");
    pebble.stop();
    gw.wait_metric(&series(FAILURES, ACME_DOMAIN), 3.0, 30)
        .await;
    let after = gw
        .handshake("a.acme.test", &root, &[b"h2"])
        .await
        .expect("still served after failed renewals");
    assert_eq!(
        before, after,
        "the old certificate stays until a new one is valid"
    );
    let days = gw.metric(&series(EXPIRY, ACME_DOMAIN)).await;
    assert!(days > 0.0 && days < 1.0, "expiry gauge: {days}");
}

/// Collects log output for assertions.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// current_thread: every gateway task runs on this thread, under the capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn failing_acme_server_is_retried_with_backoff_counted_and_logged() {
    use tracing_subscriber::util::SubscriberInitExt;
    peercompute_tests::init();
    let capture = Capture::default();
    let writer = capture.clone();
    let _log = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .finish()
        .set_default();

    // An "ACME server" that accepts and hangs up: every attempt is one connection.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let directory = format!("https://{}/dir", server.local_addr().expect("addr"));
    let attempts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let seen = attempts.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((tcp, _)) = server.accept().await {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Instant::now());
            drop(tcp);
        }
    });

    let key_dir = tempfile::tempdir().expect("key dir");
    let key = key_dir.path().join("k.key");
    std::fs::write(
        &key,
        "key \"k\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n",
    )
    .expect("key file");
    let (ports, listeners) = AcmeGateway::bind().await;
    let state = Arc::new(tempfile::tempdir().expect("state"));
    let mut config = AcmeGateway::config(&state, &ports);
    config.acme_directory = directory;
    config.acme_challenge = Some(AcmeChallenge::Dns01);
    config.dns_server = Some("127.0.0.1:9".into());
    config.dns_tsig_key = Some(key);
    config.acme_retry_initial = Duration::from_millis(200);
    let gw = AcmeGateway::start(state, ports, listeners, config);

    let deadline = Instant::now() + Duration::from_secs(20);
    let times = loop {
        let t = attempts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if t.len() >= 5 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "only {} attempts in 20 s",
            t.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Backoff honoured: 200 ms, 400 ms, 800 ms, 1.6 s between attempts.
    for (i, pair) in times.windows(2).take(4).enumerate() {
        let gap = pair[1] - pair[0];
        let want = Duration::from_millis(200 << i);
        assert!(
            gap >= want.mul_f64(0.9) && gap < want * 3 + Duration::from_millis(500),
            "gap {i}: {gap:?}, expected about {want:?} (all: {times:?})"
        );
    }
    assert!(gw.metric(&series(FAILURES, ACME_DOMAIN)).await >= 4.0);
    let health = reqwest::get(format!("http://{}/healthz", gw.ports.admin))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "the gateway is still up");
    let log =
        String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(
        log.contains("ACME order failed") && log.contains("retry_in"),
        "log line about the failure: {log}"
    );
    acceptor.abort();
}

/// bind9 (names resolve to 127.0.0.1) + pebble validating on the gateway's ports + a gateway
/// ordering per-name certificates with `challenge`.
async fn per_name_setup(challenge: AcmeChallenge) -> (Bind9, Pebble, AcmeGateway) {
    peercompute_tests::init();
    let bind = Bind9::start(ACME_DOMAIN).await;
    let (ports, listeners) = AcmeGateway::bind().await;
    let pebble = Pebble::start(PebbleOptions {
        dns: bind.addr,
        http_port: ports.http.port(),
        tls_port: ports.https.port(),
        validity_secs: None,
    })
    .await;
    let state = Arc::new(tempfile::tempdir().expect("state dir"));
    let mut config = AcmeGateway::config(&state, &ports);
    config.acme_directory = pebble.directory.clone();
    config.acme_ca = Some(pebble.ca_path.clone());
    config.acme_challenge = Some(challenge);
    let gw = AcmeGateway::start(state, ports, listeners, config);
    (bind, pebble, gw)
}

/// A registered name gets a certificate that serves a verified request, and so does the
/// apex; an unregistered name a visitor asks for gets neither a certificate nor an order.
async fn registered_name_only(challenge: AcmeChallenge) {
    let (_bind, pebble, gw) = per_name_setup(challenge).await;
    let backend = Backend::start().await;
    let provider = TestProvider::start_to(TestProvider::identity(), gw.peer_id, gw.ports.tunnel);
    let started = Instant::now();
    provider
        .register("blog", backend.addr)
        .await
        .expect("register blog");
    gw.wait_metric(&series(ISSUED, "blog.acme.test"), 1.0, 30)
        .await;
    eprintln!(
        "figure: {challenge:?} certificate for blog.acme.test in {:?} after registration",
        started.elapsed()
    );
    let root = pebble.root_pem().await;
    let resp = gw
        .client(&root, &["blog"])
        .get(gw.url("blog", "/"))
        .send()
        .await
        .expect("verified HTTPS request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "hello from backend");

    // A visitor asking for a name nobody registered: no certificate, no order.
    let err = gw
        .handshake("nobody.acme.test", &root, &[b"h2"])
        .await
        .expect_err("no certificate for an unregistered name");
    assert!(!err.is_empty());
    // Bounded negative check: the manager ticks on events; give it a moment to misbehave.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = gw.metrics().await;
    assert!(!metrics.contains("nobody.acme.test"), "{metrics}");
    assert_eq!(
        gw.metric(ORDERS).await,
        2.0,
        "two orders: the apex at start, then blog"
    );
    assert_eq!(gw.metric(&series(ORDERS, "blog.acme.test")).await, 1.0);
    apex_page_is_served(&gw, &root).await;
}

/// In per-name mode the apex gets its own certificate at start: its page answers a verified
/// request.
async fn apex_page_is_served(gw: &AcmeGateway, root: &[u8]) {
    let apex = gw.config.domain.clone();
    gw.wait_metric(&series(ISSUED, &apex), 1.0, 30).await;
    let resp = gw
        .client(root, &[])
        .get(format!("https://{apex}:{}/", gw.ports.https.port()))
        .send()
        .await
        .expect("verified HTTPS request to the apex");
    assert_eq!(resp.status(), 404);
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("Peer Compute gateway")
    );
}

#[tokio::test]
async fn http01_orders_only_for_a_registered_name() {
    registered_name_only(AcmeChallenge::Http01).await;
}

#[tokio::test]
async fn tls_alpn01_orders_only_for_a_registered_name() {
    registered_name_only(AcmeChallenge::TlsAlpn01).await;
}

#[tokio::test]
async fn tls_alpn01_handshake_without_a_live_challenge_is_refused() {
    let (_bind, pebble, gw) = per_name_setup(AcmeChallenge::TlsAlpn01).await;
    let root = pebble.root_pem().await;
    let backend = Backend::start().await;
    let provider = TestProvider::start_to(TestProvider::identity(), gw.peer_id, gw.ports.tunnel);
    provider
        .register("blog", backend.addr)
        .await
        .expect("register");
    gw.wait_metric(&series(ISSUED, "blog.acme.test"), 1.0, 30)
        .await;
    // A validation-style handshake (only acme-tls/1) gets no certificate once the order is
    // over; browsers (h2 / http/1.1) get the real one.
    assert!(
        gw.handshake("blog.acme.test", &root, &[b"acme-tls/1"])
            .await
            .is_err()
    );
    gw.handshake("blog.acme.test", &root, &[b"h2", b"http/1.1"])
        .await
        .expect("normal handshake");
}

/// A domain that is not local: `--tls auto` must pick ACME for it. It never leaves this
/// machine: pebble resolves it through the test's bind9.
const PUBLIC_DOMAIN: &str = "apps.example.com";

/// `--tls auto` (the default) on a public domain with no DNS-01 settings: the gateway says at
/// start that it uses ACME with per-name certificates (HTTP-01 with the HTTP listener, else
/// TLS-ALPN-01), and a registered name gets a certificate from the ACME server that a
/// visitor's verified request is served with.
async fn auto_on_a_public_domain(http_listener: bool) {
    use tracing_subscriber::util::SubscriberInitExt;
    peercompute_tests::init();
    let capture = Capture::default();
    let writer = capture.clone();
    let _log = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .finish()
        .set_default();

    let bind = Bind9::start(PUBLIC_DOMAIN).await;
    let (ports, mut listeners) = AcmeGateway::bind().await;
    let pebble = Pebble::start(PebbleOptions {
        dns: bind.addr,
        http_port: ports.http.port(),
        tls_port: ports.https.port(),
        validity_secs: None,
    })
    .await;
    let state = Arc::new(tempfile::tempdir().expect("state dir"));
    let mut config = AcmeGateway::config(&state, &ports);
    config.domain = PUBLIC_DOMAIN.into();
    config.tls = TlsMode::Auto;
    // Only the directory changes (Let's Encrypt is the default): pebble, and its CA.
    config.acme_directory = pebble.directory.clone();
    config.acme_ca = Some(pebble.ca_path.clone());
    if !http_listener {
        config.http_listen = None;
        listeners.http = None;
    }
    let challenge = if http_listener {
        AcmeChallenge::Http01
    } else {
        AcmeChallenge::TlsAlpn01
    };
    assert_eq!(config.tls_choice().source, TlsSource::Acme(challenge));
    let gw = AcmeGateway::start(state, ports, listeners, config);

    let backend = Backend::start().await;
    let provider = TestProvider::start_to(TestProvider::identity(), gw.peer_id, gw.ports.tunnel);
    let started = Instant::now();
    provider
        .register("blog", backend.addr)
        .await
        .expect("register blog");
    let host = format!("blog.{PUBLIC_DOMAIN}");
    gw.wait_metric(&series(ISSUED, &host), 1.0, 30).await;
    eprintln!(
        "figure: --tls auto ({challenge:?}) certificate for {host} in {:?} after registration",
        started.elapsed()
    );
    let root = pebble.root_pem().await;
    let resp = gw
        .client(&root, &["blog"])
        .get(gw.url("blog", "/"))
        .send()
        .await
        .expect("HTTPS request verified against the ACME server's root");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "hello from backend");
    assert_eq!(gw.metric(&series(ORDERS, &host)).await, 1.0);
    apex_page_is_served(&gw, &root).await;

    let log =
        String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("TLS: ")).collect();
    let (name, port, why) = if http_listener {
        ("http-01", "HTTP", "no DNS-01 settings are given")
    } else {
        (
            "tls-alpn-01",
            "HTTPS",
            "neither DNS-01 settings nor the HTTP listener are given",
        )
    };
    let want = format!(
        "TLS: acme ({name} on the {port} port, per-name certificates from {}) because \
         {PUBLIC_DOMAIN} is a public domain and {why}; --tls dev for a private CA",
        pebble.directory
    );
    assert!(
        lines.len() == 1 && lines[0].ends_with(&want),
        "one start-up line {want:?}; got {lines:?}"
    );
}

// current_thread: every gateway task runs on this thread, under the capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn auto_on_a_public_domain_gets_a_per_name_certificate_by_http01() {
    auto_on_a_public_domain(true).await;
}

#[tokio::test(flavor = "current_thread")]
async fn auto_on_a_public_domain_without_http_uses_tls_alpn01() {
    auto_on_a_public_domain(false).await;
}
