//! Deployments addressed like Docker containers, with the real `peerctl` binary against a real
//! provider, gateway and Docker engine: `status`, `logs` and `stop` take a full id, a unique
//! prefix of the id, or the name; a prefix several deployments share is refused (exit 2)
//! with every candidate listed, and with `--json` that refusal is one JSON object on stderr.

use std::process::Stdio;

use peercompute_provider::Limits;
use peercompute_tests::{TEST_PORT, TestClient, deploy_world, peerctl_bin, run_peerctl, within};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Deployment ids are 12 random hex characters: among 17 two always share a first character.
const MAX_DEPLOYS: u32 = 17;

struct Deployed {
    id: String,
    name: String,
}

/// The shortest prefix of `id` that no other id starts with.
fn unique_prefix<'a>(id: &'a str, all: &[Deployed]) -> &'a str {
    (1..=id.len())
        .map(|n| &id[..n])
        .find(|p| all.iter().filter(|d| d.id.starts_with(p)).count() == 1)
        .expect("ids are distinct")
}

#[tokio::test]
async fn status_logs_and_stop_take_a_name_or_a_unique_id_prefix() {
    let limits = Limits {
        max_deploys: MAX_DEPLOYS,
        max_cpu_millis: MAX_DEPLOYS * 100,
        max_memory_bytes: u64::from(MAX_DEPLOYS) * (16 << 20),
    };
    let (_gw, daemon, image) = deploy_world(limits).await;
    let client = TestClient::new();
    daemon.trust(&client.peer_id());
    client.trust(&daemon); // alias "prov"
    let home = client.home.path();
    let port = TEST_PORT.to_string();

    // Deploy until two ids share their first character: that character is an ambiguous prefix.
    let mut all: Vec<Deployed> = Vec::new();
    let shared = loop {
        assert!(
            all.len() < MAX_DEPLOYS as usize,
            "17 ids with 16 first characters"
        );
        let name = format!("app{}", all.len());
        let (code, out, err) = run_peerctl(
            home,
            &[
                "deploy", &image.tag, "--peer", "prov", "--port", &port, "--name", &name, "--cpu",
                "100m", "--memory", "16M", "--json",
            ],
        )
        .await;
        assert_eq!(code, 0, "deploy {name}: {err}");
        let v: Value = serde_json::from_str(&out).expect("deploy JSON");
        let id = v["id"].as_str().expect("id").to_owned();
        let first = id[..1].to_owned();
        let collides = all.iter().any(|d| d.id.starts_with(&first));
        all.push(Deployed { id, name });
        if collides {
            break first;
        }
    };
    let sharing: Vec<&Deployed> = all.iter().filter(|d| d.id.starts_with(&shared)).collect();
    eprintln!(
        "{} deployments; prefix {shared:?} is shared by {}",
        all.len(),
        sharing.len()
    );

    // An ambiguous prefix: exit 2, every candidate named, nothing on stdout.
    let (code, out, err) = run_peerctl(home, &["status", &shared, "--peer", "prov"]).await;
    assert_eq!(code, 2, "ambiguous prefix: {err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(&format!("`{shared}` is ambiguous")), "{err}");
    for d in &sharing {
        assert!(err.contains(&format!("{} ({})", d.id, d.name)), "{err}");
    }
    let (code, _, err) = run_peerctl(home, &["stop", &shared, "--peer", "prov"]).await;
    assert_eq!(code, 2, "stop refuses an ambiguous prefix: {err}");
    // The same with --json: one JSON object on stderr, candidates included.
    let (code, _, err) = run_peerctl(home, &["logs", &shared, "--peer", "prov", "--json"]).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let e: Value = serde_json::from_str(&err).expect("a JSON error object");
    assert_eq!(e["kind"], "ambiguous");
    assert_eq!(e["exit_code"], 2);
    let mut candidates: Vec<&str> = e["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["id"].as_str().expect("candidate id"))
        .collect();
    candidates.sort_unstable();
    let mut want: Vec<&str> = sharing.iter().map(|d| d.id.as_str()).collect();
    want.sort_unstable();
    assert_eq!(candidates, want);

    // Logs by a unique prefix (one of the pair, so it is longer than one character).
    let target = sharing[0];
    let prefix = unique_prefix(&target.id, &all);
    assert!(prefix.len() >= 2 && prefix.len() < target.id.len());
    let (code, out, err) = run_peerctl(home, &["logs", prefix, "--peer", "prov"]).await;
    assert_eq!(code, 0, "logs {prefix}: {err}");
    assert_eq!(out.lines().next(), Some("container starting"), "{out}");
    let (code, out, err) = run_peerctl(home, &["logs", prefix, "--peer", "prov", "--json"]).await;
    assert_eq!(code, 0, "logs {prefix} --json: {err}");
    let first: Value = serde_json::from_str(out.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["stream"], "stdout");
    assert_eq!(first["line"], "container starting");
    for line in out.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }

    // logs -f --json by name: JSON lines as they come.
    let mut follow = Command::new(peerctl_bin())
        .arg("--home")
        .arg(home)
        .args([
            "--no-mdns",
            "logs",
            &target.name,
            "--peer",
            "prov",
            "-f",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("peerctl logs -f --json");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let line = within(15, "the first followed line", lines.next_line())
        .await
        .expect("read")
        .expect("a line before the end");
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["line"], "container starting");
    let _ = follow.kill().await;

    // Status by name gives that deployment.
    let (code, out, err) =
        run_peerctl(home, &["status", &target.name, "--peer", "prov", "--json"]).await;
    assert_eq!(code, 0, "status {}: {err}", target.name);
    let st: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(st["id"], target.id.as_str());

    // Stop by name: that one is gone, the other sharing the prefix still runs.
    let (code, _, err) = run_peerctl(home, &["stop", &target.name, "--peer", "prov"]).await;
    assert_eq!(code, 0, "stop {}: {err}", target.name);
    assert!(err.contains(&format!("stopped {}", target.id)), "{err}");
    let (code, out, err) = run_peerctl(home, &["ls", "--peer", "prov", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("ls JSON");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert!(!ids.contains(&target.id.as_str()), "{ids:?}");
    assert!(ids.contains(&sharing[1].id.as_str()), "{ids:?}");

    // No match: exit 6, for a name as for an id.
    let (code, _, err) = run_peerctl(home, &["status", &target.name, "--peer", "prov"]).await;
    assert_eq!(code, 6, "stopped name: {err}");
    assert!(
        err.contains(&format!("no deployment `{}`", target.name)),
        "{err}"
    );
    let (code, _, err) = run_peerctl(home, &["stop", &target.id, "--peer", "prov"]).await;
    assert_eq!(code, 6, "stopped id: {err}");

    // With one of the pair gone the shared prefix is unique: it addresses the other one.
    let (code, _, err) = run_peerctl(home, &["stop", &shared, "--peer", "prov"]).await;
    assert_eq!(code, 0, "stop {shared}: {err}");
    assert!(err.contains(&format!("stopped {}", sharing[1].id)), "{err}");

    for d in all.iter().filter(|d| !d.id.starts_with(&shared)) {
        let (code, _, err) = run_peerctl(home, &["stop", &d.name, "--peer", "prov"]).await;
        assert_eq!(code, 0, "stop {}: {err}", d.name);
    }
}
