//! Named volumes end to end, on the real engine: an app's data survives a redeploy and a
//! daemon restart; another client's volume of the same app and name is its own (empty); a
//! volume in use is not removed; a volume over its share gets its app halted with the reason
//! in `status` and `ls`; a deploy that does not fit is refused with the numbers; and a
//! volume exported from one provider and imported into another holds the same bytes.
//!
//! One test, one gateway, two daemons (max 8 MiB of volumes, checked every second): each
//! step builds on the one before, which keeps the engine work (and CI time) small.

use std::time::Duration;

use bytes::Bytes;
use peercompute_identity::TrustStore;
use peercompute_provider::{Limits, ProviderConfig};
use peercompute_tests::{
    Alpn, GatewayOptions, TEST_PORT, TestClient, TestDaemon, TestGateway, TestImage, answer,
    https_client, run_peerctl, run_peerctl_bytes, within,
};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, DeployRequest, DeployResponse, MAX_VOLUME_DATA, Request, StatusRequest,
    StatusResponse, StopRequest, VolumeEnd, VolumeExportRequest, VolumeImportRequest, VolumeMount,
    VolumeRemoveRequest,
};
use peerctl::Client;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn small_volumes(config: &mut ProviderConfig) {
    config.max_volumes_size = 8 * MIB;
    config.volume_check_interval = Duration::from_secs(1);
}

fn deploy_req(image: &TestImage, name: &str, volume: &str, size: u64) -> Request {
    let mut req = DeployRequest::new(image.tag.clone(), TEST_PORT);
    req.name = Some(name.to_owned());
    req.volumes = vec![VolumeMount {
        name: volume.to_owned(),
        path: "/data".to_owned(),
        size_bytes: Some(size),
    }];
    Request::Deploy(req)
}

async fn deploy(client: &Client, request: &Request) -> DeployResponse {
    match answer(client, request).await {
        Ok(ControlPlaneMessage::DeployResponse(d)) => d,
        other => panic!("expected a deploy response, got {other:?}"),
    }
}

async fn stop(client: &Client, id: &str) {
    let stopped = answer(client, &Request::Stop(StopRequest { id: id.to_owned() })).await;
    assert!(
        matches!(stopped, Ok(ControlPlaneMessage::StopResponse(_))),
        "{stopped:?}"
    );
}

async fn status(client: &Client, id: &str) -> StatusResponse {
    match answer(
        client,
        &Request::Status(StatusRequest { id: id.to_owned() }),
    )
    .await
    {
        Ok(ControlPlaneMessage::StatusResponse(s)) => s,
        other => panic!("expected a status, got {other:?}"),
    }
}

/// GETs `path` of app `name` through the gateway; the body.
async fn get(gw: &TestGateway, name: &str, path: &str) -> String {
    let web = https_client(gw, &[name], Alpn::H1);
    let resp = web.get(gw.url(name, path)).send().await.expect("GET");
    assert_eq!(resp.status(), 200, "GET {name}{path}");
    resp.text().await.expect("body")
}

/// Waits until the daemon's tunnel has re-registered `n` routes after a restart.
async fn routes_back(daemon: &TestDaemon, n: usize) {
    let tunnel = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.tunnel.clone())
        .expect("tunnel");
    within(
        20,
        "re-registration",
        tunnel.wait_for(|s| matches!(s, peercompute_provider::TunnelStatus::Connected { registered, .. } if *registered >= n)),
    )
    .await;
}

