//! A container's CPU and memory use, computed from one stats sample the way `docker stats`
//! does: CPU as a percentage of one core from the difference between the sample and the
//! engine's previous one, memory as usage minus the inactive page cache (cgroup v1 reports
//! `total_inactive_file`, v2 `inactive_file`). Every field is optional because engines
//! (API 1.41 among them) leave parts of the sample out.

use bollard::models::{ContainerCpuStats, ContainerStatsResponse};

/// Resource use of a running container at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceUsage {
    /// CPU use over the last sampling interval, in percent of one core (150.0 = 1.5 cores).
    pub cpu_percent: Option<f64>,
    /// CPU time consumed since the container started, in nanoseconds.
    pub cpu_total_nanos: Option<u64>,
    /// Memory in use (page cache that can be dropped not counted), in bytes.
    pub memory_bytes: Option<u64>,
    /// The memory limit the engine reports, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Processes and threads in the container.
    pub pids: Option<u64>,
}

impl ResourceUsage {
    /// Reads a stats sample.
    pub(crate) fn from_stats(stats: &ContainerStatsResponse) -> Self {
        let memory = stats.memory_stats.as_ref();
        let memory_bytes = memory.and_then(|m| {
            let usage = m.usage?;
            let inactive = m.stats.as_ref().and_then(|s| {
                s.get("total_inactive_file")
                    .or_else(|| s.get("inactive_file"))
                    .copied()
            });
            Some(usage.saturating_sub(inactive.unwrap_or(0)))
        });
        ResourceUsage {
            cpu_percent: cpu_percent(stats.cpu_stats.as_ref(), stats.precpu_stats.as_ref()),
            cpu_total_nanos: stats
                .cpu_stats
                .as_ref()
                .and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage),
            memory_bytes,
            memory_limit_bytes: memory.and_then(|m| m.limit),
            pids: stats.pids_stats.as_ref().and_then(|p| p.current),
        }
    }
}

/// `docker stats`' formula: container CPU delta over system CPU delta, times the number of
/// CPUs, in percent. `None` without a previous sample (a one-shot read) or with no progress.
fn cpu_percent(now: Option<&ContainerCpuStats>, before: Option<&ContainerCpuStats>) -> Option<f64> {
    let (now, before) = (now?, before?);
    let total = |c: &ContainerCpuStats| c.cpu_usage.as_ref().and_then(|u| u.total_usage);
    let container_delta = total(now)?.checked_sub(total(before)?)?;
    let system_delta = now
        .system_cpu_usage?
        .checked_sub(before.system_cpu_usage?)?;
    if system_delta == 0 || before.system_cpu_usage == Some(0) {
        return None;
    }
    let cpus = now.online_cpus.filter(|&n| n > 0).or_else(|| {
        now.cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .and_then(|p| u32::try_from(p.len()).ok())
    })?;
    Some(container_delta as f64 / system_delta as f64 * f64::from(cpus) * 100.0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{ContainerCpuUsage, ContainerMemoryStats, ContainerPidsStats};

    use super::*;

    fn cpu(total: u64, system: u64) -> Option<ContainerCpuStats> {
        Some(ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(2),
            throttling_data: None,
        })
    }

    #[test]
    fn a_full_sample_gives_every_figure() {
        let stats = ContainerStatsResponse {
            cpu_stats: cpu(1_500_000_000, 20_000_000_000),
            precpu_stats: cpu(1_000_000_000, 18_000_000_000),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(100 << 20),
                limit: Some(256 << 20),
                stats: Some(HashMap::from([(
                    "total_inactive_file".to_owned(),
                    30 << 20,
                )])),
                ..Default::default()
            }),
            pids_stats: Some(ContainerPidsStats {
                current: Some(3),
                limit: Some(256),
            }),
            ..Default::default()
        };
        let usage = ResourceUsage::from_stats(&stats);
        // 0.5 s of CPU over 2 s of system time on 2 CPUs: half a core.
        assert_eq!(usage.cpu_percent, Some(50.0));
        assert_eq!(usage.cpu_total_nanos, Some(1_500_000_000));
        assert_eq!(usage.memory_bytes, Some(70 << 20));
        assert_eq!(usage.memory_limit_bytes, Some(256 << 20));
        assert_eq!(usage.pids, Some(3));
    }

    #[test]
    fn a_one_shot_or_partial_sample_leaves_figures_out() {
        let stats = ContainerStatsResponse {
            cpu_stats: cpu(1_500_000_000, 20_000_000_000),
            precpu_stats: Some(ContainerCpuStats::default()),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        let usage = ResourceUsage::from_stats(&stats);
        assert_eq!(usage.cpu_percent, None);
        assert_eq!(usage.cpu_total_nanos, Some(1_500_000_000));
        assert_eq!(usage.memory_bytes, Some(10 << 20));
        assert_eq!(usage.memory_limit_bytes, None);
        assert_eq!(usage.pids, None);
        assert_eq!(
            ResourceUsage::from_stats(&ContainerStatsResponse::default()),
            ResourceUsage::default()
        );
    }
}
