//! The machine's figures a provider reports (its fleet status and its `/metrics`): load per
//! core, memory used and total, a filesystem's free and total bytes, and the busy share of
//! all CPUs between two readings of `/proc/stat` ([`CpuSampler`]). Linux; zeros elsewhere.

use std::path::Path;
use std::sync::Mutex;

/// The 1-minute load average per core, in per mille (Linux; 0 elsewhere).
pub fn cpu_permille() -> u32 {
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let permille = load / cores as f64 * 1000.0;
    permille.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// (used, total) memory in bytes from `/proc/meminfo` (Linux; zeros elsewhere). Used is total
/// minus `MemAvailable`, so the page cache does not count as used.
pub fn memory() -> (u64, u64) {
    std::fs::read_to_string("/proc/meminfo").map_or((0, 0), |t| parse_meminfo(&t))
}

fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb.saturating_mul(1024))
    };
    let total = field("MemTotal:");
    let available = field("MemAvailable:");
    (total.saturating_sub(available), total)
}

/// Free bytes (for unprivileged users) and total bytes of the filesystem holding `path`.
pub fn disk(path: &Path) -> Option<(u64, u64)> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (available, blocks, fragment) = (
        u64::from(stats.blocks_available()),
        u64::from(stats.blocks()),
        u64::from(stats.fragment_size()),
    );
    Some((
        available.saturating_mul(fragment),
        blocks.saturating_mul(fragment),
    ))
}

/// The busy share (0..=1) of all CPUs since the previous [`CpuSampler::sample`], from the
/// first (`cpu `) line of `/proc/stat`. The first sample measures since boot.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Mutex<Option<CpuTimes>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuSampler {
    /// A sampler with no previous reading.
    pub fn new() -> Self {
        Self::default()
    }

    /// The busy ratio since the last call, or `None` when `/proc/stat` cannot be read.
    pub fn sample(&self) -> Option<f64> {
        let now = parse_cpu_line(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = last.replace(now).unwrap_or(CpuTimes { busy: 0, total: 0 });
        Some(ratio(prev, now))
    }
}

fn ratio(prev: CpuTimes, now: CpuTimes) -> f64 {
    let total = now.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    (now.busy.saturating_sub(prev.busy) as f64 / total as f64).clamp(0.0, 1.0)
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: idle and iowait are
/// idle; guest time is already inside user, so only the first eight fields count.
fn parse_cpu_line(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_used_excludes_available() {
        let t = "MemTotal:       2048 kB\nMemFree:  100 kB\nMemAvailable:   1024 kB\n";
        assert_eq!(parse_meminfo(t), (1024 * 1024, 2048 * 1024));
        assert_eq!(parse_meminfo(""), (0, 0));
    }

    #[test]
    fn cpu_ratio_is_the_busy_share_of_the_delta() {
        let a = parse_cpu_line("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").expect("a");
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        let b = parse_cpu_line("cpu  150 0 150 800 100 0 0 0 0 0\n").expect("b");
        assert!((ratio(a, b) - 0.5).abs() < 1e-9);
        assert_eq!(ratio(b, b), 0.0);
        assert_eq!(parse_cpu_line("cpu0 1 2 3\n"), None);
        assert_eq!(parse_cpu_line("cpu  x y\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_machine_reads() {
        let s = CpuSampler::new();
        let r = s.sample().expect("sample");
        assert!((0.0..=1.0).contains(&r));
        let (used, total) = memory();
        assert!(total > 0 && used <= total);
        let (free, total) = disk(Path::new("/")).expect("statvfs /");
        assert!(total > 0 && free <= total);
    }
}
