//! `tunnel-bench --loss 0,1,5,10 --delay 50ms --jitter 10ms --cc cubic,bbr`: the tunnel
//! through a lossy, long link (issue 17, F4). For each congestion controller one stack is
//! started with `--tunnel-congestion` on both daemons and a [`LossyLink`] (in this process)
//! between provider and gateway; each loss step is set live on the link and measures:
//! - goodput of one SHA-256-checked `/download`, sized by a probe download to last about
//!   `transfer_secs` (at most `max_bytes`);
//! - a closed loop of GETs (8 connections): req/s, p50/p99;
//! - corrupted and hung requests, reconnects (the gateway's `connected_since` of the
//!   provider changed), and the loss the link measured per direction.
//!
//! Ratios are to the 0 % row of the same controller.
//!
//! [`LossyLink`]: peercompute_tests::lossy_link::LossyLink

use std::time::Duration;

use anyhow::Context;
use peercompute_tests::lossy_link::{Dir, LinkShape, LinkStats};
use peercompute_tests::tunnel_load::{self, GetLoop, GetPlan, Transfer, ms};
use peercompute_tunnel_proto::TunnelCongestion;

use super::setup::{Binaries, Stack, StackOptions};

/// What the loss phase runs.
#[derive(Debug, Clone)]
pub(crate) struct LossSettings {
    /// Loss each way, as fractions.
    pub(crate) losses: Vec<f64>,
    pub(crate) delay: Duration,
    pub(crate) jitter: Duration,
    pub(crate) reorder: bool,
    pub(crate) controllers: Vec<TunnelCongestion>,
    /// The download lasts about this long at the probe's rate...
    pub(crate) transfer_secs: f64,
    /// ...and is at most this large.
    pub(crate) max_bytes: u64,
    pub(crate) gets_for: Duration,
}

impl LossSettings {
    /// The plan's sizes: 64 MiB or 30 s of download, 10 s of GETs.
    pub(crate) fn full(losses: Vec<f64>, controllers: Vec<TunnelCongestion>) -> Self {
        Self {
            losses,
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            reorder: false,
            controllers,
            transfer_secs: 20.0,
            max_bytes: 64 << 20,
            gets_for: Duration::from_secs(10),
        }
    }

    /// A smoke-sized run: 5 s downloads of at most 16 MiB, 3 s of GETs.
    pub(crate) fn quick(losses: Vec<f64>, controllers: Vec<TunnelCongestion>) -> Self {
        Self {
            transfer_secs: 5.0,
            max_bytes: 16 << 20,
            gets_for: Duration::from_secs(3),
            ..Self::full(losses, controllers)
        }
    }
}

/// One (controller, loss) measurement.
#[derive(Debug, Clone)]
pub(crate) struct LossRow {
    pub(crate) cc: TunnelCongestion,
    pub(crate) loss: f64,
    pub(crate) download: Transfer,
    pub(crate) gets: GetLoop,
    pub(crate) reconnects: usize,
    pub(crate) link: LinkStats,
}

impl LossRow {
    fn sound(&self) -> bool {
        self.download.intact && self.gets.hung == 0 && self.gets.failed == 0
    }
}

/// Runs every controller and loss step; `Ok(false)` when a request was corrupted or hung.
pub(crate) async fn run(
    bins: &Binaries,
    domain: &str,
    host: &str,
    settings: &LossSettings,
) -> anyhow::Result<bool> {
    let mut rows = Vec::new();
    for &cc in &settings.controllers {
        let dir = Dir {
            loss: 0.0,
            delay: settings.delay,
            jitter: settings.jitter,
            reorder: settings.reorder,
        };
        let options = StackOptions {
            congestion: Some(cc),
            link: Some(LinkShape::symmetric(dir, 17)),
            ..StackOptions::default()
        };
        let stack = Stack::start_with(bins, domain, host, &options)
            .await
            .with_context(|| format!("start the stack with --tunnel-congestion {cc}"))?;
        eprintln!(
            "  {cc}: stack up (gateway pid {}, provider pid {})",
            stack.gateway.pid, stack.provider.pid
        );
        let result = run_controller(&stack, cc, host, settings, dir, &mut rows).await;
        if let Err(e) = result {
            return Err(stack.fail(e).await);
        }
        stack.stop().await;
    }
    print(&rows, settings);
    Ok(rows.iter().all(LossRow::sound))
}

