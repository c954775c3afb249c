//! A real etcd for the tests: Debian's `/usr/bin/etcd` (package etcd-server, installed by
//! scripts/prerequisites) on free loopback client and peer ports with a temporary data
//! directory. One harness for every suite: the cluster crate's own tests include this file
//! (`cluster/tests/support/mod.rs`). Ready when `GET /health` answers `"health":"true"` (10 s at most); killed on
//! drop. [`EtcdServer::kill`] stops it hard (SIGKILL, like a crash),
//! [`EtcdServer::restart`] starts it again on the same data directory and ports, and
//! [`EtcdServer::pause`]/[`EtcdServer::resume`] freeze and thaw it (a silent partition).
//! [`EtcdServer::start_tls`] serves clients over TLS only and asks for a client certificate
//! (a CA, a server and a client certificate made with rcgen); readiness is then read on a
//! plain-HTTP metrics port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ETCD: &str = "/usr/bin/etcd";
const READY_WITHIN: Duration = Duration::from_secs(10);

/// One single-member etcd.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// `/health` is read here (plain HTTP even when clients must use TLS).
    metrics_port: u16,
    tls: Option<TlsFiles>,
}

/// PEM files of a TLS etcd: what a client needs to reach it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_pem: Vec<u8>,
    pub client_cert_pem: Vec<u8>,
    pub client_key_pem: Vec<u8>,
}

impl EtcdServer {
    /// Starts etcd. A missing binary fails the test, saying how to install it.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Starts etcd serving clients over TLS with client certificates required.
    pub async fn start_tls() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Self {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: run scripts/prerequisites (it installs Debian's etcd-server)"
        );
        let mut last = String::new();
        // Ports come from bind-and-release, so another process may take one in between: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let tls = tls.then(|| make_certs(dir.path()));
            let mut server = Self {
                child: None,
                dir,
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                tls,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start three times; last: {last}");
    }

    /// The client URL: `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The endpoint as the gateway's `--cluster` spells it: `etcd://127.0.0.1:PORT` (or
    /// `etcds://` with TLS).
    pub fn cluster_endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The PEM files a client needs, when etcd serves TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Kills etcd at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes etcd (SIGSTOP): its sockets stay open and nothing answers, as in a silent
    /// network partition. [`EtcdServer::resume`] thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
        // SIGSTOP is delivered asynchronously: wait until every thread shows state T.
        let pid = self.child.as_ref().expect("etcd running").id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "etcd {pid} did not stop within 5 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Thaws a [`EtcdServer::pause`]d etcd (SIGCONT).
    pub fn resume(&self) {
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
    pub async fn restart(&mut self) {
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
        let mut command = Command::new(ETCD);
        if self.tls.is_some() {
            let file = |name: &str| self.dir.path().join(name).display().to_string();
            command
                .arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", file("ca.pem")))
                .arg(format!("--cert-file={}", file("server.pem")))
                .arg(format!("--key-file={}", file("server.key")));
        }
        let child = command
            .arg("--name=n")
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{}",
                self.metrics_port
            ))
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
                tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
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

/// Writes `ca.pem`, `server.pem`/`server.key` (for 127.0.0.1) into `dir` and returns the
/// client's files (a certificate for client authentication, signed by the same CA).
fn make_certs(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, usage| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_pem, client_key) =
        leaf(vec!["gateway".into()], ExtendedKeyUsagePurpose::ClientAuth);
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server_pem),
        ("server.key", server_key),
    ] {
        std::fs::write(dir.join(name), text).expect("write TLS file");
    }
    TlsFiles {
        ca_pem: ca.pem().into_bytes(),
        client_cert_pem: client_pem.into_bytes(),
        client_key_pem: client_key.into_bytes(),
    }
}

/// Whether every thread of `pid` is stopped (`T` in `/proc/PID/task/TID/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the command name, which is in parentheses.
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('T'))
            })
            .unwrap_or(false)
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}
