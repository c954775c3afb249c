//! A deploy runs whether or not its route can be published, and says so: with no gateway
//! configured (no public URL), with the gateway down at deploy time (URL pending, registered
//! as soon as the tunnel is back), and with a gateway that is not the pinned one (the tunnel
//! stops for good, logged once with both ids, while the daemon keeps serving). Real provider
//! daemon, Docker engine, peerctl binary and gateway.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use peercompute_identity::{Identity, PeerId};
use peercompute_provider::{GatewaySpec, Limits, TunnelStatus};
use peercompute_runtime::DockerRuntime;
use peercompute_tests::{
    Alpn, GatewayOptions, TEST_PORT, TestClient, TestDaemon, TestGateway, TestImage,
    deployment_container, https_client, run_peerctl, within,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The client trusts the daemon (as `prov`) and the daemon trusts the client.
fn mutual_trust(daemon: &TestDaemon) -> TestClient {
    let client = TestClient::new();
    daemon.trust(&client.peer_id());
    client.trust(daemon);
    client
}

/// `peerctl deploy IMAGE --name NAME` (text, or `--json` parsed): exit code, stdout, stderr.
async fn deploy(
    client: &TestClient,
    image: &TestImage,
    name: &str,
    json: bool,
) -> (String, String) {
    let port = TEST_PORT.to_string();
    let mut args = vec![
        "deploy", &image.tag, "--peer", "prov", "--port", &port, "--name", name,
    ];
    if json {
        args.push("--json");
    }
    let (code, out, err) = run_peerctl(client.home.path(), &args).await;
    assert_eq!(code, 0, "deploy {name} failed: {err}");
    (out, err)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The id of deployment `name`, from `peerctl ls --json`.
async fn id_of(client: &TestClient, name: &str) -> String {
    let (code, out, err) =
        run_peerctl(client.home.path(), &["ls", "--peer", "prov", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    json(&out)
        .as_array()
        .expect("a list")
        .iter()
        .find(|d| d["name"] == name)
        .and_then(|d| d["id"].as_str())
        .unwrap_or_else(|| panic!("no deployment {name}: {out}"))
        .to_owned()
}

/// `peerctl status ID --json`.
async fn status(client: &TestClient, id: &str) -> serde_json::Value {
    let (code, out, err) = run_peerctl(
        client.home.path(),
        &["status", id, "--peer", "prov", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    json(&out)
}

/// Where the deployment's container is published on this host (127.0.0.1:PORT).
async fn loopback_addr(id: &str) -> SocketAddr {
    let runtime = DockerRuntime::connect().await.expect("docker");
    let container = deployment_container(&runtime, id).await;
    runtime
        .addr(&container.id)
        .await
        .expect("inspect")
        .expect("a published port")
}

#[tokio::test]
async fn without_a_gateway_a_deploy_runs_and_says_it_has_no_public_url() {
    let image = TestImage::load().await;
    let (home, _) = TestDaemon::identity();
    let daemon = TestDaemon::start_without_gateway(home, Limits::default()).await;
    assert!(daemon.daemon.as_ref().expect("running").tunnel.is_none());
    let client = mutual_trust(&daemon);

    let (out, err) = deploy(&client, &image, "web", false).await;
    assert_eq!(out, "", "stdout carries a URL or nothing; stderr: {err}");
    assert!(
        err.contains("no public URL (no gateway)"),
        "the reason is printed instead of a URL: {err}"
    );
    assert!(err.contains("deployed "), "{err}");

    let (out, _) = deploy(&client, &image, "api", true).await;
    let answer = json(&out);
    assert_eq!(answer["url"], serde_json::Value::Null, "{out}");
    assert_eq!(answer["no_url"], "no_gateway", "{out}");
    assert_eq!(answer["status"], "running", "{out}");

    // The containers run and answer on the provider's loopback.
    for name in ["web", "api"] {
        let id = id_of(&client, name).await;
        let st = status(&client, &id).await;
        assert_eq!(st["state"], "running", "{st}");
        assert_eq!(st["url"], "", "{st}");
        let addr = loopback_addr(&id).await;
        assert!(addr.ip().is_loopback(), "{addr}");
        let body = within(10, "the container over loopback", async {
            reqwest::get(format!("http://{addr}/"))
                .await
                .expect("GET")
                .text()
                .await
                .expect("body")
        })
        .await;
        assert_eq!(body, "hello from the container\n");
    }
}

#[tokio::test]
async fn a_deploy_while_the_gateway_is_down_is_published_when_it_is_back() {
    let (home, provider_id) = TestDaemon::identity();
    let mut gw = TestGateway::start(GatewayOptions {
        allow: vec![provider_id],
        ..GatewayOptions::default()
    })
    .await;
    let image = TestImage::load().await;
    let daemon = TestDaemon::start(home, &gw, Limits::default()).await;
    let client = mutual_trust(&daemon);
    let tunnel = daemon
        .daemon
        .as_ref()
        .expect("running")
        .tunnel
        .clone()
        .expect("a tunnel");

    gw.shutdown().await;
    let down = within(
        20,
        "the tunnel to notice the gateway is gone",
        tunnel.wait_for(|s| !matches!(s, TunnelStatus::Connected { .. })),
    )
    .await;
    assert!(!down.is_final(), "{down:?}");

    let (out, err) = deploy(&client, &image, "web", false).await;
    assert_eq!(out, "", "no URL yet; stderr: {err}");
    assert!(err.contains("URL pending"), "{err}");
    let id = id_of(&client, "web").await;
    assert!(err.contains(&format!("peerctl status {id}")), "{err}");
    assert_eq!(status(&client, &id).await["state"], "running");

    // Back on the same address with the same identity: the route registers by itself.
    let gw = gw.restart().await;
    within(
        60,
        "the route to register on the new connection",
        tunnel.wait_for(
            |s| matches!(s, TunnelStatus::Connected { registered, .. } if *registered >= 1),
        ),
    )
    .await;
    let web = https_client(&gw, &["web"], Alpn::H1);
    let resp = within(
        10,
        "GET through the gateway",
        web.get(gw.url("web", "/")).send(),
    )
    .await
    .expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "hello from the container\n"
    );
    // The URL lands in the deployment's record as the gateway confirms it.
    let url = within(10, "status to show the URL", async {
        loop {
            let st = status(&client, &id).await;
            if st["url"] != "" {
                return st["url"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(url, gw.url("web", ""));
}

#[tokio::test]
async fn a_gateway_that_is_not_the_pinned_one_stops_the_tunnel_and_deploys_say_so() {
    let image = TestImage::load().await;
    let (home, provider_id) = TestDaemon::identity();
    // The gateway would admit this provider: only the pin is wrong.
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![provider_id],
        ..GatewayOptions::default()
    })
    .await;
    let pinned: PeerId = Identity::generate().expect("identity").peer_id();
    let spec = GatewaySpec {
        peer: Some(pinned),
        host: gw.tunnel.ip().to_string(),
        port: gw.tunnel.port(),
    };
    let daemon = TestDaemon::start_custom(home, spec, Limits::default(), |_| {}).await;
    let tunnel = daemon
        .daemon
        .as_ref()
        .expect("running")
        .tunnel
        .clone()
        .expect("a tunnel");
    // Final: the client loop has ended (no retry follows).
    let status_now = within(
        20,
        "the tunnel to stop",
        tunnel.wait_for(TunnelStatus::is_final),
    )
    .await;
    assert_eq!(
        status_now,
        TunnelStatus::WrongGateway {
            expected: pinned,
            presented: gw.peer_id,
        }
    );
    let refused = within(
        5,
        "a registration on a stopped tunnel",
        tunnel.register("x", "127.0.0.1", 1),
    )
    .await
    .expect_err("nothing registers any more");
    assert_eq!(refused.to_string(), "the tunnel client has stopped");

    // The control plane still serves; a deploy runs and says why it has no URL.
    let client = mutual_trust(&daemon);
    let (out, err) = deploy(&client, &image, "web", false).await;
    assert_eq!(out, "", "{err}");
    assert!(
        err.contains("no public URL: the provider's tunnel to its gateway has stopped"),
        "{err}"
    );
    let (out, _) = deploy(&client, &image, "api", true).await;
    let answer = json(&out);
    assert_eq!(answer["url"], serde_json::Value::Null, "{out}");
    assert_eq!(answer["no_url"], "tunnel_stopped", "{out}");
}

/// What the operator reads: the real `peercomputed` binary logs the mismatch once, naming both
/// ids and the --gateway to fix, keeps running, and exits 0 on SIGTERM.
#[tokio::test]
async fn the_daemon_names_both_ids_once_and_keeps_running() {
    let (home, provider_id) = TestDaemon::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![provider_id],
        ..GatewayOptions::default()
    })
    .await;
    let pinned = Identity::generate().expect("identity").peer_id();
    let target = format!("{}:{}", gw.tunnel.ip(), gw.tunnel.port());
    let mut child =
        tokio::process::Command::new(peercompute_tests::daemon::workspace_bin("peercomputed"))
            .arg("--home")
            .arg(home.path())
            .args(["run", "--gateway", &format!("{pinned}@{target}")])
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
                "--no-relay",
            ])
            .args(["--firewall", "off"])
            .env("PEERCOMPUTE_LOG_FORMAT", "text")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start peercomputed");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let expected_line = format!(
        "check --gateway {pinned}@{target}: the gateway at {target} is {}, not {pinned}",
        gw.peer_id
    );
    // Both the mismatch and the control plane coming up, in whichever order.
    within(30, "the mismatch error and the control plane", async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
            let has = |s: &str| seen.iter().any(|l| l.contains(s));
            if has(&expected_line) && has("control plane ready") {
                return;
            }
        }
        panic!("peercomputed ended early:\n{}", seen.join("\n"));
    })
    .await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the daemon keeps running:\n{}",
        seen.join("\n")
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = within(30, "peercomputed to exit", child.wait())
        .await
        .expect("exit");
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    let mismatch: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("check --gateway"))
        .collect();
    assert_eq!(mismatch.len(), 1, "logged once:\n{}", seen.join("\n"));
    assert!(mismatch[0].contains("ERROR"), "{}", mismatch[0]);
    assert!(
        !seen.iter().any(|l| l.contains("reconnecting in")),
        "no retry:\n{}",
        seen.join("\n")
    );
}
