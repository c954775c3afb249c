//! Where a run's time went. Each kind of run passes milestones that leave a trace in the
//! [`Timeline`]: a peerctl or provider debug line ("connected", "verified"), a Docker event
//! (`create`, `start`, `kill`, `die`, `destroy`), a provider or gateway info line
//! ("container started", "registered", "deployed", "unregistered", "stopped and removed"),
//! or the run's own clock (peerctl exited, first 200, 404). A stage is the time from one
//! milestone to the next; over many runs each stage gets its median, min and max.
//!
//! The matching depends on the programs' log wording as of this writing; a milestone that is
//! not found shows as missing, it never shifts the others.

use std::time::Duration;

use super::runs::{DeployRun, DirectRun, StopRun, Window};
use super::stats::Summary;
use super::timeline::{Entry, Source, Timeline};

/// A run's milestones: what ends each stage, and when after the run's start.
pub(crate) type Milestones = Vec<(&'static str, Option<Duration>)>;

/// The provider's container name for route `name` starts with this.
fn container_prefix(name: &str) -> String {
    format!("peercompute-{name}-")
}

/// The entries of one run's window, and lookups in them.
struct Run {
    window: Window,
    entries: Vec<Entry>,
}

impl Run {
    fn new(timeline: &Timeline, window: Window) -> Self {
        Self {
            entries: timeline.between(window.start, window.end),
            window,
        }
    }

    /// The offset of the first entry from `source` that `matches`.
    fn first(&self, source: Source, matches: impl Fn(&Entry) -> bool) -> Option<Duration> {
        self.entries
            .iter()
            .find(|e| e.source == source && matches(e))
            .and_then(|e| e.at.duration_since(self.window.start).ok())
    }

    /// A log line with all of `tokens` (e.g. `verified`, `route=bench-3`).
    fn line(&self, source: Source, tokens: &[&str]) -> Option<Duration> {
        self.first(source, |e| tokens.iter().all(|t| e.has_token(t)))
    }

    /// A log line containing `phrase` and all of `tokens`.
    fn phrase(&self, source: Source, phrase: &str, tokens: &[&str]) -> Option<Duration> {
        self.first(source, |e| {
            e.text.contains(phrase) && tokens.iter().all(|t| e.has_token(t))
        })
    }

    /// A Docker event `action` about a container whose name starts with `prefix`.
    fn docker(&self, action: &str, prefix: &str) -> Option<Duration> {
        self.first(Source::Docker, |e| {
            e.text
                .split_once(' ')
                .is_some_and(|(a, name)| a == action && name.starts_with(prefix))
        })
    }

    /// The provider's `container started` line for a container starting with `prefix`.
    fn container_started(&self, prefix: &str) -> Option<Duration> {
        self.first(Source::Provider, |e| {
            e.text.contains("container started")
                && e.text.split_whitespace().any(|t| {
                    t.strip_prefix("container=")
                        .is_some_and(|c| c.starts_with(prefix))
                })
        })
    }
}

/// `peerctl deploy` → first 200.
pub(crate) fn deploy(timeline: &Timeline, provider_id: &str, run: &DeployRun) -> Milestones {
    let r = Run::new(timeline, run.window);
    let peer = format!("peer={provider_id}");
    let prefix = container_prefix(&run.name);
    let route = format!("route={}", run.name);
    let name = format!("name={}", run.name);
    vec![
        (
            "peerctl process start + libp2p dial (TCP, Noise, Yamux)",
            r.line(Source::Peerctl, &["connected", &peer]),
        ),
        (
            "control stream + signed request, verified by the provider",
            r.line(Source::Provider, &["verified"]),
        ),
        (
            "admission + image check + container create",
            r.docker("create", &prefix),
        ),
        ("container start (engine)", r.docker("start", &prefix)),
        (
            "inspect for the published port",
            r.container_started(&prefix),
        ),
        (
            "state saved + readiness probe + route registration request",
            r.phrase(Source::Gateway, "registered", &[&route]),
        ),
        (
            "registration confirmed + state saved",
            r.phrase(Source::Provider, "deployed", &[&name]),
        ),
        (
            "answer to peerctl + peerctl prints and exits",
            Some(run.peerctl_exit),
        ),
        (
            "first HTTPS request through gateway + tunnel → 200",
            Some(run.to_url),
        ),
    ]
}

/// `peerctl stop` → 404.
pub(crate) fn stop(
    timeline: &Timeline,
    provider_id: &str,
    deployed: &DeployRun,
    run: &StopRun,
) -> Milestones {
    let r = Run::new(timeline, run.window);
    let peer = format!("peer={provider_id}");
    let prefix = container_prefix(&deployed.name);
    let route = format!("route={}", deployed.name);
    let name = format!("name={}", deployed.name);
    vec![
        (
            "peerctl process start + libp2p dial",
            r.line(Source::Peerctl, &["connected", &peer]),
        ),
        (
            "control stream + signed request, verified",
            r.line(Source::Provider, &["verified"]),
        ),
        (
            "route unregistered at the gateway",
            r.phrase(Source::Gateway, "unregistered", &[&route]),
        ),
        (
            "engine sends SIGTERM (kill event)",
            r.docker("kill", &prefix),
        ),
        ("container exits (die event)", r.docker("die", &prefix)),
        (
            "stop returns, container removed (destroy event)",
            r.docker("destroy", &prefix),
        ),
        (
            "admission released + state saved",
            r.phrase(Source::Provider, "stopped and removed", &[&name]),
        ),
        ("answer to peerctl + peerctl exits", Some(run.peerctl_exit)),
        ("URL answers 404", Some(run.to_404)),
    ]
}

/// The direct baseline: create + start → first 200, then stop + remove.
pub(crate) fn direct(timeline: &Timeline, container_name: &str, run: &DirectRun) -> Milestones {
    let r = Run::new(timeline, run.window);
    vec![
        (
            "container create (engine)",
            r.docker("create", container_name),
        ),
        (
            "container start (engine)",
            r.docker("start", container_name),
        ),
        (
            "inspect + first 200 on the published port (polled every 5 ms)",
            Some(run.to_200),
        ),
    ]
}

/// One row of a breakdown table.
#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) label: &'static str,
    /// Over the runs where this milestone and the one before it were both found.
    pub(crate) summary: Option<Summary>,
    /// Runs where it was found.
    pub(crate) found: usize,
}

