//! `peerctl fleet watch [RELEASE]`: one release's propagation, robot by robot, live.
//!
//! What is watched is a [`Target`]: the release robots of one group should end on, and the
//! entry that asked for it, whose time (`at`, the author's clock in whole seconds) every phase
//! time counts from. A release entry asks for itself. A rollback entry asks for the earlier
//! release it made the group's desired one (the state folded up to the rollback says which),
//! so watching a rollback follows robots applying that earlier release, timed from the
//! rollback; a robot already serving its version (it had kept it after a rolled-back
//! release) has nothing to do and counts as healthy.
//!
//! Each robot's progress comes from its latest signed status ([`progress`], pure): its app of
//! the group names the target release → that phase; for a rollback, it names another
//! release but still serves the target's version while idle → healthy; its history holds an outcome of the
//! target since the entry (it moved on since) → that outcome; otherwise pending, or not seen
//! when the robot never reported. A [`Tracker`] turns successive observations into the
//! changes printed (pure, like `target`; both tested in `tests`); the loop asks the gateways
//! every [`POLL`] until every robot of the group is in a final phase or the wait ends.

use std::collections::BTreeMap;
use std::time::Duration;

use peercompute_fleet::{FleetId, MemberKey, Phase, SignedStatus};
use serde::Serialize;

use super::Ctx;
use super::config::Fleets;
use super::sync::Session;
use crate::exit::{CliError, Kind};

mod target;

use target::nothing;
pub(crate) use target::{Target, resolve};

/// How often the gateways are asked (robots push their status on every change).
const POLL: Duration = Duration::from_millis(250);

/// Where one robot is with the target: a robot's [`Phase`], or not seen at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Progress {
    /// The robot never reported a status to a gateway reached.
    NotSeen,
    /// A phase of the target (`Pending`: it shows an older release, or waits).
    At(Phase),
}

impl Progress {
    pub(crate) const PENDING: Progress = Progress::At(Phase::Pending);
    pub(crate) const HEALTHY: Progress = Progress::At(Phase::Healthy);

    /// `not seen`, or the phase as people read it (`rolled back`).
    pub(crate) fn word(self) -> &'static str {
        match self {
            Progress::NotSeen => "not seen",
            Progress::At(phase) => phase.as_str(),
        }
    }

    pub(crate) fn is_final(self) -> bool {
        matches!(self, Progress::At(phase) if phase.is_final())
    }

    /// Rolled back or failed.
    pub(crate) fn is_bad(self) -> bool {
        matches!(self, Progress::At(Phase::RolledBack | Phase::Failed))
    }
}

/// In JSON, the word with `_` for spaces: `not_seen`, `rolled_back`.
impl Serialize for Progress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.word().replace(' ', "_"))
    }
}

/// One robot's progress and what its status says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) progress: Progress,
    /// When the robot's phase last changed (its clock, Unix ms), when it says.
    pub(crate) changed_at_ms: Option<u64>,
    pub(crate) apply_ms: Option<u64>,
    pub(crate) serving: Option<String>,
    pub(crate) reason: Option<String>,
}

impl Seen {
    fn bare(progress: Progress) -> Self {
        Seen {
            progress,
            changed_at_ms: None,
            apply_ms: None,
            serving: None,
            reason: None,
        }
    }
}

/// Where a robot is with `target`, from its latest status (see the module docs).
pub(crate) fn progress(target: &Target, status: Option<&SignedStatus>) -> Seen {
    let Some(status) = status else {
        return Seen::bare(Progress::NotSeen);
    };
    let app = status.report.apps.iter().find(|a| a.group == target.group);
    if let Some(app) = app {
        let on_target = app.release == target.release;
        // Only a rollback's target: a release may reuse an older release's version.
        let still_serving = target.kind == "rollback"
            && app.phase.is_final()
            && app.serving.as_deref() == Some(target.version.as_str());
        if on_target || still_serving {
            let progress = if on_target {
                Progress::At(app.phase)
            } else {
                Progress::HEALTHY
            };
            return Seen {
                progress,
                changed_at_ms: Some(app.changed_at_ms),
                apply_ms: app.apply_ms.filter(|_| on_target),
                serving: app.serving.clone(),
                reason: app.reason.clone().filter(|_| on_target),
            };
        }
    }
    // The entry's time is in whole seconds: an outcome within its second counts.
    let since_ms = target.at.saturating_mul(1000);
    let outcome =
        status.report.history.iter().rev().find(|o| {
            o.group == target.group && o.release == target.release && o.at_ms >= since_ms
        });
    match outcome {
        Some(o) => Seen {
            progress: Progress::At(o.phase),
            changed_at_ms: Some(o.at_ms),
            apply_ms: o.apply_ms,
            serving: None,
            reason: None,
        },
        None => Seen::bare(Progress::PENDING),
    }
}

