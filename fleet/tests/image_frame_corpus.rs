//! The `image_frame` fuzz corpus (`fuzz/corpus/image_frame/`): the seeds are generated here and
//! compared with the files, every file (the seeds and anything the fuzzer adds) is replayed
//! through the checks the fuzz target runs (`fuzz/src/image_frame.rs`, included below), and
//! each seed's outcome is pinned. `PEERCOMPUTE_WRITE_SEEDS=1 cargo test -p peercompute-fleet
//! --test image_frame_corpus` rewrites the seed files.

#[path = "../fuzz/src/image_frame.rs"]
pub mod image_frame;

use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use image_frame::{ImageFrameEnd, ImageFrameReport, check_image_frames};
use peercompute_fleet::{
    BlobDigest, ImageMessage, MAX_IMAGE_BLOBS, MAX_IMAGE_FRAME, encode_image_message,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/image_frame")
}

fn frame(message: &ImageMessage) -> Vec<u8> {
    encode_image_message(message).expect("encodes")
}

fn report(messages: &[&'static str], end: ImageFrameEnd) -> ImageFrameReport {
    ImageFrameReport {
        messages: messages.to_vec(),
        end,
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>, ImageFrameReport)> {
    use ImageFrameEnd::*;
    let digest = BlobDigest([0x42; 32]);
    let want = frame(&ImageMessage::Want { digest });
    let have = frame(&ImageMessage::Have {
        manifest: br#"{"schemaVersion":2}"#.to_vec(),
        blobs: vec![(digest, 1024), (BlobDigest([7; 32]), 9)],
    });
    let blob = frame(&ImageMessage::Blob {
        digest,
        offset: 4096,
    });
    let start = frame(&ImageMessage::BlobStart { size: 1 << 30 });
    let error = frame(&ImageMessage::Error {
        message: "refused: not a member".into(),
    });
    let not_here = frame(&ImageMessage::NotHere);
    let mut exchange = want.clone();
    exchange.extend_from_slice(&have);
    let mut trailing = not_here.clone();
    trailing[3] = 2;
    trailing.push(0);
    // BlobStart's size written 0x80 0x00 (an overlong zero): accepted, re-encodes shorter.
    let overlong = vec![0, 0, 0, 3, 4, 0x80, 0x00];
    let many = frame(&ImageMessage::Have {
        manifest: vec![],
        blobs: vec![(digest, 1); MAX_IMAGE_BLOBS + 1],
    });
    let over = (MAX_IMAGE_FRAME as u32 + 1).to_be_bytes().to_vec();
    vec![
        ("want", want.clone(), report(&["Want"], Complete)),
        ("have", have.clone(), report(&["Have"], Complete)),
        ("not-here", not_here, report(&["NotHere"], Complete)),
        ("blob", blob, report(&["Blob"], Complete)),
        ("blob-start", start, report(&["BlobStart"], Complete)),
        ("error", error, report(&["Error"], Complete)),
        (
            "want-then-have",
            exchange,
            report(&["Want", "Have"], Complete),
        ),
        (
            "want-then-partial",
            [want.clone(), have[..9].to_vec()].concat(),
            report(&["Want"], NeedMore),
        ),
        ("empty", vec![], report(&[], Complete)),
        ("header-only", want[..4].to_vec(), report(&[], NeedMore)),
        ("just-over-max", over, report(&[], TooLarge)),
        ("trailing-byte", trailing, report(&[], Malformed)),
        (
            "overlong-varint",
            overlong,
            report(&["BlobStart"], Complete),
        ),
        ("too-many-blobs", many, report(&[], Malformed)),
        (
            "unknown-variant",
            vec![0, 0, 0, 1, 6],
            report(&[], Malformed),
        ),
    ]
}

#[test]
fn image_frame_corpus_replays_and_seeds_keep_their_outcomes() {
    let write = std::env::var_os("PEERCOMPUTE_WRITE_SEEDS").is_some();
    let seeds = seeds();
    for (name, bytes, _) in &seeds {
        let path = dir().join(name);
        if write {
            fs::create_dir_all(dir()).expect("corpus dir");
            fs::write(&path, bytes).expect("write seed");
        }
        let on_disk = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (PEERCOMPUTE_WRITE_SEEDS=1 writes it)",
                path.display()
            )
        });
        assert!(
            on_disk == *bytes,
            "seed image_frame/{name} is out of date (PEERCOMPUTE_WRITE_SEEDS=1 rewrites it)"
        );
    }
    let mut files: Vec<_> = fs::read_dir(dir())
        .expect("corpus directory is readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for path in &files {
        let data = fs::read(path).expect("corpus file is readable");
        if catch_unwind(|| check_image_frames(&data)).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "corpus inputs broke a property: {failures:?}"
    );
    for (name, bytes, expected) in &seeds {
        assert_eq!(&check_image_frames(bytes), expected, "seed `{name}`");
    }
    assert!(files.len() >= seeds.len());
}
