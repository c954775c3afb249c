//! The fuzz corpora (`fuzz/corpus/<target>/`): the seeds are generated here and compared with
//! the files, every file (the seeds and anything the fuzzer adds) is replayed through the same
//! checks the fuzz targets run (`fuzz/src/lib.rs`, included below), and each seed's outcome is
//! pinned, so a seed cannot silently stop testing what its name says.
//! `PEERCOMPUTE_WRITE_SEEDS=1 cargo test -p peercompute-fleet --test fuzz_corpus` rewrites the
//! seed files.

mod support;

#[path = "../fuzz/src/lib.rs"]
pub mod checks;

use std::fmt::Debug;
use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use checks::{
    EntryEnd, FrameEnd, FrameReport, TokenEnd, check_entry, check_fleet_frames, check_join_token,
    op_name,
};
use peercompute_fleet::{
    EntryHash, FleetMessage, JoinToken, MAX_ENTRY_BYTES, MAX_FLEET_FRAME, MAX_TOKEN_LEN, Op,
    SignedEntry, encode_message,
};
use support::*;

type Seeds<R> = Vec<(String, Vec<u8>, R)>;

fn dir_of(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file of the target's corpus, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = dir_of(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is unreadable: {e}", dir.display()));
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.expect("corpus directory entry is readable");
        if entry.path().is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((
                name,
                fs::read(entry.path()).expect("corpus file is readable"),
            ));
        }
    }
    files.sort();
    files
}

/// Writes the seeds (with `PEERCOMPUTE_WRITE_SEEDS`) or checks the files hold them; replays
/// every corpus file through `check`, collecting panics with file names; then checks each
/// seed's pinned outcome.
fn replay<R: Debug + PartialEq>(target: &str, check: fn(&[u8]) -> R, seeds: Seeds<R>) {
    let write = std::env::var_os("PEERCOMPUTE_WRITE_SEEDS").is_some();
    for (name, bytes, _) in &seeds {
        let path = dir_of(target).join(name);
        if write {
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
            "seed {target}/{name} is out of date (PEERCOMPUTE_WRITE_SEEDS=1 rewrites it)"
        );
    }
    let files = corpus(target);
    let mut failures = Vec::new();
    for (name, data) in &files {
        if let Err(panic) = catch_unwind(|| check(data)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{name}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{target} corpus inputs broke a property:\n{}",
        failures.join("\n")
    );
    for (name, bytes, expected) in &seeds {
        assert_eq!(&check(bytes), expected, "seed `{name}` of {target}");
    }
    println!("{target}: replayed {} corpus files", files.len());
}

/// A genesis and a release on it (by the fleet key), in a world with an invite.
fn world() -> (World, SignedEntry, SignedEntry) {
    let mut w = World::new();
    let genesis = w.log.iter().next().expect("a genesis").clone();
    let fk = w.fleet_key.clone();
    let release = w
        .write(&fk, release("production", 1, "v1"))
        .expect("the fleet key releases");
    (w, genesis, release)
}

fn seed<R>(name: &str, bytes: Vec<u8>, outcome: R) -> (String, Vec<u8>, R) {
    (name.to_owned(), bytes, outcome)
}

fn flip_last(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let last = out.len() - 1;
    out[last] ^= 0x01;
    out
}

fn entry_seeds() -> Seeds<EntryEnd> {
    let (mut w, genesis, release) = world();
    let refused = EntryEnd::Refused;
    let mut seeds: Seeds<EntryEnd> = every_op(&mut w)
        .into_iter()
        .map(|(key, op)| {
            let name = op_name(&op);
            let entry = author(&w, &key, op);
            seed(
                &format!("op-{name}"),
                entry.bytes().to_vec(),
                EntryEnd::Decoded(name),
            )
        })
        .collect();
    let body = &genesis.bytes()[1..genesis.bytes().len() - 64];
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = body.to_vec();
        f(&mut b);
        sign_raw(&w.fleet_key, &b)
    };
    let mut version_2 = genesis.bytes().to_vec();
    version_2[0] = 2;
    let mut with_parent = genesis.entry().clone();
    with_parent.parents = vec![EntryHash([7; 32])];
    let with_parent = postcard::to_allocvec(&with_parent).expect("serializes");
    let bytes = genesis.bytes();
    let fk = w.fleet_key.clone();
    let release_v2 = author(&w, &fk, release_with_attachments("production", 2, "v2"));
    let estop_v2 = author(&w, &fk, Op::estop_everything("fire drill"));
    // The same stop with `everything` false: op 9's stop in a second spelling.
    let estop_v2_plain = {
        let b = estop_v2.bytes();
        let mut body = b[1..b.len() - 64].to_vec();
        let flag = body.len() - 1;
        body[flag] = 0;
        sign_raw(&fk, &body)
    };
    seeds.extend([
        seed(
            "estop-v2",
            estop_v2.bytes().to_vec(),
            EntryEnd::Decoded("e-stop"),
        ),
        seed("estop-v2-plain", estop_v2_plain, refused("not_canonical")),
        seed(
            "release-v2",
            release_v2.bytes().to_vec(),
            EntryEnd::Decoded("release"),
        ),
        seed(
            "release-v2-empty",
            sign_raw(&w.fleet_key, &as_empty_release_v2(&release)),
            refused("not_canonical"),
        ),
        seed("empty", vec![], refused("too_short")),
        seed("version-2", version_2, refused("version")),
        seed(
            "truncated",
            bytes[..bytes.len() - 1].to_vec(),
            refused("malformed"),
        ),
        // The parents count (after the 32 bytes of the fleet) written 0x80 0x00.
        seed(
            "overlong-varint",
            with(&|b| {
                b.splice(32..33, [0x80, 0x00]);
            }),
            refused("not_canonical"),
        ),
        seed("trailing-byte", with(&|b| b.push(0)), refused("malformed")),
        // The op's variant index (before the name's 7 bytes) made 16, past the last variant
        // (RotateRoot, 15).
        seed(
            "unknown-op",
            with(&|b| {
                let i = b.len() - 8;
                b[i] = 16;
            }),
            refused("malformed"),
        ),
        seed("bad-signature", flip_last(bytes), refused("bad_signature")),
        seed(
            "wrong-author",
            sign_raw(&key(9), body),
            refused("bad_signature"),
        ),
        seed(
            "genesis-with-parent",
            sign_raw(&w.fleet_key, &with_parent),
            refused("invalid"),
        ),
        seed(
            "just-over-max",
            vec![1; MAX_ENTRY_BYTES + 1],
            refused("too_large"),
        ),
    ]);
    seeds
}

