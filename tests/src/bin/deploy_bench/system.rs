//! The system under test on 127.0.0.1, as a user sets it up: `peercompute-gateway run`
//! (dev TLS, allowing our provider), `peercomputed run` (pinned gateway, control plane on a
//! loopback port, no mDNS) and a peerctl home, with trust added both ways by `peerctl peers
//! add`. Ports come from binding port 0 first. Readiness is polled, bounded: the gateway's
//! `/readyz`, then its `tunnels` gauge (the provider's tunnel is up), then `peerctl ls`
//! answering (the control plane serves and trusts us).

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

use super::children::{self, Binaries, ChildProc};
use super::timeline::{Source, Timeline};

/// Domain the gateway serves.
pub(crate) const DOMAIN: &str = "apps.test";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(25);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const GATEWAY_LOG: &str = "info,quinn=warn,rustls=warn";
/// Debug for our own crates: "connected" (p2p) and "verified" (control plane) mark stages.
const PROVIDER_LOG: &str =
    "info,peercompute_provider=debug,peercompute_p2p=debug,quinn=warn,rustls=warn";
const PEERCTL_LOG: &str = "warn,peercompute_p2p=debug";

/// Gateway, provider daemon and a trusted peerctl home, running.
#[derive(Debug)]
pub(crate) struct System {
    pub(crate) gateway: ChildProc,
    pub(crate) provider: ChildProc,
    pub(crate) provider_id: String,
    pub(crate) client_id: String,
    /// The gateway's public HTTPS listener.
    pub(crate) https: SocketAddr,
    /// The dev CA that signs the gateway's certificate.
    pub(crate) ca_pem: Vec<u8>,
    admin: SocketAddr,
    client_home: PathBuf,
    peerctl: PathBuf,
    timeline: Timeline,
}

impl System {
    /// Creates the identities and trust under `work` and starts gateway and provider.
    pub(crate) async fn start(
        bins: &Binaries,
        work: &Path,
        timeline: &Timeline,
    ) -> anyhow::Result<Self> {
        let (gw_state, provider_home, client_home) = (
            work.join("gateway"),
            work.join("provider"),
            work.join("client"),
        );
        let tool = |program: &Path, args: Vec<&OsStr>, what: &'static str| {
            let mut cmd = Command::new(program);
            cmd.args(args);
            let timeline = timeline.clone();
            async move {
                children::stdout_of(&mut cmd, what, COMMAND_TIMEOUT, Source::Peerctl, &timeline)
                    .await
            }
        };
        let os = OsStr::new;
        let gateway_id = tool(
            &bins.gateway,
            vec![os("id"), os("--state-dir"), gw_state.as_os_str()],
            "peercompute-gateway id",
        )
        .await?;
        let provider_id = tool(
            &bins.provider,
            vec![os("--home"), provider_home.as_os_str(), os("init")],
            "peercomputed init",
        )
        .await?;
        let client_id = tool(
            &bins.peerctl,
            vec![os("--home"), client_home.as_os_str(), os("init")],
            "peerctl init",
        )
        .await?;

        let (https, admin, p2p) = (free_tcp()?, free_tcp()?, free_tcp()?);
        let tunnel = free_udp()?;
        let p2p_addr = format!("/ip4/127.0.0.1/tcp/{}", p2p.port());
        tool(
            &bins.peerctl,
            vec![
                os("--home"),
                provider_home.as_os_str(),
                os("peers"),
                os("add"),
                os(&client_id),
            ],
            "peerctl peers add (the provider trusts the client)",
        )
        .await?;
        tool(
            &bins.peerctl,
            vec![
                os("--home"),
                client_home.as_os_str(),
                os("peers"),
                os("add"),
                os(&provider_id),
                os("--addr"),
                os(&p2p_addr),
            ],
            "peerctl peers add (the client trusts the provider)",
        )
        .await?;

        let mut gateway = ChildProc::spawn(
            "peercompute-gateway",
            Source::Gateway,
            Command::new(&bins.gateway)
                .arg("run")
                .args(["--domain", DOMAIN, "--state-dir"])
                .arg(&gw_state)
                .args(["--https-listen", &https.to_string(), "--no-http"])
                .args(["--tunnel-listen", &tunnel.to_string()])
                .args(["--admin-listen", &admin.to_string()])
                .args(["--public-port", &https.port().to_string()])
                .args(["--allow-provider", &provider_id])
                .args(["--rate-limit", "0", "--rate-limit-ip", "0", "--no-p2p"])
                .env("RUST_LOG", GATEWAY_LOG),
            work.join("gateway.log"),
            timeline,
        )?;
        let admin_http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("admin HTTP client")?;
        let readyz = format!("http://{admin}/readyz");
        wait_until("the gateway's /readyz", || {
            gateway.check_running()?;
            let (http, url) = (admin_http.clone(), readyz.clone());
            Ok(async move {
                let resp = http.get(url).send().await;
                resp.is_ok_and(|r| r.status().is_success())
            })
        })
        .await?;
        let ca = gw_state.join("dev-ca.pem");
        let ca_pem = std::fs::read(&ca).with_context(|| format!("read {}", ca.display()))?;

