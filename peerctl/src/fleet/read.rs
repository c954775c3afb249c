//! The fleet commands that only read: `list`, `members`, `log` (with `--verify`, which
//! re-reads every entry file and names the first bad one) and `status` (robots' signed
//! reports, as the gateways collected them).

use peercompute_fleet::{FleetStore, SignedStatus};
use serde::Serialize;
use serde_json::json;

use super::config::{Chosen, Fleets};
use super::local::{Local, now};
use super::render::{log_rows, log_table, member_rows, members_table};
use super::sync::Session;
use super::{Ctx, print_json};
use crate::exit::{CliError, Kind};
use crate::output;

/// `fleet list`.
pub(super) fn list(ctx: &Ctx) -> Result<(), CliError> {
    let fleets = Fleets::load(&ctx.home)?;
    let local = ctx.local()?;
    let mut rows: Vec<(String, String, bool, usize, String)> = fleets
        .fleets
        .iter()
        .map(|(name, f)| {
            let entries =
                f.id.parse()
                    .ok()
                    .and_then(|id| local.hub.with_log(&id, |log| log.len()))
                    .unwrap_or(0);
            let key = f
                .key
                .as_ref()
                .map_or_else(|| "-".to_owned(), |k| k.display().to_string());
            let default = fleets.default.as_deref() == Some(name);
            (name.clone(), f.id.clone(), default, entries, key)
        })
        .collect();
    rows.sort_by_key(|r| !r.2);
    if ctx.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(name, id, default, entries, key)| {
                json!({"name": name, "fleet_id": id, "default": default, "entries": entries, "fleet_key": key})
            })
            .collect();
        return print_json(&list);
    }
    if rows.is_empty() {
        ctx.note("no fleets yet: `peerctl fleet create NAME`");
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(name, id, default, entries, key)| {
            let name = if default { format!("{name} *") } else { name };
            vec![name, id, entries.to_string(), key]
        })
        .collect();
    print!(
        "{}",
        output::table(&["NAME", "FLEET ID", "ENTRIES", "FLEET KEY"], &cells)
    );
    Ok(())
}

/// Brings the local copy in step with the gateways (robots' joins come back), if any.
pub(super) async fn refresh(
    ctx: &Ctx,
    local: &Local,
    chosen: &Chosen,
) -> Result<Session, CliError> {
    let me = ctx.identity()?;
    let session =
        Session::open_with(&me, &ctx.gateways, local, chosen.id, ctx.timeout, &ctx.lan).await?;
    for line in &session.notes {
        ctx.note(line);
    }
    for line in &session.failed {
        ctx.note(&format!("warning: {line} (showing the local copy)"));
    }
    ctx.remember(chosen, local)?;
    Ok(session)
}

/// `fleet members`.
pub(super) async fn members(ctx: &Ctx) -> Result<(), CliError> {
    let chosen = Fleets::load(&ctx.home)?.choose(ctx.fleet_arg.as_deref())?;
    let local = ctx.local()?;
    refresh(ctx, &local, &chosen).await?;
    // A fleet this copy does not hold is an error that says how to get it, not an empty list.
    local.state(&chosen.id)?;
    let rows = local
        .hub
        .with_log(&chosen.id, |log| member_rows(log, ctx.me()))
        .unwrap_or_default();
    if ctx.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        ctx.note(&format!(
            "fleet {} has no members yet: `peerctl fleet invite --group G` or `peerctl fleet enroll PEERID --group G --name N`",
            chosen.name
        ));
        return Ok(());
    }
    print!("{}", members_table(&rows));
    Ok(())
}

/// `fleet log [--verify]`.
pub(super) async fn log(ctx: &Ctx, verify: bool) -> Result<(), CliError> {
    let chosen = Fleets::load(&ctx.home)?.choose(ctx.fleet_arg.as_deref())?;
    let me = ctx.me();
    if verify {
        return verify_files(ctx, &chosen, me);
    }
    let local = ctx.local()?;
    refresh(ctx, &local, &chosen).await?;
    // A fleet this copy does not hold is an error that says how to get it, not an empty list.
    local.state(&chosen.id)?;
    let rows = local
        .hub
        .with_log(&chosen.id, |log| log_rows(log, me))
        .unwrap_or_default();
    if ctx.json {
        return print_json(&rows);
    }
    print!("{}", log_table(&rows));
    Ok(())
}

