//! Runs the `ip` and `nft` programs that build a world, synchronously: a world is
//! built before its programs start, and a failing step is a broken machine, so the checked
//! form panics with the command line and its stderr.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `program args…`; returns stdout, or a message naming the command and its stderr.
pub fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`try_run`], panicking on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("netns world: {e}"))
}

/// `ip -n <netns> args…`, or plain `ip args…` in the root namespace.
pub fn ip(netns: Option<&str>, args: &[&str]) -> String {
    match netns {
        Some(ns) => run("ip", &[&["-n", ns], args].concat()),
        None => run("ip", args),
    }
}

/// Loads an nftables ruleset into `netns`.
pub fn nft(netns: &str, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("netns world: cannot run nft: {e}"));
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(ruleset.as_bytes())
        .unwrap_or_else(|e| panic!("netns world: writing the ruleset to nft: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("netns world: waiting for nft: {e}"));
    assert!(
        out.status.success(),
        "netns world: nft in {netns} refused the ruleset ({}): {}\n{ruleset}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Names of all named network namespaces (`ip netns list` prints `name (id: n)`).
pub fn list_netns() -> Result<Vec<String>, String> {
    Ok(try_run("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}
