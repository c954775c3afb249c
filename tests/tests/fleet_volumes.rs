//! A fleet app's named volume outlives its releases, end to end (gateway, one robot joined by
//! token, a local registry, `peerctl` as the admin): v1 appends `v1` to `/data/log` as it
//! starts, v2 (released with `--volume-exclusive`: the old container is halted before the
//! new one starts, and the gap is reported) appends `v2`, and a rollback to v1 starts v1 again,
//! which appends once more — every write is still there, because the volume lives in the
//! fleet's scope, keyed by app, not in a container. Rollbacks do not roll data back. Then v3
//! asks for a device the robot's owner never granted: refused before anything starts.

use peercompute_runtime::PinnedImage;
use peercompute_runtime::testsupport::{ScratchImage, busybox, unique_name};
use peercompute_tests::fleet_rig::{Rig, WEB_PORT, app_of, fleet_containers, wait_serving};
use peercompute_tests::within;

/// A web image `version` that appends its version to `/data/log` as it starts and serves
/// `/data` (`/` answers the version, `/log` every start so far), pushed to the rig's
/// registry and pinned.
async fn logging_image(rig: &Rig, version: &str) -> PinnedImage {
    let local = format!("{}:1", unique_name(&format!("pc-fleet-vol-{version}")));
    rig.cleanup.image(&local);
    let start = format!(
        "echo {version} >> /data/log && echo {version} > /data/index.html && echo ok > /data/healthz && exec busybox httpd -f -p {WEB_PORT} -h /data"
    );
    ScratchImage::new(&local)
        .file("/bin/busybox", busybox().expect("busybox"), 0o755)
        .cmd(["/bin/busybox", "sh", "-c", &start])
        .env("PATH", "/bin")
        .expose(WEB_PORT)
        .load(&rig.runtime)
        .await
        .expect("load the image");
    rig.registry
        .push(&rig.runtime, &local, &rig.repository, version)
        .await
        .expect("push the image");
    let tagged = format!("{}:{version}", rig.repository);
    rig.cleanup.image(&tagged);
    let pinned = rig.runtime.resolve_digest(&tagged).await.expect("resolve");
    rig.cleanup.image(&pinned.to_string());
    pinned
}

/// `peerctl fleet release` of `version` with the volume `data:/data` (and `extra` flags).
async fn release(rig: &Rig, version: &str, extra: &[&str]) {
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
        "30s",
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
    for version in ["v1", "v2", "v3"] {
        logging_image(&rig, version).await;
    }
    let robot = &rig.robots[0];
    let log_url = rig.gw.url(&format!("web-{}", robot.name), "/log");
    let log = || async {
        rig.client
            .get(&log_url)
            .send()
            .await
            .expect("GET /log")
            .text()
            .await
            .expect("body")
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
}