        let mut provider = ChildProc::spawn(
            "peercomputed",
            Source::Provider,
            Command::new(&bins.provider)
                .arg("--home")
                .arg(&provider_home)
                .arg("run")
                .args(["--gateway", &format!("{gateway_id}@{tunnel}")])
                .args(["--listen", &p2p_addr, "--no-mdns"])
                .env("RUST_LOG", PROVIDER_LOG),
            work.join("provider.log"),
            timeline,
        )?;
        let metrics = format!("http://{admin}/metrics");
        wait_until("the provider's tunnel (gateway tunnels gauge)", || {
            provider.check_running()?;
            let (http, url) = (admin_http.clone(), metrics.clone());
            Ok(async move {
                match http.get(url).send().await {
                    Ok(resp) => resp.text().await.is_ok_and(|m| tunnels(&m) >= 1.0),
                    Err(_) => false,
                }
            })
        })
        .await?;
        let system = Self {
            gateway,
            provider,
            provider_id,
            client_id,
            https,
            ca_pem,
            admin,
            client_home,
            peerctl: bins.peerctl.clone(),
            timeline: timeline.clone(),
        };
        system.wait_control_plane().await?;
        Ok(system)
    }

    /// Until `peerctl ls` answers: the control plane is up and trust works both ways.
    async fn wait_control_plane(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self
                .peerctl_output(&["ls", "--peer", &self.provider_id, "--json"], "peerctl ls")
                .await?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "`peerctl ls` still fails after {READY_TIMEOUT:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// `peerctl --home <client> --no-mdns ARGS`, logging its p2p debug lines.
    pub(crate) fn peerctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.peerctl);
        cmd.arg("--home")
            .arg(&self.client_home)
            .arg("--no-mdns")
            .args(args)
            .env("RUST_LOG", PEERCTL_LOG);
        cmd
    }

    /// Runs peerctl to completion (bounded); its stderr goes to the timeline.
    pub(crate) async fn peerctl_output(
        &self,
        args: &[&str],
        what: &str,
    ) -> anyhow::Result<std::process::Output> {
        children::output(
            &mut self.peerctl(args),
            what,
            COMMAND_TIMEOUT,
            Source::Peerctl,
            &self.timeline,
        )
        .await
    }

    /// `https://<name>.apps.test:<port>/`
    pub(crate) fn url(&self, name: &str) -> String {
        format!("https://{name}.{DOMAIN}:{}/", self.https.port())
    }

    /// Fails if the gateway or the provider has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        self.gateway.check_running()?;
        self.provider.check_running()
    }

    /// The last lines of both daemons' logs, for an error message.
    pub(crate) fn log_tails(&self) -> String {
        format!(
            "--- gateway (admin {}) ---\n{}\n--- provider ---\n{}",
            self.admin,
            self.gateway.log_tail(15),
            self.provider.log_tail(15)
        )
    }

    /// Kills provider, then gateway.
    pub(crate) async fn stop(self) {
        self.provider.kill().await;
        self.gateway.kill().await;
    }
}

/// The value of the gateway's `peercompute_gateway_tunnels` gauge (0 if absent).
fn tunnels(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("peercompute_gateway_tunnels "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 25 ms until it yields true, for at most 30 s. `check` itself fails
/// (e.g. the child exited) to stop waiting at once.
async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> anyhow::Result<Fut>,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let probe = check()?;
        if tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {READY_TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a TCP port")?;
    l.local_addr().context("local address")
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0").context("bind a UDP port")?;
    s.local_addr().context("local address")
}

#[cfg(test)]
mod tests {
    use super::tunnels;

    #[test]
    fn reads_the_tunnels_gauge_not_its_neighbours() {
        let m = "# TYPE peercompute_gateway_tunnels gauge\npeercompute_gateway_tunnels_refused_total 3\npeercompute_gateway_tunnels 1\n";
        assert_eq!(tunnels(m), 1.0);
        assert_eq!(
            tunnels("peercompute_gateway_tunnels_refused_total 3\n"),
            0.0
        );
    }
}
