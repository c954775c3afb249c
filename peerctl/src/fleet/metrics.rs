//! `peerctl fleet metrics`: how a group's last releases went, from the robots' signed
//! statuses alone (each carries the robot's history of finished applies, see
//! `peercompute_fleet::Outcome`).
//!
//! Per release and robot, the robot's latest outcome of that release counts (a release applied
//! again after a rollback counts once, as it ended last); a robot of the group without one is
//! pending. Over the group's last N releases: success rate = healthy / finished, rollback rate
//! = rolled back / finished (finished = healthy + rolled back + failed), and the median and
//! 95th percentile of the time to healthy (the apply time of healthy outcomes: fetch, start,
//! health gate, route switch), by nearest rank. The computation ([`group_metrics`]) is pure.

use std::collections::BTreeMap;

use peercompute_fleet::{EntryHash, MemberKey, Outcome, Phase, ReleaseRecord, StatusReport};
use serde::Serialize;

use super::config::Fleets;
use super::watch::seconds;
use super::{Ctx, print_json};
use crate::exit::{CliError, Kind};
use crate::output;

/// One release of the group and how its robots ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ReleaseRow {
    pub(crate) version: String,
    pub(crate) release: String,
    /// The release entry's time, Unix seconds.
    pub(crate) at: u64,
    pub(crate) healthy: usize,
    pub(crate) rolled_back: usize,
    pub(crate) failed: usize,
    /// Robots of the group with no outcome of this release (yet).
    pub(crate) pending: usize,
    /// Median apply time of its healthy robots, milliseconds.
    pub(crate) median_apply_ms: Option<u64>,
}

/// A group's figures over its last releases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct GroupMetrics {
    pub(crate) group: String,
    /// Robots of the group now.
    pub(crate) robots: usize,
    /// Releases counted (the last N).
    pub(crate) releases: usize,
    pub(crate) finished: usize,
    pub(crate) healthy: usize,
    pub(crate) rolled_back: usize,
    pub(crate) failed: usize,
    /// healthy / finished; null when nothing finished.
    pub(crate) success_rate: Option<f64>,
    /// rolled back / finished; null when nothing finished.
    pub(crate) rollback_rate: Option<f64>,
    /// Time to healthy, milliseconds: median and 95th percentile (nearest rank).
    pub(crate) median_ms: Option<u64>,
    pub(crate) p95_ms: Option<u64>,
    /// Newest first.
    pub(crate) rows: Vec<ReleaseRow>,
}

/// The `p`th percentile (0 < p ≤ 100) of `values` by nearest rank; `None` when empty.
pub(crate) fn percentile(values: &[u64], p: u32) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let rank = (n * p.clamp(1, 100) as usize).div_ceil(100);
    sorted.get(rank.saturating_sub(1)).copied()
}

fn rate(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Each robot's latest outcome of `release` in `group`.
fn outcomes_of<'a>(
    reports: &'a [StatusReport],
    group: &str,
    release: &EntryHash,
) -> BTreeMap<MemberKey, &'a Outcome> {
    let mut latest = BTreeMap::new();
    for report in reports {
        let last = report
            .history
            .iter()
            .filter(|o| o.group == group && o.release == *release && o.phase.is_final())
            .max_by_key(|o| o.at_ms);
        if let Some(o) = last {
            latest.insert(report.robot, o);
        }
    }
    latest
}

