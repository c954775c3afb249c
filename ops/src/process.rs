//! The standard `process_*` series (the names Grafana's and Prometheus' own dashboards expect),
//! read from `/proc/self` at scrape time by a prometheus-client [`Collector`]:
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//! `process_max_fds` and `process_start_time_seconds`, plus `tokio_alive_tasks` (the tasks of
//! the runtime that registered the collector — the daemon's main one, even when an admin
//! listener on a runtime of its own serves the scrape — else of the runtime serving the
//! scrape; absent outside any), so a soak can watch for leaked tasks. Register it on an unprefixed registry with [`register`]. Off Linux (no `/proc`) the
//! process series are simply absent.

use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Clock ticks per second of `/proc/*/stat` times. Linux exports `USER_HZ` = 100 to user space
/// on every architecture we ship for, whatever the kernel's own `HZ`.
const TICKS_PER_SECOND: f64 = 100.0;

/// Registers the process collector on `registry` (give it an unprefixed one); called inside a
/// tokio runtime, `tokio_alive_tasks` counts that runtime's tasks.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector::here()));
}

/// Reads `/proc/self` on each scrape.
#[derive(Debug, Default, Clone)]
pub struct ProcessCollector {
    /// Whose tasks `tokio_alive_tasks` counts; `None`: the runtime serving the scrape.
    runtime: Option<tokio::runtime::Handle>,
}

impl ProcessCollector {
    /// A collector counting the tasks of the runtime it is made in (if any).
    pub fn here() -> Self {
        Self {
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

/// One reading of this process' figures; `None` where `/proc` could not tell.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    /// Reads the calling process' figures.
    pub fn read() -> Self {
        let proc = Path::new("/proc");
        let stat = std::fs::read_to_string(proc.join("self/stat")).ok();
        let stat = stat.as_deref().and_then(parse_stat);
        let boot = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|s| parse_boot_time(&s));
        Self {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / TICKS_PER_SECOND),
            resident_bytes: std::fs::read_to_string(proc.join("self/status"))
                .ok()
                .and_then(|s| parse_status_kib(&s, "VmRSS:"))
                .map(|kib| kib.saturating_mul(1024)),
            open_fds: std::fs::read_dir(proc.join("self/fd"))
                .ok()
                .map(|d| d.count() as u64),
            max_fds: std::fs::read_to_string(proc.join("self/limits"))
                .ok()
                .and_then(|s| parse_max_open_files(&s)),
            start_time_seconds: match (stat, boot) {
                (Some(s), Some(boot)) => {
                    Some(boot as f64 + s.start_ticks as f64 / TICKS_PER_SECOND)
                }
                _ => None,
            },
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = ProcessFigures::read();
        if let Some(v) = f.cpu_seconds {
            let c = ConstCounter::new(v);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                f.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                f.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                f.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                f.start_time_seconds,
            ),
            (
                "tokio_alive_tasks",
                "Tasks alive in the tokio runtime that serves this scrape",
                self.alive_tasks().map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
                g.encode(m)?;
            }
        }
        Ok(())
    }
}

/// Tasks alive in the current tokio runtime; `None` outside one.
impl ProcessCollector {
    fn alive_tasks(&self) -> Option<usize> {
        self.runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
            .map(|h| h.metrics().num_alive_tasks())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// `/proc/PID/stat`: the command name is in parentheses and may hold spaces and parentheses,
/// so fields are counted from the last `)`. After it come field 3 (state) onwards; utime and
/// stime are fields 14 and 15, starttime is 22.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `Name:   1234 kB` line of `/proc/PID/status`, in KiB.
fn parse_status_kib(text: &str, name: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
    rest.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The soft limit of `Max open files` in `/proc/PID/limits`.
fn parse_max_open_files(text: &str) -> Option<u64> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 4 0 \
                    98765 1000000 300 18446744073709551615";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            s,
            Stat {
                utime: 250,
                stime: 50,
                start_ticks: 98765
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn limits_status_and_boot_time_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_status_kib("Name:\tx\nVmRSS:\t  5120 kB\n", "VmRSS:"),
            Some(5120)
        );
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_scrape_has_the_standard_names() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        let f = ProcessFigures::read();
        assert!(f.resident_bytes.unwrap_or(0) > 0);
        assert!(f.open_fds.unwrap_or(0) >= 3);
        assert!(
            !text.contains("tokio_alive_tasks"),
            "no runtime here:\n{text}"
        );
    }

    /// The value of `tokio_alive_tasks` in a scrape.
    fn alive_tasks_in(text: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with("tokio_alive_tasks "))
            .unwrap_or_else(|| panic!("tokio_alive_tasks missing from\n{text}"));
        line["tokio_alive_tasks ".len()..]
            .trim()
            .parse()
            .expect("a number")
    }

    #[test]
    fn a_scrape_on_another_runtime_counts_the_registering_runtime_s_tasks() {
        let main = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("main runtime");
        let (registry, parked) = main.block_on(async {
            let parked: Vec<_> = (0..5)
                .map(|_| tokio::spawn(std::future::pending::<()>()))
                .collect();
            let mut registry = Registry::default();
            register(&mut registry);
            (registry, parked)
        });
        // The admin listener's runtime, with no task of its own.
        let admin = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("admin runtime");
        let text = admin.block_on(async {
            let mut text = String::new();
            encode(&mut text, &registry).expect("encode");
            text
        });
        for task in parked {
            task.abort();
        }
        let n = alive_tasks_in(&text);
        assert!(n >= 5.0, "the main runtime's 5 tasks, not the admin's: {n}");
    }

    #[test]
    fn a_scrape_inside_a_runtime_counts_its_tasks() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let text = runtime.block_on(async {
            let parked: Vec<_> = (0..3)
                .map(|_| tokio::spawn(std::future::pending::<()>()))
                .collect();
            let mut registry = Registry::default();
            register(&mut registry);
            let mut text = String::new();
            encode(&mut text, &registry).expect("encode");
            for task in parked {
                task.abort();
            }
            text
        });
        let n = alive_tasks_in(&text);
        assert!(n >= 3.0, "{n}");
    }
}
