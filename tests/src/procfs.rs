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
    fn reads_this_process_and_machine() {
        let mem = memory(std::process::id()).expect("own status");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib, "{mem:?}");
        assert!(machine().nproc > 0);
    }
}
