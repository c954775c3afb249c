//! What `fleet log` and `fleet members` print, computed from a log alone (pure): one
//! [`LogRow`] per entry in canonical order — who wrote it, with the role they held just
//! before it, and what it does in one line — and one [`MemberRow`] per robot or key with a
//! role. Tables for people and JSON for scripts come from the same rows.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use peercompute_fleet::{FleetLog, FleetState, Grant, MemberKey, Op, SignedEntry};
use serde::Serialize;

use crate::output;

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LogRow {
    pub(crate) hash: String,
    pub(crate) clock: u64,
    /// The author's clock, Unix seconds.
    pub(crate) at: u64,
    /// Its author's peer id (the fleet key's shows as its peer id too).
    pub(crate) author: String,
    /// The author's name in the fleet, `fleet key`, or `you`.
    pub(crate) author_name: Option<String>,
    /// The role the author held just before the entry (`robot` for a join).
    pub(crate) role: String,
    /// The kind of entry: `genesis`, `invite`, `join`, `enroll`, `set-groups`, `grant`,
    /// `ungrant`, `release`, `rollback`, `e-stop`, `resume`, `revoke`.
    pub(crate) op: &'static str,
    /// What it does, in one line.
    pub(crate) what: String,
}

/// A robot, or a key holding a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MemberRow {
    pub(crate) name: String,
    pub(crate) peer_id: String,
    /// `robot` (enrolled or joined) or `person` (a role without robot membership).
    pub(crate) kind: &'static str,
    pub(crate) groups: Vec<String>,
    pub(crate) role: Option<String>,
    /// The groups the role acts on; empty for every group.
    pub(crate) role_groups: Vec<String>,
    pub(crate) role_expires_at: Option<u64>,
    /// Enrolled, joined or granted at (Unix seconds); for a revoked key, when it was revoked.
    pub(crate) since: u64,
    /// Revoked for good, with the reason (the row then shows no groups and no role).
    pub(crate) revoked: Option<String>,
}

/// `2026-12-06T18:20:00Z`.
pub(crate) fn time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Names people know keys by: robots' names, `fleet key`, `you`.
struct Names {
    names: BTreeMap<MemberKey, String>,
}

impl Names {
    fn new(log: &FleetLog, me: Option<MemberKey>) -> Self {
        let mut names = BTreeMap::new();
        if let Some(state) = log.state() {
            for m in state.members.values() {
                names.insert(m.key, m.name.clone());
            }
        }
        // Keys no longer members (revoked) keep the name they were enrolled or joined with.
        for e in log.iter() {
            let named = match &e.entry().op {
                Op::Enroll { member, name, .. } => Some((*member, name)),
                Op::Join(join) => Some((e.entry().author, &join.name)),
                _ => None,
            };
            if let Some((key, name)) = named {
                names.entry(key).or_insert_with(|| name.clone());
            }
        }
        if let Some(me) = me {
            names.entry(me).or_insert_with(|| "you".to_owned());
        }
        names.insert(MemberKey(log.fleet().0), "fleet key".to_owned());
        Self { names }
    }

    fn name(&self, key: &MemberKey) -> Option<&str> {
        self.names.get(key).map(String::as_str)
    }

    /// `lekiwi-1` or the peer id.
    fn show(&self, key: &MemberKey) -> String {
        self.name(key)
            .map_or_else(|| key.to_string(), str::to_owned)
    }
}

/// The audit trail of `log`, in canonical order.
pub(crate) fn log_rows(log: &FleetLog, me: Option<MemberKey>) -> Vec<LogRow> {
    let names = Names::new(log, me);
    let mut state: Option<FleetState> = None;
    let mut rows = Vec::with_capacity(log.len());
    for signed in log.iter() {
        let entry = signed.entry();
        let role = match (&state, &entry.op) {
            (_, Op::Genesis { .. }) => "fleet key".to_owned(),
            (_, Op::Join(_)) => "robot".to_owned(),
            (Some(s), _) => match s.role_at(&entry.author, entry.at) {
                Ok((_, _)) if entry.author.0 == log.fleet().0 => "fleet key".to_owned(),
                Ok((role, groups)) => scoped(role.as_str(), groups),
                Err(_) => "no role".to_owned(),
            },
            (None, _) => "no role".to_owned(),
        };
        rows.push(LogRow {
            hash: signed.hash().short(),
            clock: entry.clock,
            at: entry.at,
            author: entry.author.to_string(),
            author_name: names.name(&entry.author).map(str::to_owned),
            role,
            op: entry.op.kind(),
            what: what(&entry.op, &names),
        });
        fold(&mut state, signed, log);
    }
    rows
}