/// The figures of `group` over `releases` (its last N, oldest first), whose robots now are
/// `robots`, from the robots' latest reports.
pub(crate) fn group_metrics(
    group: &str,
    releases: &[ReleaseRecord],
    robots: &[MemberKey],
    reports: &[StatusReport],
) -> GroupMetrics {
    let mut rows = Vec::new();
    let mut healthy_ms = Vec::new();
    let (mut healthy, mut rolled_back, mut failed) = (0, 0, 0);
    for record in releases.iter().rev() {
        let latest = outcomes_of(reports, group, &record.hash);
        let count = |phase| latest.values().filter(|o| o.phase == phase).count();
        let times: Vec<u64> = latest
            .values()
            .filter(|o| o.phase == Phase::Healthy)
            .filter_map(|o| o.apply_ms)
            .collect();
        let row = ReleaseRow {
            version: record.release.version.clone(),
            release: record.hash.short(),
            at: record.at,
            healthy: count(Phase::Healthy),
            rolled_back: count(Phase::RolledBack),
            failed: count(Phase::Failed),
            pending: robots.iter().filter(|r| !latest.contains_key(r)).count(),
            median_apply_ms: percentile(&times, 50),
        };
        healthy += row.healthy;
        rolled_back += row.rolled_back;
        failed += row.failed;
        healthy_ms.extend(times);
        rows.push(row);
    }
    let finished = healthy + rolled_back + failed;
    GroupMetrics {
        group: group.to_owned(),
        robots: robots.len(),
        releases: releases.len(),
        finished,
        healthy,
        rolled_back,
        failed,
        success_rate: rate(healthy, finished),
        rollback_rate: rate(rolled_back, finished),
        median_ms: percentile(&healthy_ms, 50),
        p95_ms: percentile(&healthy_ms, 95),
        rows,
    }
}

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.0}%", r * 100.0))
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), seconds)
}

/// What people read: a summary line per group, then its releases.
pub(crate) fn render(m: &GroupMetrics) -> String {
    let mut text = format!(
        "group {}: last {} release{}, {} robot{}: success {} ({}/{}), rollback {} ({}/{}), time to healthy median {} p95 {}\n",
        m.group,
        m.releases,
        if m.releases == 1 { "" } else { "s" },
        m.robots,
        if m.robots == 1 { "" } else { "s" },
        percent(m.success_rate),
        m.healthy,
        m.finished,
        percent(m.rollback_rate),
        m.rolled_back,
        m.finished,
        ms(m.median_ms),
        ms(m.p95_ms),
    );
    let cells: Vec<Vec<String>> = m
        .rows
        .iter()
        .map(|r| {
            vec![
                r.version.clone(),
                r.release.clone(),
                r.healthy.to_string(),
                r.rolled_back.to_string(),
                r.failed.to_string(),
                r.pending.to_string(),
                ms(r.median_apply_ms),
            ]
        })
        .collect();
    text.push_str(&output::table(
        &[
            "VERSION",
            "RELEASE",
            "HEALTHY",
            "ROLLED BACK",
            "FAILED",
            "PENDING",
            "MEDIAN APPLY",
        ],
        &cells,
    ));
    text
}

