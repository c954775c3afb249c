//! One measured run of each kind, timed on the monotonic clock:
//!
//! - [`deploy`]: launch `peerctl deploy … --json` → it exits with the URL → poll that URL
//!   through the gateway (HTTPS, dev CA, `NAME.apps.test` resolved to the gateway) until the
//!   first 200 with the container's body.
//! - [`stop`]: launch `peerctl stop` → it exits → the URL answers 404 → the container is gone.
//! - [`direct`]: the baseline, the same image started with the same sandbox by the runtime
//!   crate (what `docker run -p 127.0.0.1::PORT` does) → poll its published port until the
//!   first 200; then stop and remove it.
//!
//! Each run also keeps its wall-clock start and end, so `stages` can find its log lines and
//! Docker events. A wrong answer is a [`CheckFailed`], not a figure.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use peercompute_runtime::{ContainerSpec, DockerRuntime};
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::system::{DOMAIN, System};

/// How often a URL is polled for its first answer.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Longest wait for a URL to answer as expected.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The system did something a user would see as wrong (a failed command, a wrong status or
/// body, a container left behind).
#[derive(Debug)]
pub(crate) struct CheckFailed(pub(crate) String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

fn check(message: String) -> anyhow::Error {
    CheckFailed(message).into()
}

/// The image deployed and what its `/` answers.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) image: String,
    pub(crate) port: u16,
    /// The body `/` must answer with, when known.
    pub(crate) body: Option<String>,
}

/// When a run began and ended on the wall clock (to find its log lines).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
}

/// A deploy that answered.
#[derive(Debug)]
pub(crate) struct DeployRun {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) window: Window,
    /// Until `peerctl deploy` exited with the URL.
    pub(crate) peerctl_exit: Duration,
    /// Until the first 200 through the gateway.
    pub(crate) to_url: Duration,
    /// The visitor's client, until the stop (then its connection closes).
    client: Option<reqwest::Client>,
}

/// A stop that took the URL down.
#[derive(Debug)]
pub(crate) struct StopRun {
    pub(crate) window: Window,
    /// Until `peerctl stop` exited.
    pub(crate) peerctl_exit: Duration,
    /// Until the URL answered 404.
    pub(crate) to_404: Duration,
}

/// The baseline: the same container started directly.
#[derive(Debug)]
pub(crate) struct DirectRun {
    pub(crate) window: Window,
    /// From create + start until the first 200 on its published port.
    pub(crate) to_200: Duration,
    /// Stop and remove.
    pub(crate) stop: Duration,
}

