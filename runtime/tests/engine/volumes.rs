//! Named volumes on the real engine: the data outlives `stop` (anonymous volumes do not),
//! a volume in use is never removed, export → import keeps bytes and owners, the measured
//! size follows what an app wrote, and a halted container keeps its data when resumed.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::MountType;
use bollard::query_parameters::ListContainersOptions;
use bytes::Bytes;
use futures_util::{TryStreamExt, stream};
use peercompute_runtime::testsupport::unique_name;
use peercompute_runtime::{
    ContainerError, ContainerState, LABEL_HELPER, VolumeError, VolumeLabels, volume_name,
};
use sha2::{Digest, Sha256};

use crate::common::{Fixture, READY_TIMEOUT, engine, http_get, mount, test_image, within};

#[tokio::test]
async fn a_named_volume_survives_stop_and_an_anonymous_one_does_not() {
    let fx = Fixture::new("vol-keep").await;
    within(async {
        // This image declares VOLUME /anon, so the engine adds an anonymous volume there.
        let image = format!("{}:1", unique_name("pc-test-vol-anon"));
        fx.cleanup.image(&image);
        test_image(&image)
            .volume("/anon")
            .load(&fx.runtime)
            .await
            .unwrap_or_else(|err| panic!("loading the image failed: {err}"));
        let (volume, _) = fx.volume("blog", "data").await;
        let mut spec = fx.script_spec("echo kept > /data/note; echo lost > /anon/note");
        spec.image = image;
        spec.attach.volumes = vec![mount(&volume, "/data")];
        let started = fx.start(&spec).await;
        fx.wait_for_line(&started.id, "script done").await;
        let inspect = engine()
            .inspect_container(&started.id, None)
            .await
            .expect("inspect");
        let host = inspect.host_config.clone().expect("host config");
        assert!(host.binds.unwrap_or_default().is_empty());
        let asked = host.mounts.expect("the named volume is asked as a mount");
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].typ, Some(MountType::VOLUME));
        assert_eq!(asked[0].source.as_deref(), Some(volume.as_str()));
        let mounts = inspect.mounts.unwrap_or_default();
        let anonymous = mounts
            .iter()
            .find(|m| m.destination.as_deref() == Some("/anon"))
            .and_then(|m| m.name.clone())
            .expect("an anonymous volume at /anon");
        fx.runtime.stop(&started.id).await.expect("stop");
        let gone = engine().inspect_volume(&anonymous).await;
        assert!(gone.is_err(), "the anonymous volume outlived stop");
        // The named one is still there, data and all, for the next container.
        let mut again = fx.script_spec("echo \"note=$(cat /data/note)\"");
        again.attach.volumes = vec![mount(&volume, "/data")];
        let second = fx.start(&again).await;
        assert_eq!(fx.wait_for_line(&second.id, "note=").await, "note=kept");
    })
    .await;
}

#[tokio::test]
async fn a_volume_is_reused_only_with_the_same_labels() {
    let fx = Fixture::new("vol-labels").await;
    within(async {
        let (volume, labels) = fx.volume("blog", "data").await;
        let reused = fx.runtime.ensure_volume(&volume, &labels).await;
        assert!(matches!(reused, Ok(false)), "{reused:?}");
        let listed = fx
            .runtime
            .list_volumes(&labels.provider)
            .await
            .expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].name, volume);
        assert_eq!(listed[0].labels, labels);
        assert!(listed[0].created_at.is_some());
        // Same engine name, another owner: refused, never shared.
        let intruder = VolumeLabels {
            scope: "peer:12D3KooWSomeoneElse".to_owned(),
            ..labels.clone()
        };
        let refused = fx.runtime.ensure_volume(&volume, &intruder).await;
        assert!(
            matches!(&refused, Err(VolumeError::Collision { found, .. }) if *found == labels.scope),
            "{refused:?}"
        );
        let other_provider = fx
            .runtime
            .list_volumes(&unique_name("provider-none"))
            .await
            .expect("list");
        assert!(other_provider.is_empty());
        let bad = fx
            .runtime
            .ensure_volume("/var/run/docker.sock", &labels)
            .await;
        assert!(matches!(bad, Err(VolumeError::InvalidName(_))), "{bad:?}");
    })
    .await;
}

