//! `peerctl fleet logs` with the real parts: a gateway, two `peercomputed` robots joined by
//! token to group production, a busybox app released to it (pinned by digest from a local
//! registry) that prints a start line and logs every request, and the `peerctl` binary. The
//! admin gets the app's lines prefixed with each robot's name (`--grep`, `--since`, `--tail`,
//! `--app`, `--json` too; the gateway, asked directly, says it is not a robot); a key with no
//! role and a viewer of group staging are both refused by the robots themselves, the reason
//! named on stderr and the exit code 3 (every robot refused); the viewer granted production
//! reads; with one robot stopped the other's lines still come, the stopped one is named, and
//! the exit is 1.

use std::time::Instant;

use peercompute_fleet::LogsQuery;
use peercompute_p2p::fleet_hub::{HubError, request_logs};
use peercompute_runtime::PinnedImage;
use peercompute_runtime::testsupport::{ScratchImage, busybox, unique_name};
use peercompute_tests::fleet::FleetMember;
use peercompute_tests::fleet_rig::{Rig, WEB_PORT};
use peercompute_tests::run_peerctl;

/// The line the app prints when it starts.
const MARKER: &str = "lekiwi-logs-marker";

/// A busybox web app that prints [`MARKER`] then logs each request (httpd -v), in the rig's
/// registry as `<repository>:VERSION`.
async fn chatty_image(rig: &Rig, version: &str) -> PinnedImage {
    let local = format!("{}:1", unique_name("pc-fleet-logs"));
    rig.cleanup.image(&local);
    let script =
        format!("echo {MARKER} {version}; exec /bin/busybox httpd -f -v -p {WEB_PORT} -h /www");
    ScratchImage::new(&local)
        .file("/bin/busybox", busybox().expect("busybox"), 0o755)
        .file("/www/index.html", format!("{version}\n"), 0o644)
        .file("/www/healthz", "ok\n", 0o644)
        .cmd(["/bin/busybox", "sh", "-c", &script])
        .env("PATH", "/bin")
        .expose(WEB_PORT)
        .load(&rig.runtime)
        .await
        .expect("load the image");
    rig.registry
        .push(&rig.runtime, &local, &rig.repository, version)
        .await
        .expect("push the image");
    let tagged = format!("{}:{version}", rig.repository);
    rig.cleanup.image(&tagged);
    let pinned = rig.runtime.resolve_digest(&tagged).await.expect("resolve");
    rig.cleanup.image(&pinned.to_string());
    pinned
}

/// A second client: its own home, the rig's gateway, the fleet known by id. Its peer id.
async fn other_client(rig: &Rig, home: &std::path::Path) -> String {
    let ok = |(code, stdout, stderr): (i32, String, String)| {
        assert_eq!(code, 0, "{stdout}{stderr}");
        stdout
    };
    ok(run_peerctl(home, &["init"]).await);
    let gateway = rig.gw.p2p_addr().await.to_string();
    ok(run_peerctl(home, &["gateways", "add", &gateway]).await);
    let id = ok(run_peerctl(home, &["id", "--json"]).await);
    let id: serde_json::Value = serde_json::from_str(&id).expect("id JSON");
    id["peer_id"].as_str().expect("peer_id").to_owned()
}