/// Per stage: the time from the previous milestone (or the run's start) to this one.
pub(crate) fn table(runs: &[Milestones]) -> Vec<Stage> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|k| {
            let deltas: Vec<Duration> = runs
                .iter()
                .filter_map(|m| {
                    let this = m.get(k)?.1?;
                    let before = if k == 0 {
                        Duration::ZERO
                    } else {
                        m.get(k - 1)?.1?
                    };
                    Some(this.saturating_sub(before))
                })
                .collect();
            Stage {
                label: first[k].0,
                summary: Summary::of(&deltas),
                found: runs
                    .iter()
                    .filter(|m| m.get(k).is_some_and(|s| s.1.is_some()))
                    .count(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    #[test]
    fn stages_are_deltas_and_a_missing_milestone_hides_only_its_neighbours() {
        let runs: Vec<Milestones> = vec![
            vec![("a", ms(10)), ("b", ms(30)), ("c", ms(60))],
            vec![("a", ms(20)), ("b", None), ("c", ms(80))],
            vec![("a", ms(30)), ("b", ms(40)), ("c", ms(100))],
        ];
        let t = table(&runs);
        assert_eq!(t.len(), 3);
        let median = |k: usize| t[k].summary.map(|s| s.median);
        assert_eq!(median(0), ms(20));
        assert_eq!(t[0].found, 3);
        // b − a over runs 1 and 3: 20 and 10 ms.
        assert_eq!(median(1), ms(15));
        assert_eq!(t[1].found, 2);
        // c − b over runs 1 and 3: 30 and 60 ms.
        assert_eq!(median(2), ms(45));
    }
}
