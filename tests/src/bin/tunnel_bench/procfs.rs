//! What `/proc` says about the machine and about a process: CPU model and count, load
//! average, resident memory now (VmRSS) and at its peak (VmHWM), CPU time used.

use std::time::{Duration, Instant};

pub(crate) use peercompute_tests::procfs::{Memory, memory};

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// User + system CPU time of every thread of `pid` so far.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks() as f64,
    ))
}

/// Busy CPU time of the whole machine so far (all cores, all processes): the `cpu` line of
/// `/proc/stat` minus idle and iowait.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(Duration::from_secs_f64(
        total.saturating_sub(idle) as f64 / clock_ticks() as f64,
    ))
}

/// A process watched for CPU use.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    pub(crate) label: String,
    pub(crate) pid: u32,
}

/// CPU used over a phase, in % of one core: by each watched process, and by the whole
/// machine, so what unrelated processes took meanwhile is visible.
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuUse {
    pub(crate) procs: Vec<(String, f64)>,
    pub(crate) machine: Option<f64>,
}

impl CpuUse {
    /// What processes other than the watched ones used (machine − watched).
    pub(crate) fn others(&self) -> Option<f64> {
        let ours: f64 = self.procs.iter().map(|(_, p)| p).sum();
        self.machine.map(|m| (m - ours).max(0.0))
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (label, pct) in &self.procs {
            write!(f, "{label} {pct:.0}%, ")?;
        }
        match self.others() {
            Some(others) => write!(f, "other processes {others:.0}%"),
            None => write!(f, "other processes unknown"),
        }
    }
}

/// Measures a [`CpuUse`] between `start` and `stop`.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    start: Instant,
    before: Vec<(Watched, Option<Duration>)>,
    machine_before: Option<Duration>,
}

impl CpuMeter {
    pub(crate) fn start(watched: &[Watched]) -> Self {
        Self {
            start: Instant::now(),
            before: watched
                .iter()
                .map(|w| (w.clone(), cpu_time(w.pid)))
                .collect(),
            machine_before: machine_busy(),
        }
    }

    /// Every watched process still readable, and the machine.
    pub(crate) fn stop(self) -> CpuUse {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall;
        // Processes sharing a label are one figure (their sum).
        let mut procs: Vec<(String, f64)> = Vec::new();
        for (w, before) in self.before {
            let Some(used) = cpu_time(w.pid)
                .zip(before)
                .and_then(|(a, b)| a.checked_sub(b))
            else {
                continue;
            };
            match procs.iter_mut().find(|(label, _)| *label == w.label) {
                Some((_, sum)) => *sum += pct(used),
                None => procs.push((w.label, pct(used))),
            }
        }
        let machine = machine_busy()
            .zip(self.machine_before)
            .and_then(|(now, before)| now.checked_sub(before))
            .map(pct);
        CpuUse { procs, machine }
    }
}

/// KiB of VmRSS growth from `before` to `after` per one of `n` things (connections,
/// providers) that caused it.
pub(crate) fn rss_growth_each(before: Memory, after: Memory, n: usize) -> f64 {
    after.rss_kib.saturating_sub(before.rss_kib) as f64 / n.max(1) as f64
}

/// The highest VmRSS of some processes, read every [`PeakRss::EVERY`] until stopped: the
/// peak of one phase, where VmHWM would be the peak of the process's whole life.
#[derive(Debug)]
pub(crate) struct PeakRss {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl PeakRss {
    const EVERY: Duration = Duration::from_millis(100);

    pub(crate) fn start(pids: Vec<u32>) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            let mut tick = tokio::time::interval(Self::EVERY);
            loop {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    let rss = memory(*pid).map_or(0, |m| m.rss_kib);
                    *peak = (*peak).max(rss);
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => return peaks,
                }
            }
        });
        Self { stop, task }
    }

    /// The peak VmRSS (KiB) of each pid, in the order given.
    pub(crate) async fn stop(self) -> Vec<u64> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let mem = memory(me).expect("own status");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib, "{mem:?}");
        assert!(cpu_time(me).is_some());
        assert!(machine_busy().is_some());
        assert!(peercompute_tests::procfs::machine().nproc > 0);
    }
}
