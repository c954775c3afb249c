//! Several providers behind one name (issue 14): the owner registers `app`, two other provider
//! keys serve it too with the owner's signed grants (`RegisterGranted`, protocol version 2).
//! Real gateway, real QUIC tunnels, real TLS to visitors; each provider's backend answers with
//! that provider's number, so the body says who served a request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peercompute_identity::Identity;
use peercompute_provider::RegisterError;
use peercompute_tests::counted_gets::counted_gets;
use peercompute_tests::{
    Alpn, DOMAIN, GatewayOptions, TestGateway, TestProvider, https_client, within,
};
use peercompute_tunnel_proto::NameGrant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NAME: &str = "app";
const DAY: u64 = 86_400;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A keep-alive HTTP/1.1 backend answering every request with `id`, after `delay`.
async fn id_backend(id: &'static str, delay: Duration) -> SocketAddr {
    backend(id, delay, false).await
}

/// Like [`id_backend`]; `serial`: one request at a time over all connections (a worker with a
/// fixed service time, so the backend's capacity is `1 / delay`).
async fn backend(id: &'static str, delay: Duration, serial: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let worker = Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let worker = worker.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let busy = if serial {
                            Some(worker.lock().await)
                        } else {
                            None
                        };
                        tokio::time::sleep(delay).await;
                        drop(busy);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{id}",
                            id.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// The gateway, the owner (`p0`) and two grantees (`p1`, `p2`), each with its backend.
struct Shared {
    gw: TestGateway,
    providers: Vec<TestProvider>,
}

async fn three_providers(delays: [Duration; 3]) -> Shared {
    providers(&delays, false).await
}

/// `delays.len()` providers behind [`NAME`]: the first owns it, the others hold grants.
async fn providers(delays: &[Duration], serial: bool) -> Shared {
    let ids: Vec<Identity> = delays.iter().map(|_| TestProvider::identity()).collect();
    let gw = TestGateway::start(GatewayOptions {
        allow: ids.iter().map(Identity::peer_id).collect(),
        ..GatewayOptions::default()
    })
    .await;
    let owner_key = ids[0].signing_key().clone();
    let mut providers = Vec::new();
    for (i, (identity, delay)) in ids.into_iter().zip(delays).enumerate() {
        let id: &'static str = ["p0", "p1", "p2"][i];
        let backend = backend(id, *delay, serial).await;
        let p = TestProvider::start(identity, &gw);
        let url = if i == 0 {
            p.register(NAME, backend).await
        } else {
            let grant = NameGrant::sign(
                &owner_key,
                DOMAIN,
                NAME,
                p.identity.peer_id(),
                now() + 30 * DAY,
                now(),
            )
            .expect("grant signs");
            within(
                15,
                "granted registration",
                p.handle
                    .register_granted(NAME, "127.0.0.1", backend.port(), grant),
            )
            .await
        };
        let url = url.expect("registered");
        assert!(
            url.starts_with(&format!("https://{NAME}.{DOMAIN}")),
            "{url}"
        );
        providers.push(p);
    }
    Shared { gw, providers }
}

