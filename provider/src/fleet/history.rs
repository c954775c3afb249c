//! The robot's history of finished applies ([`Outcome`]s), which its status carries so that
//! `peerctl fleet metrics` can count success and rollback rates and times to healthy without
//! a central server. The [`StatusBoard`](super::status::StatusBoard) feeds every status change
//! to [`History::observe`] (pure: the rule is below); the board writes the history to
//! `history.json` in the fleet directory after each new outcome (atomically, like
//! `applied.json`) and reads it at start, so a restart neither forgets nor repeats one.
//!
//! The rule: an outcome is recorded when a group's status enters a final phase (healthy,
//! rolled back, failed) and either an apply of that same release was in progress (fetching or
//! starting: an apply just ended — this also counts a release applied again after a rollback)
//! or the group's history does not name that release yet (a status set final directly, as a
//! re-adoption at start does, is counted once). Each group keeps its last
//! [`MAX_HISTORY_PER_GROUP`]; a report carries the newest [`MAX_HISTORY`] in all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peercompute_fleet::{AppStatus, FleetId, MAX_HISTORY, MAX_HISTORY_PER_GROUP, Outcome, Phase};
use serde::{Deserialize, Serialize};

/// The history file's name in the fleet directory.
pub(crate) const HISTORY_FILE: &str = "history.json";

/// Where the history is kept: `<fleet dir>/history.json`.
pub(crate) fn history_path(dir: &Path) -> PathBuf {
    dir.join(HISTORY_FILE)
}

/// Outcomes per fleet (keyed by the fleet id's text), each fleet's oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct History {
    fleets: BTreeMap<String, Vec<Outcome>>,
}

impl History {
    /// Reads the history file; an absent one is empty, and so is a damaged one (the history
    /// only feeds metrics: the reason is returned for the caller to log).
    pub(crate) fn load(path: &Path) -> (Self, Option<String>) {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(history) => (history, None),
                Err(e) => (
                    Self::default(),
                    Some(format!(
                        "{} is damaged ({e}); starting an empty history",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Self::default(), None),
            Err(e) => (
                Self::default(),
                Some(format!(
                    "cannot read {}: {e}; starting an empty history",
                    path.display()
                )),
            ),
        }
    }

    /// Writes the history atomically (a crash leaves the old or the new file).
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("a history always serializes");
        peercompute_identity::write_atomic(path, &text, 0o600)
    }

    /// Records the outcome `next` means after `prev` (the group's status before), if it ends
    /// an apply (see the module docs). Whether one was recorded.
    pub(crate) fn observe(
        &mut self,
        fleet: &FleetId,
        prev: Option<&AppStatus>,
        next: &AppStatus,
    ) -> bool {
        if !next.phase.is_final() {
            return false;
        }
        let outcomes = self.fleets.entry(fleet.to_string()).or_default();
        let applying = prev.is_some_and(|p| {
            p.release == next.release && matches!(p.phase, Phase::Fetching | Phase::Starting)
        });
        let known = outcomes
            .iter()
            .any(|o| o.group == next.group && o.release == next.release);
        if !applying && known {
            return false;
        }
        outcomes.push(Outcome {
            group: next.group.clone(),
            release: next.release,
            version: next.version.clone(),
            phase: next.phase,
            apply_ms: next.apply_ms,
            at_ms: next.changed_at_ms,
        });
        let in_group = outcomes.iter().filter(|o| o.group == next.group).count();
        if in_group > MAX_HISTORY_PER_GROUP {
            let excess = in_group - MAX_HISTORY_PER_GROUP;
            let mut dropped = 0;
            outcomes.retain(|o| {
                let drop = o.group == next.group && dropped < excess;
                dropped += usize::from(drop);
                !drop
            });
        }
        true
    }

