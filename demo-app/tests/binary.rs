//! The real `peercompute-demo` program: `--help`, the flushed `listening on` line, one log
//! line per request, the `PEERCOMPUTE_*` environment, and a prompt exit 0 on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::{get, within};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_peercompute-demo");

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    within("a stdout line", lines.next_line())
        .await
        .expect("read stdout")
        .expect("stdout still open")
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("PORT")
        .env("PEERCOMPUTE_PROVIDER", "12D3KooWFromEnv")
        .env("PEERCOMPUTE_NAME", "demo")
        .env_remove("PEERCOMPUTE_DEPLOYMENT")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start peercompute-demo")
}

#[tokio::test]
async fn help_lists_the_routes_and_exits_0() {
    let out = within("--help", Command::new(BIN).arg("--help").output())
        .await
        .expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Usage: peercompute-demo",
        "--port",
        "PORT",
        "/ws",
        "/proc-status",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

#[tokio::test]
async fn bad_port_exits_2_with_a_message() {
    let out = within("--port x", Command::new(BIN).args(["--port", "x"]).output())
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a port number"));
}

#[tokio::test]
async fn logs_start_and_requests_then_exits_0_on_sigterm() {
    let mut child = spawn(&["--port", "0"]);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();

    let start = next_line(&mut lines).await;
    assert!(start.contains("listening on http://0.0.0.0:"), "{start}");
    assert!(
        start.contains("provider=12D3KooWFromEnv deployment=- name=demo"),
        "{start}"
    );
    let port: u16 = start
        .split("0.0.0.0:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("port in the listening line");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let reply = get(addr, "/api/info", &[("x-forwarded-for", "198.51.100.9")]).await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(json["provider"], "12D3KooWFromEnv");
    assert_eq!(json["name"], "demo");
    assert!(json["deployment"].is_null());
    let logged = next_line(&mut lines).await;
    assert!(
        logged.starts_with("GET /api/info 200 xff=198.51.100.9 peer=127.0.0.1:"),
        "{logged}"
    );

    let pid = child.id().expect("child is running").to_string();
    let kill = within("kill", Command::new("kill").args(["-TERM", &pid]).status())
        .await
        .expect("run kill");
    assert!(kill.success());
    let status = within("exit after SIGTERM", child.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert_eq!(next_line(&mut lines).await, "received SIGTERM, exiting");
}
