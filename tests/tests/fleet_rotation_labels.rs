//! Key rotation keeps what the robot runs (the provider label of its first key,
//! `<home>/provider-label`; Docker cannot relabel): after the rotation a plain `peerctl deploy`
//! made before it is still adopted, listed to its owner, served and counted; an e-stop's
//! enforcer kills the fleet container by that label; a resume, and a new release (a new
//! container), mount the volume the app wrote before the rotation, every write still there.

use peercompute_tests::rotation_rig::*;
use std::time::{Duration, Instant};

use peercompute_tests::fleet_rig::{WEB_PORT, wait_serving, web_image};
use peercompute_tests::{Alpn, TestClient, https_client, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_the_robot_keeps_its_deployment_its_estop_and_its_volume() {
    let begun = Instant::now();
    let s = Serving::start(Setup::Volume).await;
    let (adm, home) = (s.admin_home.path(), s.home.path());
    let log_url = s.gw.url(&s.route, "/log");
    let volume_log = || async {
        let got = s.client.get(&log_url).send().await.expect("GET /log");
        got.text().await.expect("body")
    };
    assert_eq!(volume_log().await, "v1\n");

    // A plain deployment beside the fleet's app, by a client the robot trusts.
    let client = TestClient::new();
    let cl = client.home.path();
    web_image(
        &s.runtime,
        &s.registry,
        &s.cleanup,
        &s.repository,
        "plain",
        true,
    )
    .await;
    admin(home, &["peers", "add", &client.peer_id().to_string()]).await;
    let log = std::fs::read_to_string(home.join("provider.log")).expect("robot log");
    let addr = control_addr(&log).0.expect("the robot's control address");
    let peers_add = ["peers", "add", &s.old.to_string(), "--addr", &addr];
    admin(cl, &[&peers_add[..], &["--name", "box"]].concat()).await;
    let image = format!("{}:plain", s.repository);
    let port = WEB_PORT.to_string();
    let deploy = ["deploy", &image, "--peer", "box", "--port", &port];
    let deployed = admin(cl, &[&deploy[..], &["--name", "plain", "--json"]].concat()).await;
    let id = deployed["id"].as_str().expect("id").to_owned();
    let plain_client = https_client(&s.gw, &["plain"], Alpn::H1);
    let plain_url = s.gw.url("plain", "/");
    wait_serving(&plain_client, &plain_url, "plain", 30).await;
    let plain_container = s
        .runtime
        .list_managed()
        .await
        .expect("list containers")
        .into_iter()
        .find(|m| m.deployment.as_ref().is_some_and(|d| d.deployment_id == id))
        .expect("the plain deployment's container")
        .id;

    // The rotation: the robot switches keys and re-executes itself.
    let asked = s.rotate_key().await;
    let new = new_key(&asked);
    let token = asked["token"].as_str().expect("token");
    let spawned = Instant::now();
    admin(adm, &["fleet", "rotate-member", token]).await;
    let (switched, _) = s.wait_switch(spawned, &new).await;
    eprintln!("labels: rotated to {new} in {} ms", switched.as_millis());
    let label_file = home.join(peercompute_provider::PROVIDER_LABEL_FILE);
    let label = std::fs::read_to_string(&label_file).expect("provider-label");
    assert_eq!(
        label.trim(),
        s.old.to_string(),
        "the label is the first key"
    );

    // The plain deployment: adopted (not dropped, its container not removed as an orphan),
    // listed to its owner by the new key, served at its URL, counted running by the admin API.
    let addr = within(10, "the re-executed daemon's control plane", async {
        loop {
            let log = std::fs::read_to_string(home.join("provider.log")).expect("log");
            if let (Some(addr), 2..) = control_addr(&log) {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let peers_add = ["peers", "add", &new.to_string(), "--addr", &addr];
    admin(cl, &[&peers_add[..], &["--name", "box2"]].concat()).await;
    let listed = admin(cl, &["ls", "--peer", "box2", "--json"]).await;
    let row = listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["id"] == id.as_str());
    let row = row.unwrap_or_else(|| panic!("the robot lists {id} after the rotation: {listed}"));
    assert_eq!(row["state"], "running", "{row}");
    assert!(
        running(&s.runtime, &plain_container).await,
        "same container"
    );
    wait_serving(&plain_client, &plain_url, "plain", 10).await;
    // `peercomputed status`: the admin API's count of the deployments by their containers.
    let status = peercomputed_json(home, "status").await;
    assert_eq!(status["peer_id"], new.to_string().as_str(), "{status}");
    assert_eq!(status["deployments"]["running"], 1, "{status}");
    let log = std::fs::read_to_string(home.join("provider.log")).expect("log");
    for never in ["removing an orphan container", "dropping the deployment"] {
        assert!(!log.contains(never), "{never}: {log}");
    }

    // An e-stop: the enforcer kills the fleet container by its (old) label.
    let stopped = Instant::now();
    let estop = "fleet estop --group production --reason test";
    admin(adm, &estop.split(' ').collect::<Vec<_>>()).await;
    within(10, "the fleet container killed", async {
        while running(&s.runtime, &s.container[0]).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!(
        "labels: e-stop after the rotation: the fleet container down {} ms after peerctl was run",
        stopped.elapsed().as_millis()
    );
    let log = std::fs::read_to_string(home.join("provider.log")).expect("log");
    let killed = format!("container={} ", s.container[0]);
    let by_enforcer = log
        .lines()
        .any(|l| l.contains("container killed (kept until resume)") && l.contains(&killed));
    assert!(by_enforcer, "the enforcer found it by label: {log}");
    assert!(running(&s.runtime, &plain_container).await, "a group stop");

    // Resume: the kept container starts on its volume; then v2, a new container, mounts the
    // same volume (made before the rotation): every write is there.
    admin(adm, &["fleet", "resume", "--group", "production"]).await;
    wait_serving(&s.client, &s.url, "v1", 20).await;
    assert_eq!(volume_log().await, "v1\nv1\n");
    logging_image(&s.runtime, &s.registry, &s.cleanup, &s.repository, "v2").await;
    let release = format!(
        "fleet release {}:v2 --group production --port {WEB_PORT} --name web --version v2 --health-path /healthz --volume data:/data:64M --json",
        s.repository
    );
    admin(adm, &release.split(' ').collect::<Vec<_>>()).await;
    wait_serving(&s.client, &s.url, "v2", 30).await;
    assert_eq!(volume_log().await, "v1\nv1\nv2\n", "the same volume");
    let kept = s
        .runtime
        .list_volumes(&s.old.to_string())
        .await
        .expect("volumes");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let made = s
        .runtime
        .list_volumes(&new.to_string())
        .await
        .expect("volumes");
    assert!(made.is_empty(), "no volume under the new key: {made:?}");
    eprintln!(
        "fleet_rotation (labels): {:.1} s in all",
        begun.elapsed().as_secs_f64()
    );
}
