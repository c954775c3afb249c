//! Which release a watch follows: a [`Target`] resolved from what was typed — a version, a
//! prefix of a release or rollback entry's hash, or nothing (the group's latest release or
//! rollback). A rollback entry names the earlier release it made the group's desired one,
//! found by folding the log up to the rollback (pure, tested in `watch::tests`).

use peercompute_fleet::{EntryHash, FleetLog, FleetState, Op, ReleaseRecord};

use crate::exit::{CliError, Kind};

/// The release a watch follows, and the entry that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) group: String,
    pub(crate) release: EntryHash,
    pub(crate) version: String,
    /// The release entry, or the rollback entry that made `release` desired.
    pub(crate) entry: EntryHash,
    /// `release` or `rollback`.
    pub(crate) kind: &'static str,
    /// The entry's time, Unix seconds: phase times count from it.
    pub(crate) at: u64,
}

/// The state right after entry `hash`: the log folded in canonical order up to it.
fn state_after(log: &FleetLog, hash: &EntryHash) -> Option<FleetState> {
    let mut state: Option<FleetState> = None;
    for signed in log.iter() {
        let entry = signed.entry();
        match (&mut state, &entry.op) {
            (None, Op::Genesis { name }) => state = Some(FleetState::genesis(log.fleet(), name)),
            (None, _) => {}
            (Some(s), _) => {
                let _ = s.apply(signed.hash(), entry);
            }
        }
        if signed.hash() == *hash {
            break;
        }
    }
    state
}

/// The target an entry of the log names (a release or a rollback), if it names one.
fn target_of(log: &FleetLog, hash: &EntryHash) -> Option<Target> {
    let signed = log.get(hash)?;
    let entry = signed.entry();
    let (group, kind) = match &entry.op {
        Op::Release(r) => (r.group.clone(), "release"),
        Op::Rollback(r) => (r.group.clone(), "rollback"),
        _ => return None,
    };
    let record: ReleaseRecord = match &entry.op {
        Op::Release(r) => ReleaseRecord {
            hash: *hash,
            author: entry.author,
            at: entry.at,
            release: r.clone(),
        },
        _ => state_after(log, hash)?
            .groups
            .get(&group)?
            .desired()?
            .clone(),
    };
    Some(Target {
        group,
        release: record.hash,
        version: record.release.version,
        entry: *hash,
        kind,
        at: entry.at,
    })
}

/// Which entry `arg` names (see the module docs and `fleet watch --help`).
pub(crate) fn resolve(
    log: &FleetLog,
    arg: Option<&str>,
    group: Option<&str>,
) -> Result<Target, CliError> {
    let state = log
        .state()
        .ok_or_else(|| CliError::new(Kind::NotFound, "the fleet has no genesis here"))?;
    let in_group = |g: &str| group.is_none_or(|want| want == g);
    let Some(arg) = arg else {
        // The latest release or rollback (of the group): what its robots should run now.
        let latest = state
            .groups
            .iter()
            .filter(|(g, _)| in_group(g))
            .filter_map(|(_, gs)| gs.changed_by)
            .filter_map(|h| log.get(&h).map(|e| ((e.entry().clock, h), h)))
            .max()
            .map(|(_, h)| h);
        return latest
            .and_then(|h| target_of(log, &h))
            .ok_or_else(|| nothing(group, "no release yet"));
    };
    let hex = arg.len() >= 4 && arg.chars().all(|c| c.is_ascii_hexdigit());
    if hex {
        let lower = arg.to_ascii_lowercase();
        let found: Vec<Target> = log
            .iter()
            .filter(|e| e.hash().to_string().starts_with(&lower))
            .filter_map(|e| target_of(log, &e.hash()))
            .filter(|t| in_group(&t.group))
            .collect();
        match found.len() {
            1 => return Ok(found.into_iter().next().expect("one")),
            0 => {}
            n => {
                return Err(CliError::new(
                    Kind::Ambiguous,
                    format!(
                        "{arg} is the prefix of {n} release or rollback entries: type more of the hash"
                    ),
                ));
            }
        }
    }
    // A version: the latest release of that version, in one group.
    let found: Vec<(&String, &ReleaseRecord)> = state
        .groups
        .iter()
        .filter(|(g, _)| in_group(g))
        .filter_map(|(g, gs)| {
            gs.releases
                .iter()
                .rev()
                .find(|r| r.release.version == arg)
                .map(|r| (g, r))
        })
        .collect();
    match found[..] {
        [(_, record)] => target_of(log, &record.hash).ok_or_else(|| nothing(group, arg)),
        [] => Err(nothing(
            group,
            &format!("no release whose version or entry hash is {arg}"),
        )),
        _ => Err(CliError::new(
            Kind::Ambiguous,
            format!(
                "version {arg} was released to several groups ({}): add --group",
                found
                    .iter()
                    .map(|(g, _)| g.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

pub(super) fn nothing(group: Option<&str>, what: &str) -> CliError {
    let scope = group.map_or_else(String::new, |g| format!(" in group {g}"));
    CliError::new(
        Kind::NotFound,
        format!("{what}{scope}: `peerctl fleet log` lists the releases"),
    )
}
