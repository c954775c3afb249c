//! `--l1`, checklist L1: 1000 concurrent keep-alive visitor connections (HTTPS through the
//! real gateway → QUIC tunnel → provider → backend) in a closed loop for 60 s, on a stack of
//! its own so the peak memory read is this phase's: req/s, p50/p99, non-2xx and socket errors
//! (both must be 0), and the highest VmRSS of gateway and provider sampled while it ran.

use std::time::Duration;

use super::closed::{self, ClosedLoop, ClosedResult};
use super::procfs::{CpuMeter, CpuUse, PeakRss, Watched};
use super::report::verdict;
use super::stats::{mib, ms};
use super::target::Target;

/// Sizes of the L1 phase.
#[derive(Debug, Clone)]
pub(crate) struct L1Settings {
    pub(crate) connections: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
}

impl L1Settings {
    /// The checklist's: 1000 connections for 60 s.
    pub(crate) fn full() -> Self {
        Self {
            connections: 1000,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(60),
        }
    }

    /// All 1000 connections, for 5 s: checks the phase works.
    pub(crate) fn quick() -> Self {
        Self {
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(5),
            ..Self::full()
        }
    }
}

/// What L1 measured.
#[derive(Debug)]
pub(crate) struct L1Report {
    pub(crate) settings: L1Settings,
    pub(crate) result: ClosedResult,
    pub(crate) cpu: CpuUse,
    /// Highest VmRSS (KiB) sampled during the phase: gateway, provider.
    pub(crate) peak_rss: (u64, u64),
}

/// Runs L1 against `through` (a fresh stack's route) and samples `gateway` and `provider`.
pub(crate) async fn run(
    through: &Target,
    gateway: u32,
    provider: u32,
    watched: &[Watched],
    settings: &L1Settings,
) -> anyhow::Result<L1Report> {
    eprintln!(
        "  running: L1, {} keep-alive connections through the tunnel for {:?} (+ {:?} warm-up)",
        settings.connections, settings.duration, settings.warmup
    );
    let spec = ClosedLoop {
        connections: settings.connections,
        warmup: settings.warmup,
        duration: settings.duration,
        path: "/".into(),
    };
    let peaks = PeakRss::start(vec![gateway, provider]);
    let meter = CpuMeter::start(watched);
    let result = closed::run(through, &spec).await;
    let cpu = meter.stop();
    let peaks = peaks.stop().await;
    Ok(L1Report {
        settings: settings.clone(),
        result: result?,
        cpu,
        peak_rss: (
            peaks.first().copied().unwrap_or(0),
            peaks.get(1).copied().unwrap_or(0),
        ),
    })
}

/// Prints the L1 section; returns whether non-2xx and socket errors are both zero.
pub(crate) fn print(report: &L1Report) -> bool {
    let r = &report.result;
    let s = &report.settings;
    println!();
    println!(
        "L1: {} concurrent keep-alive visitor connections (HTTPS → gateway → QUIC tunnel → provider → backend), closed loop, {:?} measured after {:?} warm-up",
        s.connections, s.duration, s.warmup
    );
    println!(
        "  {:<34} {:>14}",
        "req/s",
        format!("{:.0}", r.req_per_sec())
    );
    println!(
        "  {:<34} {:>14}",
        "latency p50",
        ms(r.latency.percentile(50.0))
    );
    println!(
        "  {:<34} {:>14}",
        "latency p99",
        ms(r.latency.percentile(99.0))
    );
    println!("  {:<34} {:>14}", "latency max", ms(r.latency.max()));
    println!("  {:<34} {:>14}", "requests", r.requests);
    println!(
        "  {:<34} {:>14}  {}",
        "non-2xx (must be 0)",
        r.non_2xx,
        verdict(r.non_2xx == 0)
    );
    if !r.statuses.is_empty() {
        let each: Vec<String> = r
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        println!(
            "  non-2xx statuses: {}; the first said: {:?}",
            each.join(", "),
            r.first_non_2xx.as_deref().unwrap_or("")
        );
    }
    println!(
        "  {:<34} {:>14}  {}",
        "socket errors (must be 0)",
        r.errors,
        verdict(r.errors == 0)
    );
    println!(
        "  peak VmRSS while it ran (sampled every 100 ms): gateway {}, provider {}",
        mib(report.peak_rss.0),
        mib(report.peak_rss.1)
    );
    println!("  CPU, through: {}", report.cpu);
    r.non_2xx == 0 && r.errors == 0 && r.requests > 0
}