async fn export(client: &Client, volume: &str) -> (Vec<u8>, VolumeEnd) {
    let request = Request::VolumeExport(VolumeExportRequest {
        volume: volume.to_owned(),
    });
    let mut framed = client.send(&request).await.expect("export sent");
    let mut tar = Vec::new();
    loop {
        match Client::next(&mut framed).await.expect("export frame") {
            ControlPlaneMessage::VolumeData(chunk) => {
                assert!(chunk.len() <= MAX_VOLUME_DATA, "{} bytes", chunk.len());
                tar.extend_from_slice(&chunk);
            }
            ControlPlaneMessage::VolumeEnd(end) => return (tar, end),
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn import(client: &Client, volume: &str, tar: &[u8], share: u64) -> VolumeEnd {
    let request = Request::VolumeImport(VolumeImportRequest {
        volume: volume.to_owned(),
        size_bytes: tar.len() as u64,
        sha256: hex::encode(Sha256::digest(tar)),
        share_bytes: Some(share),
        replace: false,
    });
    let mut framed = client.send(&request).await.expect("import sent");
    for chunk in tar.chunks(MAX_VOLUME_DATA) {
        framed
            .write(&ControlPlaneMessage::VolumeData(Bytes::copy_from_slice(
                chunk,
            )))
            .await
            .expect("data sent");
    }
    match Client::next(&mut framed).await {
        Ok(ControlPlaneMessage::VolumeEnd(end)) => end,
        other => panic!("expected the end of the import, got {other:?}"),
    }
}

/// A one-file ustar archive with `path` written as is (no builder would write `..`).
fn raw_tar(path: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[tokio::test]
async fn volumes_keep_data_stay_per_client_are_bounded_and_move_between_providers() {
    let (home1, p1) = TestDaemon::identity();
    let (home2, p2) = TestDaemon::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![p1, p2],
        ..GatewayOptions::default()
    })
    .await;
    let image = TestImage::load().await;
    let mut d1 =
        TestDaemon::start_with_settings(home1, &gw, Limits::default(), small_volumes).await;
    let alice = TestClient::new();
    let bob = TestClient::new();
    for c in [&alice, &bob] {
        c.trust(&d1);
        d1.trust(&c.peer_id());
    }
    let alice_notes = d1.volume(&alice.peer_id(), "notes", "data");
    let bob_notes = d1.volume(&bob.peer_id(), "notes", "data");
    assert_ne!(alice_notes, bob_notes);
    d1.volume(&alice.peer_id(), "hog", "fill");
    let a = alice.connect(&d1).await.expect("reachable");

    // Three requests, three lines in the volume.
    let notes = deploy_req(&image, "notes", "data", 2 * MIB);
    let first = deploy(&a, &notes).await;
    for n in 1..=3 {
        assert_eq!(
            get(&gw, "notes", "/cgi-bin/append").await.trim(),
            n.to_string()
        );
    }

    // In use: not removed, and the message names the deployment.
    let rm = Request::VolumeRemove(VolumeRemoveRequest {
        volume: "notes/data".into(),
    });
    let err = answer(&a, &rm).await.expect_err("in use");
    assert_eq!(err.kind.exit_code(), 8, "{err:?}");
    assert!(
        err.message.contains(&format!(
            "volume notes/data is mounted by deployment {} (running): stop it first",
            first.id
        )),
        "{}",
        err.message
    );

    // Stop and deploy again: the same three lines.
    stop(&a, &first.id).await;
    let second = deploy(&a, &notes).await;
    let log = get(&gw, "notes", "/cgi-bin/log").await;
    assert_eq!(log.lines().count(), 3, "{log}");

    // A daemon restart keeps the data (and the running container).
    d1.restart().await;
    routes_back(&d1, 1).await;
    assert_eq!(get(&gw, "notes", "/cgi-bin/log").await, log);
    let a = alice.connect(&d1).await.expect("reachable again");

    // Another client, same app and volume name: its own, empty volume.
    stop(&a, &second.id).await;
    let b = bob.connect(&d1).await.expect("reachable");
    let bobs = deploy(&b, &notes).await;
    assert_eq!(get(&gw, "notes", "/cgi-bin/log").await.trim(), "");
    assert_eq!(get(&gw, "notes", "/cgi-bin/append").await.trim(), "1");
    stop(&b, &bobs.id).await;
    let third = deploy(&a, &notes).await;
    assert_eq!(
        get(&gw, "notes", "/cgi-bin/log").await,
        log,
        "alice's data untouched"
    );

    // 2 + 2 MiB held: a 4 MiB volume fits exactly; writing 6 MiB into it halts its app.
    let hog = deploy(&a, &deploy_req(&image, "hog", "fill", 4 * MIB)).await;
    let before = d1.managed_count().await;
    let web = https_client(&gw, &["hog"], Alpn::H1);
    // The halt may cut this answer short.
    let _ = web.get(gw.url("hog", "/cgi-bin/fill?6")).send().await;
    let halted = within(20, "the volume check halting hog", async {
        loop {
            let st = status(&a, &hog.id).await;
            // The reason is recorded once the container has stopped; a status read in
            // between may see both.
            if st.stopped_reason.is_some()
                && st.state != peercompute_tunnel_proto::DeploymentState::Running
            {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let reason = halted.stopped_reason.as_deref().unwrap_or_default();

    assert!(
        reason.starts_with("stopped by the provider: volume hog/fill uses ")
            && reason
                .ends_with(", over its 4 MiB share; export it or redeploy with a larger :SIZE"),
        "{reason}"
    );
    let fill = halted.volumes.iter().find(|v| v.volume == "hog/fill");
    assert!(
        fill.is_some_and(|v| v.share_bytes == 4 * MIB && v.used_bytes > Some(4 * MIB)),
        "{:?}",
        halted.volumes
    );
    assert_eq!(d1.managed_count().await, before, "halted, not removed");
    let ControlPlaneMessage::ListResponse(ls) = answer(&a, &Request::List(Default::default()))
        .await
        .expect("ls")
    else {
        panic!("expected a list");
    };
    let listed = ls
        .deployments
        .iter()
        .find(|d| d.id == hog.id)
        .expect("hog listed");
    assert_eq!(listed.stopped_reason.as_deref(), Some(reason));
    // What `peerctl volumes ls` shows: alice's volumes only, the halted one with its user.
    let (code, out, err) = run_peerctl(
        alice.home.path(),
        &["volumes", "ls", "--peer", "prov", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let ls: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let volumes: Vec<&str> = ls
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|v| v["volume"].as_str())
        .collect();
    assert_eq!(volumes, ["hog/fill", "notes/data"], "{out}");
    assert_eq!(ls[0]["share_bytes"], 4 * MIB, "{out}");
    assert_eq!(ls[0]["in_use_by"][0], "hog (halted)", "{out}");

    // Nothing left: a new volume is refused with the numbers, before any container exists.
    let before = d1.managed_count().await;
    let err = answer(&a, &deploy_req(&image, "extra", "x", MIB))
        .await
        .expect_err("no room");
    assert_eq!(err.kind, peerctl::Kind::Limit, "{}", err.message);
    assert!(
        err.message
            .starts_with("volumes: asked 1 MiB for extra/x, ")
            && err
                .message
                .contains("available of 8 MiB (--max-volumes-size)"),
        "{}",
        err.message
    );
    assert_eq!(d1.managed_count().await, before);

    // Export from the first provider, import into a second, deploy there: same bytes.
    let (tar, end) = export(&a, "notes/data").await;
    assert_eq!(end.bytes, tar.len() as u64);
    assert_eq!(end.sha256, hex::encode(Sha256::digest(&tar)));
    // The same through peerctl: the archive on stdout, `sha256 <hex> <bytes>` on stderr.
    let (code, out, err) = run_peerctl_bytes(
        alice.home.path(),
        &["volumes", "export", "notes/data", "--peer", "prov"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(hex::encode(Sha256::digest(&out)), end.sha256, "{err}");
    assert!(
        err.contains(&format!("sha256 {} {}", end.sha256, end.bytes)),
        "{err}"
    );
    stop(&a, &third.id).await;
    let d2 = TestDaemon::start_with_settings(home2, &gw, Limits::default(), small_volumes).await;
    // The gateway keeps `notes` for the first provider: the data moves to app `moved`.
    d2.volume(&alice.peer_id(), "moved", "data");
    d2.trust(&alice.peer_id());
    TrustStore::open(alice.home.path())
        .expect("trust store")
        .add(&d2.peer_id.to_string(), Some("prov2"), &[d2.addr()])
        .expect("trust the second provider");
    let a2 = alice.connect(&d2).await.expect("second provider reachable");
    let imported = import(&a2, "moved/data", &tar, 2 * MIB).await;
    assert_eq!(imported.sha256, end.sha256);
    assert_eq!(imported.bytes, end.bytes);
    // Never over data: a second import into the now full volume is refused.
    let request = Request::VolumeImport(VolumeImportRequest {
        volume: "moved/data".into(),
        size_bytes: tar.len() as u64,
        sha256: end.sha256.clone(),
        share_bytes: None,
        replace: false,
    });
    let err = answer(&a2, &request).await.expect_err("not over data");
    assert!(
        err.message.contains("already holds data"),
        "{}",
        err.message
    );
    // An archive that climbs out of the volume: refused after its data is read (size and
    // SHA-256 match), no volume made, nothing left in the spool.
    let evil = raw_tar("data/../../etc/cron.d/x", b"* * * * * root id\n");
    let request = Request::VolumeImport(VolumeImportRequest {
        volume: "evil/data".into(),
        size_bytes: evil.len() as u64,
        sha256: hex::encode(Sha256::digest(&evil)),
        share_bytes: Some(MIB),
        replace: false,
    });
    let mut framed = a2.send(&request).await.expect("import sent");
    framed
        .write(&ControlPlaneMessage::VolumeData(Bytes::from(evil)))
        .await
        .expect("data sent");
    let err = Client::next(&mut framed).await.expect_err("climbs out");
    assert_eq!(err.kind, peerctl::Kind::BadRequest, "{}", err.message);
    assert!(err.message.contains("climbs with `..`"), "{}", err.message);
    let ControlPlaneMessage::VolumesResponse(ls) =
        answer(&a2, &Request::Volumes(Default::default()))
            .await
            .expect("volumes ls")
    else {
        panic!("expected the volumes");
    };
    let names: Vec<&str> = ls.volumes.iter().map(|v| v.volume.as_str()).collect();
    assert_eq!(names, ["moved/data"]);
    // An import abandoned before its data: its share comes back (the rest of the 8 MiB).
    let request = Request::VolumeImport(VolumeImportRequest {
        volume: "ghost/data".into(),
        size_bytes: 4096,
        sha256: "0".repeat(64),
        share_bytes: Some(6 * MIB),
        replace: false,
    });
    let mut framed = a2.send(&request).await.expect("import sent");
    framed
        .write(&ControlPlaneMessage::VolumeData(Bytes::new()))
        .await
        .expect("sent");
    let err = Client::next(&mut framed).await.expect_err("empty frame");
    assert!(
        err.message.contains("empty VolumeData frame"),
        "{}",
        err.message
    );
    let ControlPlaneMessage::VolumesResponse(ls) =
        answer(&a2, &Request::Volumes(Default::default()))
            .await
            .expect("volumes ls")
    else {
        panic!("expected the volumes");
    };
    let names: Vec<&str> = ls.volumes.iter().map(|v| v.volume.as_str()).collect();
    assert_eq!(names, ["moved/data"], "no share held for ghost/data");
    let spool = d2.home.path().join("state/spool");
    assert_eq!(
        std::fs::read_dir(&spool).map_or(0, |d| d.count()),
        0,
        "spool emptied"
    );
    deploy(&a2, &deploy_req(&image, "moved", "data", 2 * MIB)).await;
    let moved = get(&gw, "moved", "/cgi-bin/log").await;
    assert_eq!(
        hex::encode(Sha256::digest(moved.as_bytes())),
        hex::encode(Sha256::digest(log.as_bytes())),
        "the log on the second provider"
    );
}
