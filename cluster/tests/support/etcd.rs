//! A real etcd for the tests: Debian's `/usr/bin/etcd` (package etcd-server, installed by
//! scripts/prerequisites) on free loopback client and peer ports with a temporary data
//! directory. Ready when `GET /health` answers `"health":"true"` (10 s at most); killed on
//! drop. [`EtcdServer::kill`] stops it hard (SIGKILL, like a crash),
//! [`EtcdServer::restart`] starts it again on the same data directory and ports, and
//! [`EtcdServer::pause`]/[`EtcdServer::resume`] freeze and thaw it (a silent partition).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ETCD: &str = "/usr/bin/etcd";
const READY_WITHIN: Duration = Duration::from_secs(10);

/// One single-member etcd.
#[derive(Debug)]
pub(crate) struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd; `None` (after saying why) when the binary is missing outside CI. In CI
    /// (`CI` set) a missing binary fails the test.
    pub(crate) async fn start() -> Option<Self> {
        if !Path::new(ETCD).exists() {
            let why = format!("{ETCD} is missing: run scripts/prerequisites (Debian etcd-server)");
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let mut last = String::new();
        // Ports come from bind-and-release, so another process may take one in between: retry.
        for _ in 0..3 {
            let mut server = Self {
                child: None,
                dir: tempfile::tempdir().expect("tempdir"),
                client_port: free_port(),
                peer_port: free_port(),
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start three times; last: {last}");
    }

    /// The client URL, e.g. `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd at once (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes etcd (SIGSTOP): its sockets stay open and nothing answers, as in a silent
    /// network partition. [`EtcdServer::resume`] thaws it.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a [`EtcdServer::pause`]d etcd (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("etcd running").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Starts etcd again on the same data directory and ports.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        // The ports were just released by a killed process; a few tries cover a slow close.
        let mut last = String::new();
        for _ in 0..3 {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not restart: {last}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(ETCD)
            .arg("--name=n")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=n={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {ETCD}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited ({status}): {}", self.log_tail()));
            }
            if self.healthy().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        Err(format!(
            "etcd not healthy within {READY_WITHIN:?}: {}",
            self.log_tail()
        ))
    }

    /// One `GET /health` on the client port.
    async fn healthy(&self) -> bool {
        let probe = async {
            let mut stream =
                tokio::net::TcpStream::connect(("127.0.0.1", self.client_port)).await?;
            stream
                .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            std::io::Result::Ok(String::from_utf8_lossy(&answer).contains(r#""health":"true""#))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Ok(true))
        )
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}