async fn run_controller(
    stack: &Stack,
    cc: TunnelCongestion,
    host: &str,
    settings: &LossSettings,
    dir: Dir,
    rows: &mut Vec<LossRow>,
) -> anyhow::Result<()> {
    let link = stack
        .link
        .as_ref()
        .context("the loss phase runs with a link")?;
    let client = tunnel_load::client(&stack.ca_pem, stack.https, host)?;
    let base = format!("https://{host}:{}", stack.https.port());
    let admin = reqwest::Client::builder().no_proxy().build()?;
    let providers = format!("http://{}/api/v1/providers", stack.admin);
    for &loss in &settings.losses {
        let shape = Dir { loss, ..dir };
        link.set_shape(shape, shape);
        let since_before = connected_since(&admin, &providers).await?;
        let before = link.stats();
        // Probe: 1 MiB gives the rate that sizes the measured download.
        let probe = tunnel_load::download(&client, &base, 1 << 20, Duration::from_secs(60)).await;
        let rate = probe.bytes as f64 / probe.elapsed.as_secs_f64().max(1e-3);
        let bytes = ((rate * settings.transfer_secs) as u64).clamp(1 << 20, settings.max_bytes);
        let limit = Duration::from_secs_f64(settings.transfer_secs * 3.0 + 30.0);
        let mut download = tunnel_load::download(&client, &base, bytes, limit).await;
        if probe.corrupted || probe.hung {
            download.corrupted |= probe.corrupted;
            download.hung |= probe.hung;
            download.intact = false;
            download.error = probe.error.map(|e| format!("the probe: {e}"));
        }
        let gets = tunnel_load::get_loop(
            &client,
            &format!("{base}/"),
            GetPlan {
                concurrency: 8,
                max_requests: usize::MAX,
                duration: settings.gets_for,
                timeout: Duration::from_secs(30),
            },
        )
        .await;
        let measured = link.stats().since(&before);
        let since_after = connected_since(&admin, &providers).await?;
        let row = LossRow {
            cc,
            loss,
            download,
            gets,
            reconnects: usize::from(since_after != since_before),
            link: measured,
        };
        eprintln!(
            "  {cc} {:>4.1} %: {:.2} MB/s, {:.0} req/s",
            loss * 100.0,
            row.download.mb_per_sec(),
            row.gets.req_per_sec()
        );
        rows.push(row);
    }
    Ok(())
}

/// The gateway's `connected_since` of the (only) provider; `None` when none is connected.
async fn connected_since(admin: &reqwest::Client, url: &str) -> anyhow::Result<Option<String>> {
    let list: serde_json::Value = admin
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("parse {url}"))?;
    Ok(list
        .get(0)
        .and_then(|p| p.get("connected_since"))
        .and_then(|v| v.as_str())
        .map(str::to_owned))
}

