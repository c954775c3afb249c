//! A robot keeps the images of its group's last three releases and removes older ones, end
//! to end with the real parts (one gateway, one `peercomputed` joined by token, a local
//! registry — Debian's `docker-registry` — serving busybox web images pinned by digest, and
//! the `peerctl` binary as the admin). Each image is left on the engine only under its pinned
//! digest, as a robot that pulled it from the registry holds it: after releases v1..v4 the
//! engine holds v2, v3 and v4, not v1, and the robot's signed status reports the free disk
//! of the filesystem holding them. v5, which never becomes healthy, is rolled back and its
//! image removed (no release keeps it). Then a release asking more CPU than the robot's
//! limits is refused like a deploy would be: phase failed, the reason naming the limit and
//! the numbers, its image not even fetched, v4 still serving from the only container.

use std::time::Duration;

use peercompute_p2p::fleet_hub;
use peercompute_runtime::PinnedImage;
use peercompute_runtime::testsupport::{ScratchImage, busybox, unique_name};
use peercompute_tests::fleet::{FleetMember, peer_of};
use peercompute_tests::fleet_rig::{Rig, WEB_PORT, fleet_containers};
use peercompute_tests::within;

/// A web image `version` (answering `version` at `/`, `ok` at `/healthz`) with a layer of its
/// own — other tests' web images of the same version are byte-identical, so they would share
/// its image id — pushed to the rig's registry and pinned, then held locally only under its
/// pinned reference (build and registry tags removed, which deletes it: the robot pulls it),
/// the way a robot holds what it pulled.
async fn pulled_image(rig: &Rig, version: &str) -> PinnedImage {
    pulled_web_image(rig, version, true).await
}

/// [`pulled_image`], healthy (answering `/healthz`) or not.
async fn pulled_web_image(rig: &Rig, version: &str, healthy: bool) -> PinnedImage {
    let local = format!("{}:1", unique_name(&format!("pc-prune-{version}")));
    rig.cleanup.image(&local);
    let mut scratch = ScratchImage::new(&local)
        .file("/bin/busybox", busybox().expect("busybox"), 0o755)
        .file("/www/index.html", format!("{version}\n"), 0o644)
        .file("/unique", unique_name("layer"), 0o644)
        .cmd(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
        .env("PATH", "/bin")
        .expose(WEB_PORT);
    if healthy {
        scratch = scratch.file("/www/healthz", "ok\n", 0o644);
    }
    scratch.load(&rig.runtime).await.expect("load the image");
    rig.registry
        .push(&rig.runtime, &local, &rig.repository, version)
        .await
        .expect("push the image");
    let tagged = format!("{}:{version}", rig.repository);
    rig.cleanup.image(&tagged);
    let pinned = rig.runtime.resolve_digest(&tagged).await.expect("resolve");
    rig.cleanup.image(&pinned.to_string());
    for tag in [local, tagged] {
        rig.runtime
            .remove_image(&tag)
            .await
            .unwrap_or_else(|e| panic!("untag {tag}: {e}"));
    }
    assert!(
        !held(rig, &pinned).await,
        "{version} is only in the registry"
    );
    pinned
}

/// Whether the engine holds `pinned`.
async fn held(rig: &Rig, pinned: &PinnedImage) -> bool {
    rig.runtime
        .image_id(&pinned.to_string())
        .await
        .expect("inspect")
        .is_some()
}

#[tokio::test]
async fn a_robot_keeps_the_last_three_releases_images() {
    let rig = Rig::start(&[("production", 1)]).await;
    let mut images = Vec::new();
    for version in ["v1", "v2", "v3", "v4"] {
        images.push(pulled_image(&rig, version).await);
    }
    for (i, version) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
        rig.release("production", version, "30s").await;
        rig.wait_group_phase("production", version, "healthy").await;
        rig.wait_group_serving("production", version, 60).await;
        assert!(held(&rig, &images[i]).await, "{version} is on the engine");
    }
    within(30, "v1's image to be removed", async {
        while held(&rig, &images[0]).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for (image, version) in images[1..].iter().zip(["v2", "v3", "v4"]) {
        assert!(held(&rig, image).await, "{version} is kept for a rollback");
    }

    // The robot's signed status measures the disk that holds the engine's images.
    let gateway = rig.gw.p2p_addr().await;
    let observer = FleetMember::start(&gateway, true).await;
    let report = within(60, "the robot's status at the gateway", async {
        loop {
            let statuses =
                fleet_hub::request_statuses(&observer.node, peer_of(&gateway), rig.fleet)
                    .await
                    .unwrap_or_default();
            if let Some(s) = statuses.into_iter().next() {
                return s.report;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(report.disk_free_bytes > 0, "{report:?}");

    // v5 never becomes healthy: rolled back, v4 serving, and its image (kept by no release)
    // removed.
    let v5 = pulled_web_image(&rig, "v5", false).await;
    rig.release("production", "v5", "3s").await;
    rig.wait_group_phase("production", "v5", "rolled back")
        .await;
    rig.wait_group_serving("production", "v4", 30).await;
    within(30, "the rolled back v5's image to be removed", async {
        while held(&rig, &v5).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for (image, version) in images[1..].iter().zip(["v2", "v3", "v4"]) {
        assert!(held(&rig, image).await, "{version} is still kept");
    }

    // v6 asks for 8 cores; the robot offers 4 (the default --max-cpu).
    let v6 = pulled_image(&rig, "v6").await;
    let image = format!("{}:v6", rig.repository);
    let port = WEB_PORT.to_string();
    rig.json(&[
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
        "v6",
        "--cpu",
        "8",
        "--health-path",
        "/healthz",
        "--json",
    ])
    .await;
    let rows = rig.wait_group_phase("production", "v6", "failed").await;
    let app = &rows[0]["apps"][0];
    let reason = app["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("--max-cpu")
            && reason.contains("asked 8000m CPU")
            && reason.contains("of 4000m"),
        "the reason names the limit and the numbers: {app}"
    );
    assert_eq!(app["serving"], "v4", "{app}");
    rig.wait_group_serving("production", "v4", 30).await;
    assert!(
        !held(&rig, &v6).await,
        "a refused release's image is not fetched"
    );
    let robot = &rig.robots[0];
    assert_eq!(
        fleet_containers(&rig.runtime, &robot.peer).await.len(),
        1,
        "nothing was started beside v4"
    );
}