/// One line of the watch: a robot entered a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    pub(crate) robot: String,
    pub(crate) peer_id: String,
    pub(crate) phase: Progress,
    pub(crate) version: String,
    /// Milliseconds from the entry's time to the change (the robot's clock when it says,
    /// this machine's otherwise).
    pub(crate) since_entry_ms: u64,
    pub(crate) apply_ms: Option<u64>,
    pub(crate) serving: Option<String>,
    pub(crate) reason: Option<String>,
}

/// Each robot's last progress; turns observations into [`Change`]s.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    last: BTreeMap<MemberKey, Progress>,
}

impl Tracker {
    /// The changes `seen` (robot key, name, progress) brings since the last call, oldest
    /// first; the first call reports every robot. `now_ms` times changes a robot did not time itself.
    pub(crate) fn step(
        &mut self,
        target: &Target,
        seen: &[(MemberKey, String, Seen)],
        now_ms: u64,
    ) -> Vec<Change> {
        let from = target.at.saturating_mul(1000);
        let mut changes = Vec::new();
        for (key, name, s) in seen {
            if self.last.insert(*key, s.progress) == Some(s.progress) {
                continue;
            }
            let at = s.changed_at_ms.map_or(now_ms, |t| t.max(from));
            changes.push(Change {
                robot: name.clone(),
                peer_id: key.to_string(),
                phase: s.progress,
                version: target.version.clone(),
                since_entry_ms: at.saturating_sub(from),
                apply_ms: s.apply_ms,
                serving: s.serving.clone(),
                reason: s.reason.clone(),
            });
        }
        // Robots report on their own: print what one poll brought in the order it happened.
        changes.sort_by_key(|c| c.since_entry_ms);
        changes
    }

    /// Whether every robot tracked is in a final phase (and there is at least one).
    pub(crate) fn done(&self) -> bool {
        !self.last.is_empty() && self.last.values().all(|p| p.is_final())
    }

    /// How many robots are at each progress.
    pub(crate) fn counts(&self) -> BTreeMap<Progress, usize> {
        let mut counts = BTreeMap::new();
        for p in self.last.values() {
            *counts.entry(*p).or_insert(0) += 1;
        }
        counts
    }
}

