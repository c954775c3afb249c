//! Several gateways sharing names through one real etcd (`--cluster`, issue 14): in-process
//! gateways on loopback, real providers, `/usr/bin/etcd` on free loopback ports.
//!
//! - Two fresh keys racing for one fresh name at two gateways: exactly one wins, the other
//!   is refused `NameOwned`, and etcd holds the winner (20 rounds).
//! - A release at gateway A drops the route at gateway B, whose provider is told, and the
//!   hold on the previous key holds at B too.
//! - A revocation written to the cluster closes the provider's tunnels at both gateways
//!   within 1 s.
//! - etcd stopped: known names keep answering (their owner reconnecting gets them back), a
//!   new name is refused `TryLater` with the sentence that says so, `cluster_up` reads 0;
//!   etcd back: the name registers with no action by the provider.
//! - A key's owned names stay capped (`max_owned_names_per_provider`) in cluster mode; a
//!   gateway reaches a TLS etcd (`etcds://`, client certificate) with the `--cluster-*` files.
//! - The operator command (`peercompute-gateway cluster …`, the real binary) lists names,
//!   shows status and revokes a provider, whose tunnel closes; plain etcd:// off loopback
//!   is refused.
//! - A name served at gateway A and not at B: B answers at once 502 "… is served by another
//!   gateway of this domain right now (A's id); retry in a few seconds" with `Retry-After: 2`,
//!   counted as `kind="elsewhere"`; once the provider leaves A, B's answer is today's 404.

use std::time::{Duration, Instant};

use peercompute_cluster::{ClusterOptions, ClusterStore, ClusterTls};
use peercompute_provider::RegisterError;
use peercompute_tests::admin::AdminClient;
use peercompute_tests::daemon::workspace_bin;
use peercompute_tests::etcd::EtcdServer;
use peercompute_tests::{
    Alpn, Backend, DOMAIN, GatewayOptions, TestGateway, TestProvider, https_client, within,
};
use peercompute_tunnel_proto::RefuseCode;
use tokio::sync::{Barrier, watch};

/// The refusal a provider's key gets for a name the operator released from it.
const OPERATOR_RELEASE: RefuseCode = RefuseCode::Other(4);
/// What a provider is told while etcd is away.
const ETCD_AWAY: &str =
    "new names are refused until it is back; names already registered keep working";

async fn gateway(etcd: &EtcdServer) -> TestGateway {
    TestGateway::start(GatewayOptions {
        open: true,
        cluster: Some(vec![etcd.cluster_endpoint()]),
        ..GatewayOptions::default()
    })
    .await
}

/// A store of the test's own on the same etcd, to read what the gateways wrote.
async fn reader(etcd: &EtcdServer) -> ClusterStore {
    ClusterStore::connect(
        &[etcd.cluster_endpoint()],
        ClusterOptions::new(DOMAIN, "test-reader"),
    )
    .await
    .expect("the test's own cluster store")
}

/// Waits (woken by `changes`) until `check` holds, at most 5 s.
async fn eventually(mut changes: watch::Receiver<u64>, what: &str, check: impl Fn() -> bool) {
    within(5, what, async {
        loop {
            changes.mark_unchanged();
            if check() {
                return;
            }
            changes.changed().await.expect("store alive");
        }
    })
    .await;
}

/// One etcd, gateways A and B on it, and one provider key with a tunnel to each.
struct OneKeyTwoGateways {
    etcd: EtcdServer,
    a: TestGateway,
    b: TestGateway,
    backend: Backend,
    key: peercompute_identity::Identity,
    at_a: TestProvider,
    at_b: TestProvider,
}

async fn one_key_at_two_gateways() -> OneKeyTwoGateways {
    let etcd = EtcdServer::start().await;
    let (a, b) = (gateway(&etcd).await, gateway(&etcd).await);
    let key = TestProvider::identity();
    let at_a = TestProvider::start(key.clone(), &a);
    let at_b = TestProvider::start(key.clone(), &b);
    OneKeyTwoGateways {
        etcd,
        a,
        b,
        backend: Backend::start().await,
        key,
        at_a,
        at_b,
    }
}

