//! Replays the fuzz corpus of imported volume archives (`fuzz/corpus/volume_archive/`)
//! through `check_archive`, as the fuzz target does: no seed may panic or pass with more
//! than the share, and each hand-written seed's outcome is pinned, so a seed cannot silently
//! stop testing what its name says.

use std::fs;
use std::panic::catch_unwind;
use std::path::Path;

use peercompute_provider::volumes::{ArchiveRefusal, check_archive};

/// The share the fuzz target checks against.
const SHARE: u64 = 1 << 20;

/// Seed → `None` (accepted) or a word its refusal must contain.
const PINNED: &[(&str, Option<&str>)] = &[
    ("good", None),
    ("dotdot", Some("climbs with `..`")),
    ("absolute", Some("absolute")),
    ("outside-data", Some("outside data/")),
    ("setuid", Some("setuid")),
    ("hard-link", Some("hard link")),
    ("device", Some("character device")),
    ("fifo", Some("fifo")),
    ("symlink-escape", Some("leaves the volume")),
    ("symlink-absolute", Some("leaves the volume")),
    ("truncated-header", Some("not a readable tar")),
    ("over-share", Some("over the volume's share")),
    ("pax-sparse-1.0", Some("GNU.sparse.")),
    ("pax-sparse-0.1", Some("GNU.sparse.")),
    (
        "pax-xattr-capability",
        Some("SCHILY.xattr.security.capability"),
    ),
    ("pax-long-name", None),
    ("dir-with-size", Some("with a size")),
    ("pax-size-twice", Some("twice")),
    ("long-name-4gib", Some("long-name or PAX header of")),
];

#[test]
fn volume_archive_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/volume_archive");
    let mut seen = Vec::new();
    for entry in fs::read_dir(&dir).expect("the corpus directory is readable") {
        let path = entry.expect("a corpus entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = fs::read(&path).expect("a corpus file is readable");
        let outcome = catch_unwind(|| check_archive(std::io::Cursor::new(data.as_slice()), SHARE))
            .unwrap_or_else(|_| panic!("seed {name} panics the archive check"));
        if let Ok(summary) = &outcome {
            assert!(summary.file_bytes <= SHARE, "{name}: {summary:?}");
        }
        if let Some((_, want)) = PINNED.iter().find(|(seed, _)| *seed == name) {
            match (want, &outcome) {
                (None, Ok(_)) => {}
                (Some(word), Err(refusal)) => assert!(
                    refusal.to_string().contains(word),
                    "{name}: refused as `{refusal}`, expected `{word}`"
                ),
                _ => panic!("{name}: {outcome:?}, expected {want:?}"),
            }
        }
        seen.push(name);
    }
    for (seed, _) in PINNED {
        assert!(seen.iter().any(|s| s == seed), "seed {seed} is missing");
    }
}

#[test]
fn a_refusal_never_reads_past_the_share() {
    // The over-share seed claims 2 MiB with no data behind it: refused from the header.
    let data = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/volume_archive/over-share"),
    )
    .expect("seed");
    assert!(matches!(
        check_archive(std::io::Cursor::new(data.as_slice()), SHARE),
        Err(ArchiveRefusal::OverShare { .. })
    ));
}
