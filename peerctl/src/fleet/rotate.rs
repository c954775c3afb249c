//! The commands that move keys: `fleet rotate-member TOKEN` publishes the rotation a member's
//! old key vouched for (from `peercomputed rotate-key` or `peerctl id --rotate`), and
//! `fleet rotate-root` hands the fleet to a new root key, signed by the current one, which
//! this client must hold (the key `fleet create` saved). `peerctl id --rotate` makes this
//! client's next key and its token; [`finish_own_rotation`] switches to it once a fleet copy
//! here holds the rotation.

use std::path::{Path, PathBuf};

use peercompute_fleet::{MemberKey, Op, RotationProof, root_possession};
use peercompute_identity::{Finished, Identity, finish_rotation, load_or_create_next};
use serde_json::json;

use super::config::Fleets;
use super::local::{Local, fleets_dir, now};
use super::print_json;
use super::write::Writer;
use crate::exit::{CliError, Kind};

fn bad(message: String) -> CliError {
    CliError::new(Kind::BadRequest, message)
}

fn other(message: String) -> CliError {
    CliError::new(Kind::Other, message)
}

/// `fleet rotate-member TOKEN`.
pub(super) async fn rotate_member(w: &Writer<'_>, token: &str) -> Result<(), CliError> {
    let proof = RotationProof::parse(token).map_err(|e| bad(e.to_string()))?;
    let state = &w.state;
    if let Some(new) = state.retired.get(&proof.old) {
        return Err(bad(format!(
            "{} was already rotated to {new}; nothing to do",
            proof.old
        )));
    }
    let name = state.members.get(&proof.old).map(|m| m.name.clone());
    let role = state.grants.get(&proof.old).map(|g| g.role);
    if name.is_none() && role.is_none() {
        return Err(CliError::new(
            Kind::NotFound,
            format!(
                "{} is neither a member of fleet {} nor holds a role in it: a rotation token moves an existing member's key (see `peerctl fleet members`)",
                proof.old, state.name
            ),
        ));
    }
    let who = name
        .clone()
        .or_else(|| role.map(|r| format!("the {r}")))
        .unwrap_or_default();
    let entry = w.publish(Op::RotateMember(proof.clone())).await?;
    let gateways: Vec<String> = w.session.reached.iter().map(ToString::to_string).collect();
    if w.ctx.json {
        return print_json(&json!({
            "hash": entry.hash().to_string(),
            "op": "rotate-member",
            "name": name,
            "old": proof.old.to_string(),
            "new": proof.new.to_string(),
            "gateways": gateways,
        }));
    }
    println!(
        "key of {who} rotated: {} → {} ({}; sent to {} gateway(s))",
        proof.old,
        proof.new,
        entry.hash(),
        gateways.len()
    );
    if name.is_some() {
        w.ctx.note(
            "the robot switches to its new key as soon as the entry reaches it (its daemon restarts itself; containers keep running)",
        );
    }
    if Some(proof.old) == w.ctx.me() {
        finish_own_rotation(&w.ctx.home, &w.local)?;
    }
    Ok(())
}

/// `peerctl id --rotate`: this client's next key (made once; asking again gives the same)
/// and the token an admin publishes with `fleet rotate-member`.
pub fn id_rotate(home: &Path, json: bool) -> Result<(), CliError> {
    let current = Identity::load(home).map_err(|e| other(e.to_string()))?;
    let (next, made) = load_or_create_next(home).map_err(|e| other(e.to_string()))?;
    let token = RotationProof::new(current.signing_key(), next.signing_key()).to_text();
    if json {
        return print_json(&json!({
            "token": token,
            "old_peer_id": current.peer_id().to_string(),
            "new_peer_id": next.peer_id().to_string(),
            "made_now": made,
        }));
    }
    println!("{token}");
    eprintln!(
        "next key {} (for {}) {}; give the token above to an admin of each fleet you work in: `peerctl fleet rotate-member TOKEN` (an admin may run it for itself). peerctl switches to the new key at its first fleet command after a fleet accepted it.",
        next.peer_id(),
        current.peer_id(),
        if made { "made" } else { "already pending" }
    );
    Ok(())
}

