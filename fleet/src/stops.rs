//! Emergency stops in the fold: [`Stop`], which stops are in force, and how an e-stop and a
//! resume change them. An e-stop naming no group is fleet-wide: it covers every group, those
//! released later too. A resume lifts only the stops in its causal past (the log says which
//! entries those are), so a stop written concurrently with a resume stays in force on every
//! member, whatever order they learn the two in: the fail-safe side.

use crate::entry::Entry;
use crate::ids::EntryHash;
use crate::state::FleetState;

/// An emergency stop in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// Why, as its author wrote it.
    pub reason: String,
    /// The e-stop entry.
    pub by: EntryHash,
    /// It also stops what robots run outside the fleet (`peerctl fleet estop --all`).
    pub everything: bool,
    /// The e-stop entry's Lamport clock: with `by`, its place in the fold.
    pub clock: u64,
    /// The e-stop entry's time (Unix seconds).
    pub at: u64,
}

impl FleetState {
    /// The stop in force for `group`: the latest of the fleet-wide stops and the group's own.
    pub fn stop_for(&self, group: &str) -> Option<&Stop> {
        let own = self.groups.get(group).and_then(|g| g.stops.last());
        match (self.stopped_all(), own) {
            (Some(all), Some(own)) => Some(if (own.clock, own.by) > (all.clock, all.by) {
                own
            } else {
                all
            }),
            (all, own) => all.or(own),
        }
    }

    /// The fleet-wide stop in force (the latest), if any.
    pub fn stopped_all(&self) -> Option<&Stop> {
        self.stops_all.last()
    }

    /// A stop in force that also covers what robots run outside the fleet (`everything`).
    pub fn stopped_everything(&self) -> Option<&Stop> {
        self.stops_all.iter().rev().find(|s| s.everything)
    }

    /// Records the stop `entry` (hash `hash`) makes, its authority already checked.
    pub(crate) fn stop(
        &mut self,
        hash: EntryHash,
        entry: &Entry,
        groups: &[String],
        reason: &str,
        everything: bool,
    ) {
        let stop = Stop {
            reason: reason.to_owned(),
            by: hash,
            everything,
            clock: entry.clock,
            at: entry.at,
        };
        for group in groups {
            let gs = self.groups.entry(group.clone()).or_default();
            gs.stops.push(stop.clone());
        }
        if groups.is_empty() {
            self.stops_all.push(stop);
        }
    }

    /// Lifts the stops of `groups` (none: every stop, fleet-wide ones too) that are in the
    /// resume's causal past (`in_past`).
    pub(crate) fn resume(&mut self, groups: &[String], in_past: &dyn Fn(&EntryHash) -> bool) {
        let lift = |stops: &mut Vec<Stop>| stops.retain(|s| !in_past(&s.by));
        if groups.is_empty() {
            lift(&mut self.stops_all);
            self.groups.values_mut().for_each(|gs| lift(&mut gs.stops));
        }
        for group in groups {
            if let Some(gs) = self.groups.get_mut(group) {
                lift(&mut gs.stops);
            }
        }
    }
}
