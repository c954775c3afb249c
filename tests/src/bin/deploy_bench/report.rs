//! The printed result: the machine, every figure as median (min–max), the ratios to the
//! direct baseline measured in the same run, PASS/MISS against the targets, and the
//! stage breakdowns.

use std::time::Duration;

use super::machine::{Machine, Memory};
use super::stages::Stage;
use super::stats::{Summary, fmt_duration};

/// Issue 3: deploy-to-URL ≤ 1.5 s median (image present locally).
pub(crate) const DEPLOY_TARGET: Duration = Duration::from_millis(1500);
/// Issue 3: provider idle RSS ≤ 30 MiB.
pub(crate) const RSS_TARGET_KIB: u64 = 30 * 1024;

/// Everything measured in one run of the benchmark.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) docker_version: String,
    pub(crate) binaries: String,
    pub(crate) image: String,
    pub(crate) runs: usize,
    pub(crate) warmup: usize,
    pub(crate) deploy: Vec<Duration>,
    pub(crate) deploy_exit: Vec<Duration>,
    pub(crate) direct: Vec<Duration>,
    pub(crate) direct_stop: Vec<Duration>,
    pub(crate) stop: Vec<Duration>,
    pub(crate) stop_exit: Vec<Duration>,
    pub(crate) image_check: Vec<Duration>,
    pub(crate) rss_start: Memory,
    pub(crate) rss_end: Memory,
    pub(crate) deploy_stages: Vec<Stage>,
    pub(crate) stop_stages: Vec<Stage>,
    pub(crate) direct_stages: Vec<Stage>,
    pub(crate) timeline_dropped: u64,
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn row(label: &str, values: &[Duration], target: &str) {
    match Summary::of(values) {
        Some(s) => println!(
            "  {label:<46} {:>9} {:>9} {:>9}  {target}",
            fmt_duration(s.median),
            fmt_duration(s.min),
            fmt_duration(s.max)
        ),
        None => println!("  {label:<46} {:>9}", "–"),
    }
}

fn median(values: &[Duration]) -> Option<Duration> {
    Summary::of(values).map(|s| s.median)
}

fn ratio(label: &str, over: &[Duration], base: &[Duration]) {
    if let (Some(a), Some(b)) = (median(over), median(base))
        && !b.is_zero()
    {
        println!(
            "  {label:<46} {:>8.2}×  (median / median)",
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}

fn stages(title: &str, stages: &[Stage], runs: usize, total: &[Duration]) {
    println!();
    println!("{title} (stage = previous milestone → this one; {runs} runs)");
    println!(
        "  {:<62} {:>9} {:>9} {:>9}  found",
        "stage", "median", "min", "max"
    );
    let mut sum = Duration::ZERO;
    for stage in stages {
        match stage.summary {
            Some(s) => {
                sum += s.median;
                println!(
                    "  {:<62} {:>9} {:>9} {:>9}  {}/{runs}",
                    stage.label,
                    fmt_duration(s.median),
                    fmt_duration(s.min),
                    fmt_duration(s.max),
                    stage.found
                );
            }
            None => println!(
                "  {:<62} {:>9}                      {}/{runs}",
                stage.label, "–", stage.found
            ),
        }
    }
    if let Some(total) = median(total) {
        println!(
            "  {:<62} {:>9}  (median of the totals: {})",
            "sum of the stage medians",
            fmt_duration(sum),
            fmt_duration(total)
        );
    }
}

impl Report {
    fn deploy_pass(&self) -> bool {
        median(&self.deploy).is_some_and(|m| m <= DEPLOY_TARGET)
    }

    fn rss_pass(&self) -> bool {
        self.rss_start.rss_kib <= RSS_TARGET_KIB && self.rss_end.rss_kib <= RSS_TARGET_KIB
    }

    pub(crate) fn print(&self) {
        let m = &self.machine;
        println!("deploy-bench: Peer Compute deploy-to-URL time, stop time, provider idle memory");
        println!(
            "machine: nproc {}, CPU {}, Linux {}, {} RAM; load {} (before) → {} (after)",
            m.nproc,
            m.cpu_model,
            m.kernel,
            mib(m.mem_total_kib),
            self.load_before,
            self.load_after
        );
        println!("docker engine: {}", self.docker_version);
        println!("binaries: {}", self.binaries);
        println!("image: {}", self.image);
        println!(
            "runs: {} measured after {} warm-up run(s); each run: direct start+stop, then peerctl deploy, then peerctl stop",
            self.runs, self.warmup
        );
        println!();
        println!(
            "  {:<46} {:>9} {:>9} {:>9}  target",
            "figure", "median", "min", "max"
        );
        row(
            "deploy-to-URL (peerctl deploy → first 200)",
            &self.deploy,
            &format!(
                "≤ {}  {}",
                fmt_duration(DEPLOY_TARGET),
                verdict(self.deploy_pass())
            ),
        );
        row(
            "  of which: until peerctl exited with the URL",
            &self.deploy_exit,
            "",
        );
        row(
            "direct start (create + start → first 200)",
            &self.direct,
            "",
        );
        ratio("deploy-to-URL / direct start", &self.deploy, &self.direct);
        row("stop (peerctl stop → URL answers 404)", &self.stop, "");
        row("  of which: until peerctl stop exited", &self.stop_exit, "");
        row("direct stop + remove", &self.direct_stop, "");
        ratio("stop / direct stop + remove", &self.stop, &self.direct_stop);
        row(
            "image check alone (local image inspect)",
            &self.image_check,
            "",
        );
        let target = format!("≤ {}", mib(RSS_TARGET_KIB));
        for (when, mem) in [
            ("after start", self.rss_start),
            ("after the runs, no deployments", self.rss_end),
        ] {
            println!(
                "  provider idle RSS {when:<30} VmRSS {:>9}, VmHWM {:>9}  {target}  {}",
                mib(mem.rss_kib),
                mib(mem.hwm_kib),
                verdict(mem.rss_kib <= RSS_TARGET_KIB)
            );
        }
        stages(
            "where deploy-to-URL goes",
            &self.deploy_stages,
            self.deploy.len(),
            &self.deploy,
        );
        stages(
            "where stop goes",
            &self.stop_stages,
            self.stop.len(),
            &self.stop,
        );
        stages(
            "direct baseline",
            &self.direct_stages,
            self.direct.len(),
            &self.direct,
        );
        if self.timeline_dropped > 0 {
            println!(
                "(note: {} log lines were not kept; some stages may be missing)",
                self.timeline_dropped
            );
        }
        println!();
        println!(
            "verdict: deploy-to-URL {} (median {} vs ≤ {}), provider idle RSS {} (max VmRSS {} vs ≤ {})",
            verdict(self.deploy_pass()),
            median(&self.deploy).map_or_else(|| "–".into(), fmt_duration),
            fmt_duration(DEPLOY_TARGET),
            verdict(self.rss_pass()),
            mib(self.rss_start.rss_kib.max(self.rss_end.rss_kib)),
            mib(RSS_TARGET_KIB)
        );
    }
}