#[tokio::test]
async fn a_volume_in_use_is_not_removed_running_or_halted() {
    let fx = Fixture::new("vol-inuse").await;
    within(async {
        let (volume, _) = fx.volume("blog", "data").await;
        let mut spec = fx.spec("serve");
        spec.attach.volumes = vec![mount(&volume, "/data")];
        let started = fx.start_ready(&spec).await;
        let refused = fx.runtime.remove_volume(&volume).await;
        assert!(
            matches!(&refused, Err(VolumeError::InUse { volume: v }) if *v == volume),
            "{refused:?}"
        );
        let users = fx.runtime.volume_users(&volume).await.expect("users");
        assert_eq!(users.len(), 1, "{users:?}");
        assert_eq!(users[0].container_id, started.id);
        assert_eq!(users[0].container_name, started.name);
        assert_eq!(
            users[0].deployment.as_deref(),
            Some(spec.deployment_id.as_str())
        );
        assert_eq!(users[0].state, ContainerState::Running);
        fx.runtime.halt(&started.id).await.expect("halt");
        let refused = fx.runtime.remove_volume(&volume).await;
        assert!(
            matches!(refused, Err(VolumeError::InUse { .. })),
            "{refused:?}"
        );
        let users = fx.runtime.volume_users(&volume).await.expect("users");
        assert_eq!(users[0].state, ContainerState::Exited);
        fx.runtime.stop(&started.id).await.expect("stop");
        assert!(
            fx.runtime
                .volume_users(&volume)
                .await
                .expect("users")
                .is_empty()
        );
        fx.runtime
            .remove_volume(&volume)
            .await
            .expect("removed once unused");
        let again = fx.runtime.remove_volume(&volume).await;
        assert!(
            matches!(again, Err(VolumeError::NotFound { .. })),
            "{again:?}"
        );
    })
    .await;
}

/// A tar in the export's shape: `data/`, `data/sub/`, `data/sub/blob` owned 1000:1000, with
/// modes that let the test's app (root without capabilities, so without DAC override) in.
fn owned_archive(blob: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, mode, body) in [
        ("data/", tar::EntryType::Directory, 0o755, &[][..]),
        ("data/sub/", tar::EntryType::Directory, 0o711, &[][..]),
        ("data/sub/blob", tar::EntryType::Regular, 0o604, blob),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_size(body.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_path(path).expect("short path");
        header.set_cksum();
        builder.append(&header, body).expect("in memory");
    }
    builder.into_inner().expect("in memory")
}

/// The tar's `data/sub/blob`: uid, gid, mode and SHA-256.
fn blob_entry(archive: &[u8]) -> (u64, u64, u32, [u8; 32]) {
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        let path = entry.path().expect("a path").display().to_string();
        if path == "data/sub/blob" {
            let header = entry.header().clone();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut body).expect("body");
            return (
                header.uid().expect("uid"),
                header.gid().expect("gid"),
                header.mode().expect("mode") & 0o7777,
                Sha256::digest(&body).into(),
            );
        }
    }
    panic!("no data/sub/blob in the archive");
}

