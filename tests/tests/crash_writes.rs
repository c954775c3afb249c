//! F6: SIGKILL mid-write. For each persisted file kind, `state-writer` rewrites the file through
//! the real store code and is killed at a random moment, 100 times (`PEERCOMPUTE_CRASH_ROUNDS`
//! for more); after every kill the file opens and holds the old or the new version. The kills
//! must land inside the atomic write often enough to prove the window was hit (temporary files
//! left), and the next open or write removes those files.
//!
//! A second loop SIGKILLs the real `peercompute-gateway` while a provider registers names.
//!
//! Needs `target/debug/state-writer` and `peercompute-gateway` (`cargo build --workspace --bins`).

use std::time::Instant;

use peercompute_tests::crash::{CrashReport, gateway_kill_loop, run_kind, state_writer};

const KINDS: [&str; 9] = [
    "deployments",
    "nonces",
    "volumes",
    "applied",
    "names",
    "acme-cert",
    "trust",
    "identity",
    "fleet-log",
];
/// Kills per kind in CI; the issue asks for 100.
const ROUNDS: usize = 100;
/// At least this many kills per kind (of 100; a tenth of fewer) must leave a temporary file, or
/// the loop missed the window it is meant to test. Kills during the directory fsync after the
/// rename are inside the write too but leave none: they count as "new".
const MIN_INTERRUPTED: usize = 10;

fn rounds() -> usize {
    std::env::var("PEERCOMPUTE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}

#[test]
fn every_state_file_survives_kills_mid_write() {
    let writer = state_writer().expect("state-writer");
    // On disk (not tmpfs): fsync is real, so the kills land inside it.
    let parent = tempfile::tempdir().expect("tempdir");
    let rounds = rounds();
    let started = Instant::now();
    let mut reports: Vec<CrashReport> = Vec::new();
    for kind in KINDS {
        reports.push(run_kind(&writer, kind, rounds, parent.path()).expect(kind));
    }
    println!(
        "{} kinds × {rounds} kills in {:.1} s",
        KINDS.len(),
        started.elapsed().as_secs_f64()
    );
    for r in &reports {
        assert_eq!(r.kills, rounds, "{r}");
        assert_eq!(r.parsed, rounds, "{r}");
        assert_eq!(r.old + r.new, rounds, "{r}");
        assert_eq!(
            r.stale_after_next_write, 0,
            "temporary files of killed writers survived the next open/write: {r}"
        );
        assert!(
            r.interrupted >= MIN_INTERRUPTED.min(rounds / 10),
            "too few kills landed inside the write; the loop missed the window: {r}"
        );
    }
}

/// Kills of the real gateway binary; each restart costs a start and a tunnel handshake.
const GATEWAY_ROUNDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_while_names_register_keeps_every_confirmed_name() {
    let rounds = std::env::var("PEERCOMPUTE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GATEWAY_ROUNDS);
    let started = Instant::now();
    let report = gateway_kill_loop(rounds).await.expect("kill loop");
    println!("{report} ({:.1} s)", started.elapsed().as_secs_f64());
    assert_eq!(report.kills, rounds, "{report}");
    assert_eq!(report.parsed, rounds, "{report}");
    assert!(report.acknowledged >= rounds, "{report}");
}
