//! The checklist's load phases as benchmark phases (issue 15): `--l1`, `--l2`, `--l3` and
//! `--mtu1500` select them (only those run); a run without any of them runs the suite and then
//! every phase. Each phase starts the system it needs (a fresh stack, a gateway with 200
//! providers, or two network namespaces), so its figures are its own; each is bounded in time.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::bulk::{self, BulkResult};
use super::l1::{self, L1Settings};
use super::l2::{self, L2Settings};
use super::l3::{self, L3Settings};
use super::mtu;
use super::procfs::Watched;
use super::setup::{self, Binaries, Stack, StackOptions};
use super::suite;
use super::target::Target;

/// The phase flags, flattened into `tunnel-bench`'s command line.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct PhaseArgs {
    /// Run checklist L1: 1000 keep-alive visitor connections through the tunnel for 60 s
    /// (quick: 5 s). Any phase flag runs only the phases flagged; none runs the suite and all
    /// of them.
    #[arg(long)]
    l1: bool,
    /// Run checklist L2: 10,000 idle TLS connections = the gateway's cap (quick: 500), then
    /// refusal time and answers past the cap.
    #[arg(long)]
    l2: bool,
    /// Run checklist L3: 200 providers on one gateway × 50 concurrent streams, every response
    /// checked for its provider id and checksum; the gateway at rest with them connected.
    #[arg(long)]
    l3: bool,
    /// Run bulk over a 1500-byte-MTU veth link between network namespaces (QUIC and TCP
    /// transport; needs root, else skipped with the reason).
    #[arg(long)]
    mtu1500: bool,
    /// L1 measuring time [default: 60s; quick: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    l1_duration: Option<Duration>,
    /// L1 connections [default: 1000].
    #[arg(long)]
    l1_connections: Option<usize>,
    /// L2 connections held, also the gateway's --max-connections [default: 10000; quick: 500].
    #[arg(long)]
    l2_connections: Option<usize>,
    /// L3 providers [default: 200].
    #[arg(long)]
    l3_providers: Option<usize>,
    /// L3 concurrent streams per provider [default: 50].
    #[arg(long)]
    l3_streams: Option<usize>,
    /// L3 requests per stream [default: 20; quick: 1].
    #[arg(long)]
    l3_requests: Option<usize>,
    /// 1500-MTU download size in MiB [default: 1024; quick: 64].
    #[arg(long)]
    mtu_mib: Option<u64>,
}

/// The phases one run goes through, with their sizes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Phases {
    pub(crate) l1: Option<L1Settings>,
    pub(crate) l2: Option<L2Settings>,
    pub(crate) l3: Option<L3Settings>,
    /// Download size of the 1500-MTU phase.
    pub(crate) mtu_bytes: Option<u64>,
}

impl PhaseArgs {
    /// Whether any phase was asked for by name (then the suite does not run).
    pub(crate) fn selected(&self) -> bool {
        self.l1 || self.l2 || self.l3 || self.mtu1500
    }

    /// The phases to run: those flagged, or all of them when none is.
    pub(crate) fn plan(&self, quick: bool) -> Phases {
        let all = !self.selected();
        Phases {
            l1: (all || self.l1).then(|| {
                let mut s = if quick {
                    L1Settings::quick()
                } else {
                    L1Settings::full()
                };
                s.duration = self.l1_duration.unwrap_or(s.duration);
                s.connections = self.l1_connections.unwrap_or(s.connections);
                s
            }),
            l2: (all || self.l2).then(|| {
                let mut s = if quick {
                    L2Settings::quick()
                } else {
                    L2Settings::full()
                };
                s.connections = self.l2_connections.unwrap_or(s.connections);
                s
            }),
            l3: (all || self.l3).then(|| {
                let mut s = if quick {
                    L3Settings::quick()
                } else {
                    L3Settings::full()
                };
                s.providers = self.l3_providers.unwrap_or(s.providers);
                s.streams = self.l3_streams.unwrap_or(s.streams);
                s.requests = self.l3_requests.unwrap_or(s.requests);
                s
            }),
            mtu_bytes: (all || self.mtu1500)
                .then(|| self.mtu_mib.unwrap_or(if quick { 64 } else { 1024 }) << 20),
        }
    }
}

/// Raises this process's open-file limit (children inherit it) to at least `want`, or to the
/// hard limit when raising that is not allowed; returns the limit now in force.
pub(crate) fn raise_nofile(want: u64) -> String {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return "unknown (getrlimit failed)".into();
    };
    if soft >= want {
        return soft.to_string();
    }
    let refused = match setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)) {
        Ok(()) => return want.to_string(),
        Err(e) => e,
    };
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    let now = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    format!("{now} (wanted {want}; raising the hard limit of {hard} was refused: {refused})")
}

