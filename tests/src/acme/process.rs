//! Child processes for the ACME tests: started with their output in a log file, killed (and
//! reaped) on drop, with the log's tail at hand for failure messages.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Fails the test with what to install when `binary` is missing.
pub fn require(binary: &str, package: &str) {
    if !Path::new(binary).exists() {
        panic!(
            "{binary} is missing: install Debian's {package} \
             (apt-get install -y pebble bind9, or run scripts/prerequisites)"
        );
    }
}

/// A running child; killed when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

/// util-linux's `setpriv`, to have children killed when the spawning thread dies.
const SETPRIV: &str = "/usr/bin/setpriv";

/// A command running `program`. Where `setpriv` exists the child also gets SIGKILL when the
/// spawning thread dies, so a test killed at its deadline (no destructors run) leaves no
/// server behind.
pub fn command(program: &str) -> Command {
    if Path::new(SETPRIV).exists() {
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

impl ChildGuard {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("create child log");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name,
            child: Some(child),
            log,
        }
    }

    /// Whether the process has exited already.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The child's whole output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the child's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(25);
        format!(
            "{} log ({}):\n{}",
            self.name,
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// Kills and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port free for both TCP and UDP right now (bound on port 0, then released).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp 0");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both TCP and UDP");
}
