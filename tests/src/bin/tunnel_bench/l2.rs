//! `--l2`, checklist L2: as many idle TLS visitor connections as the gateway's connection cap
//! (`--max-connections`, 10,000 by default; the stack of this phase is started with the cap
//! set to the count), each with one completed request through the tunnel, then held:
//! KiB of gateway memory per connection (VmRSS delta / connections). With the cap reached,
//! one more visitor at a time: how long until it is turned away; and a request on held
//! connections: it must still answer within 100 ms.
//!
//! The gateway's `header_read_timeout` (10 s by default) also ends a keep-alive connection
//! that sends no next request, so opening thousands would lose the first ones before the
//! reading: the phase's gateway runs with it raised to [`IDLE_ALLOWED`] (config file), and
//! says so.

use std::time::Duration;

use super::held::{self, Answers, Refusals};
use super::procfs::{Memory, memory, rss_growth_each};
use super::report::verdict;
use super::stats::{mib, ms};
use super::target::Target;

/// The L2 gateway's `header_read_timeout`, so that idle connections stay open for the phase.
pub(crate) const IDLE_ALLOWED: Duration = Duration::from_secs(600);

/// A refusal and a legitimate answer must each come within this.
pub(crate) const FAST: Duration = Duration::from_millis(100);

/// Sizes of the L2 phase.
#[derive(Debug, Clone)]
pub(crate) struct L2Settings {
    /// Connections held, and the gateway's `--max-connections`.
    pub(crate) connections: usize,
    /// TLS handshakes in flight while opening them.
    pub(crate) parallel: usize,
    /// New connections tried past the cap.
    pub(crate) attempts: usize,
    /// Requests on held connections past the cap.
    pub(crate) probes: usize,
}

impl L2Settings {
    /// The checklist's 10,000 (the gateway's default cap).
    pub(crate) fn full() -> Self {
        Self {
            connections: 10_000,
            parallel: 64,
            attempts: 50,
            probes: 50,
        }
    }

    /// 500 connections: checks the phase works.
    pub(crate) fn quick() -> Self {
        Self {
            connections: 500,
            attempts: 20,
            probes: 20,
            ..Self::full()
        }
    }
}

/// What L2 measured.
#[derive(Debug)]
pub(crate) struct L2Report {
    pub(crate) settings: L2Settings,
    pub(crate) open: usize,
    pub(crate) failed: usize,
    pub(crate) non_2xx: usize,
    pub(crate) elapsed: Duration,
    pub(crate) first_error: Option<String>,
    pub(crate) gateway_before: Memory,
    pub(crate) gateway_open: Memory,
    /// The gateway's `connections_open` gauge while they were held.
    pub(crate) gauge: Option<u64>,
    pub(crate) refusals: Refusals,
    pub(crate) answers: Answers,
}

impl L2Report {
    pub(crate) fn kib_per_connection(&self) -> f64 {
        rss_growth_each(self.gateway_before, self.gateway_open, self.open)
    }
}

/// Runs L2 against `through` on a gateway (pid `gateway`) whose cap is
/// `settings.connections`; `gauge` reads its `connections_open`.
pub(crate) async fn run<G>(
    through: &Target,
    gateway: u32,
    settings: &L2Settings,
    gauge: impl FnOnce() -> G,
) -> L2Report
where
    G: Future<Output = Option<u64>>,
{
    eprintln!(
        "  running: L2, {} idle TLS connections through the gateway (its cap), then past the cap",
        settings.connections
    );
    let gateway_before = memory(gateway).unwrap_or_default();
    let mut held = held::open(through, settings.connections, settings.parallel, "/").await;
    let gateway_open = memory(gateway).unwrap_or_default();
    let gauge = gauge().await;
    let refusals = held::refusals(through, settings.attempts, "/").await;
    let answers = held.answer_times(through, settings.probes, "/").await;
    let report = L2Report {
        settings: settings.clone(),
        open: held.conns.len(),
        failed: held.failed,
        non_2xx: held.non_2xx,
        elapsed: held.elapsed,
        first_error: held.first_error.take(),
        gateway_before,
        gateway_open,
        gauge,
        refusals,
        answers,
    };
    drop(held);
    report
}

/// Prints the L2 section; returns whether every connection opened and answered and the cap
/// held (the speed of refusals and answers is a target, marked PASS/MISS).
pub(crate) fn print(report: &L2Report) -> bool {
    let s = &report.settings;
    println!();
    println!(
        "L2: {} idle TLS visitor connections (the gateway's --max-connections), one request each, held open (gateway header_read_timeout raised from 10 s to {:?} so idle connections are not closed)",
        s.connections, IDLE_ALLOWED
    );
    println!(
        "  opened {} (failed {}, non-2xx {}) in {:.2} s; gateway connections_open gauge: {}",
        report.open,
        report.failed,
        report.non_2xx,
        report.elapsed.as_secs_f64(),
        report
            .gauge
            .map_or_else(|| "unavailable".into(), |g| g.to_string())
    );
    if let Some(e) = &report.first_error {
        println!("  first failure: {e}");
    }
    println!(
        "  gateway VmRSS before {} → while held {}: {:.1} KiB per connection",
        mib(report.gateway_before.rss_kib),
        mib(report.gateway_open.rss_kib),
        report.kib_per_connection()
    );
    let r = &report.refusals;
    let refusal_max = r.refusal_time.max();
    println!(
        "  past the cap, {} new connections one at a time: refused {}, answered {} (cap did not hold), no outcome within 20 s {}",
        r.attempts, r.refused, r.answered, r.hung
    );
    println!(
        "  {:<44} {:>12}  {}",
        format!("time to refusal p50 / max (≤ {})", ms(FAST)),
        format!(
            "{} / {}",
            ms(r.refusal_time.percentile(50.0)),
            ms(refusal_max)
        ),
        verdict(r.refused == r.attempts && refusal_max <= FAST)
    );
    let a = &report.answers;
    let answer_max = a.times.max();
    println!(
        "  {:<44} {:>12}  {}",
        format!("request on a held connection p50 / max (≤ {})", ms(FAST)),
        format!("{} / {}", ms(a.times.percentile(50.0)), ms(answer_max)),
        verdict(a.failed == 0 && answer_max <= FAST)
    );
    println!(
        "  requests on held connections: {} answered 2xx, {} failed",
        s.probes.min(report.open).saturating_sub(a.failed),
        a.failed
    );
    report.failed == 0
        && report.non_2xx == 0
        && report.open == s.connections
        && r.answered == 0
        && a.failed == 0
}
