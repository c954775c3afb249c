//! `--l3`, checklist L3: many providers on one gateway, many concurrent streams each.
//!
//! The gateway is the real binary, admitting the providers through an allowlist file. The
//! providers are tunnel clients of the provider library in this process (QUIC), each with its
//! own identity, each publishing `l3-<i>` to its own backend ([`super::l3_backend`]), which
//! answers with its provider's id and a body generated from the request's nonce. First the
//! gateway at rest with every provider connected: VmRSS and CPU over a while. Then one HTTP/2
//! connection per name with `streams` concurrent streams, each sending `requests` GETs in
//! turn; every response is checked: the provider id it carries must be the one the name
//! belongs to (else misrouted) and its body must hash to what that provider generates for that
//! nonce (else corrupted). Both counts must be 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use peercompute_identity::{Identity, PeerId, parse_peer_id};
use peercompute_provider::{GatewaySpec as TunnelGateway, TransportMode, TunnelSettings};
use peercompute_tests::TestProvider;
use tokio::task::JoinSet;

use super::gateway_proc::{GatewayProc, GatewaySpec};
use super::l3_backend::{self, Backends, PROVIDER_HEADER};
use super::procfs::{CpuMeter, CpuUse, Memory, Watched, memory, rss_growth_each};
use super::report::verdict;
use super::setup::{Binaries, free_tcp_port, free_udp_port};
use super::stats::{Latencies, mib, ms};
use super::target::Target;

/// Longest wait for every provider to connect and register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(120);
/// Providers connecting at once.
const PARALLEL_STARTS: usize = 16;

/// Sizes of the L3 phase.
#[derive(Debug, Clone)]
pub(crate) struct L3Settings {
    pub(crate) providers: usize,
    /// Concurrent streams per provider.
    pub(crate) streams: usize,
    /// Requests each stream sends in turn.
    pub(crate) requests: usize,
    /// How long the gateway's CPU and memory are read at rest.
    pub(crate) rest: Duration,
}

impl L3Settings {
    /// The checklist's: 200 providers × 50 streams, 10 s at rest.
    pub(crate) fn full() -> Self {
        Self {
            providers: 200,
            streams: 50,
            requests: 20,
            rest: Duration::from_secs(10),
        }
    }

    /// The same fan-out, one request per stream, 2 s at rest.
    pub(crate) fn quick() -> Self {
        Self {
            requests: 1,
            rest: Duration::from_secs(2),
            ..Self::full()
        }
    }
}

/// What one stream (or all of them) saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) misrouted: u64,
    pub(crate) corrupted: u64,
    pub(crate) non_2xx: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) latency: Latencies,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.misrouted += other.misrouted;
        self.corrupted += other.corrupted;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.merge(other.latency);
    }

    pub(crate) fn total(&self) -> u64 {
        self.ok + self.misrouted + self.corrupted + self.non_2xx + self.errors
    }
}

/// What L3 measured.
#[derive(Debug)]
pub(crate) struct L3Report {
    pub(crate) settings: L3Settings,
    pub(crate) registered: usize,
    pub(crate) connect_time: Duration,
    pub(crate) gateway_empty: Memory,
    pub(crate) gateway_rest: Memory,
    pub(crate) rest_cpu: CpuUse,
    pub(crate) tally: Tally,
    pub(crate) load_time: Duration,
    pub(crate) load_cpu: CpuUse,
    pub(crate) gateway_after: Memory,
}

/// Starts a gateway for `providers` fresh identities, connects them, and measures.
pub(crate) async fn run(
    bins: &Binaries,
    domain: &str,
    settings: &L3Settings,
) -> anyhow::Result<L3Report> {
    let dir = tempfile::Builder::new()
        .prefix("tunnel-bench-l3-")
        .tempdir()
        .context("temporary directory")?;
    let identities: Vec<Identity> = (0..settings.providers)
        .map(|_| Identity::generate().context("provider identity"))
        .collect::<anyhow::Result<_>>()?;
    let ids: Vec<String> = identities.iter().map(|i| i.peer_id().to_string()).collect();
    let allow_file = dir.path().join("allowed-providers");
    std::fs::write(&allow_file, ids.join("\n") + "\n").context("write the allowlist file")?;
    let spec = GatewaySpec {
        domain: domain.to_owned(),
        https: SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
        tunnel: SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
        admin: SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
        allow: Vec::new(),
        allow_file: Some(allow_file),
        extra: Vec::new(),
        cpu: None,
    };
    let gateway = GatewayProc::start(
        &bins.gateway,
        &dir.path().join("gateway"),
        dir.path().join("gateway.log"),
        &spec,
    )
    .await?;
    let under_test = L3Gateway {
        pid: gateway.child.pid,
        peer: parse_peer_id(&gateway.id).map_err(anyhow::Error::msg)?,
        https: spec.https,
        tunnel: spec.tunnel,
        domain,
        ca_pem: &gateway.ca_pem,
    };
    let result = measure(&under_test, identities, settings).await;
    let out = result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", gateway.child.log_tail(20)));
    gateway.child.kill().await;
    out
}

