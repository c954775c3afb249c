//! Runs every phase against the backend directly and through the gateway, in this order:
//! closed loop, open loop, many concurrent connections (gateway memory while they are open),
//! bulk download. Bulk goes last so its buffers cannot inflate the memory read while the
//! connections are held. CPU use of every watched process is measured per phase.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt;

use super::bulk::{self, BulkResult};
use super::closed::{self, ClosedLoop, ClosedResult};
use super::held;
use super::open::{self, OpenLoop, OpenResult};
use super::procfs::{self, CpuMeter, CpuUse, Memory, Watched};
use super::target::Target;

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) connections: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) rate: u32,
    pub(crate) rate_duration: Duration,
    pub(crate) rate_connections: usize,
    pub(crate) bulk_bytes: u64,
    pub(crate) concurrent: usize,
    pub(crate) handshake_parallel: usize,
    pub(crate) path: String,
}

impl Settings {
    /// The figures the issue asks for.
    pub(crate) fn full() -> Self {
        Self {
            connections: 64,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            rate: 1000,
            rate_duration: Duration::from_secs(10),
            rate_connections: 32,
            bulk_bytes: 1 << 30,
            concurrent: 1000,
            handshake_parallel: 50,
            path: "/".into(),
        }
    }

    /// A few seconds in total: checks the benchmark works, figures only indicative.
    pub(crate) fn quick() -> Self {
        Self {
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            rate_duration: Duration::from_secs(1),
            bulk_bytes: 64 << 20,
            concurrent: 200,
            ..Self::full()
        }
    }
}

/// What the suite measures: the two targets and the processes behind them.
#[derive(Debug)]
pub(crate) struct Rig {
    pub(crate) direct: Target,
    /// Two zero-work TCP relays in front of the backend: the closed-loop ceiling of any
    /// design with two relay processes on this machine (measured when present).
    pub(crate) ceiling: Option<Target>,
    pub(crate) through: Target,
    /// The same route served by a provider on the TCP transport (TLS + yamux to the
    /// gateway's HTTPS port), measured in the closed loop and bulk phases when present.
    pub(crate) through_tcp: Option<Target>,
    /// What users assemble instead (nginx TLS → rathole noise tunnel → backend), measured in
    /// the closed loop and bulk phases when nginx and rathole are installed.
    pub(crate) alternative: Option<Target>,
    pub(crate) gateway_pid: u32,
    pub(crate) provider_pid: u32,
    /// Processes whose CPU use is reported per phase (load generator, backend, …).
    pub(crate) watched: Vec<Watched>,
    /// The gateway's admin listener, for its `connections_open` gauge.
    pub(crate) admin: Option<SocketAddr>,
}

/// A phase's result with the CPU each watched process used meanwhile (% of one core).
#[derive(Debug)]
pub(crate) struct Measured<T> {
    pub(crate) result: T,
    pub(crate) cpu: CpuUse,
}

#[derive(Debug)]
pub(crate) struct Pair<T> {
    pub(crate) direct: Measured<T>,
    pub(crate) through: Measured<T>,
}

/// Gateway and provider memory while `count` connections were held open.
#[derive(Debug)]
pub(crate) struct HeldReport {
    pub(crate) count: usize,
    pub(crate) open: usize,
    pub(crate) failed: usize,
    pub(crate) non_2xx: usize,
    pub(crate) elapsed: Duration,
    pub(crate) first_error: Option<String>,
    /// The gateway's own `connections_open` gauge at the time of the reading.
    pub(crate) gateway_gauge: Option<u64>,
    pub(crate) gateway_before: Memory,
    pub(crate) gateway_open: Memory,
    pub(crate) provider_open: Memory,
    pub(crate) cpu: CpuUse,
}

/// Everything one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) settings: Settings,
    pub(crate) closed: Pair<ClosedResult>,
    /// The closed loop through the two-relay ceiling, when the rig has one.
    pub(crate) ceiling: Option<Measured<ClosedResult>>,
    pub(crate) open: Pair<OpenResult>,
    pub(crate) held: HeldReport,
    pub(crate) bulk: Pair<BulkResult>,
    /// Closed loop and bulk through the TCP-transport provider.
    pub(crate) tcp: Option<(Measured<ClosedResult>, Measured<BulkResult>)>,
    /// Closed loop and bulk through nginx + rathole.
    pub(crate) alternative: Option<(Measured<ClosedResult>, Measured<BulkResult>)>,
    /// `(after phase, gateway, provider)`.
    pub(crate) memory: Vec<(&'static str, Memory, Memory)>,
}

impl Report {
    /// Peak (VmHWM) of gateway and provider over the whole run.
    pub(crate) fn peaks(&self) -> (Memory, Memory) {
        self.memory
            .last()
            .map(|(_, g, p)| (*g, *p))
            .unwrap_or_default()
    }
}

