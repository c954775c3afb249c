//! `peerctl fleet …` against a gateway's fleet service (an in-process libp2p node with a
//! `FleetHub` that holds any fleet, as the gateway runs it): the entries peerctl writes reach
//! the gateway, a robot's join made there comes back to `members`, robots' signed statuses
//! come back to `status`, and an unreachable gateway is reported without failing the write.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use peercompute_fleet::{
    AppStatus, FleetId, Join, JoinToken, MemberKey, Op, Phase, PushResult, SignedStatus,
    StatusReport,
};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{self, FleetHub, HubPolicy, unix_now};
use peercompute_p2p::{Node, NodeConfig};

/// Runs peerctl off the async runtime's threads (the gateway node runs on them).
async fn peerctl(home: &Path, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_peerctl"));
    command
        .env_remove("PEERCOMPUTE_HOME")
        .arg("--home")
        .arg(home)
        .args(["--timeout", "5s"])
        .args(args);
    let run = tokio::task::spawn_blocking(move || command.output().expect("peerctl runs"));
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("peerctl ends within 60 s")
        .expect("joined")
}

async fn ok(home: &Path, args: &[&str]) -> (String, String) {
    let out = peerctl(home, args).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "peerctl {args:?}: {stderr}");
    (stdout, stderr)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A gateway's fleet service: a listening node and a hub that holds any fleet.
async fn gateway(dir: &Path) -> (Node, FleetHub, String) {
    let identity = Identity::generate().expect("identity");
    let node = Node::start(
        &identity,
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            mdns: false,
            hole_punch_wait: Duration::ZERO,
            ..NodeConfig::default()
        },
    )
    .await
    .expect("gateway node");
    let policy = HubPolicy {
        admit: Arc::new(|_| true),
        accept_new_fleets: true,
        max_fleets: 4,
        max_entries: 1000,
    };
    let (hub, _) = FleetHub::open(&dir.join("gateway-fleets"), policy).expect("hub");
    tokio::spawn(fleet_hub::serve(node.clone(), hub.clone()));
    let addr = node.listen_addrs().into_iter().next().expect("bound");
    let text = format!("{}@{addr}", node.peer_id());
    (node, hub, text)
}