#[tokio::test]
async fn a_groups_logs_come_from_its_robots_and_only_for_those_allowed() {
    let mut rig = Rig::start(&[("production", 2)]).await;
    rig.robots.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = rig.robots.iter().map(|r| r.name.clone()).collect();
    chatty_image(&rig, "v1").await;
    rig.release("production", "v1", "30s").await;
    rig.wait_group_serving("production", "v1", 45).await;

    // The admin: each robot's start line and the requests it served, prefixed with its name.
    let fleet = rig.fleet.to_string();
    let logs = ["fleet", "logs", "--group", "production"];
    let started = Instant::now();
    let (code, stdout, stderr) = rig.peerctl(&logs).await;
    eprintln!(
        "fleet logs from 2 robots: {:?} (the peerctl run, gateway sync included)",
        started.elapsed()
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .all(|l| names.iter().any(|n| l.starts_with(&format!("{n} | ")))),
        "every line names its robot: {stdout}"
    );
    for name in &names {
        assert!(
            stdout.contains(&format!("{name} | {MARKER} v1")),
            "{name}'s start line: {stdout}"
        );
    }
    assert!(
        stdout.lines().count() >= 4,
        "requests are logged too: {stdout}"
    );

    // --grep and --json: only the matching line, per robot.
    let grep = [
        "fleet",
        "logs",
        "--group",
        "production",
        "--grep",
        MARKER,
        "--json",
    ];
    let (code, stdout, stderr) = rig.peerctl(&grep).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 2, "{stdout}");
    for (row, name) in rows.iter().zip(&names) {
        assert_eq!(row["robot"], name.as_str());
        assert_eq!(row["lines"], serde_json::json!([format!("{MARKER} v1")]));
        assert_eq!(row["error"], serde_json::Value::Null);
    }

    // --since and --tail: the robots' engine timestamps are recent, the last line only.
    let recent = [
        "fleet",
        "logs",
        "--group",
        "production",
        "--since",
        "10m",
        "--tail",
        "1",
        "--json",
    ];
    let (code, stdout, stderr) = rig.peerctl(&recent).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    for row in rows.as_array().expect("an array") {
        assert_eq!(row["lines"].as_array().map(Vec::len), Some(1), "{stdout}");
        assert_eq!(row["truncated"], false, "an asked tail is no truncation");
    }

    // --app names the group's app: another name is refused by each robot with what it runs.
    let other_app = ["fleet", "logs", "--group", "production", "--app", "teleop"];
    let (code, stdout, stderr) = rig.peerctl(&other_app).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(
        stderr.contains("app for group production is web, not teleop"),
        "{stderr}"
    );
    let web_app = ["fleet", "logs", "--group", "production", "--app", "web"];
    let (code, stdout, stderr) = rig.peerctl(&web_app).await;
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The gateway holds the log but runs no containers: it says so.
    let member = FleetMember::start(&rig.gw.p2p_addr().await, true).await;
    let query = LogsQuery {
        group: "production".into(),
        ..LogsQuery::default()
    };
    let asked = request_logs(&member.node, rig.gw.peer_id, rig.fleet, query).await;
    assert!(
        matches!(&asked, Err(HubError::Remote { message, .. }) if message.starts_with("not a robot")),
        "{asked:?}"
    );

    // A key with no role: every robot refuses, and says why.
    let stranger = tempfile::tempdir().expect("home");
    other_client(&rig, stranger.path()).await;
    let ask = ["fleet", "--fleet", &fleet, "logs", "--group", "production"];
    let (code, stdout, stderr) = run_peerctl(stranger.path(), &ask).await;
    assert_eq!(code, 3, "every robot refused: {stdout}{stderr}");
    assert!(stdout.is_empty(), "no lines: {stdout}");
    for name in &names {
        assert!(
            stderr.contains(&format!("{name}: ")),
            "{name} named: {stderr}"
        );
    }
    assert!(
        stderr.contains("not a member of the fleet with a role"),
        "{stderr}"
    );

    // A viewer of staging asking for production: refused with its groups; granted
    // production, the same client reads (the positive control).
    let viewer = tempfile::tempdir().expect("home");
    let viewer_id = other_client(&rig, viewer.path()).await;
    let grant = ["fleet", "grant", &viewer_id, "--role", "viewer", "--groups"];
    rig.ok(&[&grant[..], &["staging"]].concat()).await;
    // The grant reaches the robots through the gateway within a second: ask until it has.
    let (code, stdout, stderr) = until(viewer.path(), &ask, |_, _, stderr| {
        !stderr.contains("not a member of the fleet with a role")
    })
    .await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(
        stderr.contains("may act only in groups") && stderr.contains("not in production"),
        "{stderr}"
    );
    rig.ok(&[&grant[..], &["staging,production"]].concat())
        .await;
    let (code, stdout, stderr) = until(viewer.path(), &ask, |code, _, _| code == 0).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(MARKER), "{stdout}");

    // One robot stopped: the other's lines still come, the stopped one is named, exit 1.
    rig.robots[1].daemon.stop().await;
    let (code, stdout, stderr) = rig.peerctl(&logs).await;
    assert_eq!(code, 1, "one robot failed: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{} | {MARKER} v1", names[0])),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("{} | ", names[1])), "{stdout}");
    assert!(
        stderr.contains(&format!("{}: not reached", names[1]))
            && stderr.contains("1 of 2 robots of group production gave no logs"),
        "{stderr}"
    );
}

/// Runs peerctl with `home` until `done` holds for its result (at most 15 s); the last result.
async fn until(
    home: &std::path::Path,
    args: &[&str],
    done: impl Fn(i32, &str, &str) -> bool,
) -> (i32, String, String) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (code, stdout, stderr) = run_peerctl(home, args).await;
        if done(code, &stdout, &stderr) || tokio::time::Instant::now() >= deadline {
            return (code, stdout, stderr);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