    /// What a status report of `fleet` carries: the newest [`MAX_HISTORY`], oldest first.
    pub(crate) fn outcomes(&self, fleet: &FleetId) -> Vec<Outcome> {
        let all = self
            .fleets
            .get(&fleet.to_string())
            .map_or(&[][..], Vec::as_slice);
        all[all.len().saturating_sub(MAX_HISTORY)..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use peercompute_fleet::EntryHash;

    use super::*;

    const FLEET: FleetId = FleetId([1; 32]);

    fn app(group: &str, release: u8, phase: Phase) -> AppStatus {
        AppStatus {
            group: group.into(),
            release: EntryHash([release; 32]),
            version: format!("v{release}"),
            phase,
            serving: None,
            url: None,
            apply_ms: phase.is_final().then_some(1000 + u64::from(release)),
            reason: None,
            changed_at_ms: u64::from(release) * 1000,
        }
    }

    /// Feeds `steps` (group, release, phase) through `observe` as the board would; which
    /// steps recorded an outcome.
    fn run(history: &mut History, steps: &[(&str, u8, Phase)]) -> Vec<bool> {
        let mut board: BTreeMap<String, AppStatus> = BTreeMap::new();
        steps
            .iter()
            .map(|&(group, release, phase)| {
                let next = app(group, release, phase);
                let recorded = history.observe(&FLEET, board.get(group), &next);
                board.insert(group.into(), next);
                recorded
            })
            .collect()
    }

    #[test]
    fn an_apply_ending_is_recorded_once() {
        use Phase::*;
        let mut h = History::default();
        let recorded = run(
            &mut h,
            &[
                ("production", 1, Fetching),
                ("production", 1, Starting),
                ("production", 1, Healthy),
                // The periodic re-set of the same status, or a re-adoption: not again.
                ("production", 1, Healthy),
                ("production", 2, Fetching),
                ("production", 2, RolledBack),
                // An e-stop holds the group (pending), then the same status again: nothing.
                ("production", 2, Pending),
                ("production", 2, RolledBack),
                // A rollback applies release 1 again: a second outcome for it.
                ("production", 1, Fetching),
                ("production", 1, Healthy),
                // Another group re-adopted at start (set healthy directly, never recorded).
                ("staging", 3, Healthy),
            ],
        );
        assert_eq!(
            recorded,
            [
                false, false, true, false, false, true, false, false, false, true, true
            ]
        );
        let outcomes = h.outcomes(&FLEET);
        let seen: Vec<(&str, &str, Phase, Option<u64>)> = outcomes
            .iter()
            .map(|o| (o.group.as_str(), o.version.as_str(), o.phase, o.apply_ms))
            .collect();
        assert_eq!(
            seen,
            [
                ("production", "v1", Healthy, Some(1001)),
                ("production", "v2", RolledBack, Some(1002)),
                ("production", "v1", Healthy, Some(1001)),
                ("staging", "v3", Healthy, Some(1003)),
            ]
        );
        assert!(h.outcomes(&FleetId([2; 32])).is_empty(), "per fleet");
    }

    #[test]
    fn each_group_keeps_its_last_twenty_and_a_report_is_bounded() {
        let mut h = History::default();
        for r in 0..30u8 {
            run(
                &mut h,
                &[
                    ("production", r, Phase::Fetching),
                    ("production", r, Phase::Healthy),
                ],
            );
        }
        run(&mut h, &[("staging", 200, Phase::Failed)]);
        let outcomes = h.outcomes(&FLEET);
        let production: Vec<u8> = outcomes
            .iter()
            .filter(|o| o.group == "production")
            .map(|o| o.release.0[0])
            .collect();
        assert_eq!(
            production,
            (10..30).collect::<Vec<u8>>(),
            "the last 20, oldest first"
        );
        assert_eq!(outcomes.last().map(|o| o.phase), Some(Phase::Failed));

        let mut many = History::default();
        for g in 0..5 {
            for r in 0..20u8 {
                let group = format!("g{g}");
                run(
                    &mut many,
                    &[(&group, r, Phase::Fetching), (&group, r, Phase::Healthy)],
                );
            }
        }
        let report = many.outcomes(&FLEET);
        assert_eq!(report.len(), MAX_HISTORY);
        assert_eq!(
            report.last().map(|o| o.group.as_str()),
            Some("g4"),
            "the newest kept"
        );
    }

    #[test]
    fn the_history_survives_a_restart_and_a_damaged_file_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = history_path(dir.path());
        let (empty, why) = History::load(&path);
        assert_eq!((empty, why), (History::default(), None), "absent is empty");
        let mut h = History::default();
        run(
            &mut h,
            &[
                ("production", 1, Phase::Fetching),
                ("production", 1, Phase::Healthy),
            ],
        );
        h.save(&path).expect("saved");
        let (loaded, why) = History::load(&path);
        assert_eq!(why, None);
        assert_eq!(loaded, h);
        // A re-adoption after the restart is not a second outcome.
        let mut loaded = loaded;
        assert!(!loaded.observe(&FLEET, None, &app("production", 1, Phase::Healthy)));
        std::fs::write(&path, b"{not json").expect("write");
        let (damaged, why) = History::load(&path);
        assert_eq!(damaged, History::default());
        assert!(why.is_some_and(|w| w.contains("damaged")));
    }
}