fn print(rows: &[LossRow], settings: &LossSettings) {
    println!();
    println!(
        "== Packet loss on the tunnel (link emulator in this process; delay {} ± {} ms each way{}) ==",
        settings.delay.as_millis(),
        settings.jitter.as_millis(),
        if settings.reorder {
            ", reordering"
        } else {
            ", order kept"
        }
    );
    println!(
        "{:<8} {:>6} {:>10} {:>9} {:>7} {:>9} {:>7} {:>8} {:>8} {:>5} {:>4} {:>5} {:>13}",
        "cc",
        "loss",
        "goodput",
        "MiB",
        "×0 %",
        "req/s",
        "×0 %",
        "p50 ms",
        "p99 ms",
        "corr",
        "hung",
        "recon",
        "meas. up/down"
    );
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.cc == row.cc && r.loss == 0.0)
            .unwrap_or(row);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let corrupted = usize::from(row.download.corrupted) + row.gets.non_200;
        let hung = usize::from(row.download.hung) + row.gets.hung + row.gets.failed;
        println!(
            "{:<8} {:>5.1}% {:>6.2} MB/s {:>9.1} {:>7.3} {:>9.0} {:>7.3} {:>8} {:>8} {:>5} {:>4} {:>5} {:>5.2}/{:<5.2}%",
            row.cc.to_string(),
            row.loss * 100.0,
            row.download.mb_per_sec(),
            row.download.bytes as f64 / f64::from(1 << 20),
            ratio(row.download.mb_per_sec(), base.download.mb_per_sec()),
            row.gets.req_per_sec(),
            ratio(row.gets.req_per_sec(), base.gets.req_per_sec()),
            ms(row.gets.percentile(50.0)),
            ms(row.gets.percentile(99.0)),
            corrupted,
            hung,
            row.reconnects,
            row.link.up.loss() * 100.0,
            row.link.down.loss() * 100.0,
        );
    }
    for row in rows.iter().filter(|r| r.download.error.is_some()) {
        println!(
            "{} {:.1} %: the download failed: {}",
            row.cc,
            row.loss * 100.0,
            row.download.error.as_deref().unwrap_or_default()
        );
    }
    verdict(rows);
}

/// The plan's rule for the default: BBR replaces Cubic only if, at 0 %, its goodput is
/// ≥ 0.9× Cubic's and its p99 ≤ 1.2×, at 5 % its goodput ≥ 3× Cubic's, and nothing hung.
fn verdict(rows: &[LossRow]) {
    let find = |cc, loss: f64| {
        rows.iter()
            .find(|r| r.cc == cc && (r.loss - loss).abs() < 1e-9)
    };
    let (Some(c0), Some(b0), Some(c5), Some(b5)) = (
        find(TunnelCongestion::Cubic, 0.0),
        find(TunnelCongestion::Bbr, 0.0),
        find(TunnelCongestion::Cubic, 0.05),
        find(TunnelCongestion::Bbr, 0.05),
    ) else {
        println!("default rule: needs cubic and bbr at 0 % and 5 % (not both measured here)");
        return;
    };
    let goodput0 = b0.download.mb_per_sec() / c0.download.mb_per_sec();
    let p99 = b0.gets.percentile(99.0).as_secs_f64() / c0.gets.percentile(99.0).as_secs_f64();
    let goodput5 = b5.download.mb_per_sec() / c5.download.mb_per_sec();
    let sound = rows
        .iter()
        .filter(|r| r.cc == TunnelCongestion::Bbr)
        .all(LossRow::sound);
    let pass = |ok: bool| if ok { "yes" } else { "NO" };
    println!(
        "default rule (one run; the plan asks for 3): BBR/Cubic goodput at 0 % {goodput0:.2} (≥ 0.9: {}), p99 at 0 % {p99:.2} (≤ 1.2: {}), goodput at 5 % {goodput5:.2} (≥ 3: {}), BBR nothing hung: {}",
        pass(goodput0 >= 0.9),
        pass(p99 <= 1.2),
        pass(goodput5 >= 3.0),
        pass(sound)
    );
    let cubic_collapse = c5.download.mb_per_sec() < c0.download.mb_per_sec() / 10.0;
    println!(
        "Cubic at 5 %: {:.3} of its loss-free goodput{}",
        c5.download.mb_per_sec() / c0.download.mb_per_sec(),
        if cubic_collapse {
            " (collapse: < 1/10)"
        } else {
            ""
        }
    );
}
