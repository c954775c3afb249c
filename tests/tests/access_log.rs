//! The gateway's access log against a live gateway, provider and backend: one JSON line per
//! request with every field, the query string cut off, no header value ever written
//! (Authorization, Cookie), rotation at a 4 KiB size keeping two older files, and no file at
//! all when the log is off (the default). Waits poll for a line, never sleep a fixed time.

use std::path::Path;
use std::time::{Duration, Instant};

use peercompute_tests::{Alpn, GatewayOptions, https_client, publish};

const SECRETS: [&str; 3] = ["hdr-s3cret", "c00kie-s3cret", "qs-s3cret"];

/// The lines of `path`, once there are at least `n` (the writer flushes every second).
async fn lines_at_least(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} lines in {} after 5 s, wanted {n}",
            lines.len(),
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `url` carrying a secret in the Authorization and Cookie headers; asserts a 200.
async fn get_with_secrets(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let resp = client
        .get(url)
        .header("authorization", "Bearer hdr-s3cret")
        .header("cookie", "session=c00kie-s3cret")
        .send()
        .await
        .expect("GET blog");
    assert_eq!(resp.status(), 200);
    resp
}

#[tokio::test]
async fn lines_have_every_field_no_secrets_and_rotate() {
    let dir = tempfile::tempdir().expect("log dir");
    let path = dir.path().join("access.log");
    let world = publish(
        GatewayOptions {
            access_log: Some(path.clone()),
            access_log_max_bytes: 4096,
            access_log_keep: 2,
            ..GatewayOptions::default()
        },
        "blog",
    )
    .await;
    let client = https_client(&world.gw, &["blog"], Alpn::H1);
    let resp = get_with_secrets(&client, &world.gw.url("blog", "/echo?token=qs-s3cret&x=1")).await;
    let body = resp.bytes().await.expect("body");
    let lines = lines_at_least(&path, 1).await;
    let line = &lines[0];
    assert_eq!(line["route"], "blog", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["path"], "/echo", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["bytes_in"], 0, "{line}");
    assert_eq!(line["bytes_out"], body.len(), "{line}");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
    assert!(
        line["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert_eq!(
        line["provider"],
        world.provider.identity.peer_id().to_string(),
        "{line}"
    );
    assert!(
        line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );

    // About 200 bytes a line: 60 requests fill the file past 4 KiB several times over.
    for i in 0..60 {
        let url = world
            .gw
            .url("blog", &format!("/echo?token=qs-s3cret&i={i}"));
        get_with_secrets(&client, &url).await;
    }
    // A last request with a path of its own: once its line is in the file, every line is.
    let resp = client
        .get(world.gw.url("blog", "/echo/last?token=qs-s3cret"))
        .send()
        .await
        .expect("GET the last");
    let _ = resp.bytes().await;
    let current = dir.path().join("access.log");
    let started = Instant::now();
    while !std::fs::read_to_string(&current).is_ok_and(|t| t.contains("\"/echo/last\"")) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the last line never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["access.log", "access.log.1", "access.log.2"]);
    for name in &names {
        let text = std::fs::read_to_string(dir.path().join(name)).expect("read");
        assert!(text.len() <= 4096, "{name}: {} bytes", text.len());
        for secret in SECRETS {
            assert!(!text.contains(secret), "{name} holds {secret}");
        }
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            assert!(v["path"] == "/echo" || v["path"] == "/echo/last", "{line}");
        }
    }
}

#[tokio::test]
async fn off_by_default_writes_no_file() {
    let world = publish(GatewayOptions::default(), "blog").await;
    assert!(world.gw.options.access_log.is_none());
    let client = https_client(&world.gw, &["blog"], Alpn::H1);
    let resp = client
        .get(world.gw.url("blog", "/echo"))
        .send()
        .await
        .expect("GET blog");
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await;
    // With the log on, the file would exist from the start (it is opened before serving).
    let logs: Vec<String> = walk(world.gw.state.path())
        .into_iter()
        .filter(|p| p.contains("access"))
        .collect();
    assert!(logs.is_empty(), "{logs:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
