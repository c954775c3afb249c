//! `peerctl fleet watch` and `peerctl fleet metrics` with the real parts (the shared
//! [`Rig`]: a gateway, one `peercomputed` robot joined by token, a local registry serving
//! busybox web images pinned by digest, and the `peerctl` binary as the admin runs it).
//! Release v1 (healthy) → `watch v1` follows the robot to healthy and exits 0; release v2
//! (its health path answers 404) → `watch` (the latest release) sees it roll back and exits
//! 1 naming the phase; a rollback to v1, which the robot kept serving → healthy at once, exit
//! 0; `metrics --json` counts 1 healthy and 1 rolled back: success rate 0.5.

use peercompute_tests::fleet_rig::Rig;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn watch_follows_a_release_to_healthy_or_rolled_back_and_metrics_count_them() {
    let rig = Rig::start(&[("production", 1)]).await;
    let name = rig.robots[0].name.clone();
    rig.image("v1", true).await;
    rig.image("v2", false).await;

    // v1: watch follows the robot from the release to healthy, exit 0.
    rig.release("production", "v1", "30s").await;
    let (code, stdout, stderr) = rig
        .peerctl(&["fleet", "watch", "v1", "--wait", "50s"])
        .await;
    eprintln!("fleet watch v1 (exit {code}):\n{stdout}{stderr}");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let last = stdout.lines().rev().nth(1).unwrap_or_default();
    assert!(
        last.contains(&name) && last.contains("healthy  v1  (apply "),
        "the robot's last change is healthy, with its apply time: {stdout}"
    );
    assert!(
        stdout.ends_with("release v1 to production: 1 healthy of 1 robot\n"),
        "{stdout}"
    );

    // v2 never becomes healthy: watch (the latest release, JSON lines) sees it roll back,
    // exit 1 with the summary.
    rig.release("production", "v2", "3s").await;
    let (code, stdout, stderr) = rig
        .peerctl(&[
            "fleet",
            "watch",
            "--group",
            "production",
            "--wait",
            "50s",
            "--json",
        ])
        .await;
    eprintln!("fleet watch --json (exit {code}):\n{stdout}{stderr}");
    assert_eq!(
        code, 1,
        "a rolled back robot fails the watch: {stdout}{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(json).collect();
    let phases: Vec<&str> = lines.iter().filter_map(|l| l["phase"].as_str()).collect();
    assert_eq!(phases.last(), Some(&"rolled_back"), "{stdout}");
    let rolled = &lines[lines.len() - 2];
    assert_eq!(rolled["robot"], name.as_str());
    assert_eq!(rolled["version"], "v2");
    assert_eq!(rolled["serving"], "v1");
    assert!(
        rolled["reason"].as_str().is_some_and(|r| r.contains("404")),
        "{rolled}"
    );
    let summary = &lines[lines.len() - 1];
    assert_eq!(
        summary["summary"],
        "release v2 to production: 1 rolled back of 1 robot"
    );
    assert!(stderr.contains("1 rolled back of 1 robot"), "{stderr}");

    // The human form of the same watch, now that it is over: one line, the summary, exit 1.
    let (code, stdout, stderr) = rig
        .peerctl(&["fleet", "watch", "v2", "--wait", "20s"])
        .await;
    eprintln!("fleet watch v2 (exit {code}):\n{stdout}{stderr}");
    assert_eq!(code, 1);
    assert!(stdout.contains("rolled back  v2  (apply "), "{stdout}");

    // A rollback returns the group to v1, which the robot kept serving: watching the
    // rollback follows v1, and the robot has nothing to do — healthy, exit 0.
    rig.ok(&["fleet", "rollback", "--group", "production"])
        .await;
    let (code, stdout, stderr) = rig
        .peerctl(&["fleet", "watch", "--group", "production", "--wait", "30s"])
        .await;
    eprintln!("fleet watch after the rollback (exit {code}):\n{stdout}{stderr}");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("healthy  v1"), "{stdout}");
    assert!(
        stdout.ends_with("rollback v1 to production: 1 healthy of 1 robot\n"),
        "{stdout}"
    );

    // metrics: 1 healthy (v1), 1 rolled back (v2) → success rate 0.5.
    let (code, stdout, stderr) = rig.peerctl(&["fleet", "metrics"]).await;
    eprintln!("fleet metrics (exit {code}):\n{stdout}{stderr}");
    let metrics = rig.json(&["fleet", "metrics", "--json"]).await;
    let production = &metrics[0];
    assert_eq!(production["group"], "production", "{metrics}");
    assert_eq!(production["success_rate"], 0.5, "{metrics}");
    assert_eq!(production["rollback_rate"], 0.5, "{metrics}");
    assert_eq!(
        (
            production["healthy"].as_u64(),
            production["rolled_back"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(
        production["median_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{metrics}"
    );
    let rows = production["rows"].as_array().expect("rows");
    let versions: Vec<(&str, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap_or_default(),
                r["healthy"].as_u64().unwrap_or(9),
                r["rolled_back"].as_u64().unwrap_or(9),
            )
        })
        .collect();
    assert_eq!(versions, [("v2", 0, 1), ("v1", 1, 0)]);
}
