//! The throwaway root the .deb test installs into: an overlay of this machine's `/` (the
//! read-only lower layer) with a temporary upper layer, mounted in a private mount namespace
//! and entered with `nsenter` + `chroot`. Everything dpkg and the maintainer scripts write lands
//! in the upper layer; the namespace, and its mounts, end with the shell that holds them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{run, text};

/// How long mounting the throwaway root may take.
const MOUNTED: Duration = Duration::from_secs(30);

/// An overlay of `/` in a private mount namespace, held by a shell that waits on its stdin:
/// dropping `Root` (or the test process dying) ends the shell, and the namespace and its mounts
/// go with it.
pub(crate) struct Root {
    holder: Child,
    stdin: Option<ChildStdin>,
    merged: PathBuf,
    pub(crate) upper: PathBuf,
    _dir: tempfile::TempDir,
}

impl Root {
    pub(crate) fn mount() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pc-deb-root.")
            .tempdir()
            .expect("tempdir");
        let (upper, work, merged) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).expect("create overlay dirs");
        }
        let script = format!(
            "set -e
            mount -t overlay overlay -o lowerdir=/,upperdir={u},workdir={w} {m}
            mount -t proc proc {m}/proc
            mount --rbind /dev {m}/dev
            mount -t tmpfs tmpfs {m}/run
            echo mounted
            read -r _ || true",
            u = upper.display(),
            w = work.display(),
            m = merged.display(),
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unshare");
        let stdin = holder.stdin.take();
        let stdout = holder.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(MOUNTED).unwrap_or_default();
        if line.trim() != "mounted" {
            let _ = holder.kill();
            let out = holder.wait_with_output().expect("wait for unshare");
            panic!(
                "cannot mount the throwaway root (overlay of / in a mount namespace): {}",
                text(&out.stderr)
            );
        }
        let root = Self {
            holder,
            stdin,
            merged,
            upper,
            _dir: dir,
        };
        // No service may start from a package script in here (Debian's policy-rc.d protocol).
        root.sh("printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d");
        root
    }

    /// A command run inside the root (its mount namespace, chrooted); not checked.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-m", "--", "chroot"])
            .arg(&self.merged)
            .args(args)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Runs `args` inside the root; panics with its output if it fails.
    pub(crate) fn run(&self, args: &[&str]) -> String {
        text(&run(&mut self.command(args)).stdout)
    }

    pub(crate) fn sh(&self, script: &str) -> String {
        self.run(&["sh", "-ec", script])
    }

    pub(crate) fn exists(&self, path: &str) -> bool {
        self.command(&["test", "-e", path])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `owner mode` of a path inside the root.
    pub(crate) fn owner_mode(&self, path: &str) -> String {
        self.run(&["stat", "-c", "%U %a", path]).trim().to_owned()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