/// Runs `phases`; `loopback` are the suite's bulk results `(QUIC, TCP)` when it ran.
/// Returns whether every correctness check held.
pub(crate) async fn run(
    phases: &Phases,
    bins: &Binaries,
    domain: &str,
    host: &str,
    loopback: Option<(&BulkResult, &BulkResult)>,
) -> anyhow::Result<bool> {
    let mut sound = true;
    if let Some(settings) = &phases.l1 {
        sound &= run_l1(bins, domain, host, settings).await?;
    }
    if let Some(settings) = &phases.l2 {
        sound &= run_l2(bins, domain, host, settings).await?;
    }
    if let Some(settings) = &phases.l3 {
        eprintln!("phase L3:");
        let report = l3::run(bins, domain, settings).await.context("L3")?;
        sound &= l3::print(&report);
    }
    if let Some(bytes) = phases.mtu_bytes {
        sound &= run_mtu(bins, domain, host, bytes, loopback).await?;
    }
    if !sound {
        println!();
        println!(
            "CHECK FAILED: a load phase counted errors, non-2xx, misrouted or corrupted answers, connections that failed, or a bad download (see its lines above)"
        );
    }
    Ok(sound)
}

fn watched(stack: &Stack) -> Vec<Watched> {
    [
        ("bench", std::process::id()),
        ("backend", stack.backend.pid),
        ("gateway", stack.gateway.pid),
        ("provider", stack.provider.pid),
    ]
    .into_iter()
    .map(|(label, pid)| Watched {
        label: label.into(),
        pid,
    })
    .collect()
}

async fn run_l1(
    bins: &Binaries,
    domain: &str,
    host: &str,
    settings: &L1Settings,
) -> anyhow::Result<bool> {
    eprintln!("phase L1:");
    let stack = Stack::start(bins, domain, host).await?;
    let through = Target::https("through", stack.https, host, &stack.ca_pem)?;
    let watched = watched(&stack);
    let gateway = stack.gateway.pid;
    let provider = stack.provider.pid;
    match l1::run(&through, gateway, provider, &watched, settings).await {
        Ok(report) => {
            stack.stop().await;
            Ok(l1::print(&report))
        }
        Err(e) => Err(stack.fail(e.context("L1")).await),
    }
}

async fn run_l2(
    bins: &Binaries,
    domain: &str,
    host: &str,
    settings: &L2Settings,
) -> anyhow::Result<bool> {
    eprintln!("phase L2:");
    let options = StackOptions {
        max_connections: Some(settings.connections),
        header_read_timeout: Some(l2::IDLE_ALLOWED),
        ..StackOptions::default()
    };
    let stack = Stack::start_with(bins, domain, host, &options).await?;
    let through = Target::https("through", stack.https, host, &stack.ca_pem)?;
    let admin = stack.admin;
    let report = l2::run(&through, stack.gateway.pid, settings, || async move {
        suite::connections_open(admin).await.ok()
    })
    .await;
    stack.stop().await;
    Ok(l2::print(&report))
}

async fn run_mtu(
    bins: &Binaries,
    domain: &str,
    host: &str,
    bytes: u64,
    loopback: Option<(&BulkResult, &BulkResult)>,
) -> anyhow::Result<bool> {
    eprintln!("phase 1500-byte MTU:");
    if let Some(why) = mtu::unavailable() {
        println!();
        println!("Bulk over a 1500-byte MTU link: SKIPPED, network namespaces unavailable: {why}");
        return Ok(true);
    }
    let measured;
    let loopback = match loopback {
        Some(l) => l,
        None => {
            measured = loopback_bulk(bins, domain, host, bytes).await?;
            (&measured.0, &measured.1)
        }
    };
    let report = mtu::run(bins, domain, bytes)
        .await
        .context("1500-byte MTU phase")?;
    Ok(mtu::print(&report, Some(loopback)) && loopback.0.ok() && loopback.1.ok())
}

/// The same downloads on loopback (QUIC, TCP), when the suite did not measure them.
async fn loopback_bulk(
    bins: &Binaries,
    domain: &str,
    host: &str,
    bytes: u64,
) -> anyhow::Result<(BulkResult, BulkResult)> {
    let stack = Stack::start(bins, domain, host).await?;
    let expected = tokio::task::spawn_blocking(move || peercompute_tests::download_sha256(bytes))
        .await
        .context("hash the expected download")?;
    let tcp_host = format!("{}.{domain}", setup::TCP_NAME);
    let mut out = Vec::new();
    for (label, name) in [("through", host), ("through-tcp", tcp_host.as_str())] {
        eprintln!(
            "  running: bulk download of {} MiB on loopback, {label}",
            bytes >> 20
        );
        let target = Target::https(label, stack.https, name, &stack.ca_pem)?;
        match bulk::run(&target, bytes, &expected).await {
            Ok(r) => out.push(r),
            Err(e) => return Err(stack.fail(e).await),
        }
    }
    stack.stop().await;
    let tcp = out.pop().context("two downloads")?;
    let quic = out.pop().context("two downloads")?;
    Ok((quic, tcp))
}
