//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the same checks the fuzz
//! targets run (`fuzz/src/lib.rs`, included below), so every seed and every crash input ever
//! added stays a regression test under plain `cargo test`. The hand-written seeds also have
//! their expected outcome pinned, so a seed cannot silently stop testing what its name says.

use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use peercompute_tunnel_proto::{DecodeError, MAX_CONTROL_FRAME, MAX_STREAM_HEADER, NameError};

#[path = "../fuzz/src/lib.rs"]
pub mod checks;

use checks::{End, Report, check_control_frames, check_stream_headers};

#[path = "../fuzz/src/control_plane.rs"]
pub mod control_plane_checks;

/// Every file of `fuzz/corpus/<target>/`, sorted; fails when there are none.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is unreadable: {e}", dir.display()));
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.expect("corpus directory entry is readable");
        let path = entry.path();
        if path.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let data = fs::read(&path).expect("corpus file is readable");
            files.push((name, data));
        }
    }
    assert!(
        !files.is_empty(),
        "corpus directory {} has no files",
        dir.display()
    );
    files.sort();
    files
}

/// Runs `check` over every file, collecting the panics (with file names) instead of stopping at
/// the first, then checks the pinned outcomes of the seeds.
fn replay(target: &str, check: fn(&[u8]) -> Report, seeds: &[(&str, Report)]) {
    let files = corpus(target);
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for (name, data) in &files {
        match catch_unwind(|| check(data)) {
            Ok(report) => reports.push((name.as_str(), report)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{target} corpus inputs broke a property:\n{}",
        failures.join("\n")
    );
    for (seed, expected) in seeds {
        let got = reports
            .iter()
            .find(|(name, _)| name == seed)
            .map(|(_, report)| report)
            .unwrap_or_else(|| panic!("seed `{seed}` is missing from fuzz/corpus/{target}/"));
        assert_eq!(got, expected, "seed `{seed}` of {target}");
    }
    println!("{target}: replayed {} corpus files", files.len());
}

fn ok(decoded: usize, left: usize) -> Report {
    Report {
        decoded,
        end: End::NeedMore(left),
    }
}

fn refused(decoded: usize, e: DecodeError) -> Report {
    Report {
        decoded,
        end: End::Refused(e),
    }
}

#[test]
fn control_frame_corpus() {
    let too_large = |len| DecodeError::TooLarge {
        len,
        max: MAX_CONTROL_FRAME,
    };
    let seeds = [
        ("hello", ok(1, 0)),
        ("welcome", ok(1, 0)),
        ("register", ok(1, 0)),
        ("registered", ok(1, 0)),
        ("refused", ok(1, 0)),
        ("refused-unknown-code", ok(1, 0)),
        ("refused-try-later", ok(1, 0)),
        ("unregister", ok(1, 0)),
        ("ping", ok(1, 0)),
        ("pong", ok(1, 0)),
        ("goaway", ok(1, 0)),
        ("goaway-unknown-code", ok(1, 0)),
        ("register-granted", ok(1, 0)),
        (
            "register-granted-grant-v2",
            refused(0, DecodeError::UnknownVersion(2)),
        ),
        ("register-fleet", ok(1, 0)),
        (
            "register-fleet-empty-group",
            refused(0, DecodeError::Empty("group")),
        ),
        (
            "register-fleet-short-fleet",
            refused(0, DecodeError::Truncated("fleet")),
        ),
        (
            "register-fleet-bad-name",
            refused(0, DecodeError::Name(NameError::Hyphen)),
        ),
        ("three-frames", ok(3, 0)),
        ("frame-then-partial", ok(1, 2)),
        ("truncated-hello", ok(0, 8)),
        ("prefix-only", ok(0, 5)),
        ("empty", ok(0, 0)),
        ("oversized-prefix", refused(0, too_large(0xffff_ffff))),
        (
            "just-over-max",
            refused(0, too_large(MAX_CONTROL_FRAME + 1)),
        ),
        ("unknown-type", refused(0, DecodeError::UnknownType(0x7f))),
        ("unknown-type-zero", refused(0, DecodeError::UnknownType(0))),
        ("bad-utf8-agent", refused(0, DecodeError::Utf8("agent"))),
        ("trailing-bytes", refused(0, DecodeError::Trailing(1))),
        (
            "truncated-field",
            refused(0, DecodeError::Truncated("max_version")),
        ),
        (
            "register-bad-name",
            refused(0, DecodeError::Name(NameError::Hyphen)),
        ),
        (
            "welcome-count-lies",
            refused(0, DecodeError::Truncated("p2p_addrs")),
        ),
    ];
    replay("control_frame", check_control_frames, &seeds);
}

#[test]
fn stream_header_corpus() {
    let too_large = |len| DecodeError::TooLarge {
        len,
        max: MAX_STREAM_HEADER,
    };
    let seeds = [
        ("v4", ok(1, 0)),
        ("v6", ok(1, 0)),
        ("two-headers", ok(2, 0)),
        ("route-63", ok(1, 0)),
        // The HTTP bytes after the header start with `G`, which is no header version.
        (
            "v4-then-http",
            refused(1, DecodeError::UnknownVersion(b'G')),
        ),
        ("truncated", ok(0, 10)),
        ("prefix-only", ok(0, 3)),
        ("version-only", ok(0, 1)),
        ("empty", ok(0, 0)),
        ("oversized-prefix", refused(0, too_large(0xffff))),
        (
            "just-over-max",
            refused(0, too_large(MAX_STREAM_HEADER + 1)),
        ),
        (
            "unknown-version",
            refused(0, DecodeError::UnknownVersion(2)),
        ),
        ("unknown-kind", refused(0, DecodeError::UnknownKind(2))),
        ("unknown-family", refused(0, DecodeError::UnknownFamily(5))),
        ("bad-utf8-route", refused(0, DecodeError::Utf8("route"))),
        (
            "bad-route-name",
            refused(0, DecodeError::Name(NameError::BadChar('B'))),
        ),
        (
            "empty-route",
            refused(0, DecodeError::Name(NameError::Empty)),
        ),
        ("trailing-bytes", refused(0, DecodeError::Trailing(1))),
        ("truncated-ip", refused(0, DecodeError::Truncated("ip"))),
        ("missing-port", refused(0, DecodeError::Truncated("port"))),
    ];
    replay("stream_header", check_stream_headers, &seeds);
}

/// The control-plane corpus; its seeds' outcomes are pinned in `tests/control_plane_props.rs`.
#[test]
fn control_plane_frame_corpus() {
    let files = corpus("control_plane_frame");
    let failures: Vec<String> = files
        .iter()
        .filter(|(_, data)| {
            catch_unwind(|| control_plane_checks::check_control_plane(data)).is_err()
        })
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        failures.is_empty(),
        "control_plane_frame corpus inputs broke a property: {failures:?}"
    );
    println!("control_plane_frame: replayed {} corpus files", files.len());
}
