//! Images from peers, no registry needed (issue 13), with the real parts: a robot daemon
//! fetches a release pinned by a peer digest (an image no registry holds) from fleet members
//! connected to it over libp2p, verifies every blob and the manifest, loads it and runs it
//! behind the gateway; a member that serves altered bytes under the same digest is refused
//! by hash and dropped. (The release made and served by `peerctl fleet release
//! --image-source` is tested here once its flags are in peerctl.)
//!
//! The robot shares the test's Docker engine, so the image is also in the engine already; the
//! robot proves its own fetch through its `peer-images.json` record and what each member sent.

use std::sync::Arc;
use std::time::Instant;

use peercompute_fleet::BlobDigest;
use peercompute_identity::Identity;
use peercompute_p2p::{BlobSource, ImageShelf, Node, NodeConfig, PeerId, serve_images};
use peercompute_runtime::testsupport::{ScratchImage, busybox, unique_name};
use peercompute_runtime::{DockerRuntime, PeerImages, SaveIndex};
use peercompute_tests::fleet_rig::{Rig, Robot, WEB_PORT, serves, wait_serving};
use peercompute_tests::small_disk::SmallDisk;
use peercompute_tests::within;

/// A busybox web image answering `version` at `/` and `/healthz`, loaded into the engine
/// under `tag` only (pushed nowhere).
async fn local_web_image(runtime: &DockerRuntime, tag: &str, version: &str) {
    ScratchImage::new(tag)
        .file("/bin/busybox", busybox().expect("busybox"), 0o755)
        .file("/www/index.html", format!("{version}\n"), 0o644)
        .file("/www/healthz", "ok\n", 0o644)
        .cmd(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
        .env("PATH", "/bin")
        .expose(WEB_PORT)
        .load(runtime)
        .await
        .expect("load the image");
}

/// `docker save` of `image` into `path`, indexed.
async fn save(runtime: &DockerRuntime, image: &str, path: &std::path::Path) -> SaveIndex {
    runtime
        .export_image(image, path)
        .await
        .expect("docker save");
    SaveIndex::read(std::fs::File::open(path).expect("open")).expect("index")
}

/// A peer-pinned web image answering `version`: built into the engine under a fresh tag of
/// the rig's repository, saved to an archive file and indexed. The image, archive and index.
async fn peer_image(rig: &Rig, version: &str) -> (String, tempfile::NamedTempFile, SaveIndex) {
    let image = format!("{}-peer:{}", rig.repository, unique_name(version));
    rig.cleanup.image(&image);
    local_web_image(&rig.runtime, &image, version).await;
    let archive = tempfile::NamedTempFile::new().expect("archive file");
    let index = save(&rig.runtime, &image, archive.path()).await;
    (image, archive, index)
}

/// Releases `image` to group `lab` by its peer digest (`repo@sha256:<peer digest>`), as
/// `version`: peerctl needs no engine or archive for that.
async fn release_by_peer_digest(rig: &Rig, image: &str, index: &SaveIndex, version: &str) {
    let pinned = format!(
        "{}@{}",
        image.rsplit_once(':').expect("a tag").0,
        index.manifest.digest
    );
    rig.release_image(&pinned, "lab", version, "60s").await;
}

/// Makes `who` a viewer of the rig's fleet: a member robots may fetch images from.
async fn grant_viewer(rig: &Rig, who: &Identity) {
    let peer = who.peer_id().to_string();
    rig.ok(&["fleet", "grant", &peer, "--role", "viewer"]).await;
}

/// Adds `index`'s image, read from `archive`, to `shelf`.
fn shelve(shelf: &ImageShelf, index: &SaveIndex, archive: &std::path::Path) {
    let blobs = index
        .manifest
        .blobs()
        .iter()
        .map(|b| {
            let range = index.ranges[&b.digest];
            let source = BlobSource {
                path: archive.to_owned(),
                offset: range.offset,
                size: range.size,
            };
            (b.digest.parse().expect("a digest"), source)
        })
        .collect();
    let digest: BlobDigest = index.manifest.digest.parse().expect("a digest");
    shelf.add(digest, index.manifest.bytes.clone(), blobs);
}

/// A fleet member serving `index`'s image from `archive` to anyone who asks, connected to the
/// robot; its node and shelf.
async fn member_serving(
    who: &Identity,
    index: &SaveIndex,
    archive: &std::path::Path,
    robot: &Robot,
) -> (Node, ImageShelf) {
    let robot_addrs = robot
        .daemon
        .daemon
        .as_ref()
        .expect("running")
        .listen_addrs
        .clone();
    let node = Node::start(
        who,
        NodeConfig {
            mdns: false,
            ..NodeConfig::default()
        },
    )
    .await
    .expect("a node");
    let shelf = ImageShelf::default();
    shelve(&shelf, index, archive);
    tokio::spawn(serve_images(
        node.clone(),
        shelf.clone(),
        Arc::new(|_: &PeerId, _: &BlobDigest| Ok(())),
    ));
    within(10, "dial the robot", node.dial(robot.peer, robot_addrs))
        .await
        .expect("dialled");
    (node, shelf)
}

/// The other half of "on a LAN, robots fetch from each other": the image comes from fleet
/// members connected to the robot (not the releaser), one of which lies (the same peer
/// digest, a layer's bytes altered). The robot asks the liar first, refuses its layer by
/// hash, drops it and completes from the honest member.
#[tokio::test]
async fn a_robot_fetches_from_connected_members_and_drops_the_one_that_lies() {
    let started = Instant::now();
    let rig = Rig::start(&[("lab", 1)]).await;
    let robot = &rig.robots[0];

    let (image, honest_archive, index) = peer_image(&rig, "m1").await;
    let lying_archive = tempfile::NamedTempFile::new().expect("archive file");
    let mut bytes = std::fs::read(honest_archive.path()).expect("read");
    let layer = index.manifest.layers.last().expect("a layer").clone();
    let range = index.ranges[&layer.digest];
    bytes[(range.offset + range.size / 2) as usize] ^= 0xff;
    std::fs::write(lying_archive.path(), &bytes).expect("write");

    // Two viewers of the fleet; the liar's key sorts first, so the robot asks it first.
    let mut keys: Vec<Identity> = (0..2).map(|_| Identity::generate().expect("key")).collect();
    keys.sort_by_key(Identity::public_key_bytes);
    let (liar, honest) = (&keys[0], &keys[1]);
    for who in [liar, honest] {
        grant_viewer(&rig, who).await;
    }
    let (liar_node, liar_shelf) = member_serving(liar, &index, lying_archive.path(), robot).await;
    let (honest_node, honest_shelf) =
        member_serving(honest, &index, honest_archive.path(), robot).await;

    release_by_peer_digest(&rig, &image, &index, "m1").await;
    wait_serving(&rig.client, &robot.url, "m1", 60).await;

    let digest: BlobDigest = index.manifest.digest.parse().expect("a digest");
    let blobs = index.manifest.blobs().len();
    // The liar sent every blob (its config is right, its layer is not); the honest member
    // sent only the layer the robot refused from the liar.
    assert_eq!(liar_shelf.sent_to(&robot.peer, &digest), (blobs, blobs));
    assert_eq!(honest_shelf.sent_to(&robot.peer, &digest), (1, blobs));
    let record = PeerImages::open(&robot.daemon.home.path().join("fleet/peer-images.json"));
    assert_eq!(
        record.image_id(&index.manifest.digest),
        Some(index.manifest.config.digest.as_str())
    );
    liar_node.shutdown().await;
    honest_node.shutdown().await;
    println!("fleet_images (members): {:?}", started.elapsed());
}

/// F6, an image filling the disk: the robot's image store (`<home>/fleet/images`, here on a
/// tmpfs of its own) is full when a release arrives. The apply fails with a status that says
/// the disk is full and what to do, the release before it keeps serving, and once space is
/// freed the release applies by itself, with no new release or restart.
#[tokio::test]
async fn a_full_image_store_fails_the_release_clearly_keeps_the_old_one_and_recovers() {
    let disk = SmallDisk::mount(16 << 20, None).expect("small disk");
    let store = disk.path().to_owned();
    let rig = Rig::start_with(&[("lab", 1)], move |c| {
        let fleet = c.home.join("fleet");
        std::fs::create_dir_all(&fleet).expect("fleet dir");
        std::os::unix::fs::symlink(&store, fleet.join("images")).expect("link the image store");
    })
    .await;
    let robot = &rig.robots[0];
    let member = Identity::generate().expect("key");
    grant_viewer(&rig, &member).await;
    let (image1, archive1, index1) = peer_image(&rig, "d1").await;
    let (image2, archive2, index2) = peer_image(&rig, "d2").await;
    let (node, shelf) = member_serving(&member, &index1, archive1.path(), robot).await;
    shelve(&shelf, &index2, archive2.path());

    release_by_peer_digest(&rig, &image1, &index1, "d1").await;
    wait_serving(&rig.client, &robot.url, "d1", 60).await;

    let filled = disk.fill().expect("fill");
    release_by_peer_digest(&rig, &image2, &index2, "d2").await;
    let rows = rig.wait_group_phase("lab", "d2", "failed").await;
    let reason = rows[0]["apps"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!("image store full ({filled} bytes of filler): d2 failed: {reason}");
    assert!(
        reason.contains("no space left on this robot") && reason.contains("free space"),
        "the status says the disk is full and what to do: {reason}"
    );
    assert!(
        serves(&rig.client, &robot.url, "d1").await,
        "d1 keeps serving while d2 cannot be stored"
    );

    disk.free(16 << 20).expect("free");
    let freed = Instant::now();
    // The planner tries a release refused for space again at its next pass (every 30 s).
    wait_serving(&rig.client, &robot.url, "d2", 90).await;
    println!(
        "space freed → d2 serving in {:.1} s, with no new release",
        freed.elapsed().as_secs_f64()
    );
    node.shutdown().await;
}