fn frame(message: &FleetMessage) -> Vec<u8> {
    encode_message(message).expect("seed messages fit a frame")
}

fn report(decoded: usize, entries: usize, statuses: usize, end: FrameEnd) -> FrameReport {
    FrameReport {
        decoded,
        entries,
        statuses,
        end,
    }
}

fn frame_seeds() -> Seeds<FrameReport> {
    let (w, genesis, release) = world();
    let messages = every_message(w.log.fleet(), &[&genesis, &release]);
    let names = [
        "push",
        "ack",
        "pull",
        "entries",
        "status-request",
        "status",
        "error",
        "statuses",
        "logs-request",
        "logs",
    ];
    let whole = |entries, statuses| report(1, entries, statuses, FrameEnd::NeedMore(0));
    let counts = [
        (2, 0),
        (0, 0),
        (0, 0),
        (2, 0),
        (0, 0),
        (0, 1),
        (0, 0),
        (0, 1),
        (0, 0),
        (0, 0),
    ];
    let mut seeds: Seeds<FrameReport> = names
        .iter()
        .zip(&messages)
        .zip(counts)
        .map(|((name, m), (e, s))| seed(name, frame(m), whole(e, s)))
        .collect();
    let pull = frame(&messages[2]);
    let push_damaged = FleetMessage::Push {
        fleet: w.log.fleet(),
        entries: vec![genesis.bytes().to_vec(), flip_last(release.bytes())],
    };
    let mut forged = signed_status(w.log.fleet(), release.hash());
    forged.report.cpu_permille += 1;
    let body = |b: &[u8]| [&(b.len() as u32).to_be_bytes()[..], b].concat();
    let mut overlong = pull[4..].to_vec();
    overlong.splice(33..34, [0x81, 0x00]);
    let refused = |kind| report(0, 0, 0, FrameEnd::Refused(kind));
    let need = |n| report(0, 0, 0, FrameEnd::NeedMore(n));
    seeds.extend([
        seed(
            "two-frames",
            [&pull[..], &pull[..]].concat(),
            report(2, 0, 0, FrameEnd::NeedMore(0)),
        ),
        seed(
            "frame-then-partial",
            [&pull[..], &pull[..10]].concat(),
            report(1, 0, 0, FrameEnd::NeedMore(10)),
        ),
        seed("push-damaged-entry", frame(&push_damaged), whole(1, 0)),
        seed(
            "status-forged",
            frame(&FleetMessage::Status(forged)),
            whole(0, 0),
        ),
        // Postcard reads the heads count 0x81 0x00 as 1: frames are not held to one encoding.
        seed("overlong-varint", body(&overlong), whole(0, 0)),
        seed("header-only", pull[..4].to_vec(), need(4)),
        seed(
            "truncated",
            pull[..pull.len() - 1].to_vec(),
            need(pull.len() - 1),
        ),
        seed("empty", vec![], need(0)),
        seed("oversized-prefix", vec![0xff; 4], refused("too_large")),
        seed(
            "just-over-max",
            ((MAX_FLEET_FRAME + 1) as u32).to_be_bytes().to_vec(),
            refused("too_large"),
        ),
        seed("unknown-message", body(&[0x7f]), refused("malformed")),
        seed(
            "trailing-bytes",
            body(&[&pull[4..], &[0][..]].concat()),
            refused("malformed"),
        ),
    ]);
    seeds
}