/// `fleet metrics [--group G] [--last N]`.
pub(super) async fn metrics(ctx: &Ctx, group: Option<&str>, last: usize) -> Result<(), CliError> {
    let chosen = Fleets::load(&ctx.home)?.choose(ctx.fleet_arg.as_deref())?;
    let (local, mut session) = super::read::open_statuses(ctx, &chosen).await?;
    let state = local.state(&chosen.id)?;
    let reports: Vec<StatusReport> = session
        .statuses(chosen.id)
        .await
        .into_iter()
        .map(|s| s.report)
        .collect();
    if let Some(g) = group
        && !state.groups.contains_key(g)
    {
        return Err(CliError::new(
            Kind::NotFound,
            format!("group {g} has no release yet: `peerctl fleet log` lists the releases"),
        ));
    }
    let all: Vec<GroupMetrics> = state
        .groups
        .iter()
        .filter(|(g, _)| group.is_none_or(|want| want == g.as_str()))
        .map(|(g, gs)| {
            let robots: Vec<MemberKey> = state
                .members
                .values()
                .filter(|m| m.groups.contains(g))
                .map(|m| m.key)
                .collect();
            let from = gs.releases.len().saturating_sub(last);
            group_metrics(g, &gs.releases[from..], &robots, &reports)
        })
        .collect();
    if ctx.json {
        return print_json(&all);
    }
    if all.is_empty() {
        ctx.note("no releases yet: `peerctl fleet release IMAGE --group G --port P`");
        return Ok(());
    }
    let text: Vec<String> = all.iter().map(render).collect();
    print!("{}", text.join("\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use peercompute_fleet::{FleetId, HealthCheck, Release};
    use peercompute_tunnel_proto::DeployRequest;

    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[4, 1, 3, 2], 50), Some(2));
        let hundred: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 95), Some(95));
        assert_eq!(percentile(&hundred, 100), Some(100));
        assert_eq!(percentile(&[10, 20, 30], 95), Some(30));
    }

    fn record(seq: u8, version: &str) -> ReleaseRecord {
        let mut spec = DeployRequest::new(format!("r/web@sha256:{}", "ab".repeat(32)), 80);
        spec.name = Some("web".into());
        ReleaseRecord {
            hash: EntryHash([seq; 32]),
            author: MemberKey([0; 32]),
            at: 1_800_000_000 + u64::from(seq),
            release: Release {
                group: "production".into(),
                seq: u64::from(seq),
                version: version.into(),
                spec,
                health: HealthCheck {
                    path: None,
                    timeout_secs: 30,
                },
            },
        }
    }

    fn outcome(seq: u8, phase: Phase, apply_ms: u64, at_ms: u64) -> Outcome {
        Outcome {
            group: "production".into(),
            release: EntryHash([seq; 32]),
            version: format!("v{seq}"),
            phase,
            apply_ms: Some(apply_ms),
            at_ms,
        }
    }

    fn report(robot: u8, history: Vec<Outcome>) -> StatusReport {
        StatusReport {
            fleet: FleetId([1; 32]),
            robot: MemberKey([robot; 32]),
            at_ms: 0,
            agent: "t".into(),
            uptime_secs: 0,
            log_len: 0,
            apps: vec![],
            cpu_permille: 0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            disk_free_bytes: 0,
            history,
            group_names: Vec::new(),
        }
    }

    /// version, healthy, rolled back, failed, pending, median apply.
    type Row<'a> = (&'a str, usize, usize, usize, usize, Option<u64>);

    #[test]
    fn rates_times_and_rows_over_the_last_releases() {
        use Phase::*;
        let releases = [record(1, "v1"), record(2, "v2"), record(3, "v3")];
        let robots = [MemberKey([1; 32]), MemberKey([2; 32]), MemberKey([3; 32])];
        let reports = [
            // Robot 1: v1 healthy, v2 rolled back, v1 again after a rollback (counted once,
            // the later one), v3 healthy.
            report(
                1,
                vec![
                    outcome(1, Healthy, 1000, 1),
                    outcome(2, RolledBack, 30_000, 2),
                    outcome(1, Healthy, 800, 3),
                    outcome(3, Healthy, 1200, 4),
                ],
            ),
            report(
                2,
                vec![outcome(1, Healthy, 2000, 1), outcome(2, Failed, 100, 2)],
            ),
            // Robot 3 never reported v2 or v3; an outcome of another group is not counted.
            report(
                3,
                vec![
                    outcome(1, Healthy, 3000, 1),
                    Outcome {
                        group: "staging".into(),
                        ..outcome(3, Healthy, 9, 9)
                    },
                ],
            ),
        ];
        let m = group_metrics("production", &releases, &robots, &reports);
        assert_eq!(
            (m.finished, m.healthy, m.rolled_back, m.failed),
            (6, 4, 1, 1)
        );
        assert_eq!(m.success_rate, Some(4.0 / 6.0));
        assert_eq!(m.rollback_rate, Some(1.0 / 6.0));
        // Healthy times: v3 1200; v1 800, 2000, 3000.
        assert_eq!((m.median_ms, m.p95_ms), (Some(1200), Some(3000)));
        let rows: Vec<Row> = m
            .rows
            .iter()
            .map(|r| {
                (
                    r.version.as_str(),
                    r.healthy,
                    r.rolled_back,
                    r.failed,
                    r.pending,
                    r.median_apply_ms,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("v3", 1, 0, 0, 2, Some(1200)),
                ("v2", 0, 1, 1, 1, None),
                ("v1", 3, 0, 0, 0, Some(2000)),
            ]
        );
        let text = render(&m);
        assert!(
            text.starts_with("group production: last 3 releases, 3 robots: success 67% (4/6), rollback 17% (1/6), time to healthy median 1.20s p95 3.00s\n"),
            "{text}"
        );
        assert!(text.contains("MEDIAN APPLY"), "{text}");
    }

    #[test]
    fn nothing_finished_has_no_rates() {
        let m = group_metrics("production", &[record(1, "v1")], &[MemberKey([1; 32])], &[]);
        assert_eq!(
            (m.success_rate, m.median_ms, m.rows[0].pending),
            (None, None, 1)
        );
        assert!(render(&m).contains("success - (0/0)"));
    }
}