/// `peerctl deploy IMAGE --peer P --port PORT --name NAME --json`, then the URL until 200.
pub(crate) async fn deploy(
    system: &System,
    workload: &Workload,
    name: &str,
) -> anyhow::Result<DeployRun> {
    // Built before the clock starts: a visitor's browser exists before the deploy.
    let client = https_client(system, name)?;
    let port = workload.port.to_string();
    let args = [
        "deploy",
        &workload.image,
        "--peer",
        &system.provider_id,
        "--port",
        &port,
        "--name",
        name,
        "--json",
    ];
    let start = SystemTime::now();
    let t0 = Instant::now();
    let out = system.peerctl_output(&args, "peerctl deploy").await?;
    let peerctl_exit = t0.elapsed();
    if !out.status.success() {
        return Err(check(format!(
            "`peerctl deploy` for {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        check(format!(
            "`peerctl deploy --json` printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })?;
    let field = |key: &str| printed[key].as_str().unwrap_or_default().to_owned();
    let (url, id) = (field("url"), field("id"));
    let expected = system.url(name);
    if url.trim_end_matches('/') != expected.trim_end_matches('/') || id.is_empty() {
        return Err(check(format!(
            "`peerctl deploy` printed url {url:?} id {id:?}; expected url {expected}"
        )));
    }
    if field("status") != "running" {
        return Err(check(format!("deployed with status {}", printed["status"])));
    }
    let body = until_status(&client, &url, StatusCode::OK).await?;
    let to_url = t0.elapsed();
    check_body(workload, &url, &body)?;
    Ok(DeployRun {
        name: name.to_owned(),
        id,
        url,
        window: Window {
            start,
            end: SystemTime::now(),
        },
        peerctl_exit,
        to_url,
        client: Some(client),
    })
}

/// `peerctl stop ID --peer P`, then the URL until 404; then checks the container is gone.
pub(crate) async fn stop(
    system: &System,
    runtime: &DockerRuntime,
    run: &mut DeployRun,
) -> anyhow::Result<StopRun> {
    let client = run.client.take().context("a deploy is stopped once")?;
    let args = ["stop", &run.id, "--peer", &system.provider_id];
    let start = SystemTime::now();
    let t0 = Instant::now();
    let out = system.peerctl_output(&args, "peerctl stop").await?;
    let peerctl_exit = t0.elapsed();
    if !out.status.success() {
        return Err(check(format!(
            "`peerctl stop {}` failed ({}): {}",
            run.id,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    until_status(&client, &run.url, StatusCode::NOT_FOUND).await?;
    let to_404 = t0.elapsed();
    let end = SystemTime::now();
    let managed = runtime
        .list_managed()
        .await
        .context("list the provider's containers")?;
    if managed.iter().any(|m| {
        m.deployment
            .as_ref()
            .is_some_and(|d| d.deployment_id == run.id)
    }) {
        return Err(check(format!(
            "the container of {} ({}) is still there after `peerctl stop`",
            run.name, run.id
        )));
    }
    Ok(StopRun {
        window: Window { start, end },
        peerctl_exit,
        to_404,
    })
}

/// The baseline: `spec` started by the runtime crate (create + start + inspect, as the
/// provider does), its published port polled until 200, then stopped and removed.
pub(crate) async fn direct(
    runtime: &DockerRuntime,
    workload: &Workload,
    spec: &ContainerSpec,
) -> anyhow::Result<DirectRun> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("HTTP client")?;
    let start = SystemTime::now();
    let t0 = Instant::now();
    let started = runtime
        .start(spec)
        .await
        .map_err(|e| check(format!("starting {} directly failed: {e}", spec.name)))?;
    let url = format!("http://{}/", started.addr);
    let answered = until_status(&http, &url, StatusCode::OK).await;
    let to_200 = t0.elapsed();
    let t1 = Instant::now();
    let stopped = runtime.stop(&started.id).await;
    let stop = t1.elapsed();
    let body = answered?;
    check_body(workload, &url, &body)?;
    stopped.map_err(|e| check(format!("stopping {} failed: {e}", spec.name)))?;
    Ok(DirectRun {
        window: Window {
            start,
            end: SystemTime::now(),
        },
        to_200,
        stop,
    })
}

/// Polls `url` until it answers `want`; returns that answer's body.
async fn until_status(
    client: &reqwest::Client,
    url: &str,
    want: StatusCode,
) -> anyhow::Result<bytes::Bytes> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let last = match client.get(url).send().await {
            Ok(resp) if resp.status() == want => {
                return resp
                    .bytes()
                    .await
                    .with_context(|| format!("read the body of {url}"));
            }
            Ok(resp) => format!("status {}", resp.status()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            return Err(check(format!(
                "{url} did not answer {want} within {ANSWER_TIMEOUT:?} (last: {last})"
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn check_body(workload: &Workload, url: &str, body: &[u8]) -> anyhow::Result<()> {
    match &workload.body {
        Some(want) if body != want.as_bytes() => Err(check(format!(
            "{url} answered {:?}, expected {want:?}",
            String::from_utf8_lossy(body)
        ))),
        _ => Ok(()),
    }
}

/// An HTTPS client as a visitor has one: trusts the gateway's dev CA, resolves
/// `NAME.apps.test` to the gateway, HTTP/1.1.
fn https_client(system: &System, name: &str) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&system.ca_pem) {
        roots
            .add(cert.context("the gateway's dev CA PEM")?)
            .context("add the dev CA")?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .resolve(&format!("{name}.{DOMAIN}"), system.https)
        .build()
        .context("HTTPS client")
}