fn token_seeds() -> Seeds<TokenEnd> {
    let (mut w, genesis, _) = world();
    let token = w.invite(&["production"], 2, NOW + 3600);
    let text = token.to_text();
    let with_bootstrap = JoinToken {
        bootstrap: vec!["12D3KooWExample@/ip4/192.0.2.1/udp/4001/quic-v1".into()],
        ..token.clone()
    };
    let forged = JoinToken {
        secret: [43; 32],
        ..token.clone()
    };
    let not_invite = JoinToken {
        invite: genesis.bytes().to_vec(),
        ..token.clone()
    };
    let damaged_entry = JoinToken {
        invite: flip_last(&token.invite),
        ..token.clone()
    };
    let t = |s: &str| s.as_bytes().to_vec();
    let refused = TokenEnd::Refused;
    vec![
        seed("token", t(&text), TokenEnd::Parsed),
        seed(
            "token-with-bootstrap",
            t(&with_bootstrap.to_text()),
            TokenEnd::Parsed,
        ),
        seed(
            "token-in-whitespace",
            t(&format!("  {text}\n")),
            TokenEnd::Parsed,
        ),
        seed("empty", vec![], refused("prefix")),
        seed("no-prefix", t(&text[8..]), refused("prefix")),
        seed("bad-base64", t(&format!("{text}!")), refused("damaged")),
        seed("truncated", t(&text[..text.len() - 3]), refused("damaged")),
        seed(
            "too-long",
            t(&format!("pcjoin1.{}", "A".repeat(MAX_TOKEN_LEN))),
            refused("damaged"),
        ),
        seed("forged-secret", t(&forged.to_text()), refused("forged")),
        seed(
            "not-an-invite",
            t(&not_invite.to_text()),
            refused("damaged"),
        ),
        seed(
            "damaged-entry",
            t(&damaged_entry.to_text()),
            TokenEnd::BadEntry("bad_signature"),
        ),
    ]
}

#[test]
fn entry_corpus() {
    replay("entry", check_entry, entry_seeds());
}

#[test]
fn fleet_frame_corpus() {
    replay("fleet_frame", check_fleet_frames, frame_seeds());
}

#[test]
fn join_token_corpus() {
    replay("join_token", check_join_token, token_seeds());
}
