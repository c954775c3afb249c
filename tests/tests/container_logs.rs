//! F6, container logs filling the disk: a deployment that prints far more log than the
//! sandbox keeps (60 MiB against the engine's `json-file` cap of 3 files × 10 MiB) holds at
//! most that cap on the provider's disk, keeps serving, and so does the deployment beside it;
//! `peerctl logs` still shows the newest lines.
//!
//! Real Docker engine; the log files are read where the engine keeps them (`LogPath`), so the
//! test needs root, as CI runs.

use std::time::{Duration, Instant};

use peercompute_identity::TrustStore;
use peercompute_provider::Limits;
use peercompute_runtime::DockerRuntime;
use peercompute_tests::{
    Alpn, TEST_PORT, TestClient, TestImage, deploy_world, deployment_container, https_client,
    run_peerctl,
};

/// What the chatty app prints.
const LOG_MIB: u64 = 60;
/// What the sandbox keeps at most: `max-file` × `max-size` (runtime `SandboxPolicy`'s
/// defaults), plus one line that may cross the size check.
const KEPT_MAX: u64 = 3 * 10 * 1024 * 1024 + 64 * 1024;
/// How long 60 MiB of log may take to pass through the engine.
const SPAM_TIMEOUT: Duration = Duration::from_secs(120);

async fn deploy(client: &TestClient, image: &TestImage, name: &str, env: &[&str]) -> String {
    let port = TEST_PORT.to_string();
    let mut args = vec![
        "deploy", &image.tag, "--peer", "box", "--port", &port, "--name", name, "--json",
    ];
    for e in env {
        args.extend(["--env", e]);
    }
    let (code, out, err) = run_peerctl(client.home.path(), &args).await;
    assert_eq!(code, 0, "deploy {name}: {err}");
    let deployed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    deployed["id"].as_str().expect("id").to_owned()
}

/// The engine's log files of the container of deployment `id`: their paths' total size.
async fn log_bytes_on_disk(id: &str) -> u64 {
    let runtime = DockerRuntime::connect().await.expect("docker");
    let container = deployment_container(&runtime, id).await;
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.LogPath}}", &container.id])
        .output()
        .expect("docker inspect");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = std::path::Path::new(&path);
    let dir = path.parent().expect("LogPath has a directory");
    let stem = path
        .file_name()
        .expect("LogPath names a file")
        .to_string_lossy()
        .into_owned();
    std::fs::read_dir(dir)
        .expect("read the container's directory (needs root)")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_container_keeps_at_most_its_log_cap_and_nothing_else_suffers() {
    let (gw, daemon, image) = deploy_world(Limits::default()).await;
    let client = TestClient::new();
    daemon.trust(&client.peer_id());
    TrustStore::open(client.home.path())
        .expect("client trust")
        .add(&daemon.peer_id.to_string(), Some("box"), &[daemon.addr()])
        .expect("trust provider");

    deploy(&client, &image, "quiet", &[]).await;
    let env = format!("LOG_MIB={LOG_MIB}");
    let started = Instant::now();
    let chatty = deploy(&client, &image, "chatty", &[&env]).await;

    // While the logs pour out, both apps answer.
    let web = https_client(&gw, &["quiet", "chatty"], Alpn::H1);
    let mut gets = 0;
    let mut peak = 0u64;
    let done = loop {
        for name in ["quiet", "chatty"] {
            let status = web
                .get(gw.url(name, "/"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            assert_eq!(status, 200, "{name} while the logs pour out");
            gets += 1;
        }
        peak = peak.max(log_bytes_on_disk(&chatty).await);
        // The newest lines only: the request log lines of the GETs above come after the marker.
        let (code, out, err) = run_peerctl(
            client.home.path(),
            &["logs", &chatty, "--peer", "box", "--tail", "200"],
        )
        .await;
        assert_eq!(code, 0, "logs: {err}");
        if out.contains("log spam done") {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < SPAM_TIMEOUT,
            "the app's {LOG_MIB} MiB of log did not pass through the engine in {SPAM_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let kept = log_bytes_on_disk(&chatty).await;
    peak = peak.max(kept);
    println!(
        "container logs: the app printed {LOG_MIB} MiB in {:.1} s; the engine keeps {:.1} MiB \
         (peak seen {:.1} MiB, cap {:.1} MiB); {gets} GETs to both apps meanwhile, all 200",
        done.as_secs_f64(),
        kept as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        KEPT_MAX as f64 / 1048576.0
    );
    assert!(
        peak <= KEPT_MAX,
        "the engine kept {peak} bytes of log, more than the sandbox's cap {KEPT_MAX}"
    );
    assert!(
        kept >= 10 * 1024 * 1024,
        "the cap was reached (the test printed enough to rotate): kept only {kept} bytes"
    );
}
