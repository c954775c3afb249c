//! The daemons' logs and exit codes as the machines they run on see them: the real
//! `peercompute-gateway` and `peercomputed` binaries with stderr on a pipe (as under systemd),
//! a tunnel between them, then SIGTERM to both.
//!
//! - `--log-format json`: every line is one JSON object with timestamp, level, target and
//!   message (journald, Loki and `jq` read it line by line).
//! - Text logs off a terminal carry no ANSI escape codes, so journald stores text, not blobs.
//! - A normal SIGTERM shutdown logs nothing at ERROR and exits 0.
//! - A configuration error exits 2 (usage), not 1.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use peercompute_tests::daemon::workspace_bin;
use peercompute_tests::lines::Lines;

/// How long a daemon may take to log what the test waits for.
const READY: Duration = Duration::from_secs(30);

/// A daemon started from its binary, its stderr followed line by line.
struct Daemon {
    name: &'static str,
    child: Child,
    lines: Option<Lines>,
}

impl Daemon {
    fn spawn(name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(workspace_bin(name));
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("PEERCOMPUTE_LOG_FORMAT")
            // A terminal type that would invite colour, were stderr a terminal.
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        Self {
            name,
            child,
            lines: Some(Lines::follow(name, vec![Box::new(stderr)])),
        }
    }

    /// Reads lines until one contains `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        self.lines
            .as_mut()
            .expect("lines are followed until terminate")
            .wait_for(needle, READY)
    }

    /// SIGTERM, then waits for the exit; returns the exit code and every line logged.
    fn terminate(mut self) -> (i32, Vec<String>) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        kill(pid, Signal::SIGTERM).expect("send SIGTERM");
        let deadline = Instant::now() + READY;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit within {READY:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipe closes once the process has exited.
        let lines = self
            .lines
            .take()
            .expect("followed")
            .rest(Duration::from_secs(5));
        (status.code().unwrap_or(-1), lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_args(state: &std::path::Path) -> Vec<String> {
    [
        "run",
        "--domain",
        "apps.localhost",
        "--state-dir",
        &state.display().to_string(),
        "--https-listen",
        "127.0.0.1:0",
        "--no-http",
        "--tunnel-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--open",
    ]
    .map(String::from)
    .to_vec()
}

/// The value of `"key":"Some(ADDR)"` / `key=Some(ADDR)` in a log line.
fn socket_addr_field(line: &str, key: &str) -> std::net::SocketAddr {
    let start = line
        .find(&format!("\"{key}\":\"Some("))
        .map(|i| i + key.len() + 9)
        .or_else(|| {
            line.find(&format!("{key}=Some("))
                .map(|i| i + key.len() + 6)
        })
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let rest = &line[start..];
    rest[..rest.find(')').expect("closing parenthesis")]
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line}: {e}"))
}

fn assert_json_lines(name: &str, lines: &[String]) {
    assert!(!lines.is_empty(), "{name} logged nothing");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{name}: not one JSON object per line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(
                value.get(key).is_some_and(serde_json::Value::is_string),
                "{name}: no string `{key}` in {line}"
            );
        }
        assert_ne!(value["level"], "ERROR", "{name} logged an error: {line}");
    }
}

#[test]
fn json_logs_one_object_per_line_and_sigterm_logs_no_error() {
    peercompute_tests::init();
    let gw_state = tempfile::tempdir().expect("gateway state");
    let args = gateway_args(gw_state.path());
    let mut gw_args: Vec<&str> = vec!["--log-format", "json"];
    gw_args.extend(args.iter().map(String::as_str));
    let mut gateway = Daemon::spawn("peercompute-gateway", &gw_args, &[]);
    let running = gateway.wait_for("gateway running");
    let tunnel = socket_addr_field(&running, "tunnel");
    let running: serde_json::Value = serde_json::from_str(&running).expect("JSON line");
    let gateway_id = running["peer_id"]
        .as_str()
        .expect("the peer id is a field of its own")
        .to_owned();

    let home = tempfile::tempdir().expect("provider home");
    let home_arg = home.path().display().to_string();
    let gateway_arg = format!("{gateway_id}@{tunnel}");
    // The format from the environment, as a systemd unit would set it.
    let mut provider = Daemon::spawn(
        "peercomputed",
        &[
            "--home",
            &home_arg,
            "run",
            "--gateway",
            &gateway_arg,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--firewall",
            "off",
        ],
        &[("PEERCOMPUTE_LOG_FORMAT", "json")],
    );
    provider.wait_for("gateway welcomed us");
    gateway.wait_for("provider connected");

    let (code, lines) = provider.terminate();
    assert_eq!(
        code,
        0,
        "peercomputed exit code after SIGTERM:\n{}",
        lines.join("\n")
    );
    assert_json_lines("peercomputed", &lines);
    let (code, lines) = gateway.terminate();
    assert_eq!(
        code,
        0,
        "gateway exit code after SIGTERM:\n{}",
        lines.join("\n")
    );
    assert_json_lines("peercompute-gateway", &lines);
    assert!(
        lines.iter().any(|l| l.contains("gateway stopped")),
        "the gateway logs its stop:\n{}",
        lines.join("\n")
    );
}

#[test]
fn text_logs_off_a_terminal_have_no_colour() {
    peercompute_tests::init();
    let gw_state = tempfile::tempdir().expect("gateway state");
    let args = gateway_args(gw_state.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = Daemon::spawn("peercompute-gateway", &args, &[]);
    gateway.wait_for("gateway running");
    let (code, lines) = gateway.terminate();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let text = lines.join("\n");
    assert!(text.contains(" INFO "), "text format with levels:\n{text}");
    assert!(
        !text.contains('\x1b'),
        "ANSI escape codes on a pipe:\n{text:?}"
    );
    assert!(!text.contains("ERROR"), "SIGTERM logged an error:\n{text}");
}

#[test]
fn configuration_errors_exit_2() {
    let missing = tempfile::tempdir().expect("tempdir");
    let nowhere = missing.path().join("missing.toml").display().to_string();
    for (name, args) in [
        (
            "peercompute-gateway",
            vec!["run", "--config", nowhere.as_str()],
        ),
        ("peercomputed", vec!["run", "--config", nowhere.as_str()]),
        // clap's own usage errors are 2 as well.
        ("peercompute-gateway", vec!["run", "--no-such-flag"]),
        ("peerctl", vec!["deploy"]),
    ] {
        let out = Command::new(workspace_bin(name))
            .args(&args)
            .env("PEERCOMPUTE_HOME", missing.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name} {args:?} must exit 2 (usage/configuration), stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("error"),
            "{name} {args:?} says what is wrong: {stderr}"
        );
    }
}
