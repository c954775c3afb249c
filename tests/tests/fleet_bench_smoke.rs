//! Smoke runs of the fleet benchmarks — `fleet-bench` (3 members, 2 releases) and
//! `fleet-release-bench` (1 robot) — so a broken benchmark shows in CI in seconds; they check
//! the run completes and prints its table, not the figures.

use std::process::Command;

#[test]
fn fleet_bench_runs_and_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-bench"))
        .args(["--members", "3", "--rounds", "2"])
        .output()
        .expect("run fleet-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fleet-bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 members × 2 releases = 6 samples"),
        "{stdout}"
    );
    for figure in [
        "baseline",
        "propagation p50",
        "propagation p99",
        "target p99",
    ] {
        assert!(stdout.contains(figure), "no {figure}: {stdout}");
    }
}

/// Smoke run of `fleet-release-bench` (1 robot, 1 switch, 1 rollback): it completes, prints its
/// table and counts no failed visitor request.
#[test]
fn fleet_release_bench_runs_and_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-release-bench"))
        .args(["--robots", "1", "--switches", "1", "--rollbacks", "1"])
        .output()
        .expect("run fleet-release-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fleet-release-bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "floor: 1 containers started directly",
        "release → every robot serves it",
        "every robot rolled back",
        "visitor requests failed: 0 of",
    ] {
        assert!(stdout.contains(figure), "no {figure}: {stdout}");
    }
}
