//! Smoke run of `fleet-bench` (3 members, 2 releases), so a broken benchmark shows in CI in
//! seconds; it checks the run completes and prints its table, not the figures.

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