/// The gateway the providers connect to (the real binary, or the smoke test's in-process one).
#[derive(Debug)]
pub(crate) struct L3Gateway<'a> {
    /// Whose CPU and memory are read.
    pub(crate) pid: u32,
    pub(crate) peer: PeerId,
    pub(crate) https: SocketAddr,
    pub(crate) tunnel: SocketAddr,
    pub(crate) domain: &'a str,
    pub(crate) ca_pem: &'a [u8],
}

/// Connects a provider per identity (each must be admitted by the gateway) and measures.
pub(crate) async fn measure(
    gateway: &L3Gateway<'_>,
    identities: Vec<Identity>,
    settings: &L3Settings,
) -> anyhow::Result<L3Report> {
    let ids: Vec<String> = identities.iter().map(|i| i.peer_id().to_string()).collect();
    let ids = &ids[..];
    let pid = gateway.pid;
    let watched = [Watched {
        label: "gateway".into(),
        pid,
    }];
    let gateway_empty = memory(pid).unwrap_or_default();
    let backends = Backends::start(ids).await?;
    eprintln!(
        "  running: L3, {} providers connecting to one gateway",
        ids.len()
    );
    let gw_peer = gateway.peer;
    let started = Instant::now();
    let providers: Vec<TestProvider> =
        futures_util::stream::iter(identities.into_iter().zip(&backends.addrs).enumerate())
            .map(|(i, (identity, backend))| async move {
                let mut tunnel = TunnelSettings::new(TunnelGateway {
                    peer: Some(gw_peer),
                    host: gateway.tunnel.ip().to_string(),
                    port: gateway.tunnel.port(),
                });
                tunnel.transport = TransportMode::Quic;
                let provider = TestProvider::start_with(identity, tunnel);
                tokio::time::timeout(
                    REGISTER_TIMEOUT,
                    provider
                        .handle
                        .register(&format!("l3-{i}"), "127.0.0.1", backend.port()),
                )
                .await
                .with_context(|| {
                    format!("provider {i} did not register within {REGISTER_TIMEOUT:?}")
                })?
                .with_context(|| format!("register l3-{i}"))?;
                anyhow::Ok(provider)
            })
            .buffer_unordered(PARALLEL_STARTS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
    let connect_time = started.elapsed();

    eprintln!(
        "  running: L3, gateway at rest with {} providers for {:?}",
        providers.len(),
        settings.rest
    );
    let meter = CpuMeter::start(&watched);
    tokio::time::sleep(settings.rest).await;
    let rest_cpu = meter.stop();
    let gateway_rest = memory(pid).unwrap_or_default();

    eprintln!(
        "  running: L3, {} streams per provider, {} request(s) each",
        settings.streams, settings.requests
    );
    let meter = CpuMeter::start(&watched);
    let started = Instant::now();
    let tally = load(gateway, ids, settings).await?;
    let load_time = started.elapsed();
    let load_cpu = meter.stop();
    let gateway_after = memory(pid).unwrap_or_default();
    drop(providers);
    Ok(L3Report {
        settings: settings.clone(),
        registered: ids.len(),
        connect_time,
        gateway_empty,
        gateway_rest,
        rest_cpu,
        tally,
        load_time,
        load_cpu,
        gateway_after,
    })
}

/// One HTTP/2 connection per provider's name, `streams` tasks on each.
async fn load(
    gateway: &L3Gateway<'_>,
    ids: &[String],
    settings: &L3Settings,
) -> anyhow::Result<Tally> {
    let mut senders = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let host = format!("l3-{i}.{}", gateway.domain);
        let target = Target::https_h2("l3", gateway.https, &host, gateway.ca_pem)?;
        let sender = target
            .connect_h2()
            .await
            .with_context(|| format!("HTTP/2 connection for {host}"))?;
        senders.push((target, sender));
    }
    let mut tasks = JoinSet::new();
    for (i, ((target, sender), id)) in senders.into_iter().zip(ids).enumerate() {
        for s in 0..settings.streams {
            let (target, sender, id) = (target.clone(), sender.clone(), id.clone());
            let requests = settings.requests;
            tasks.spawn(async move {
                let mut tally = Tally::default();
                for r in 0..requests {
                    let nonce = ((i as u64) << 40) | ((s as u64) << 20) | r as u64;
                    one_request(&target, sender.clone(), &id, nonce, &mut tally).await;
                }
                tally
            });
        }
    }
    // Each request is bounded by its own timeout; this bounds the whole.
    let limit = Duration::from_secs(60) + PER_REQUEST * settings.requests as u32;
    let mut total = Tally::default();
    tokio::time::timeout(limit, async {
        while let Some(joined) = tasks.join_next().await {
            total.add(joined.context("L3 stream task panicked")?);
        }
        anyhow::Ok(())
    })
    .await
    .context("L3 load did not finish in time")??;
    total.latency = total.latency.finish();
    Ok(total)
}

