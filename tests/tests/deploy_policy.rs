//! What the provider refuses, and what it keeps: trust on both sides, admission limits,
//! replayed / tampered / hostile requests (refused before any Docker call, volume and device
//! tricks included), and re-adoption of running deployments after a daemon restart.

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::Signer;
use peercompute_provider::Limits;
use peercompute_tests::{
    Alpn, TEST_PORT, TestClient, TestDaemon, TestImage, answer, deploy_world as world,
    https_client, within,
};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, DeployRequest, Nonce, Request, SignedEnvelope, signing_message,
};
use peerctl::{Client, Kind};

fn deploy_req(image: &TestImage, name: &str) -> Request {
    let mut req = DeployRequest::new(image.tag.clone(), TEST_PORT);
    req.name = Some(name.to_owned());
    Request::Deploy(req)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test]
async fn trust_must_be_mutual_and_each_refusal_says_who_must_add_whom() {
    let (_gw, daemon, image) = world(Limits::default()).await;

    // The client trusts the provider, the provider does not trust the client.
    let client = TestClient::new();
    client.trust(&daemon);
    let before = daemon.managed_count().await;
    let conn = client.connect(&daemon).await.expect("reachable");
    let err = answer(&conn, &deploy_req(&image, "untrusted"))
        .await
        .expect_err("refused");
    assert_eq!(err.kind, Kind::Trust);
    assert!(
        err.message.contains("does not trust you"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains(&format!("peers add {}", client.peer_id())),
        "{}",
        err.message
    );
    let home = daemon.home.path().display().to_string();
    assert!(
        !err.message.contains(&home),
        "a stranger learns the provider's home directory: {}",
        err.message
    );
    assert_eq!(
        daemon.managed_count().await,
        before,
        "no container for an untrusted client"
    );

    // The provider trusts the client, but the client never added the provider.
    let stranger = TestClient::new();
    daemon.trust(&stranger.peer_id());
    let err = stranger
        .connect(&daemon)
        .await
        .expect_err("client side refuses");
    assert_eq!(err.kind, Kind::Trust);
    assert!(err.message.contains("you do not trust"), "{}", err.message);
    assert!(err.message.contains("peerctl peers add"), "{}", err.message);
}

#[tokio::test]
async fn admission_limits_refuse_with_numbers() {
    let limits = Limits {
        max_cpu_millis: 1000,
        max_memory_bytes: 512 << 20,
        max_deploys: 1,
    };
    let (_gw, daemon, image) = world(limits).await;
    let client = TestClient::new();
    client.trust(&daemon);
    daemon.trust(&client.peer_id());
    let conn = client.connect(&daemon).await.expect("reachable");

    let mut greedy = DeployRequest::new(image.tag.clone(), TEST_PORT);
    greedy.cpu_millis = Some(2000);
    let err = answer(&conn, &Request::Deploy(greedy))
        .await
        .expect_err("too much CPU");
    assert_eq!(err.kind, Kind::Limit);
    assert!(
        err.message.contains("2000m") && err.message.contains("1000m"),
        "{}",
        err.message
    );

    let first = answer(&conn, &deploy_req(&image, "first"))
        .await
        .expect("first fits");
    assert!(
        matches!(first, ControlPlaneMessage::DeployResponse(_)),
        "{first:?}"
    );
    let err = answer(&conn, &deploy_req(&image, "second"))
        .await
        .expect_err("slots full");
    assert_eq!(err.kind, Kind::Limit);
    assert!(err.message.contains("1 of at most 1"), "{}", err.message);
}

#[tokio::test]
async fn replayed_tampered_and_hostile_requests_are_refused_before_docker() {
    let (_gw, mut daemon, image) = world(Limits::default()).await;
    let client = TestClient::new();
    client.trust(&daemon);
    daemon.trust(&client.peer_id());
    let conn = client.connect(&daemon).await.expect("reachable");
    let key = client.identity.signing_key().clone();
    let before = daemon.managed_count().await;

    // A valid signed List, sent twice: the second is a replay.
    let list = SignedEnvelope::sign(
        &key,
        daemon.peer_id,
        &Request::List(Default::default()),
        Nonce::random(),
        now(),
    )
    .expect("sign");
    let mut framed = conn.send_envelope(list.clone()).await.expect("send");
    assert!(matches!(
        Client::next(&mut framed).await,
        Ok(ControlPlaneMessage::ListResponse(_))
    ));
    let mut framed = conn.send_envelope(list.clone()).await.expect("send");
    let err = Client::next(&mut framed).await.expect_err("replay refused");
    assert_eq!(err.kind, Kind::Trust);
    assert!(
        err.message.to_lowercase().contains("replay"),
        "{}",
        err.message
    );

    // Tampered: the signed deploy's payload changed after signing.
    let mut tampered = SignedEnvelope::sign(
        &key,
        daemon.peer_id,
        &deploy_req(&image, "tampered"),
        Nonce::random(),
        now(),
    )
    .expect("sign");
    let last = tampered.payload.len() - 2;
    tampered.payload[last] ^= 0x01;
    let mut framed = conn.send_envelope(tampered).await.expect("send");
    let err = Client::next(&mut framed)
        .await
        .expect_err("tampered refused");
    assert_eq!(err.kind, Kind::Trust, "{}", err.message);

    // Re-targeted: signed for another provider.
    let other = TestDaemon::identity().1;
    let wrong = SignedEnvelope::sign(
        &key,
        other,
        &Request::List(Default::default()),
        Nonce::random(),
        now(),
    )
    .expect("sign");
    let mut framed = conn.send_envelope(wrong).await.expect("send");
    assert!(
        Client::next(&mut framed).await.is_err(),
        "re-targeted request refused"
    );

    // Stale timestamp.
    let stale = SignedEnvelope::sign(
        &key,
        daemon.peer_id,
        &Request::List(Default::default()),
        Nonce::random(),
        now() - 3600,
    )
    .expect("sign");
    let mut framed = conn.send_envelope(stale).await.expect("send");
    assert_eq!(
        Client::next(&mut framed).await.expect_err("stale").kind,
        Kind::Trust
    );

    // Hostile options: correctly signed, but the schema has no such fields.
    let hostile = [
        r#""privileged":true"#,
        r#""cap_add":["SYS_ADMIN"]"#,
        r#""binds":["/:/host"]"#,
        r#""mounts":[{"source":"/var/run/docker.sock","target":"/s"}]"#,
        r#""devices":["/dev/kvm"]"#,
        r#""network_mode":"host""#,
        r#""pid_mode":"host""#,
        r#""sysctls":{"net.ipv4.ip_forward":"1"}"#,
        r#""workdir":"/proc/self/fd/3""#,
        r#""security_opt":["seccomp=unconfined"]"#,
        // Bind-mount tricks through named volumes: names are [a-z0-9-] only, paths are
        // normalized and absolute, and a volume has no other field.
        r#""volumes":[{"name":"../etc","path":"/data"}]"#,
        r#""volumes":[{"name":"/var/run/docker.sock","path":"/s"}]"#,
        r#""volumes":[{"name":"/etc","path":"/host-etc"}]"#,
        r#""volumes":[{"name":"docker.sock","path":"/s"}]"#,
        r#""volumes":[{"name":"data:/x","path":"/data"}]"#,
        r#""volumes":[{"name":"data","path":"/data","type":"bind"}]"#,
        r#""volumes":[{"name":"data","path":"/data","source":"/"}]"#,
        r#""volumes":[{"name":"data","path":"/var/run/docker.sock","bind":"/var/run/docker.sock"}]"#,
        r#""volumes":[{"name":"data","path":"/proc"}]"#,
        r#""volumes":[{"name":"data","path":"data"}]"#,
        r#""volumes":[{"name":"data","path":"/a/../etc"}]"#,
        r#""volumes":{"/data":{}}"#,
        r#""devices":["../../dev/sda"]"#,
    ];
    for field in hostile {
        let json = format!(r#"{{"image":"{}","port":{TEST_PORT},{field}}}"#, image.tag);
        let mut payload = vec![0x10];
        payload.extend_from_slice(&u32::try_from(json.len()).expect("small").to_be_bytes());
        payload.extend_from_slice(json.as_bytes());
        let nonce = Nonce::random();
        let ts = now();
        let signature = key
            .sign(&signing_message(&daemon.peer_id, &nonce, ts, &payload))
            .to_bytes();
        let envelope = SignedEnvelope {
            provider: daemon.peer_id,
            nonce,
            timestamp: ts,
            payload,
            signature,
        };
        let mut framed = conn.send_envelope(envelope).await.expect("send");
        let err = Client::next(&mut framed).await.expect_err(field);
        assert_eq!(err.kind, Kind::BadRequest, "{field}: {}", err.message);
    }
    assert_eq!(
        daemon.managed_count().await,
        before,
        "no container was created by any refused request"
    );

    // After a daemon restart the captured request is still a replay.
    daemon.restart().await;
    let conn = client.connect(&daemon).await.expect("reachable again");
    let mut framed = conn.send_envelope(list).await.expect("send");
    let err = Client::next(&mut framed)
        .await
        .expect_err("replay after restart");
    assert!(
        err.message.to_lowercase().contains("replay"),
        "{}",
        err.message
    );

    // Positive control: a minimal valid request is accepted.
    let ok = answer(&conn, &deploy_req(&image, "control"))
        .await
        .expect("minimal deploy works");
    assert!(
        matches!(ok, ControlPlaneMessage::DeployResponse(_)),
        "{ok:?}"
    );
}

#[tokio::test]
async fn daemon_restart_readopts_running_deployment_without_redeploy() {
    let (gw, mut daemon, image) = world(Limits::default()).await;
    let client = TestClient::new();
    client.trust(&daemon);
    daemon.trust(&client.peer_id());
    let conn = client.connect(&daemon).await.expect("reachable");
    let ControlPlaneMessage::DeployResponse(deployed) = answer(&conn, &deploy_req(&image, "keep"))
        .await
        .expect("deploy")
    else {
        panic!("expected a deploy response");
    };
    let web = https_client(&gw, &["keep"], Alpn::H1);
    assert_eq!(
        web.get(gw.url("keep", "/"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );

    daemon.restart().await;
    let report = &daemon.daemon.as_ref().expect("running").reconciled;
    assert_eq!(report.adopted, vec![deployed.id.clone()], "{report:?}");
    // The route comes back on its own: wait for the re-registration, then GET.
    let tunnel = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.tunnel.clone())
        .expect("tunnel");
    within(
        20,
        "re-registration",
        tunnel.wait_for(|s| matches!(s, peercompute_provider::TunnelStatus::Connected { registered, .. } if *registered >= 1)),
    )
    .await;
    let resp = web
        .get(gw.url("keep", "/"))
        .send()
        .await
        .expect("get after restart");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "hello from the container\n"
    );

    let conn = client.connect(&daemon).await.expect("reachable");
    let ControlPlaneMessage::ListResponse(list) = answer(&conn, &Request::List(Default::default()))
        .await
        .expect("list")
    else {
        panic!("expected a list");
    };
    assert_eq!(list.deployments.len(), 1);
    assert_eq!(list.deployments[0].id, deployed.id);
}

#[tokio::test]
async fn route_follows_a_container_restarted_on_a_new_port() {
    let (gw, daemon, image) = world(Limits::default()).await;
    let client = TestClient::new();
    client.trust(&daemon);
    daemon.trust(&client.peer_id());
    let conn = client.connect(&daemon).await.expect("reachable");
    let mut req = DeployRequest::new(image.tag.clone(), TEST_PORT);
    req.name = Some("phoenix".into());
    req.env = vec![peercompute_tunnel_proto::EnvVar {
        key: "CRASH_ONCE".into(),
        value: "2".into(),
    }];
    let ControlPlaneMessage::DeployResponse(deployed) =
        answer(&conn, &Request::Deploy(req)).await.expect("deploy")
    else {
        panic!("expected a deploy response");
    };
    let web = https_client(&gw, &["phoenix"], Alpn::H1);
    assert_eq!(
        web.get(gw.url("phoenix", "/"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );

    // The container exits after 2 s and is restarted by its policy on another host port;
    // the provider re-points the route without anyone redeploying.
    let restarted = within(30, "restart and re-pointed route", async {
        loop {
            let ControlPlaneMessage::StatusResponse(st) = answer(
                &conn,
                &Request::Status(peercompute_tunnel_proto::StatusRequest {
                    id: deployed.id.clone(),
                }),
            )
            .await
            .expect("status") else {
                panic!("expected a status");
            };
            if st.restarts >= 1 {
                let resp = web.get(gw.url("phoenix", "/")).send().await.expect("get");
                if resp.status() == 200 {
                    return st.restarts;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
    .await;
    assert_eq!(restarted, 1);
}