fn fold(state: &mut Option<FleetState>, signed: &SignedEntry, log: &FleetLog) {
    let entry = signed.entry();
    match (state.as_mut(), &entry.op) {
        (None, Op::Genesis { name }) => *state = Some(FleetState::genesis(log.fleet(), name)),
        // An entry the fold skips (a concurrent grant removed before it) changes nothing,
        // as on every member.
        (Some(s), _) => {
            let _ = s.apply(signed.hash(), entry);
        }
        (None, _) => {}
    }
}

fn scoped(role: &str, groups: &[String]) -> String {
    if groups.is_empty() {
        role.to_owned()
    } else {
        format!("{role} ({})", groups.join(","))
    }
}

fn groups_text(groups: &[String]) -> String {
    if groups.is_empty() {
        "every group".to_owned()
    } else {
        groups.join(",")
    }
}

/// One line saying what `op` does.
fn what(op: &Op, names: &Names) -> String {
    match op {
        Op::Genesis { name } => format!("fleet {name} created"),
        Op::Invite(i) => {
            let prefix = i
                .name_prefix
                .as_deref()
                .map_or_else(String::new, |p| format!(", names {p}-*"));
            format!(
                "invite to {} ({} use{}{prefix}, until {})",
                groups_text(&i.groups),
                i.uses,
                if i.uses == 1 { "" } else { "s" },
                time(i.expires_at)
            )
        }
        Op::Join(j) => format!("{} joined (invite {})", j.name, j.invite.short()),
        Op::Enroll {
            member,
            name,
            groups,
        } => format!("enrolled {name} ({member}) in {}", groups_text(groups)),
        Op::SetGroups { member, groups } => {
            format!("groups of {}: {}", names.show(member), groups_text(groups))
        }
        Op::Grant(g) => grant_text(g, names),
        Op::Ungrant { member } => format!("role of {} taken away", names.show(member)),
        Op::Release(r) => format!(
            "release {} {} to {} (seq {}): {} port {}{}",
            r.app(),
            r.version,
            r.group,
            r.seq,
            r.spec.image,
            r.spec.port,
            attachments_text(&r.spec)
        ),
        Op::Rollback(r) => format!(
            "rollback of {} to {} (seq {})",
            r.group,
            r.to_version.as_deref().unwrap_or("the previous release"),
            r.seq
        ),
        Op::EStop {
            everything: true,
            reason,
            ..
        } => format!("e-stop of everything (fleet and non-fleet apps): {reason}"),
        Op::EStop { groups, reason, .. } => {
            format!("e-stop of {}: {reason}", groups_text(groups))
        }
        Op::Resume { groups } => format!("resume of {}", groups_text(groups)),
        Op::Revoke { member, reason } => format!("{} revoked: {reason}", names.show(member)),
        Op::RotateMember(p) => format!(
            "key of {} rotated: {} → {}",
            names.show(&p.new),
            p.old,
            p.new
        ),
        Op::RotateRoot { new, .. } => format!("fleet root key rotated to {new}"),
    }
}

/// `, volumes data:/var/lib/app (2.0 GiB), devices arm, exclusive` (empty without any).
fn attachments_text(spec: &peercompute_tunnel_proto::DeployRequest) -> String {
    let mut out = String::new();
    if !spec.volumes.is_empty() {
        let volumes: Vec<String> = spec
            .volumes
            .iter()
            .map(|v| {
                let size = v
                    .size_bytes
                    .map_or_else(String::new, |b| format!(" ({})", crate::output::bytes(b)));
                format!("{}:{}{size}", v.name, v.path)
            })
            .collect();
        out.push_str(&format!(", volumes {}", volumes.join(" ")));
    }
    if !spec.devices.is_empty() {
        out.push_str(&format!(", devices {}", spec.devices.join(" ")));
    }
    if spec.volume_exclusive {
        out.push_str(", exclusive");
    }
    out
}

fn grant_text(g: &Grant, names: &Names) -> String {
    let until = g
        .expires_at
        .map_or_else(String::new, |t| format!(" until {}", time(t)));
    format!(
        "{} made {} of {}{until}",
        names.show(&g.member),
        g.role,
        groups_text(&g.groups)
    )
}