/// Re-reads every entry file of the fleet, prints what verified, and fails naming the first
/// entry that did not.
fn verify_files(
    ctx: &Ctx,
    chosen: &Chosen,
    me: Option<peercompute_fleet::MemberKey>,
) -> Result<(), CliError> {
    let dir = super::local::fleets_dir(&ctx.home).join(chosen.id.to_string());
    if !dir.is_dir() {
        return Err(CliError::new(
            Kind::NotFound,
            format!(
                "no copy of fleet {} here ({} is missing)",
                chosen.name,
                dir.display()
            ),
        ));
    }
    let (store, report) = FleetStore::open(&dir, chosen.id, now())
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    let rows = log_rows(store.log(), me);
    if ctx.json {
        print_json(&rows)?;
    } else {
        print!("{}", log_table(&rows));
    }
    match report.bad.first() {
        None => {
            ctx.note(&format!(
                "verified {} entries of fleet {}: every signature, link and authority check holds",
                rows.len(),
                chosen.name
            ));
            Ok(())
        }
        Some(first) => Err(CliError::new(
            Kind::Trust,
            format!(
                "fleet {}: entry file {} is bad: {} ({} bad entr{} in all, in {}); the next fleet command that reaches a gateway (`peerctl fleet log`) fetches a good copy of each",
                chosen.name,
                first.file,
                first.reason,
                report.bad.len(),
                if report.bad.len() == 1 { "y" } else { "ies" },
                dir.join("entries").display()
            ),
        )),
    }
}

/// One robot's row in `fleet status`.
#[derive(Debug, Serialize)]
struct StatusRow {
    name: String,
    peer_id: String,
    groups: Vec<String>,
    /// Per group: the version applied or being applied, and its phase.
    apps: Vec<AppRow>,
    /// The robot's clock when it reported, Unix milliseconds; null when never seen.
    last_seen_ms: Option<u64>,
    /// Revoked for good, with the reason (its statuses are no longer kept).
    revoked: Option<String>,
    /// The group names it serves or asked for (`<app>.<domain>`, one per group).
    group_names: Vec<peercompute_fleet::GroupName>,
}

#[derive(Debug, Serialize)]
struct AppRow {
    group: String,
    version: String,
    phase: &'static str,
    serving: Option<String>,
    reason: Option<String>,
}

/// The local copy brought in step, and a session with at least one gateway reached: what
/// the commands reading robots' statuses (status, watch, metrics) start from.
pub(super) async fn open_statuses(
    ctx: &Ctx,
    chosen: &Chosen,
) -> Result<(Local, Session), CliError> {
    let local = ctx.local()?;
    let session = refresh(ctx, &local, chosen).await?;
    if session.reached.is_empty() && !session.lan_searching() {
        let why = if ctx.gateways.is_empty() {
            "no gateway configured and no robot of the fleet found on this LAN: robots report their status through a gateway (add one with `peerctl gateways add PEERID@MULTIADDR`) or answer on the LAN".to_owned()
        } else {
            format!(
                "no gateway reached and no robot of the fleet found on this LAN: {}",
                session.failed.join("; ")
            )
        };
        return Err(CliError::new(Kind::Unreachable, why));
    }
    Ok((local, session))
}

