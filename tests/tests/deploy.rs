//! `peerctl deploy` → provider → sandboxed container → URL through gateway and tunnel, with
//! the real Docker engine, libp2p, QUIC and TLS.

use std::process::Stdio;
use std::time::{Duration, Instant};

use peercompute_provider::Limits;
use peercompute_runtime::DockerRuntime;
use peercompute_tests::{
    Alpn, TEST_PORT, TestClient, TestDaemon, TestGateway, TestImage, deploy_world, https_client,
    peerctl_bin, run_peerctl, within,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn world(limits: Limits) -> (TestGateway, TestDaemon, TestClient, TestImage) {
    let (gw, daemon, image) = deploy_world(limits).await;
    (gw, daemon, TestClient::new(), image)
}

#[tokio::test]
async fn deploy_with_peerctl_serves_the_url_then_stop_withdraws_it() {
    let (gw, daemon, client, image) = world(Limits::default()).await;
    // Mutual trust with the real commands.
    let provider_home = daemon.home.path();
    let (code, _, err) = run_peerctl(
        provider_home,
        &["peers", "add", &client.peer_id().to_string()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_peerctl(
        client.home.path(),
        &[
            "peers",
            "add",
            &daemon.peer_id.to_string(),
            "--addr",
            &daemon.addr(),
            "--name",
            "box",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    let started = Instant::now();
    let (code, out, err) = run_peerctl(
        client.home.path(),
        &[
            "deploy",
            &image.tag,
            "--peer",
            "box",
            "--port",
            &TEST_PORT.to_string(),
            "--name",
            "web",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "deploy failed: {err}");
    let deployed: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    let url = deployed["url"].as_str().expect("url").to_owned();
    let id = deployed["id"].as_str().expect("id").to_owned();
    assert_eq!(url, gw.url("web", ""));
    assert_eq!(deployed["name"], "web");
    assert_eq!(deployed["peer"], daemon.peer_id.to_string());
    assert_eq!(deployed["image"], image.tag.as_str());
    assert_eq!(deployed["status"], "running");
    eprintln!("deploy-to-URL {:?}", started.elapsed());

    let web = https_client(&gw, &["web"], Alpn::H1);
    let resp = web
        .get(gw.url("web", "/"))
        .send()
        .await
        .expect("GET through the gateway");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "hello from the container\n"
    );

    // Inside the container: no capabilities, no new privileges, seccomp filtering.
    let status = web
        .get(gw.url("web", "/cgi-bin/status"))
        .send()
        .await
        .expect("status")
        .text()
        .await
        .expect("body");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");

    let (code, out, err) = run_peerctl(client.home.path(), &["ls", "--peer", "box"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&id) && out.contains("web") && out.contains("running"),
        "{out}"
    );
    let (code, out, err) = run_peerctl(
        client.home.path(),
        &["status", &id, "--peer", "box", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(st["state"], "running");
    assert_eq!(st["restarts"], 0);

    // logs -f: a line the container prints after the request arrives within a second.
    let mut follow = Command::new(peerctl_bin())
        .arg("--home")
        .arg(client.home.path())
        .args(["--no-mdns", "logs", &id, "--peer", "box", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("peerctl logs -f");
    let mut lines = BufReader::new(follow.stderr.take().expect("stderr")).lines();
    // The first line already printed (startup) proves the stream is live.
    let mut stdout = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let first = within(15, "first log line", stdout.next_line())
        .await
        .expect("read");
    assert_eq!(first.as_deref(), Some("container starting"));
    let marker = format!("/marker-{}", std::process::id());
    let requested = Instant::now();
    let _ = web
        .get(gw.url("web", &marker))
        .send()
        .await
        .expect("marker request");
    let seen = within(5, "the request's log line", async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(&marker) {
                return requested.elapsed();
            }
        }
        panic!("logs -f ended before the marker appeared");
    })
    .await;
    assert!(seen < Duration::from_secs(1), "log line took {seen:?}");
    let _ = follow.kill().await;

    let container = {
        let runtime = DockerRuntime::connect().await.expect("docker");
        let managed = runtime.list_managed().await.expect("list");
        managed
            .into_iter()
            .find(|m| m.deployment.as_ref().is_some_and(|d| d.deployment_id == id))
            .expect("the deployment's container")
    };
    let (code, _, err) = run_peerctl(client.home.path(), &["stop", &id, "--peer", "box"]).await;
    assert_eq!(code, 0, "{err}");
    let resp = web
        .get(gw.url("web", "/"))
        .send()
        .await
        .expect("GET after stop");
    assert_eq!(resp.status(), 404, "route withdrawn: the URL answers 404");
    let runtime = DockerRuntime::connect().await.expect("docker");
    assert!(
        runtime.status(&container.id).await.is_err(),
        "container removed"
    );
    let (code, _, err) = run_peerctl(client.home.path(), &["status", &id, "--peer", "box"]).await;
    assert_eq!(code, 6, "not found after stop: {err}");
}