fn entries(hub: &FleetHub, fleet: &FleetId) -> usize {
    hub.with_log(fleet, |log| log.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_reach_the_gateway_and_joins_and_statuses_come_back() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("admin");
    let (_node, hub, gw) = gateway(dir.path()).await;
    ok(&home, &["init"]).await;
    ok(&home, &["gateways", "add", &gw]).await;

    // create: the genesis and the admin grant go out with the first sync.
    let (stdout, stderr) = ok(&home, &["fleet", "create", "lab"]).await;
    let fleet: FleetId = stdout.trim().parse().expect("a fleet id");
    assert_eq!(entries(&hub, &fleet), 2, "{stderr}");
    assert!(stderr.contains("0 entries received, 2 sent"), "{stderr}");

    // invite: the token names the gateway; the invite is at the gateway.
    // (With --json, stderr is kept for errors: the notes go to the log.)
    let (stdout, stderr) = ok(
        &home,
        &["fleet", "invite", "--group", "production", "--json"],
    )
    .await;
    assert!(stderr.is_empty(), "{stderr}");
    let token = JoinToken::parse(json(&stdout)["token"].as_str().expect("token")).expect("valid");
    assert_eq!(token.fleet(), fleet);
    assert_eq!(token.token.bootstrap, std::slice::from_ref(&gw));
    assert_eq!(entries(&hub, &fleet), 3);

    // A robot joins at the gateway with the token; `members` brings the join back.
    let robot = Identity::generate().expect("robot");
    let robot_key = MemberKey(robot.public_key_bytes());
    let join = Op::Join(Join {
        invite: token.entry.hash(),
        name: "bot-1".into(),
        proof: token.proof_for(&robot_key),
    });
    let entry = hub
        .with_log(&fleet, |log| {
            log.author(robot.signing_key(), join, unix_now())
        })
        .expect("held")
        .expect("valid");
    let stored = hub.insert(fleet, vec![entry], None);
    assert!(matches!(stored[..], [PushResult::Stored(_)]), "{stored:?}");
    let (stdout, _) = ok(&home, &["fleet", "members", "--json"]).await;
    let members = json(&stdout);
    let bot = members
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["name"] == "bot-1")
        .unwrap_or_else(|| panic!("the joined robot is listed: {members}"));
    assert_eq!(bot["groups"], serde_json::json!(["production"]));

    // A release reaches the gateway, which folds it like a robot.
    let image = format!("127.0.0.1:5000/app@sha256:{}", "cd".repeat(32));
    ok(
        &home,
        &[
            "fleet",
            "release",
            &image,
            "--group",
            "production",
            "--port",
            "80",
        ],
    )
    .await;
    let desired = hub.with_log(&fleet, |log| {
        let group = log.state()?.groups.get("production")?;
        Some(group.desired()?.release.version.clone())
    });
    assert_eq!(desired.flatten().as_deref(), Some("v1"));

    // Before any report the robot is "never seen"; then its signed status shows.
    let (stdout, _) = ok(&home, &["fleet", "status"]).await;
    assert!(stdout.contains("never seen"), "{stdout}");
    let release = hub.with_log(&fleet, |log| log.heads()[0]).expect("held");
    let report = StatusReport {
        fleet,
        robot: robot_key,
        at_ms: unix_now() * 1000,
        agent: "test".into(),
        uptime_secs: 5,
        log_len: 5,
        apps: vec![AppStatus {
            group: "production".into(),
            release,
            version: "v1".into(),
            phase: Phase::Healthy,
            serving: Some("v1".into()),
            url: None,
            apply_ms: Some(900),
            reason: None,
            changed_at_ms: unix_now() * 1000,
        }],
        cpu_permille: 10,
        memory_used_bytes: 1,
        memory_total_bytes: 2,
        disk_free_bytes: 3,
        history: Vec::new(),
        group_names: Vec::new(),
    };
    assert!(hub.record_status(SignedStatus::sign(report, robot.signing_key())));
    let (stdout, _) = ok(&home, &["fleet", "status", "--json"]).await;
    let rows = json(&stdout);
    assert_eq!(rows[0]["name"], "bot-1");
    assert_eq!(rows[0]["apps"][0]["phase"], "healthy");
    assert!(rows[0]["last_seen_ms"].as_u64().is_some(), "{rows}");
    let (stdout, _) = ok(&home, &["fleet", "status", "--group", "staging", "--json"]).await;
    assert_eq!(json(&stdout), serde_json::json!([]));

    // A developer elsewhere, granted staging only, fetches the fleet by id through the
    // gateway: it may release to staging; production is refused before anything leaves.
    let dev_home = dir.path().join("dev");
    let (dev, _) = ok(&dev_home, &["init"]).await;
    ok(&dev_home, &["gateways", "add", &gw]).await;
    let grant = [
        "fleet",
        "grant",
        dev.trim(),
        "--role",
        "developer",
        "--groups",
        "staging",
    ];
    ok(&home, &grant).await;
    let (_, stderr) = ok(&dev_home, &["fleet", "--fleet", &fleet.to_string(), "log"]).await;
    assert!(stderr.contains("now known here as lab"), "{stderr}");
    let staging = [
        "fleet", "release", &image, "--group", "staging", "--port", "80",
    ];
    ok(&dev_home, &staging).await;
    let production = [
        "fleet",
        "release",
        &image,
        "--group",
        "production",
        "--port",
        "80",
    ];
    let out = peerctl(&dev_home, &production).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not in production"), "{stderr}");
    assert_eq!(
        entries(&hub, &fleet),
        7,
        "only the staging release was added"
    );

    // A second gateway that does not answer: reported, the write still lands on the first.
    let dead = Identity::generate().expect("id").peer_id();
    ok(
        &home,
        &["gateways", "add", &format!("{dead}@/ip4/127.0.0.1/tcp/1")],
    )
    .await;
    let args = [
        "fleet",
        "release",
        &image,
        "--group",
        "production",
        "--port",
        "80",
    ];
    let (_, stderr) = ok(&home, &args).await;
    assert!(
        stderr.contains(&format!("gateway {dead} unreachable")),
        "{stderr}"
    );
    assert!(stderr.contains("sent to gateway"), "{stderr}");
}