/// `fleet status [--group G]`.
pub(super) async fn status(ctx: &Ctx, group: Option<&str>) -> Result<(), CliError> {
    let chosen = Fleets::load(&ctx.home)?.choose(ctx.fleet_arg.as_deref())?;
    let (local, mut session) = open_statuses(ctx, &chosen).await?;
    let statuses = session.statuses(chosen.id).await;
    let state = local.state(&chosen.id)?;
    let rows: Vec<StatusRow> = state
        .members
        .values()
        .filter(|m| group.is_none_or(|g| m.groups.iter().any(|mg| mg == g)))
        .map(|m| {
            let status = statuses.iter().find(|s| s.report.robot == m.key);
            StatusRow {
                name: m.name.clone(),
                peer_id: m.key.to_string(),
                groups: m.groups.clone(),
                apps: status.map(apps).unwrap_or_default(),
                last_seen_ms: status.map(|s| s.report.at_ms),
                revoked: None,
                group_names: status
                    .map(|s| s.report.group_names.clone())
                    .unwrap_or_default(),
            }
        })
        .chain(revoked_rows(&local, &chosen, group.is_none()))
        .collect();
    if ctx.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        ctx.note(&format!(
            "no robots in fleet {}{}: `peerctl fleet invite --group G` makes a join token",
            chosen.name,
            group.map_or_else(String::new, |g| format!(" group {g}"))
        ));
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows.iter().map(status_cells).collect();
    print!(
        "{}",
        output::table(&["NAME", "GROUPS", "RELEASE", "PHASE", "LAST SEEN"], &cells)
    );
    let members: Vec<&SignedStatus> = statuses
        .iter()
        .filter(|s| state.members.contains_key(&s.report.robot))
        .collect();
    for line in super::group_urls::group_lines(&members, group) {
        println!("{line}");
    }
    Ok(())
}

/// The revoked robots, named as `fleet members` names them (shown without a group filter).
fn revoked_rows(local: &Local, chosen: &Chosen, all: bool) -> Vec<StatusRow> {
    if !all {
        return Vec::new();
    }
    let rows = local
        .hub
        .with_log(&chosen.id, |log| member_rows(log, None))
        .unwrap_or_default();
    rows.into_iter()
        .filter(|r| r.kind == "robot")
        .filter_map(|r| {
            Some(StatusRow {
                revoked: Some(r.revoked?),
                name: r.name,
                peer_id: r.peer_id,
                groups: Vec::new(),
                apps: Vec::new(),
                last_seen_ms: None,
                group_names: Vec::new(),
            })
        })
        .collect()
}

fn apps(status: &SignedStatus) -> Vec<AppRow> {
    status
        .report
        .apps
        .iter()
        .map(|a| AppRow {
            group: a.group.clone(),
            version: a.version.clone(),
            phase: a.phase.as_str(),
            serving: a.serving.clone(),
            reason: a.reason.clone(),
        })
        .collect()
}

fn status_cells(row: &StatusRow) -> Vec<String> {
    let join = |f: &dyn Fn(&AppRow) -> String| {
        if row.apps.is_empty() {
            "-".to_owned()
        } else {
            row.apps.iter().map(f).collect::<Vec<_>>().join("; ")
        }
    };
    if let Some(reason) = &row.revoked {
        return vec![
            row.name.clone(),
            "-".to_owned(),
            "-".to_owned(),
            format!("revoked: {reason}"),
            "-".to_owned(),
        ];
    }
    vec![
        row.name.clone(),
        row.groups.join(","),
        join(&|a| format!("{}: {}", a.group, a.version)),
        join(&|a| a.phase.to_owned()),
        row.last_seen_ms
            .map_or_else(|| "never seen".to_owned(), |ms| output::age(ms / 1000)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_robot_never_heard_from_says_so() {
        let row = StatusRow {
            name: "lekiwi-1".into(),
            peer_id: "12D3KooW".into(),
            groups: vec!["production".into()],
            apps: Vec::new(),
            last_seen_ms: None,
            revoked: None,
            group_names: Vec::new(),
        };
        assert_eq!(
            status_cells(&row),
            ["lekiwi-1", "production", "-", "-", "never seen"]
        );
        let gone = StatusRow {
            name: "lekiwi-2".into(),
            peer_id: "12D3KooW".into(),
            groups: Vec::new(),
            apps: Vec::new(),
            last_seen_ms: None,
            revoked: Some("stolen".into()),
            group_names: Vec::new(),
        };
        assert_eq!(
            status_cells(&gone),
            ["lekiwi-2", "-", "-", "revoked: stolen", "-"]
        );
        let row = StatusRow {
            apps: vec![AppRow {
                group: "production".into(),
                version: "v2".into(),
                phase: "rolled back",
                serving: Some("v1".into()),
                reason: Some("health".into()),
            }],
            last_seen_ms: Some(now() * 1000),
            ..row
        };
        let cells = status_cells(&row);
        assert_eq!(cells[2], "production: v2");
        assert_eq!(cells[3], "rolled back");
        assert!(cells[4].ends_with("ago"), "{}", cells[4]);
    }
}
