//! A fleet app's named volume outlives its releases, end to end (gateway, one robot joined by
//! token, a local registry, `peerctl` as the admin): v1 appends `v1` to `/data/log` as it
//! starts, v2 (released with `--volume-exclusive`: the old container is halted before the
//! new one starts, and the gap is reported) appends `v2`, and a rollback to v1 starts v1 again,
//! which appends once more — every write is still there, because the volume lives in the
//! fleet's scope, keyed by app, not in a container. Rollbacks do not roll data back. Then v3
//! asks for a device the robot's owner never granted: refused before anything starts; v4,
//! exclusive and never healthy, is removed and v1, halted for the switch, resumed. Last, the
//! robot leaves the group: the app stops, the volume stays.

use peercompute_runtime::PinnedImage;
use peercompute_runtime::testsupport::busybox;
use peercompute_runtime::volume_name;
use peercompute_tests::fleet_rig::{Rig, WEB_PORT, app_of, fleet_containers, wait_serving};
use peercompute_tests::within;

/// A web image `version` that appends its version to `/data/log` as it starts and serves
/// `/data` (`/` answers the version, `/log` every start so far), pushed to the rig's
/// registry and pinned.
async fn logging_image(rig: &Rig, version: &str) -> PinnedImage {
    // v4 never becomes healthy: it takes /healthz away.
    let health = if version == "v4" {
        "rm -f /data/healthz"
    } else {
        "echo ok > /data/healthz"
    };
    let start = format!(
        "echo {version} >> /data/log && echo {version} > /data/index.html && {health} && exec busybox httpd -f -p {WEB_PORT} -h /data"
    );
    rig.push(version, |scratch| {
        scratch
            .file("/bin/busybox", busybox().expect("busybox"), 0o755)
            .cmd(["/bin/busybox", "sh", "-c", &start])
            .env("PATH", "/bin")
            .expose(WEB_PORT)
    })
    .await
}

/// `peerctl fleet release` of `version` with the volume `data:/data` (and `extra` flags).
async fn release(rig: &Rig, version: &str, extra: &[&str]) {
    let timeout = if version == "v4" { "3s" } else { "30s" };
    let image = format!("{}:{version}", rig.repository);
    let port = WEB_PORT.to_string();
    let mut args = vec![
        "fleet",
        "release",
        &image,
        "--group",
        "production",
        "--port",
        &port,
        "--name",
        "web",
        "--version",
        version,
        "--health-path",
        "/healthz",
        "--health-timeout",
        timeout,
        "--volume",
        "data:/data:64M",
        "--json",
    ];
    args.extend_from_slice(extra);
    rig.json(&args).await;
}

#[tokio::test]
async fn a_fleet_apps_volume_keeps_every_releases_writes_across_a_rollback() {
    let rig = Rig::start(&[("production", 1)]).await;
    for version in ["v1", "v2", "v3", "v4"] {
        logging_image(&rig, version).await;
    }
    let robot = &rig.robots[0];
    // The app's volume, in the fleet's scope: removed when the test ends (robots first).
    let scope = format!("fleet:{}", rig.fleet);
    let volume = volume_name(&robot.peer.to_string(), &scope, "web", "data");
    rig.cleanup.volume(&volume);
    let log_url = rig.gw.url(&format!("web-{}", robot.name), "/log");
    let log = || async {
        match rig.client.get(&log_url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => format!("GET /log: {e}"),
        }
    };

    release(&rig, "v1", &[]).await;
    rig.wait_group_phase("production", "v1", "healthy").await;
    wait_serving(&rig.client, &robot.url, "v1", 60).await;
    assert_eq!(log().await, "v1\n");

    // v2, exclusive: v1 is halted before v2 starts; the gap is reported.
    release(&rig, "v2", &["--volume-exclusive"]).await;
    let rows = rig.wait_group_phase("production", "v2", "healthy").await;
    wait_serving(&rig.client, &robot.url, "v2", 60).await;
    assert_eq!(log().await, "v1\nv2\n", "v2 sees v1's write");
    let app = app_of(&serde_json::Value::Array(rows), &robot.name).expect("the robot's row");
    let reason = app["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exclusive switch: the app was down") && reason.contains(" ms"),
        "the gap of the exclusive switch is reported: {app}"
    );

    // Roll back to v1: it starts again on the same volume.
    rig.ok(&["fleet", "rollback", "--group", "production", "--to", "v1"])
        .await;
    wait_serving(&rig.client, &robot.url, "v1", 60).await;
    assert_eq!(
        log().await,
        "v1\nv2\nv1\n",
        "every release's writes are still there"
    );
    // v2's container goes after the drain; the volume stays with the one serving.
    within(30, "one container left", async {
        while fleet_containers(&rig.runtime, &robot.peer).await.len() != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(log().await, "v1\nv2\nv1\n");

    // v3 asks for a device this robot's owner never granted: refused before anything starts,
    // with the message saying who can grant it; v1 keeps serving, its data untouched.
    release(&rig, "v3", &["--device", "arm"]).await;
    let rows = rig.wait_group_phase("production", "v3", "failed").await;
    let app = app_of(&serde_json::Value::Array(rows), &robot.name).expect("the robot's row");
    let reason = app["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("this provider grants no device named `arm`. Only its owner can grant one")
            && reason.ends_with("nothing was started"),
        "{app}"
    );
    assert_eq!(app["serving"], "v1", "{app}");
    assert_eq!(fleet_containers(&rig.runtime, &robot.peer).await.len(), 1);
    assert_eq!(log().await, "v1\nv2\nv1\n", "v3 never started");

    // v4, exclusive, never healthy: v1 is halted, v4 starts (and writes), fails its health
    // gate and is removed, and v1 is resumed and serves again at its URL.
    release(&rig, "v4", &["--volume-exclusive"]).await;
    let rows = rig
        .wait_group_phase("production", "v4", "rolled back")
        .await;
    let app = app_of(&serde_json::Value::Array(rows), &robot.name).expect("the robot's row");
    let reason = app["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("never became healthy")
            && reason.contains("the serving release was halted for the switch and resumed after"),
        "{app}"
    );
    assert_eq!(app["serving"], "v1", "{app}");
    // v4's write stays (rollbacks do not roll data back); v1's container, resumed, starts its
    // program again (one more `v1`), is the only one left and answers at the robot's URL (its
    // route re-registered on its new port).
    let mut last = String::new();
    let resumed = within(30, "v1 resumed and answering", async {
        loop {
            let one = fleet_containers(&rig.runtime, &robot.peer).await.len() == 1;
            last = log().await;
            if one && last == "v1\nv2\nv1\nv4\nv1\n" {
                return true;
            }
            if last.lines().count() > 5 {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(resumed, "the log: {last:?}");

    // The robot leaves the group: its app stops, its volume stays (with its labels).
    rig.ok(&["fleet", "set-groups", &robot.name, "staging"])
        .await;
    within(60, "the app to stop", async {
        while !fleet_containers(&rig.runtime, &robot.peer).await.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let kept = rig
        .runtime
        .list_volumes(&robot.peer.to_string())
        .await
        .expect("list volumes");
    assert!(
        kept.iter()
            .any(|v| v.name == volume && v.labels.scope == scope && v.labels.app == "web"),
        "leaving a group keeps the volume: {kept:?}"
    );
}
