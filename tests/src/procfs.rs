//! What `/proc` says about the machine (CPU count and model, kernel, memory, load) and about
//! one process (resident memory now and at its peak), shared by the benchmark programs.

/// The machine the figures were measured on.
#[derive(Debug)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_kib: u64,
}

/// Reads `/proc/cpuinfo`, `/proc/meminfo` and the kernel release; unknown fields say so.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        mem_total_kib: kib_field(&meminfo, "MemTotal:").unwrap_or(0),
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` prints them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident now (VmRSS).
    pub rss_kib: u64,
    /// Highest resident so far (VmHWM).
    pub hwm_kib: u64,
}

/// VmRSS and VmHWM of `pid`; `None` once the process is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory {
        rss_kib: kib_field(&status, "VmRSS:")?,
        hwm_kib: kib_field(&status, "VmHWM:")?,
    })
}

/// User plus system CPU time `pid` has used, in seconds (`/proc/PID/stat`, at the kernel's
/// usual 100 ticks a second); `None` once the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the line; after the name field 3 is index 0.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tpeercomputed\nVmHWM:\t   14336 kB\nVmRSS:\t   12288 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(12288));
        assert_eq!(kib_field(status, "VmHWM:"), Some(14336));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn reads_this_process_cpu_time() {
        // Spins until the reading moves (a busy machine gives this thread little CPU, so the
        // wall time says nothing; 5 s bound).
        let before = cpu_seconds(std::process::id()).expect("our own stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after <= before && start.elapsed() < std::time::Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(31).wrapping_add(1);
            }
            after = cpu_seconds(std::process::id()).expect("our own stat");
        }
        std::hint::black_box(x);
        assert!(after > before, "CPU time did not move: {before} -> {after}");
        assert!(after < before + 5.0, "{before} -> {after}");
    }

    #[test]
    fn reads_this_process_and_machine() {
        let mem = memory(std::process::id()).expect("own status");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib, "{mem:?}");
        assert!(machine().nproc > 0);
    }
}