/// `+1.23s`, `+2m05s`.
pub(crate) fn since(ms: u64) -> String {
    if ms < 60_000 {
        format!("+{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("+{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// `1.10s`.
pub(crate) fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// `+1.23s  lekiwi-1  healthy  v3  (apply 1.10s)`.
pub(crate) fn line(c: &Change) -> String {
    let mut text = format!(
        "{}  {}  {}  {}",
        since(c.since_entry_ms),
        c.robot,
        c.phase.word(),
        c.version
    );
    let mut notes = Vec::new();
    if let Some(ms) = c.apply_ms.filter(|_| c.phase.is_final()) {
        notes.push(format!("apply {}", seconds(ms)));
    }
    if c.phase.is_bad()
        && let Some(serving) = &c.serving
    {
        notes.push(format!("serving {serving}"));
    }
    // Why it failed, or why it waits (an emergency stop).
    if (c.phase.is_bad() || c.phase == Progress::PENDING)
        && let Some(reason) = &c.reason
    {
        notes.push(short_reason(reason));
    }
    if !notes.is_empty() {
        text.push_str(&format!("  ({})", notes.join("; ")));
    }
    text
}

/// A reason's first line for one line of the watch: container ids cut to 12 digits, at
/// most [`REASON_CHARS`] characters (the whole reason is in `--json` and `fleet status`).
fn short_reason(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or_default();
    let words: Vec<&str> = first
        .split(' ')
        .map(|w| {
            let long_id = w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit());
            if long_id { &w[..12] } else { w }
        })
        .collect();
    let text = words.join(" ");
    let text = text.trim_end_matches(':');
    if text.chars().count() > REASON_CHARS {
        let cut: String = text.chars().take(REASON_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text.to_owned()
    }
}

/// Longest reason on a watch line.
const REASON_CHARS: usize = 240;

/// The one-line summary: `v3 to production: 3 healthy of 3 robots`.
pub(crate) fn summary(target: &Target, counts: &BTreeMap<Progress, usize>) -> String {
    let total: usize = counts.values().sum();
    let parts: Vec<String> = counts
        .iter()
        .map(|(p, n)| format!("{n} {}", p.word()))
        .collect();
    format!(
        "{} {} to {}: {} of {total} robot{}",
        target.kind,
        target.version,
        target.group,
        parts.join(", "),
        if total == 1 { "" } else { "s" }
    )
}

/// `fleet watch [RELEASE] [--group G] [--wait D]`.
pub(super) async fn watch(
    ctx: &Ctx,
    release: Option<&str>,
    group: Option<&str>,
    wait: Duration,
) -> Result<(), CliError> {
    let chosen = Fleets::load(&ctx.home)?.choose(ctx.fleet_arg.as_deref())?;
    let (local, mut session) = super::read::open_statuses(ctx, &chosen).await?;
    // A fleet this copy does not hold is an error that says how to get it.
    let state = local.state(&chosen.id)?;
    let target = local
        .hub
        .with_log(&chosen.id, |log| resolve(log, release, group))
        .unwrap_or_else(|| Err(nothing(group, "no copy of the fleet's log")))?;
    let robots: Vec<(MemberKey, String)> = state
        .members
        .values()
        .filter(|m| m.groups.contains(&target.group))
        .map(|m| (m.key, m.name.clone()))
        .collect();
    if robots.is_empty() {
        return Err(CliError::new(
            Kind::NotFound,
            format!("group {} has no robots to watch", target.group),
        ));
    }
    ctx.note(&format!(
        "watching {} {} ({}) of group {} on {} robot{}, from entry {} at {}",
        target.kind,
        target.version,
        target.release.short(),
        target.group,
        robots.len(),
        if robots.len() == 1 { "" } else { "s" },
        target.entry.short(),
        super::render::time(target.at)
    ));
    let tracker = follow(ctx, &mut session, chosen.id, &target, &robots, wait).await?;
    finish(ctx, &target, &tracker, wait)
}

/// Asks the gateways every [`POLL`] and prints each robot's changes until every one is final
/// or `wait` is over; the tracker tells how it ended.
async fn follow(
    ctx: &Ctx,
    session: &mut Session,
    fleet: FleetId,
    target: &Target,
    robots: &[(MemberKey, String)],
    wait: Duration,
) -> Result<Tracker, CliError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut tracker = Tracker::default();
    let mut complained = false;
    loop {
        let statuses = session.statuses(fleet).await;
        let failed = std::mem::take(&mut session.failed);
        if statuses.is_empty() && !failed.is_empty() {
            // No gateway answered this round: robots are not "not seen" for it; ask again.
            if !complained {
                ctx.note(&format!("warning: {} (asking again)", failed.join("; ")));
                complained = true;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        let seen: Vec<(MemberKey, String, Seen)> = robots
            .iter()
            .map(|(key, name)| {
                let status = statuses.iter().find(|s| s.report.robot == *key);
                (*key, name.clone(), progress(target, status))
            })
            .collect();
        for change in tracker.step(target, &seen, now_ms()) {
            if ctx.json {
                let text = serde_json::to_string(&change)
                    .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
                println!("{text}");
            } else {
                println!("{}", line(&change));
            }
        }
        if tracker.done() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(tracker)
}

/// Prints the summary and turns it into the exit status: 0 only if every robot is healthy.
fn finish(ctx: &Ctx, target: &Target, tracker: &Tracker, wait: Duration) -> Result<(), CliError> {
    let counts = tracker.counts();
    let summary = summary(target, &counts);
    if ctx.json {
        let object = serde_json::json!({
            "summary": summary,
            "group": target.group,
            "version": target.version,
            "release": target.release.to_string(),
            "entry": target.entry.to_string(),
            "kind": target.kind,
            "done": tracker.done(),
            "counts": counts.iter().map(|(p, n)| (p.word(), n)).collect::<BTreeMap<_, _>>(),
        });
        println!("{object}");
    }
    let bad = counts.iter().any(|(p, _)| p.is_bad());
    if bad {
        return Err(CliError::new(Kind::Other, summary));
    }
    if !tracker.done() {
        return Err(CliError::new(
            Kind::Unreachable,
            format!(
                "{summary}: not done after {}",
                humantime::format_duration(wait)
            ),
        ));
    }
    if !ctx.json {
        println!("{summary}");
    }
    Ok(())
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
