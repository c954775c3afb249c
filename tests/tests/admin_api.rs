//! The gateway's admin API against a live gateway with two providers (real QUIC tunnels, dev
//! TLS) and a backend answering chosen statuses: what an operator sees and can do. One
//! gateway serves every step, in order, so the binary takes seconds.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use peercompute_fleet::{AppStatus, Op, Phase, SignedStatus, StatusReport};
use peercompute_p2p::fleet_hub::{self, unix_now};
use peercompute_tests::admin::{AdminClient, StatusBackend};
use peercompute_tests::fleet::FleetMember;
use peercompute_tests::{Alpn, GatewayOptions, TestGateway, TestProvider, https_client, within};
use serde_json::{Value, json};

/// Polls `path` until `pred` holds on its JSON (5 s), returning it.
async fn eventually(admin: &AdminClient, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = admin.get_json(path).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "GET {path} never matched: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|e| e[key] == value)
}

#[tokio::test]
async fn operators_list_release_and_disconnect() {
    let (id1, id2, id3) = (
        TestProvider::identity(),
        TestProvider::identity(),
        TestProvider::identity(),
    );
    let (p1_id, p2_id, p3_id) = (
        id1.peer_id().to_string(),
        id2.peer_id().to_string(),
        id3.peer_id().to_string(),
    );
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id1.peer_id(), id2.peer_id(), id3.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let admin = AdminClient::new(gw.admin);
    let backend = StatusBackend::start().await;

    // The stream opens with a snapshot, then sees each provider and name arrive.
    let mut events = admin.events(None).await;
    let snapshot = events.until(5, |m| m.event == "snapshot").await;
    assert!(snapshot.json().is_array(), "{}", snapshot.data);

    let p1 = TestProvider::start(id1, &gw);
    p1.register("blog", backend.addr)
        .await
        .expect("register blog");
    let mut p2 = TestProvider::start(id2, &gw);
    p2.register("shop", backend.addr)
        .await
        .expect("register shop");
    let connected = events
        .until(5, |m| {
            m.event == "provider_connected" && m.data.contains(&p1_id)
        })
        .await;
    assert!(connected.id.is_some(), "events carry their number");
    events
        .until(5, |m| {
            m.event == "name_registered" && m.data.contains("shop")
        })
        .await;

    // Traffic: 20 good requests, 3 × 404 and 2 × 500 on blog; 5 on shop.
    let visitor = https_client(&gw, &["blog", "shop"], Alpn::H1);
    let get = |name: &'static str, path: &'static str| {
        let (visitor, url) = (visitor.clone(), gw.url(name, path));
        async move { visitor.get(url).send().await.expect("visit").status() }
    };
    for _ in 0..20 {
        assert_eq!(get("blog", "/").await, 200);
    }
    for _ in 0..3 {
        assert_eq!(get("blog", "/status/404").await, 404);
    }
    for _ in 0..2 {
        assert_eq!(get("blog", "/status/500").await, 500);
    }
    for _ in 0..5 {
        assert_eq!(get("shop", "/").await, 200);
    }

    // Providers: both, with agent, RTT, routes and counters.
    let providers = eventually(&admin, "/api/v1/providers", |v| {
        find(v, "peer_id", &p1_id).is_some_and(|p| p["requests"] == 25)
    })
    .await;
    assert_eq!(providers.as_array().map(Vec::len), Some(2), "{providers:#}");
    let p1_view = find(&providers, "peer_id", &p1_id).expect("p1 listed");
    assert!(
        p1_view["agent"].as_str().is_some_and(|a| !a.is_empty()),
        "{p1_view}"
    );
    assert!(
        p1_view["rtt_ms"].as_f64().is_some_and(|r| r > 0.0),
        "{p1_view}"
    );
    assert_eq!(p1_view["routes"], json!(["blog"]));
    assert_eq!(p1_view["transport"], "quic");
    assert_eq!(
        (
            p1_view["status_4xx"].as_u64(),
            p1_view["status_5xx"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert!(
        p1_view["bytes_out"].as_u64().is_some_and(|b| b > 0),
        "{p1_view}"
    );
    assert!(
        p1_view["connected_since"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let p2_view = find(&providers, "peer_id", &p2_id).expect("p2 listed");
    assert_eq!(p2_view["requests"], 5, "{p2_view}");

    // Routes: owner, providers, 4xx/5xx, bytes.
    let routes = admin.get_json("/api/v1/routes").await;
    let blog = find(&routes, "name", "blog").expect("blog listed");
    assert_eq!(blog["owner"], p1_id.as_str());
    assert_eq!(blog["providers"], json!([p1_id]));
    assert_eq!(blog["online"], true);
    assert_eq!(
        (
            blog["requests"].as_u64(),
            blog["status_4xx"].as_u64(),
            blog["status_5xx"].as_u64()
        ),
        (Some(25), Some(3), Some(2)),
        "{blog}"
    );
    assert!(blog["bytes_out"].as_u64().is_some_and(|b| b > 0), "{blog}");
    assert!(blog["p50_ms"].as_f64().is_some(), "{blog}");
    println!("routes: {routes}");

    // Certificates with --tls dev.
    let certs = admin.get_json("/api/v1/certificates").await;
    let dev = certs
        .as_array()
        .and_then(|c| c.first())
        .expect("a certificate");
    assert_eq!(dev["source"], "dev", "{certs}");
    assert!(
        dev["issuer"].as_str().is_some_and(|i| !i.is_empty()),
        "{dev}"
    );
    assert!(dev["not_after"].as_str().is_some(), "{dev}");

    // Traffic ticks: the sampler runs every second.
    let traffic = eventually(&admin, "/api/v1/traffic", |v| {
        v["ticks"].as_array().is_some_and(|t| !t.is_empty())
    })
    .await;
    assert!(
        traffic["ticks"][0]["at_unix_ms"].as_u64().is_some(),
        "{traffic}"
    );

    // Release blog: visitors get 404, the event says so, a second key may claim it.
    let (status, body) = admin.delete("/api/v1/names/blog").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"released": "blog", "previous_owner": p1_id, "was_online": true})
    );
    assert_eq!(get("blog", "/").await, 404);
    events
        .until(5, |m| m.event == "name_released" && m.data.contains("blog"))
        .await;
    let (status, body) = admin.delete("/api/v1/names/blog").await;
    assert_eq!(status, 404, "released twice: {body}");
    assert!(body["error"].as_str().is_some(), "{body}");
    let p1_now = eventually(&admin, "/api/v1/providers", |v| {
        find(v, "peer_id", &p1_id).is_some_and(|p| p["routes"] == json!([]))
    })
    .await;
    assert!(find(&p1_now, "peer_id", &p1_id).is_some());
    let p3 = TestProvider::start(id3, &gw);
    p3.register("blog", backend.addr)
        .await
        .expect("another key claims blog");
    assert_eq!(get("blog", "/").await, 200);
    let routes = admin.get_json("/api/v1/routes").await;
    assert_eq!(
        find(&routes, "name", "blog").expect("blog")["owner"],
        p3_id.as_str()
    );
    // A reconnect does not bring the released name back to its old provider.
    let (status, _) = admin
        .post(&format!("/api/v1/providers/{p1_id}/disconnect"), &json!({}))
        .await;
    assert_eq!(status, 202);
    within(20, "p1 reconnects", p1.registered(0, 2)).await;
    let providers = eventually(&admin, "/api/v1/providers", |v| {
        find(v, "peer_id", &p1_id).is_some()
    })
    .await;
    assert_eq!(
        find(&providers, "peer_id", &p1_id).expect("p1")["routes"],
        json!([])
    );
    assert_eq!(get("blog", "/").await, 200, "still p3's");

    // Disconnect p2 with a reason: the event carries it and the provider comes back.
    let path = format!("/api/v1/providers/{p2_id}/disconnect");
    let t0 = Instant::now();
    let (status, body) = admin
        .post(&path, &json!({"reason": "maintenance window"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["tunnels"], 1);
    let gone = events
        .until(5, |m| {
            m.event == "provider_disconnected" && m.data.contains(&p2_id)
        })
        .await;
    assert!(gone.data.contains("maintenance window"), "{}", gone.data);
    println!(
        "disconnect → provider_disconnected: {} ms",
        t0.elapsed().as_millis()
    );
    let session = within(20, "p2 reconnects", p2.registered(1, 2)).await;
    assert!(session >= 2);
    assert_eq!(get("shop", "/").await, 200);

    // Refusals: unknown peer 404, not a peer id 400, bad body 400, empty body = default reason.
    let unknown = TestProvider::identity().peer_id();
    let (status, _) = admin
        .post(
            &format!("/api/v1/providers/{unknown}/disconnect"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = admin
        .post("/api/v1/providers/nope/disconnect", &json!({}))
        .await;
    assert_eq!(status, 400);
    let (status, body) = admin.post(&path, &json!({"reason": 5})).await;
    assert_eq!(status, 400, "{body}");
    let resp = admin
        .request(http::Method::POST, &path)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(body["reason"], "disconnected by the operator");
    // A release by mistake: lifting the hold lets the previous owner register the name again.
    let (status, body) = admin.delete("/api/v1/names/shop").await;
    assert_eq!(
        (status.as_u16(), &body["previous_owner"]),
        (200, &json!(p2_id)),
        "{body}"
    );
    let (status, body) = admin.delete("/api/v1/names/shop/hold").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"name": "shop", "previous_owner": p2_id}));
    let (status, _) = admin.delete("/api/v1/names/shop/hold").await;
    assert_eq!(status, 404, "lifted once");
    p2.register("shop", backend.addr)
        .await
        .expect("the previous owner registers shop again");
    assert_eq!(get("shop", "/").await, 200);
    p2.stop().await;

    // Resume: Last-Event-ID replays what came after it.
    let first = connected.seq().expect("id BOOT-SEQ");
    let mut resumed = admin.events(connected.id.as_deref()).await;
    let next = resumed.next().await.expect("a replayed event");
    assert_eq!(next.seq(), Some(first + 1), "{next:?}");
    let mut other_run = admin.events(Some("1-1")).await;
    let fresh = other_run.next().await.expect("a message");
    assert_eq!(
        fresh.event, "snapshot",
        "an id of another run gets a fresh snapshot"
    );

    // Event streams are capped (16 with the three above): the next gets 503, probes still answer.
    let mut open = Vec::new();
    for _ in 0..13 {
        open.push(admin.events(None).await);
    }
    let refused = admin.send(http::Method::GET, "/api/v1/events").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(
        admin.send(http::Method::GET, "/healthz").await.status(),
        200
    );
    assert_eq!(
        admin
            .send(http::Method::GET, "/api/v1/routes")
            .await
            .status(),
        200
    );
    drop(open);

    // Every API answer is no-store; unknown paths 404.
    let resp = admin.send(http::Method::GET, "/api/v1/providers").await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(
        admin
            .send(http::Method::GET, "/api/v1/nothing")
            .await
            .status(),
        404
    );
    drop(p1);
    drop(p3);
}

/// The fleets of the p2p meeting point, as the dashboard's fleet page reads them: the log's
/// members (name, groups) and a robot's signed status (release per group, phase, last seen).
#[tokio::test]
async fn fleets_and_robots_from_the_meeting_point() {
    let gw = TestGateway::start(GatewayOptions {
        p2p: true,
        open: true,
        ..GatewayOptions::default()
    })
    .await;
    let admin_api = AdminClient::new(gw.admin);
    assert_eq!(admin_api.get_json("/api/v1/fleets").await, json!([]));
    let gateway = gw.p2p_addr().await;
    let admin = FleetMember::start(&gateway, true).await;
    let fleet = admin.found(&SigningKey::from_bytes(&[7; 32]), "lekiwi");
    let admin_key = admin.identity.signing_key().clone();
    let robot = FleetMember::start(&gateway, false).await;
    admin.write(
        fleet,
        &admin_key,
        Op::Enroll {
            member: robot.key(),
            name: "lekiwi-1".into(),
            groups: vec!["production".into()],
        },
    );
    let mut stream = admin_api.events(None).await;
    within(
        15,
        "admin sync",
        fleet_hub::sync_with(&admin.node, gw.peer_id, &admin.hub, fleet),
    )
    .await
    .expect("sync");
    let change = stream
        .until(5, |m| {
            m.event == "fleet" && m.data.contains(&fleet.to_string())
        })
        .await;
    assert!(
        change.json()["entries"].as_u64().is_some_and(|n| n >= 1),
        "{}",
        change.data
    );
    let report = StatusReport {
        fleet,
        robot: robot.key(),
        at_ms: unix_now() * 1000,
        agent: "peercomputed/test".into(),
        uptime_secs: 1,
        log_len: 3,
        apps: vec![AppStatus {
            group: "production".into(),
            release: admin.hub.with_log(&fleet, |l| l.heads()[0]).expect("held"),
            version: "v1".into(),
            phase: Phase::Healthy,
            serving: Some("v1".into()),
            url: None,
            apply_ms: Some(10),
            reason: None,
            changed_at_ms: unix_now() * 1000,
        }],
        cpu_permille: 0,
        memory_used_bytes: 0,
        memory_total_bytes: 0,
        disk_free_bytes: 0,
        history: Vec::new(),
        group_names: Vec::new(),
    };
    let status = SignedStatus::sign(report, robot.identity.signing_key());
    fleet_hub::send_status(&robot.node, gw.peer_id, status)
        .await
        .expect("status sent");

    let fleets = eventually(&admin_api, "/api/v1/fleets", |v| v[0]["reporting"] == 1).await;
    assert_eq!(fleets[0]["fleet_id"], fleet.to_string());
    assert_eq!(fleets[0]["name"], "lekiwi");
    assert_eq!(fleets[0]["robots"], 1, "{fleets}");
    let robots = admin_api
        .get_json(&format!("/api/v1/fleets/{fleet}/robots"))
        .await;
    let r = find(&robots, "robot", &robot.key().to_string()).expect("the robot listed");
    assert_eq!(r["name"], "lekiwi-1");
    assert_eq!(r["groups"], json!(["production"]));
    assert_eq!(r["health"], "healthy", "{r}");
    assert_eq!(r["apps"][0]["version"], "v1");
    assert!(r["last_seen"].as_str().is_some(), "{r}");
    assert_eq!(
        robots.as_array().map(Vec::len),
        Some(1),
        "admins are not robots: {robots}"
    );
    let missing = admin_api
        .send(http::Method::GET, "/api/v1/fleets/nope/robots")
        .await;
    assert_eq!(missing.status(), 404);
}