/// The log as a table: HASH, CLOCK, TIME, AUTHOR (ROLE), WHAT.
pub(crate) fn log_table(rows: &[LogRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.hash.clone(),
                r.clock.to_string(),
                time(r.at),
                format!(
                    "{} ({})",
                    r.author_name.as_deref().unwrap_or(&r.author),
                    r.role
                ),
                r.what.clone(),
            ]
        })
        .collect();
    output::table(&["HASH", "CLOCK", "TIME", "AUTHOR (ROLE)", "WHAT"], &cells)
}

/// Robots first (by name), then other keys with a role.
pub(crate) fn member_rows(log: &FleetLog, me: Option<MemberKey>) -> Vec<MemberRow> {
    let Some(state) = log.state() else {
        return Vec::new();
    };
    let names = Names::new(log, me);
    // When each key was last granted its role.
    let mut granted_at: BTreeMap<MemberKey, u64> = BTreeMap::new();
    for e in log.iter() {
        if let Op::Grant(g) = &e.entry().op {
            granted_at.insert(g.member, e.entry().at);
        }
    }
    let role_of = |key: &MemberKey| {
        state.grants.get(key).map(|g| {
            let expired = g.expires_at.is_some_and(|t| t < super::local::now());
            let role = scoped(g.role.as_str(), &g.groups);
            if expired {
                format!("{role}, expired")
            } else {
                role
            }
        })
    };
    let grant_of = |key: &MemberKey| state.grants.get(key);
    let mut robots: Vec<MemberRow> = state
        .members
        .values()
        .map(|m| MemberRow {
            name: m.name.clone(),
            peer_id: m.key.to_string(),
            kind: "robot",
            groups: m.groups.clone(),
            role: role_of(&m.key),
            role_groups: grant_of(&m.key)
                .map(|g| g.groups.clone())
                .unwrap_or_default(),
            role_expires_at: grant_of(&m.key).and_then(|g| g.expires_at),
            since: m.since,
            revoked: None,
        })
        .collect();
    robots.sort_by(|a, b| a.name.cmp(&b.name));
    let people = state
        .grants
        .values()
        .filter(|g| !state.members.contains_key(&g.member))
        .map(|g| MemberRow {
            name: names.name(&g.member).unwrap_or("-").to_owned(),
            peer_id: g.member.to_string(),
            kind: "person",
            groups: Vec::new(),
            role: role_of(&g.member),
            role_groups: g.groups.clone(),
            role_expires_at: g.expires_at,
            since: granted_at.get(&g.member).copied().unwrap_or_default(),
            revoked: None,
        });
    robots.extend(people);
    robots.extend(revoked_rows(log, &names));
    robots
}

/// One row per revoked key: the name it had (from its enrolment or join), when and why.
fn revoked_rows(log: &FleetLog, names: &Names) -> Vec<MemberRow> {
    let Some(state) = log.state() else {
        return Vec::new();
    };
    let mut named: BTreeMap<MemberKey, String> = BTreeMap::new();
    let mut revoked_at: BTreeMap<MemberKey, u64> = BTreeMap::new();
    for e in log.iter() {
        match &e.entry().op {
            Op::Enroll { member, name, .. } => {
                named.insert(*member, name.clone());
            }
            Op::Join(join) => {
                named.insert(e.entry().author, join.name.clone());
            }
            Op::Revoke { member, .. } => {
                revoked_at.entry(*member).or_insert(e.entry().at);
            }
            _ => {}
        }
    }
    state
        .revoked
        .iter()
        .map(|(key, reason)| MemberRow {
            name: named
                .get(key)
                .cloned()
                .or_else(|| names.name(key).map(str::to_owned))
                .unwrap_or_else(|| "-".to_owned()),
            peer_id: key.to_string(),
            kind: if named.contains_key(key) {
                "robot"
            } else {
                "person"
            },
            groups: Vec::new(),
            role: None,
            role_groups: Vec::new(),
            role_expires_at: None,
            since: revoked_at.get(key).copied().unwrap_or_default(),
            revoked: Some(reason.clone()),
        })
        .collect()
}

/// The members as a table: NAME, PEER ID, GROUPS, ROLE, SINCE.
pub(crate) fn members_table(rows: &[MemberRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.peer_id.clone(),
                if r.groups.is_empty() {
                    "-".to_owned()
                } else {
                    r.groups.join(",")
                },
                match &r.revoked {
                    Some(reason) => format!("revoked: {reason}"),
                    None => r.role.clone().unwrap_or_else(|| "-".to_owned()),
                },
                time(r.since),
            ]
        })
        .collect();
    output::table(&["NAME", "PEER ID", "GROUPS", "ROLE", "SINCE"], &cells)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
