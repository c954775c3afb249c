//! The peer manifest's golden digest, canonical parsing, and `docker save` archives read back.

use std::io::Cursor;

use super::*;

fn layer(byte: u8, size: u64) -> Descriptor {
    Descriptor {
        digest: format!("sha256:{}", hex_of(&[byte; 32])),
        size,
    }
}

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

#[test]
fn golden_manifest_and_digest() {
    let manifest = peer_manifest(CONFIG, &[layer(0xab, 1024), layer(0x01, 7)]).expect("manifest");
    let expected = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"#,
            r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":1024}},"#,
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":7}}]}}"#
        ),
        sha256_digest(CONFIG),
        CONFIG.len(),
        "ab".repeat(32),
        "01".repeat(32),
    );
    assert_eq!(
        String::from_utf8(manifest.bytes.clone()).expect("utf8"),
        expected
    );
    // Pinned (computed apart with Python hashlib): changing the key order, spacing or media
    // types changes every peer-pinned release digest.
    assert_eq!(
        manifest.digest,
        "sha256:ad5049e5a520fbc97a5cfff8a752d04a1043e34d030bae2840c9fd8b7bd2fdd8"
    );
    assert_eq!(manifest.config.digest, sha256_digest(CONFIG));
    assert_eq!(manifest.blobs().len(), 3);
}

#[test]
fn parse_accepts_only_the_canonical_bytes_of_the_pinned_digest() {
    let manifest = peer_manifest(CONFIG, &[layer(7, 3)]).expect("manifest");
    let parsed = PeerManifest::parse(&manifest.bytes, &manifest.digest).expect("parses");
    assert_eq!(parsed, manifest);

    let other = sha256_digest(b"other");
    assert!(matches!(
        PeerManifest::parse(&manifest.bytes, &other),
        Err(OciError::DigestMismatch { .. })
    ));
    // Same meaning, other bytes: refused even when pinned by its own hash.
    let spaced = String::from_utf8(manifest.bytes.clone())
        .expect("utf8")
        .replacen(':', ": ", 1)
        .into_bytes();
    assert!(matches!(
        PeerManifest::parse(&spaced, &sha256_digest(&spaced)),
        Err(OciError::NotCanonical(_))
    ));
    let bad_digest = br#"{"config":{"digest":"sha256:\"x","size":1},"layers":[]}"#;
    assert!(PeerManifest::parse(bad_digest, &sha256_digest(bad_digest)).is_err());
    let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert!(matches!(
        PeerManifest::parse(&huge, &sha256_digest(&huge)),
        Err(OciError::NotCanonical(_))
    ));
}

#[test]
fn digests_are_checked_strictly() {
    assert!(is_sha256_digest(&format!("sha256:{}", "0f".repeat(32))));
    for bad in [
        format!("sha256:{}", "0F".repeat(32)),
        format!("sha256:{}", "0f".repeat(31)),
        format!("sha512:{}", "0f".repeat(32)),
        "sha256:".to_owned(),
    ] {
        assert!(!is_sha256_digest(&bad), "{bad}");
        assert!(
            peer_manifest(
                CONFIG,
                &[Descriptor {
                    digest: bad,
                    size: 1
                }]
            )
            .is_err()
        );
    }
}

/// A layer tar and a config naming its diff_id.
fn image(contents: &[u8]) -> (Vec<u8>, Vec<u8>, Descriptor) {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    layer
        .append_data(&mut header, "hello.txt", contents)
        .expect("append");
    let layer = layer.into_inner().expect("tar");
    let diff_id = sha256_digest(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id, diff_id]},
    })
    .to_string()
    .into_bytes();
    let descriptor = Descriptor {
        digest: diff_id,
        size: layer.len() as u64,
    };
    (layer, config, descriptor)
}

#[test]
fn an_archive_written_from_blobs_indexes_to_the_same_manifest_and_ranges() {
    let (layer, config, descriptor) = image(b"hello from a peer\n");
    let manifest =
        peer_manifest(&config, &[descriptor.clone(), descriptor.clone()]).expect("manifest");
    let tags = vec!["app:v1".to_owned()];
    let archive = write_save_archive(Vec::new(), &manifest, &config, &tags, |d| {
        assert_eq!(d, &descriptor);
        Ok(Cursor::new(layer.clone()))
    })
    .expect("archive");

    let index = SaveIndex::read(Cursor::new(&archive)).expect("index");
    assert_eq!(index.manifest, manifest);
    assert_eq!(index.config, config);
    assert_eq!(index.repo_tags, tags);
    for blob in manifest.blobs() {
        let range = index.ranges[&blob.digest];
        assert_eq!(range.size, blob.size);
        let bytes = &archive[range.offset as usize..(range.offset + range.size) as usize];
        assert_eq!(
            sha256_digest(bytes),
            blob.digest,
            "range of {}",
            blob.digest
        );
    }
}

#[test]
fn a_symlinked_layer_is_followed_and_a_missing_one_refused() {
    let (layer, config, descriptor) = image(b"x");
    let mut tar = tar::Builder::new(Vec::new());
    let config_name = format!("{}.json", hex_of(&Sha256::digest(&config)));
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": null,
        "Layers": ["a/layer.tar", "b/layer.tar"],
    }])
    .to_string();
    append(
        &mut tar,
        "manifest.json",
        manifest.len() as u64,
        manifest.as_bytes(),
    )
    .expect("add");
    append(&mut tar, &config_name, config.len() as u64, &config[..]).expect("add");
    append(&mut tar, "a/layer.tar", layer.len() as u64, &layer[..]).expect("add");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    tar.append_link(&mut link, "b/layer.tar", "../a/layer.tar")
        .expect("link");
    let archive = tar.into_inner().expect("tar");
    let index = SaveIndex::read(Cursor::new(&archive)).expect("index");
    assert_eq!(index.manifest.layers, vec![descriptor.clone(), descriptor]);

    let cut = archive.len() / 2;
    assert!(SaveIndex::read(Cursor::new(&archive[..cut])).is_err());
    assert!(matches!(
        SaveIndex::read(Cursor::new(b"not a tar at all".repeat(64))),
        Err(OciError::Archive(_) | OciError::Io(_))
    ));
}