/// Runs `total` GETs of the shared name, `concurrency` at a time; calls `at_half` once half
/// have completed. Returns who served each successful GET, the failures, and the elapsed time.
async fn get_loop(
    gw: &TestGateway,
    total: usize,
    concurrency: usize,
    at_half: impl FnMut(),
) -> (BTreeMap<String, usize>, Vec<String>, Duration) {
    let client = https_client(gw, &[NAME], Alpn::H1);
    counted_gets(&client, &gw.url(NAME, "/"), total, concurrency, at_half).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_loop_fails_no_get() {
    let mut s = three_providers([Duration::ZERO; 3]).await;
    let (served, failed, _) = get_loop(&s.gw, 90, 8, || {}).await;
    eprintln!("warm-up, 90 GETs: {served:?}");
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        served.len(),
        3,
        "all three providers serve {NAME}: {served:?}"
    );

    let victim = &mut s.providers[1];
    let (served, failed, took) = get_loop(&s.gw, 600, 8, || victim.kill()).await;
    eprintln!(
        "600 GETs, 8 concurrent, p1 killed after 300: {served:?}, {} failed, {:.0} req/s",
        failed.len(),
        600.0 / took.as_secs_f64()
    );
    assert!(failed.is_empty(), "failed GETs: {failed:?}");
    assert!(served.get("p1").copied().unwrap_or(0) <= 320, "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_gets_fewer_requests() {
    let s = three_providers([Duration::ZERO, Duration::ZERO, Duration::from_millis(200)]).await;
    let (served, failed, took) = get_loop(&s.gw, 600, 8, || {}).await;
    let slow = served.get("p2").copied().unwrap_or(0);
    eprintln!(
        "600 GETs, 8 concurrent, p2's backend sleeps 200 ms: {served:?}; p2 served {:.1} %, {:.0} req/s",
        100.0 * slow as f64 / 600.0,
        600.0 / took.as_secs_f64()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        slow * 5 < 600,
        "the slow provider got {slow} of 600: {served:?}"
    );
    assert!(slow > 0, "the slow provider stays a member: {served:?}");
}

#[tokio::test]
async fn bad_grants_are_refused_with_their_reason() {
    let owner = TestProvider::identity();
    let (stranger, expired, wrong) = (
        TestProvider::identity(),
        TestProvider::identity(),
        TestProvider::identity(),
    );
    let gw = TestGateway::start(GatewayOptions {
        allow: [&owner, &stranger, &expired, &wrong]
            .iter()
            .map(|i| i.peer_id())
            .collect(),
        ..GatewayOptions::default()
    })
    .await;
    let backend = id_backend("p0", Duration::ZERO).await;
    let owner_p = TestProvider::start(owner.clone(), &gw);
    owner_p
        .register(NAME, backend)
        .await
        .expect("owner registers");

    let cases = [
        // (who presents it, signer, grantee named in it, not_after, what the refusal says)
        (
            "expired",
            expired.clone(),
            owner.signing_key().clone(),
            expired.peer_id(),
            now() - 1,
            "expired",
        ),
        (
            "not the owner's",
            stranger.clone(),
            stranger.signing_key().clone(),
            stranger.peer_id(),
            now() + DAY,
            "belongs to",
        ),
        (
            "for another key",
            wrong.clone(),
            owner.signing_key().clone(),
            stranger.peer_id(),
            now() + DAY,
            "not this one",
        ),
    ];
    for (what, presenter, signer, grantee, not_after, says) in cases {
        // Signed with a clock a day behind, so an expired grant can be made at all.
        let grant = NameGrant::sign(&signer, DOMAIN, NAME, grantee, not_after, now() - DAY)
            .expect("grant signs");
        let p = TestProvider::start(presenter, &gw);
        let got = within(
            15,
            "refusal",
            p.handle
                .register_granted(NAME, "127.0.0.1", backend.port(), grant),
        )
        .await;
        match got {
            Err(RegisterError::Refused { reason, .. }) => {
                eprintln!("{what}: refused: {reason}");
                assert!(reason.contains(says), "{what}: {reason}");
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
    // The owner still serves the name alone.
    let (served, failed, _) = get_loop(&gw, 20, 4, || {}).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(served.get("p0"), Some(&20));
}

/// The figure: req/s through one provider vs three behind the same name, each backend a
/// single worker with a 5 ms service time (capacity about 200 req/s), 300 GETs 16 at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_three_providers_vs_one() {
    let service = Duration::from_millis(5);
    let mut rates = Vec::new();
    for n in [1, 3] {
        let s = providers(&vec![service; n], true).await;
        let (served, failed, took) = get_loop(&s.gw, 300, 16, || {}).await;
        assert!(failed.is_empty(), "{failed:?}");
        let rate = 300.0 / took.as_secs_f64();
        eprintln!("{n} provider(s), 5 ms serial backends: {rate:.0} req/s, {served:?}");
        rates.push(rate);
    }
    eprintln!("3 providers vs 1: {:.2}x", rates[1] / rates[0]);
    assert!(
        rates[1] > 1.5 * rates[0],
        "three providers add capacity: {rates:?}"
    );
}