const PER_REQUEST: Duration = Duration::from_secs(30);

async fn one_request(
    target: &Target,
    mut sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    id: &str,
    nonce: u64,
    tally: &mut Tally,
) {
    let len = 1024 * (1 + (nonce % 8) as usize);
    let req = target.get_h2(&format!("/l3?nonce={nonce}&len={len}"));
    let started = Instant::now();
    let outcome = tokio::time::timeout(PER_REQUEST, async {
        sender.ready().await.context("HTTP/2 connection closed")?;
        let resp = sender.send_request(req).await.context("request failed")?;
        let (head, body) = resp.into_parts();
        let body = body.collect().await.context("response body")?.to_bytes();
        anyhow::Ok((head, body))
    })
    .await;
    let (head, body) = match outcome {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            tally.errors += 1;
            tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            return;
        }
        Err(_) => {
            tally.errors += 1;
            tally
                .first_error
                .get_or_insert_with(|| format!("no answer within {PER_REQUEST:?}"));
            return;
        }
    };
    tally.latency.record(started.elapsed());
    if !head.status.is_success() {
        tally.non_2xx += 1;
        tally
            .first_error
            .get_or_insert_with(|| format!("status {}", head.status));
        return;
    }
    let from = head
        .headers
        .get(PROVIDER_HEADER)
        .and_then(|v| v.to_str().ok());
    if from != Some(id) {
        tally.misrouted += 1;
        return;
    }
    let expected = l3_backend::sha256_hex(&l3_backend::body(id, nonce, len));
    if l3_backend::sha256_hex(&body) == expected {
        tally.ok += 1;
    } else {
        tally.corrupted += 1;
    }
}

/// Prints the L3 section; returns whether every response was correct.
pub(crate) fn print(report: &L3Report) -> bool {
    let s = &report.settings;
    let t = &report.tally;
    println!();
    println!(
        "L3: {} providers (in-process QUIC tunnel clients of the provider library, each its own identity and backend) on one gateway, {} concurrent HTTP/2 streams each, {} request(s) per stream",
        s.providers, s.streams, s.requests
    );
    println!(
        "  providers connected and registered: {} in {:.2} s",
        report.registered,
        report.connect_time.as_secs_f64()
    );
    let per_provider =
        rss_growth_each(report.gateway_empty, report.gateway_rest, report.registered);
    println!(
        "  gateway at rest with {} providers, over {:?}: VmRSS {} (before the providers {}: {per_provider:.1} KiB per provider), CPU {}",
        report.registered,
        s.rest,
        mib(report.gateway_rest.rss_kib),
        mib(report.gateway_empty.rss_kib),
        report.rest_cpu
    );
    let rate = t.total() as f64 / report.load_time.as_secs_f64().max(1e-9);
    println!(
        "  {} requests in {:.2} s ({rate:.0} req/s), latency p50 {}, p99 {}, max {}",
        t.total(),
        report.load_time.as_secs_f64(),
        ms(t.latency.percentile(50.0)),
        ms(t.latency.percentile(99.0)),
        ms(t.latency.max())
    );
    println!(
        "  {:<44} {:>12}  {}",
        "misrouted responses (must be 0)",
        t.misrouted,
        verdict(t.misrouted == 0)
    );
    println!(
        "  {:<44} {:>12}  {}",
        "corrupted responses (must be 0)",
        t.corrupted,
        verdict(t.corrupted == 0)
    );
    println!(
        "  correct {}, non-2xx {}, errors {}{}",
        t.ok,
        t.non_2xx,
        t.errors,
        t.first_error
            .as_ref()
            .map_or_else(String::new, |e| format!(" (first: {e})"))
    );
    println!(
        "  gateway under load: CPU {}; VmRSS after {} (peak over its life {})",
        report.load_cpu,
        mib(report.gateway_after.rss_kib),
        mib(report.gateway_after.hwm_kib)
    );
    let expected = (s.providers * s.streams * s.requests) as u64;
    t.misrouted == 0 && t.corrupted == 0 && t.errors == 0 && t.non_2xx == 0 && t.ok == expected
}