fn refused_with(result: &Result<String, RegisterError>, want: RefuseCode) -> bool {
    matches!(result, Err(RegisterError::Refused { code, .. }) if *code == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_racing_for_one_name_at_two_gateways_exactly_one_wins_twenty_times() {
    let etcd = EtcdServer::start().await;
    let (a, b) = (gateway(&etcd).await, gateway(&etcd).await);
    let etcd_view = reader(&etcd).await;
    let backend = Backend::start().await;
    let mut wins = [0usize; 2];
    let started = Instant::now();
    for round in 0..20 {
        let name = format!("race-{round}");
        let keys = [TestProvider::identity(), TestProvider::identity()];
        let mut at_a = TestProvider::start(keys[0].clone(), &a);
        let mut at_b = TestProvider::start(keys[1].clone(), &b);
        tokio::join!(at_a.connected(), at_b.connected());
        let barrier = Barrier::new(2);
        let (ra, rb) = tokio::join!(
            async {
                barrier.wait().await;
                at_a.register(&name, backend.addr).await
            },
            async {
                barrier.wait().await;
                at_b.register(&name, backend.addr).await
            },
        );
        let winner = match (&ra, &rb) {
            (Ok(_), _) if refused_with(&rb, RefuseCode::NameOwned) => 0,
            (_, Ok(_)) if refused_with(&ra, RefuseCode::NameOwned) => 1,
            _ => panic!("round {round}: want one Registered and one NameOwned: {ra:?} / {rb:?}"),
        };
        wins[winner] += 1;
        let owner = keys[winner].peer_id().to_string();
        eventually(etcd_view.name_changes(), "etcd holds the winner", || {
            etcd_view.owner(&name).as_deref() == Some(owner.as_str())
        })
        .await;
        at_a.stop().await;
        at_b.stop().await;
    }
    eprintln!(
        "20 races in {:?}: gateway A's key won {}, gateway B's key won {}",
        started.elapsed(),
        wins[0],
        wins[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_at_one_gateway_drops_the_route_at_the_other() {
    let OneKeyTwoGateways {
        etcd: _etcd,
        a,
        b,
        backend,
        key,
        at_a,
        at_b,
    } = one_key_at_two_gateways().await;
    at_a.register("shared", backend.addr).await.expect("at A");
    at_b.register("shared", backend.addr)
        .await
        .expect("at B: the same key's name");
    let visitor_b = https_client(&b, &["shared"], Alpn::H1);
    let get_b = || async {
        let resp = visitor_b.get(b.url("shared", "/")).send().await;
        resp.expect("GET at B").status().as_u16()
    };
    assert_eq!(get_b().await, 200);

    let mut events_b = AdminClient::new(b.admin).events(None).await;
    let released_at = Instant::now();
    let (status, body) = AdminClient::new(a.admin)
        .delete("/api/v1/names/shared")
        .await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(body["previous_owner"], key.peer_id().to_string());
    events_b
        .until(5, |m| {
            m.event == "name_released" && m.json()["name"] == "shared"
        })
        .await;
    let took = released_at.elapsed();
    assert_eq!(get_b().await, 404, "the route at B is gone");
    eprintln!("release at A → route dropped at B in {took:?}");

    // The provider at B was told, and the hold on its key holds at B too.
    let again = at_b.register("shared", backend.addr).await;
    assert!(refused_with(&again, OPERATOR_RELEASE), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_in_the_cluster_closes_the_tunnels_at_both_gateways_within_a_second() {
    let OneKeyTwoGateways {
        etcd,
        a,
        b,
        backend,
        key,
        at_a,
        at_b,
    } = one_key_at_two_gateways().await;
    at_a.register("rv-a", backend.addr).await.expect("at A");
    at_b.register("rv-b", backend.addr).await.expect("at B");
    let operator = reader(&etcd).await;
    let started = Instant::now();
    operator
        .revoke(&key.peer_id().to_string(), "key leaked")
        .await
        .expect("revoke");
    let (ra, rb) = tokio::join!(at_a.refused(), at_b.refused());
    let took = started.elapsed();
    eprintln!("revocation → both tunnels closed in {took:?}");
    for reason in [ra, rb] {
        assert!(
            reason.contains("revoked in the gateways' cluster: key leaked"),
            "{reason}"
        );
    }
    assert!(took < Duration::from_secs(1), "{took:?}");
    for gw in [&a, &b] {
        let providers = AdminClient::new(gw.admin)
            .get_json("/api/v1/providers")
            .await;
        assert_eq!(providers, serde_json::json!([]), "no tunnel left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_stopped_known_names_answer_and_a_new_name_waits_for_its_return() {
    let mut etcd = EtcdServer::start().await;
    let gw = gateway(&etcd).await;
    let backend = Backend::start().await;
    let owner = TestProvider::start(TestProvider::identity(), &gw);
    owner.register("known", backend.addr).await.expect("known");
    let admin = AdminClient::new(gw.admin);
    let mut events = admin.events(None).await;

    etcd.kill();
    let lost = events.until(15, |m| m.event == "cluster_lost").await;
    assert!(
        lost.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains(ETCD_AWAY)),
        "{}",
        lost.data
    );
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("peercompute_gateway_cluster_up 0"),
        "cluster_up should read 0:\n{metrics}"
    );
    let readyz = gw.admin_get("/readyz").await;
    assert!(
        readyz.starts_with("ready") && readyz.contains("cluster: down"),
        "{readyz}"
    );
    // The operator cannot release a name meanwhile: 503, saying why.
    let (status, body) = admin.delete("/api/v1/names/known").await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(ETCD_AWAY)),
        "{body}"
    );

    // Its owner reconnecting (a restart) gets the name back: the cache says it is its own.
    let mut owner = owner;
    owner.stop().await;
    let owner = TestProvider::start(owner.identity.clone(), &gw);
    owner
        .register("known", backend.addr)
        .await
        .expect("the owner takes its name back while etcd is down");

    let visitor = https_client(&gw, &["known", "fresh"], Alpn::H1);
    let mut errors = 0;
    for _ in 0..200 {
        match visitor.get(gw.url("known", "/")).send().await {
            Ok(resp) if resp.status() == 200 => {}
            _ => errors += 1,
        }
    }
    assert_eq!(errors, 0, "GETs of a known name failed while etcd was down");

    let newcomer = TestProvider::start(TestProvider::identity(), &gw);
    newcomer.connected().await;
    let handle = newcomer.handle.clone();
    let port = backend.addr.port();
    let registration =
        tokio::spawn(async move { handle.register("fresh", "127.0.0.1", port).await });
    let refused = events
        .until(10, |m| {
            m.event == "name_refused" && m.json()["name"] == "fresh"
        })
        .await;
    let reason = refused.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("etcd unreachable") && reason.contains(ETCD_AWAY),
        "{reason}"
    );
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"peercompute_gateway_cluster_refusals_total{reason="unavailable"}"#),
        "{metrics}"
    );
    assert!(
        !registration.is_finished(),
        "TryLater keeps the name wanted"
    );

    let restarted = Instant::now();
    etcd.restart().await;
    let url = within(
        40,
        "the new name registered after etcd's return",
        registration,
    )
    .await
    .expect("registration task")
    .expect("registered");
    eprintln!(
        "etcd restarted → the waiting name registered in {:?} (the provider retries TryLater from 1 s, doubling)",
        restarted.elapsed()
    );
    assert_eq!(url, gw.url("fresh", ""));
    let resp = visitor
        .get(gw.url("fresh", "/"))
        .send()
        .await
        .expect("GET fresh");
    assert_eq!(resp.status(), 200);
    events.until(10, |m| m.event == "cluster_back").await;
    assert!(
        gw.admin_get("/metrics")
            .await
            .contains("peercompute_gateway_cluster_up 1")
    );
}

/// `peercompute-gateway cluster --domain apps.test --cluster ENDPOINT ARGS…`: success, stdout,
/// stderr.
async fn operator(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = within(
        20,
        "peercompute-gateway cluster",
        tokio::process::Command::new(workspace_bin("peercompute-gateway"))
            .args(["cluster", "--domain", DOMAIN, "--cluster", endpoint])
            .args(args)
            .output(),
    )
    .await
    .expect("run peercompute-gateway");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_command_lists_names_and_revokes_a_provider_on_the_gateways() {
    let etcd = EtcdServer::start().await;
    let endpoint = etcd.cluster_endpoint();
    let gw = gateway(&etcd).await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(TestProvider::identity(), &gw);
    provider
        .register("cli-app", backend.addr)
        .await
        .expect("register");
    let peer = provider.identity.peer_id().to_string();

    let (ok, names, err) = operator(&endpoint, &["names", "--json"]).await;
    assert!(ok, "{err}");
    let names: serde_json::Value = serde_json::from_str(&names).expect("names --json");
    assert_eq!(
        names,
        serde_json::json!([{"name": "cli-app", "owner": peer}])
    );

    let (ok, out, err) = operator(&endpoint, &["revoke", &peer, "--reason", "stolen laptop"]).await;
    assert!(ok && out.contains("revoked on every gateway"), "{out}{err}");
    let reason = provider.refused().await;
    assert!(reason.contains("stolen laptop"), "{reason}");

    let (ok, status, err) = operator(&endpoint, &["status", "--json"]).await;
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json");
    assert_eq!(status["up"], true);
    assert_eq!(
        (status["names"].as_u64(), status["revoked"].as_u64()),
        (Some(1), Some(1))
    );

    let (ok, _, err) = operator("etcd://192.0.2.1:2379", &["status"]).await;
    assert!(!ok && err.contains("--cluster-insecure"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owned_names_cap_holds_in_cluster_mode() {
    let etcd = EtcdServer::start().await;
    let gw = TestGateway::start(GatewayOptions {
        open: true,
        cluster: Some(vec![etcd.cluster_endpoint()]),
        max_owned_names_per_provider: 2,
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(TestProvider::identity(), &gw);
    for name in ["cap-1", "cap-2"] {
        provider.register(name, backend.addr).await.expect(name);
    }
    let third = provider.register("cap-3", backend.addr).await;
    assert!(refused_with(&third, RefuseCode::TooManyNames), "{third:?}");
    provider
        .register("cap-1", backend.addr)
        .await
        .expect("a name it owns is still its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reaches_a_tls_etcd_with_a_client_certificate() {
    let etcd = EtcdServer::start_tls().await;
    let files = etcd.tls().expect("TLS etcd").clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, pem: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    let tls = [
        write("ca.pem", &files.ca_pem),
        write("gw.pem", &files.client_cert_pem),
        write("gw.key", &files.client_key_pem),
    ];
    let gw = TestGateway::start(GatewayOptions {
        open: true,
        cluster: Some(vec![etcd.cluster_endpoint()]),
        cluster_tls: Some(tls),
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(TestProvider::identity(), &gw);
    provider
        .register("over-tls", backend.addr)
        .await
        .expect("register");
    let mut options = ClusterOptions::new(DOMAIN, "test-reader");
    options.tls = Some(ClusterTls {
        ca_pem: Some(files.ca_pem.clone()),
        client_pem: Some((files.client_cert_pem.clone(), files.client_key_pem.clone())),
    });
    let etcd_view = ClusterStore::connect(&[etcd.cluster_endpoint()], options)
        .await
        .expect("the test's TLS store");
    let owner = provider.identity.peer_id().to_string();
    assert_eq!(etcd_view.owner("over-tls"), Some(owner));
}

/// GET `name` at `gw`: (status, Retry-After, body, how long the answer took).
async fn visit(gw: &TestGateway, name: &str) -> (u16, Option<String>, String, Duration) {
    let client = https_client(gw, &[name], Alpn::H1);
    let started = Instant::now();
    let resp = within(10, "visitor GET", client.get(gw.url(name, "/")).send())
        .await
        .expect("visitor GET");
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, resp.text().await.expect("body"), took)
}

/// Visits `name` at `gw` (every 50 ms, at most 10 s) until its answer names another
/// gateway (`elsewhere`) or stops naming one.
async fn visit_until(
    gw: &TestGateway,
    name: &str,
    elsewhere: bool,
) -> (u16, Option<String>, String, Duration) {
    within(
        10,
        "the 'served by another gateway' answer to change",
        async {
            loop {
                let answer = visit(gw, name).await;
                if answer.2.contains("another gateway") == elsewhere {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_served_at_another_gateway_gets_a_fast_502_naming_it() {
    let etcd = EtcdServer::start().await;
    let (a, b) = (gateway(&etcd).await, gateway(&etcd).await);
    let backend = Backend::start().await;
    let mut at_a = TestProvider::start(TestProvider::identity(), &a);
    at_a.register("elsewhere", backend.addr)
        .await
        .expect("registered at A");
    assert_eq!(visit(&a, "elsewhere").await.0, 200, "A serves it");

    // B has no tunnel for it; A's record reaches B through etcd (a reconcile every 500 ms).
    let want = format!(
        "elsewhere.{DOMAIN} is served by another gateway of this domain right now ({}); retry in a few seconds",
        a.peer_id
    );
    let seen = Instant::now();
    let (status, retry, body, took) = visit_until(&b, "elsewhere", true).await;
    eprintln!(
        "figure: B names A {:?} after the registration",
        seen.elapsed()
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(retry.as_deref(), Some("2"));
    let view: serde_json::Value =
        serde_json::from_str(&b.admin_get("/api/v1/cluster").await).expect("cluster JSON");
    assert_eq!(view["enabled"], true, "{view}");
    assert_eq!(view["up"], true, "{view}");
    assert_eq!(view["gateway_id"], b.peer_id.to_string(), "{view}");
    assert_eq!(view["endpoints"][0], etcd.cluster_endpoint(), "{view}");
    assert!(view["names"].as_u64() >= Some(1), "{view}");
    assert!(view["last_error"].is_null(), "{view}");
    assert_eq!(body.trim_end(), want);
    let mut slowest = took;
    for _ in 0..20 {
        let (status, _, _, took) = visit(&b, "elsewhere").await;
        assert_eq!(status, 502);
        slowest = slowest.max(took);
    }
    eprintln!(
        "figure: 21 answers 'served by another gateway', slowest {slowest:?} (a fresh TLS connection each)"
    );
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    let metrics = b.admin_get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.contains("route_errors")
            && l.contains("kind=\"elsewhere\"")
            && l.contains("elsewhere")
            && !l.ends_with(" 0")),
        "B counts them as kind=elsewhere:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("route_errors"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The provider leaves A: the name stays owned and is served nowhere, B's answer is
    // today's again (not the 502 naming A).
    at_a.stop().await;
    let gone = Instant::now();
    let (status, _, body, _) = visit_until(&b, "elsewhere", false).await;
    eprintln!(
        "figure: B stopped naming A {:?} after the provider left A",
        gone.elapsed()
    );
    assert_eq!(status, 404, "{body}");

    // A gateway that dies: its records go with its lease (TTL 10 s), not before.
    let mut at_a = TestProvider::start(TestProvider::identity(), &a);
    at_a.register("crash", backend.addr)
        .await
        .expect("registered at A");
    visit_until(&b, "crash", true).await;
    let mut a = a;
    let died = Instant::now();
    a.abort().await;
    // In one process the provider's tunnel tasks would keep A's lease renewed; a real crash
    // closes them with the process.
    at_a.stop().await;
    let (status, _, body, _) = within(15, "A's records expire", async {
        loop {
            let answer = visit(&b, "crash").await;
            if !answer.2.contains("another gateway") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let expired = died.elapsed();
    eprintln!(
        "figure: B stopped naming a dead gateway A {expired:?} after it died (lease TTL 10 s)"
    );
    assert_eq!(status, 404, "{body}");
    assert!(expired <= Duration::from_secs(12), "{expired:?}");
}