/// Switches this client to its pending next key when a fleet copy here holds its rotation.
pub(super) fn finish_own_rotation(home: &Path, local: &Local) -> Result<(), CliError> {
    let Ok(current) = Identity::load(home) else {
        return Ok(());
    };
    let me = MemberKey(current.public_key_bytes());
    let accepted = |next: &[u8; 32]| {
        local.hub.fleet_ids().iter().any(|fleet| {
            local
                .hub
                .with_log(fleet, |log| {
                    log.state()
                        .is_some_and(|s| s.retired.get(&me) == Some(&MemberKey(*next)))
                })
                .unwrap_or(false)
        })
    };
    match finish_rotation(home, now(), accepted).map_err(|e| other(e.to_string()))? {
        Finished::Nothing => {}
        Finished::Switched { retired } => {
            let new = Identity::load(home).map_err(|e| other(e.to_string()))?;
            eprintln!(
                "your key was rotated: this client now signs as {}{}",
                new.peer_id(),
                retired.map_or_else(String::new, |p| format!(
                    " (the old key is kept in {})",
                    p.display()
                ))
            );
        }
    }
    Ok(())
}

/// `fleet rotate-root [--new-key FILE]`.
pub(super) async fn rotate_root(w: &Writer<'_>, new_key: Option<PathBuf>) -> Result<(), CliError> {
    let ctx = w.ctx;
    let name = w.chosen.name.clone();
    let mut fleets = Fleets::load(&ctx.home)?;
    let Some(old_path) = fleets.fleets.get(&name).and_then(|f| f.key.clone()) else {
        return Err(CliError::new(
            Kind::Trust,
            format!(
                "this client does not hold fleet {name}'s root key (only `fleet create` records it): run rotate-root where the key is"
            ),
        ));
    };
    let current = Identity::load_file(&old_path)
        .map_err(|e| other(format!("the root key at {}: {e}", old_path.display())))?;
    let current_key = MemberKey(current.public_key_bytes());
    if current_key != w.state.root {
        let why = w.state.retired.get(&current_key).map_or_else(
            || "it is not the fleet's root".to_owned(),
            |new| format!("it was rotated to {new}"),
        );
        return Err(CliError::new(
            Kind::Trust,
            format!(
                "the key at {} cannot sign for fleet {name}: {why}",
                old_path.display()
            ),
        ));
    }
    let new_path =
        new_key.unwrap_or_else(|| fleets_dir(&ctx.home).join(format!("{name}-{}.key", now())));
    let new_path = std::path::absolute(&new_path).unwrap_or(new_path);
    if new_path.exists() {
        return Err(bad(format!(
            "{} exists: a key is never overwritten; choose another path with --new-key",
            new_path.display()
        )));
    }
    let new = Identity::generate().map_err(|e| other(e.to_string()))?;
    // Saved before the entry exists, so the fleet is never handed to a key that was lost.
    new.save_file(&new_path)
        .map_err(|e| other(format!("cannot save the new root key: {e}")))?;
    let new_root = MemberKey(new.public_key_bytes());
    let op = Op::RotateRoot {
        new: new_root,
        possession: root_possession(new.signing_key(), w.chosen.id),
    };
    let entry = match w.publish_as(current.signing_key(), op).await {
        Ok(entry) => entry,
        Err(e) => {
            let _ = std::fs::remove_file(&new_path);
            return Err(e);
        }
    };
    if let Some(known) = fleets.fleets.get_mut(&name) {
        known.key = Some(new_path.clone());
    }
    fleets.save(&ctx.home)?;
    let gateways: Vec<String> = w.session.reached.iter().map(ToString::to_string).collect();
    if ctx.json {
        return print_json(&json!({
            "hash": entry.hash().to_string(),
            "op": "rotate-root",
            "old_root": current_key.to_string(),
            "new_root": new_root.to_string(),
            "new_key": new_path,
            "gateways": gateways,
        }));
    }
    println!(
        "fleet {name}'s root is now {new_root} ({}; sent to {} gateway(s))",
        entry.hash(),
        gateways.len()
    );
    ctx.note(&format!(
        "new root key saved in {} (keep it offline); the old one at {} is refused from now on: archive or destroy it",
        new_path.display(),
        old_path.display()
    ));
    Ok(())
}
