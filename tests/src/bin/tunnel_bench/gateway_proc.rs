//! The real `peercompute-gateway` as a child process: its identity made first (`id`), then
//! `run` on the addresses the caller chose, with every limit that would throttle a benchmark
//! off (rate limits, the p2p meeting point), and readiness from its admin `/healthz`. The
//! default stack ([`super::setup::Stack`]), the L3 phase (200 providers on an allowlist file)
//! and the 1500-byte-MTU phase (started from a thread inside a network namespace, so the child
//! lives there) all start it here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::process::Command;

use super::setup::{ChildProc, output, wait_until};
use super::target::Target;

/// Where the gateway listens and what it admits.
#[derive(Debug, Clone)]
pub(crate) struct GatewaySpec {
    pub(crate) domain: String,
    /// Visitors' HTTPS (and the TCP tunnel transport).
    pub(crate) https: SocketAddr,
    /// QUIC tunnels (UDP).
    pub(crate) tunnel: SocketAddr,
    /// Health and metrics; probed on this address, so it must be reachable from the caller.
    pub(crate) admin: SocketAddr,
    /// `--allow-provider` ids.
    pub(crate) allow: Vec<String>,
    /// `--allow-providers-file`.
    pub(crate) allow_file: Option<PathBuf>,
    /// Further flags (`--tunnel-congestion`, `--max-connections`).
    pub(crate) extra: Vec<String>,
    /// Runs it on this CPU only (`taskset -c`); `None`: anywhere.
    pub(crate) cpu: Option<usize>,
}

/// A running gateway.
#[derive(Debug)]
pub(crate) struct GatewayProc {
    pub(crate) child: ChildProc,
    /// Its peer id, which providers pin.
    pub(crate) id: String,
    /// Its dev CA (PEM), which visitors trust.
    pub(crate) ca_pem: Vec<u8>,
}

impl GatewayProc {
    /// Makes the identity in `state`, starts `bin run`, and waits for `/healthz`.
    pub(crate) async fn start(
        bin: &Path,
        state: &Path,
        log: PathBuf,
        spec: &GatewaySpec,
    ) -> anyhow::Result<Self> {
        let id = output(
            Command::new(bin).arg("id").arg("--state-dir").arg(state),
            "peercompute-gateway id",
        )
        .await?;
        let mut cmd = match spec.cpu {
            Some(cpu) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &cpu.to_string()]).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .args(&spec.extra)
            .args(["--domain", &spec.domain])
            .arg("--state-dir")
            .arg(state)
            .args(["--https-listen", &spec.https.to_string(), "--no-http"])
            .args(["--tunnel-listen", &spec.tunnel.to_string()])
            .args(["--admin-listen", &spec.admin.to_string()])
            .args(["--public-port", &spec.https.port().to_string()])
            .args(["--rate-limit", "0", "--rate-limit-ip", "0"])
            // The bench measures the tunnel; the p2p meeting point's fixed port 4001 would
            // also keep two benches from running side by side.
            .arg("--no-p2p")
            .stdin(Stdio::null());
        for peer in &spec.allow {
            cmd.args(["--allow-provider", peer]);
        }
        if let Some(file) = &spec.allow_file {
            cmd.arg("--allow-providers-file").arg(file);
        }
        let mut child = ChildProc::spawn("gateway", &mut cmd, log, true)?;
        let health = &Target::plain("admin", spec.admin, &spec.admin.to_string());
        wait_until(
            "the gateway's /healthz",
            &mut [&mut child],
            move || async move {
                let (status, _) = health
                    .connect()
                    .await?
                    .fetch(health.get("/healthz"))
                    .await?;
                anyhow::Ok(status.is_success())
            },
        )
        .await?;
        let ca_path = state.join("dev-ca.pem");
        let ca_pem =
            std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
        Ok(Self { child, id, ca_pem })
    }
}
