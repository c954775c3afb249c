//! The commands that stop things: `fleet estop` (`--all` too) and `fleet resume` publish the
//! entry and say what it covers; `fleet revoke` names the key, refuses a second revoke of it,
//! publishes, and says where it went. They are written like every other entry (`write.rs`
//! `Writer`): checked on the local copy first, so a refusal reads as a robot's would.

use peercompute_fleet::{MemberKey, Op, SignedEntry};
use serde_json::json;

use super::print_json;
use super::write::Writer;
use crate::exit::{CliError, Kind};

/// Now, Unix milliseconds: when the command authored its entry (the entry's own time is in
/// whole seconds), so a test or a person can time the robots' reaction from it.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn gateways(w: &Writer<'_>) -> Vec<String> {
    w.session.reached.iter().map(ToString::to_string).collect()
}

/// `(sent to 2 gateway(s))` or `(no gateway reached yet)`.
fn reached_text(gateways: &[String]) -> String {
    if gateways.is_empty() {
        "no gateway reached yet".to_owned()
    } else {
        format!("sent to {} gateway(s)", gateways.len())
    }
}

/// `fleet estop` / `fleet resume`: the entry published, then what it covers.
pub(super) async fn stop_or_resume(w: &Writer<'_>, op: Op) -> Result<(), CliError> {
    let authored_at_ms = now_ms();
    let entry = w.publish(op).await?;
    let gateways = gateways(w);
    let (name, groups, reason, everything) = match &entry.entry().op {
        Op::EStop {
            groups,
            reason,
            everything,
        } => ("e-stop", groups, Some(reason), *everything),
        Op::Resume { groups } => ("resume", groups, None, false),
        _ => return Ok(()),
    };
    if w.ctx.json {
        let mut out = json!({
            "hash": entry.hash().to_string(),
            "op": name,
            "groups": groups,
            "authored_at_ms": authored_at_ms,
            "gateways": gateways,
        });
        if let Some(reason) = reason {
            out["reason"] = json!(reason);
            out["everything"] = json!(everything);
        }
        return print_json(&out);
    }
    let scope = match (everything, groups.is_empty(), reason.is_some()) {
        (true, _, _) => "everything (fleet apps and the robots' own deployments)".to_owned(),
        (false, true, true) => "every group, those released later too".to_owned(),
        (false, true, false) => "every stop".to_owned(),
        (false, false, _) => groups.join(", "),
    };
    println!(
        "{name} of {scope}: {} ({})",
        entry.hash(),
        reached_text(&gateways)
    );
    if reason.is_none() {
        still_stopped_note(w, &entry);
    }
    Ok(())
}

/// After a resume: the stops this copy holds that it did not lift (a fleet-wide stop under a
/// resume of some groups).
fn still_stopped_note(w: &Writer<'_>, entry: &SignedEntry) {
    let Op::Resume { groups } = &entry.entry().op else {
        return;
    };
    if let Some(all) = w.state.stopped_all().filter(|_| !groups.is_empty()) {
        w.ctx.note(&format!(
            "note: a stop of every group is still in force ({}): lift it with `peerctl fleet resume` (no --group)",
            all.reason
        ));
    }
}

/// `fleet revoke NAME|PEERID --reason TEXT`.
pub(super) async fn revoke(w: &Writer<'_>, member: &str, reason: String) -> Result<(), CliError> {
    let key: MemberKey = w.member(member)?;
    if let Some(earlier) = w.state.revoked.get(&key) {
        return Err(CliError::new(
            Kind::BadRequest,
            format!("{key} is already revoked ({earlier}); revocation is permanent"),
        ));
    }
    if key == w.state.root {
        return Err(CliError::new(
            Kind::BadRequest,
            "the fleet's root key cannot be revoked: it is the fleet's root of trust; hand the fleet to a new root with `peerctl fleet rotate-root`".to_owned(),
        ));
    }
    let name = w.state.members.get(&key).map(|m| m.name.clone());
    let known = name.is_some() || w.state.grants.contains_key(&key);
    if !known {
        w.ctx.note(&format!(
            "note: {key} is neither a member nor holds a role here; it is revoked all the same, so it can never be enrolled or granted"
        ));
    }
    let authored_at_ms = now_ms();
    let entry = w
        .publish(Op::Revoke {
            member: key,
            reason: reason.clone(),
        })
        .await?;
    let gateways = gateways(w);
    if w.ctx.json {
        return print_json(&json!({
            "hash": entry.hash().to_string(),
            "op": "revoke",
            "member": key.to_string(),
            "name": name,
            "reason": reason,
            "authored_at_ms": authored_at_ms,
            "gateways": gateways,
        }));
    }
    println!(
        "revoked {}: {} ({})",
        name.unwrap_or_else(|| key.to_string()),
        entry.hash(),
        reached_text(&gateways)
    );
    Ok(())
}