async fn helpers_of(provider: &str) -> Vec<String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_HELPER}={provider}")],
        )])),
        ..Default::default()
    };
    engine()
        .list_containers(Some(options))
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.state.map(|s| s.to_string()).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn export_then_import_keeps_bytes_and_owners() {
    let fx = Fixture::new("vol-export").await;
    within(async {
        let (first, labels) = fx.volume("notes", "data").await;
        let (second, _) = fx.volume("notes", "copy").await;
        assert!(fx.runtime.volume_is_empty(&first).await.expect("peek"));
        let blob: Vec<u8> = (0..3 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let sum: [u8; 32] = Sha256::digest(&blob).into();
        let archive = Bytes::from(owned_archive(&blob));
        fx.runtime
            .import_volume(&first, stream::iter([Ok(archive)]))
            .await
            .expect("import");
        assert!(!fx.runtime.volume_is_empty(&first).await.expect("peek"));

        let export = fx.runtime.export_volume(&first).await.expect("export");
        // The helper exists only as a created container: it never runs.
        assert_eq!(helpers_of(&labels.provider).await, ["created"]);
        let exported: Vec<Bytes> = export.try_collect().await.expect("export stream");
        let exported: Vec<u8> = exported.concat();
        assert_eq!(blob_entry(&exported), (1000, 1000, 0o604, sum));

        // Into another volume, in 64 KiB pieces as the control plane would send it.
        let chunks: Vec<Result<Bytes, std::io::Error>> = exported
            .chunks(64 << 10)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        fx.runtime
            .import_volume(&second, stream::iter(chunks))
            .await
            .expect("import the export");
        let again: Vec<Bytes> = fx
            .runtime
            .export_volume(&second)
            .await
            .expect("export")
            .try_collect()
            .await
            .expect("export stream");
        assert_eq!(blob_entry(&again.concat()), (1000, 1000, 0o604, sum));

        // What an app sees in the imported volume.
        let mut spec = fx.script_spec(
            "echo \"owner=$(stat -c %u:%g:%a /data/sub/blob)\"; echo \"sum=$(sha256sum < /data/sub/blob)\"",
        );
        spec.attach.volumes = vec![mount(&second, "/data")];
        let started = fx.start(&spec).await;
        assert_eq!(
            fx.wait_for_line(&started.id, "owner=").await,
            "owner=1000:1000:604"
        );
        let line = fx.wait_for_line(&started.id, "sum=").await;
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        assert!(line.starts_with(&format!("sum={hex}")), "{line}");

        // Every helper is gone once the streams are done.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !helpers_of(&labels.provider).await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "helpers left behind");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let missing = fx
            .runtime
            .export_volume(&volume_name("p", "s", "no", "such"))
            .await;
        assert!(matches!(missing, Err(VolumeError::NotFound { .. })), "{missing:?}");
    })
    .await;
}

#[tokio::test]
async fn usage_follows_what_the_app_wrote() {
    let fx = Fixture::new("vol-usage").await;
    within(async {
        let (volume, _) = fx.volume("blog", "data").await;
        let before = fx.runtime.volume_usage(&volume).await.expect("usage");
        assert!(before.is_some_and(|b| b < 64 << 10), "{before:?}");
        let mut spec =
            fx.script_spec("dd if=/dev/zero of=/data/five bs=1M count=5 2>/dev/null; sync");
        spec.attach.volumes = vec![mount(&volume, "/data")];
        let started = fx.start(&spec).await;
        fx.wait_for_line(&started.id, "script done").await;
        let used = fx
            .runtime
            .volume_usage(&volume)
            .await
            .expect("usage")
            .expect("measurable on this host");
        assert!((5 << 20..6 << 20).contains(&used), "{used} bytes");
        // The engine's own measure (what a daemon that is not root gets) agrees.
        let engine_says = fx
            .runtime
            .engine_volume_usage(&volume)
            .await
            .expect("usage")
            .expect("the engine sizes local volumes");
        assert!(
            (5 << 20..6 << 20).contains(&engine_says),
            "{engine_says} bytes"
        );
        eprintln!("after writing 5 MiB: {used} bytes walked, {engine_says} bytes by system df");
    })
    .await;
}

#[tokio::test]
async fn a_halted_container_keeps_its_data_and_resumes() {
    let fx = Fixture::new("vol-halt").await;
    within(async {
        let (volume, _) = fx.volume("blog", "data").await;
        let mut spec =
            fx.script_spec("echo boot >> /data/boots; echo \"boots=$(wc -l < /data/boots)\"");
        spec.attach.volumes = vec![mount(&volume, "/data")];
        let started = fx.start_ready(&spec).await;
        fx.wait_for_line(&started.id, "boots=1").await;
        fx.runtime.halt(&started.id).await.expect("halt");
        fx.runtime
            .halt(&started.id)
            .await
            .expect("halting twice is fine");
        let status = fx.runtime.status(&started.id).await.expect("status");
        assert_eq!(status.state, ContainerState::Exited);
        let addr = fx.runtime.resume(&started.id).await.expect("resume");
        fx.runtime
            .wait_ready(&started.id, addr, READY_TIMEOUT)
            .await
            .expect("serves again");
        fx.wait_for_line(&started.id, "boots=2").await;
        assert_eq!(http_get(addr, "/").await.0, 200);
        let gone = fx.runtime.halt("peercompute-no-such-container").await;
        assert!(
            matches!(gone, Err(ContainerError::NotFound { .. })),
            "{gone:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn stale_helpers_are_removed() {
    let fx = Fixture::new("vol-stale").await;
    within(async {
        let (volume, labels) = fx.volume("blog", "data").await;
        // An export dropped while the process dies leaves its helper: simulate by leaking.
        let export = fx.runtime.export_volume(&volume).await.expect("export");
        std::mem::forget(export);
        assert_eq!(helpers_of(&labels.provider).await.len(), 1);
        let removed = fx
            .runtime
            .remove_stale_helpers(&labels.provider)
            .await
            .expect("remove");
        assert_eq!(removed, 1);
        assert!(helpers_of(&labels.provider).await.is_empty());
    })
    .await;
}