async fn measured<T>(
    rig: &Rig,
    what: String,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Measured<T>> {
    eprintln!("  running: {what}");
    let meter = CpuMeter::start(&rig.watched);
    let result = fut.await.with_context(|| what.clone())?;
    Ok(Measured {
        result,
        cpu: meter.stop(),
    })
}

fn memory_of(pid: u32) -> Memory {
    procfs::memory(pid).unwrap_or_default()
}

pub(crate) async fn run(rig: &Rig, settings: &Settings) -> anyhow::Result<Report> {
    let mut memory = Vec::new();
    let mut snapshot = |phase| {
        memory.push((
            phase,
            memory_of(rig.gateway_pid),
            memory_of(rig.provider_pid),
        ));
    };
    snapshot("start");

    let spec = ClosedLoop {
        connections: settings.connections,
        warmup: settings.warmup,
        duration: settings.duration,
        path: settings.path.clone(),
    };
    let closed_what = |target: &Target| {
        format!(
            "closed loop, {} keep-alive connections, {:?} + {:?} warm-up, {}",
            spec.connections, spec.duration, spec.warmup, target.label
        )
    };
    let mut closed_pair = Vec::new();
    let mut ceiling = None;
    for target in [&rig.direct, &rig.through] {
        closed_pair.push(measured(rig, closed_what(target), closed::run(target, &spec)).await?);
        // Direct, ceiling, through: the ceiling sits between the two it explains.
        if let Some(c) = rig.ceiling.as_ref().filter(|_| ceiling.is_none()) {
            ceiling = Some(measured(rig, closed_what(c), closed::run(c, &spec)).await?);
        }
    }
    let tcp_closed = match &rig.through_tcp {
        Some(t) => Some(measured(rig, closed_what(t), closed::run(t, &spec)).await?),
        None => None,
    };
    let alt_closed = match &rig.alternative {
        Some(t) => Some(measured(rig, closed_what(t), closed::run(t, &spec)).await?),
        None => None,
    };
    snapshot("closed loop");

    let spec = OpenLoop {
        rate: settings.rate,
        duration: settings.rate_duration,
        connections: settings.rate_connections,
        path: settings.path.clone(),
    };
    let mut open_pair = Vec::new();
    for target in [&rig.direct, &rig.through] {
        let what = format!(
            "open loop, {} req/s for {:?} on {} connections, {}",
            spec.rate, spec.duration, spec.connections, target.label
        );
        open_pair.push(measured(rig, what, open::run(target, &spec)).await?);
    }
    snapshot("open loop");

    let held = held_connections(rig, settings).await;
    snapshot("concurrent connections");

    let expected = {
        let bytes = settings.bulk_bytes;
        tokio::task::spawn_blocking(move || peercompute_tests::download_sha256(bytes))
            .await
            .context("hash the expected download")?
    };
    let mut bulk_pair = Vec::new();
    for target in [&rig.direct, &rig.through] {
        let what = format!(
            "bulk download of {} MiB, {}",
            settings.bulk_bytes >> 20,
            target.label
        );
        bulk_pair
            .push(measured(rig, what, bulk::run(target, settings.bulk_bytes, &expected)).await?);
    }
    let with_bulk = async |target: &Option<Target>, closed: Option<Measured<ClosedResult>>| match (
        target, closed,
    ) {
        (Some(target), Some(closed)) => {
            let what = format!(
                "bulk download of {} MiB, {}",
                settings.bulk_bytes >> 20,
                target.label
            );
            let bulk =
                measured(rig, what, bulk::run(target, settings.bulk_bytes, &expected)).await?;
            anyhow::Ok(Some((closed, bulk)))
        }
        _ => Ok(None),
    };
    let tcp = with_bulk(&rig.through_tcp, tcp_closed).await?;
    let alternative = with_bulk(&rig.alternative, alt_closed).await?;
    snapshot("bulk download");

    Ok(Report {
        settings: settings.clone(),
        closed: pair(closed_pair),
        ceiling,
        open: pair(open_pair),
        held,
        bulk: pair(bulk_pair),
        tcp,
        alternative,
        memory,
    })
}

fn pair<T>(mut two: Vec<Measured<T>>) -> Pair<T> {
    let through = two.pop().expect("two measurements: direct, then through");
    let direct = two.pop().expect("two measurements: direct, then through");
    Pair { direct, through }
}

async fn held_connections(rig: &Rig, settings: &Settings) -> HeldReport {
    eprintln!(
        "  running: {} concurrent TLS connections through the gateway, one request each, held open",
        settings.concurrent
    );
    let gateway_before = memory_of(rig.gateway_pid);
    let meter = CpuMeter::start(&rig.watched);
    let held = held::open(
        &rig.through,
        settings.concurrent,
        settings.handshake_parallel,
        &settings.path,
    )
    .await;
    let cpu = meter.stop();
    // Read while every connection is still open.
    let gateway_open = memory_of(rig.gateway_pid);
    let provider_open = memory_of(rig.provider_pid);
    let gateway_gauge = match rig.admin {
        Some(admin) => connections_open(admin).await.ok(),
        None => None,
    };
    let report = HeldReport {
        count: settings.concurrent,
        open: held.conns.len(),
        failed: held.failed,
        non_2xx: held.non_2xx,
        elapsed: held.elapsed,
        first_error: held.first_error.clone(),
        gateway_gauge,
        gateway_before,
        gateway_open,
        provider_open,
        cpu,
    };
    drop(held);
    report
}

/// `peercompute_gateway_connections_open` from the admin listener's `/metrics`.
pub(crate) async fn connections_open(admin: SocketAddr) -> anyhow::Result<u64> {
    let target = Target::plain("admin", admin, &admin.to_string());
    let mut conn = target.connect().await?;
    let resp = tokio::time::timeout(Duration::from_secs(10), async {
        let resp = conn.send(target.get("/metrics")).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(body)
    })
    .await
    .context("metrics request timed out")??;
    let text = String::from_utf8_lossy(&resp);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("peercompute_gateway_connections_open ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|v| v as u64)
        .context("no connections_open gauge in /metrics")
}
