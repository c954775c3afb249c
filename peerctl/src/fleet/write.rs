//! The fleet commands that add entries to the log: `create` (genesis and the admin grant,
//! signed by the new fleet key) and the rest (signed by the client identity), each synced,
//! authored, checked and stored locally, then pushed to the gateways reached.

use std::path::PathBuf;

use peercompute_fleet::{
    FleetId, FleetState, Grant, Invite, JoinToken, MemberKey, Op, Role, SignedEntry,
    normalize_groups,
};
use peercompute_identity::Identity;
use serde_json::json;

use super::config::{Chosen, Fleets};
use super::local::{Local, fleets_dir, now};
use super::release::{self, ReleaseArgs};
use super::sync::Session;
use super::{Ctx, FleetAction, print_json};
use super::{rotate, stop};
use crate::exit::{CliError, Kind};

fn bad(message: String) -> CliError {
    CliError::new(Kind::BadRequest, message)
}

/// `fleet create NAME [--fleet-key PATH]`.
pub(super) async fn create(
    ctx: &Ctx,
    name: &str,
    fleet_key: Option<PathBuf>,
) -> Result<(), CliError> {
    peercompute_tunnel_proto::validate_name(name)
        .map_err(|e| bad(format!("fleet name `{name}`: {e}")))?;
    let mut fleets = Fleets::load(&ctx.home)?;
    if let Some(known) = fleets.fleets.get(name) {
        return Err(bad(format!(
            "a fleet named {name} exists already ({}); pick another name",
            known.id
        )));
    }
    let me = ctx.identity()?;
    let path = fleet_key.unwrap_or_else(|| fleets_dir(&ctx.home).join(format!("{name}.key")));
    let path = std::path::absolute(&path).unwrap_or(path);
    if path.exists() {
        return Err(bad(format!(
            "{} exists: a fleet key is never overwritten; choose another path with --fleet-key",
            path.display()
        )));
    }
    let key = Identity::generate().map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    key.save_file(&path)
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    let fleet = FleetId(key.public_key_bytes());
    let local = ctx.local()?;
    local
        .hub
        .hold(fleet)
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    let genesis = Op::Genesis {
        name: name.to_owned(),
    };
    local.write(fleet, key.signing_key(), genesis)?;
    let grant = Op::Grant(Grant {
        member: MemberKey(me.public_key_bytes()),
        role: Role::Admin,
        groups: Vec::new(),
        expires_at: None,
    });
    local.write(fleet, key.signing_key(), grant)?;
    let default = fleets.add(name, fleet, Some(path.clone()));
    fleets.save(&ctx.home)?;
    ctx.note(&format!(
        "created fleet {name}; fleet key saved in {} (keep it offline: daily work is signed with your identity {}, now its admin)",
        path.display(),
        me.peer_id()
    ));
    // The gateways get the genesis and the grant through the sync itself.
    let session =
        Session::open_with(&me, &ctx.gateways, &local, fleet, ctx.timeout, &ctx.lan).await?;
    report(ctx, &session, None);
    if ctx.json {
        return print_json(&json!({
            "name": name,
            "fleet_id": fleet.to_string(),
            "fleet_key": path,
            "default": default,
        }));
    }
    println!("{fleet}");
    Ok(())
}

/// One write in progress: the fleet synced with the gateways reached, its state, and who
/// signs.
pub(super) struct Writer<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) local: Local,
    pub(super) session: Session,
    pub(super) chosen: Chosen,
    me: Identity,
    pub(super) state: FleetState,
}

impl Writer<'_> {
    /// Authors `op` with the client identity, stores it locally, pushes it to the gateways
    /// reached, and says where it went.
    pub(super) async fn publish(&self, op: Op) -> Result<SignedEntry, CliError> {
        self.publish_as(self.me.signing_key(), op).await
    }

    /// [`Writer::publish`] signed by `key` (the fleet's root key for a root rotation).
    pub(super) async fn publish_as(
        &self,
        key: &ed25519_dalek::SigningKey,
        op: Op,
    ) -> Result<SignedEntry, CliError> {
        let (ctx, chosen) = (self.ctx, &self.chosen);
        let entry = self.local.write(chosen.id, key, op)?;
        let pushed = self.session.push(chosen.id, &entry).await;
        ctx.note(&format!(
            "entry {} written to fleet {} (local copy: {})",
            entry.hash().short(),
            chosen.name,
            self.local.dir_of(&chosen.id).display()
        ));
        report(ctx, &self.session, Some(pushed));
        Ok(entry)
    }

    pub(super) fn member(&self, arg: &str) -> Result<MemberKey, CliError> {
        resolve_member(&self.state, arg)
    }
}

/// Every other write: sync, author with the client identity, store, push.
pub(super) async fn entry(ctx: &Ctx, action: FleetAction) -> Result<(), CliError> {
    let chosen = Fleets::load(&ctx.home)?.choose(ctx.fleet_arg.as_deref())?;
    let me = ctx.identity()?;
    let local = ctx.local()?;
    let session =
        Session::open_with(&me, &ctx.gateways, &local, chosen.id, ctx.timeout, &ctx.lan).await?;
    ctx.remember(&chosen, &local)?;
    let state = local.state(&chosen.id)?;
    let w = Writer {
        ctx,
        local,
        session,
        chosen,
        me,
        state,
    };
    match action {
        FleetAction::Invite {
            groups,
            name_prefix,
            expires,
            uses,
            ..
        } => invite(&w, &groups, name_prefix, expires, uses).await,
        FleetAction::Enroll { peer, groups, name } => {
            let member: MemberKey = peer.parse().map_err(|e| bad(format!("{e}")))?;
            let groups = normalize_groups(&groups);
            let op = Op::Enroll {
                member,
                name,
                groups,
            };
            w.publish(op).await.map(drop)
        }
        FleetAction::SetGroups { member, groups } => {
            let member = w.member(&member)?;
            let groups = normalize_groups(&groups);
            w.publish(Op::SetGroups { member, groups }).await.map(drop)
        }
        FleetAction::Grant {
            member,
            role,
            groups,
            expires,
        } => {
            let op = Op::Grant(Grant {
                member: w.member(&member)?,
                role,
                groups: normalize_groups(&groups),
                expires_at: expires.map(|d| now().saturating_add(d.as_secs())),
            });
            w.publish(op).await.map(drop)
        }
        FleetAction::Ungrant { member } => {
            let member = w.member(&member)?;
            if !w.state.grants.contains_key(&member) {
                return Err(CliError::new(
                    Kind::NotFound,
                    format!("{member} holds no role (see `peerctl fleet members`)"),
                ));
            }
            w.publish(Op::Ungrant { member }).await.map(drop)
        }
        FleetAction::Release { release: args, .. } => publish_release(&w, args).await,
        FleetAction::Rollback { group, to } => {
            let op = release::rollback_op(&group, to, &w.state)?;
            w.publish(op).await.map(drop)
        }
        FleetAction::Estop {
            groups,
            reason,
            all,
            ..
        } => {
            let op = if all {
                Op::estop_everything(reason)
            } else {
                Op::estop(normalize_groups(&groups), reason)
            };
            stop::stop_or_resume(&w, op).await
        }
        FleetAction::Resume { groups, .. } => {
            let groups = normalize_groups(&groups);
            stop::stop_or_resume(&w, Op::Resume { groups }).await
        }
        FleetAction::Revoke { member, reason, .. } => stop::revoke(&w, &member, reason).await,
        FleetAction::RotateMember { token, .. } => rotate::rotate_member(&w, &token).await,
        FleetAction::RotateRoot { new_key, .. } => rotate::rotate_root(&w, new_key).await,
        FleetAction::Create { .. }
        | FleetAction::List { .. }
        | FleetAction::Members { .. }
        | FleetAction::Log { .. }
        | FleetAction::Logs { .. }
        | FleetAction::Status { .. }
        | FleetAction::Watch { .. }
        | FleetAction::Metrics { .. } => {
            unreachable!("dispatched by fleet::run before writes")
        }
    }
}

/// `fleet invite`: an invite entry naming a fresh key, and the token carrying its secret.
async fn invite(
    w: &Writer<'_>,
    groups: &[String],
    name_prefix: Option<String>,
    expires: std::time::Duration,
    uses: u32,
) -> Result<(), CliError> {
    let ctx = w.ctx;
    let invite_key = Identity::generate().map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    let expires_at = now().saturating_add(expires.as_secs());
    let groups = normalize_groups(groups);
    let op = Op::Invite(Invite {
        invite_key: MemberKey(invite_key.public_key_bytes()),
        groups: groups.clone(),
        name_prefix,
        expires_at,
        uses,
    });
    let entry = w.publish(op).await?;
    let bootstrap: Vec<String> = ctx
        .gateways
        .iter()
        .flat_map(|(gw, addrs)| addrs.iter().map(move |a| format!("{gw}@{a}")))
        .collect();
    if bootstrap.is_empty() {
        ctx.note("warning: the token names no gateway, so robots cannot fetch the fleet with it: add one (`peerctl gateways add PEERID@MULTIADDR`) and invite again");
    }
    let token = JoinToken {
        invite: entry.bytes().to_vec(),
        secret: invite_key.signing_key().to_bytes(),
        bootstrap,
    }
    .to_text();
    if ctx.json {
        return print_json(&json!({
            "token": token,
            "invite": entry.hash().to_string(),
            "groups": groups,
            "expires_at": expires_at,
            "uses": uses,
        }));
    }
    println!("{token}");
    Ok(())
}

/// `fleet release`: the image pinned (from a registry, or by its peer digest and then served
/// from here while the robots fetch it), the next sequence of the group, then published.
async fn publish_release(w: &Writer<'_>, mut args: ReleaseArgs) -> Result<(), CliError> {
    let pinned = release::pin_release_image(&args.image, &args.source).await?;
    if let Some(note) = &pinned.note {
        w.ctx.note(note);
    }
    args.image = pinned.image;
    let serve_for = args.source.serve_for;
    let group = args.group.trim().to_ascii_lowercase();
    // Serving starts (and the robots are reached) before the entry goes out, so a robot that
    // gets it finds the image's source connected.
    let serving = match pinned.served {
        Some(served) => Some(
            release::start_serving(
                &w.ctx.identity()?,
                w.session.node().cloned(),
                &reached_gateways(w),
                &w.state,
                &group,
                served,
                |line| w.ctx.note(line),
            )
            .await?,
        ),
        None => None,
    };
    let op = release::release_op(args, &w.state)?;
    if let Op::Release(r) = &op
        && let Some(note) = release::old_robots_note(&r.spec)
    {
        w.ctx.note(note);
    }
    let entry = w.publish(op).await?;
    let Op::Release(r) = &entry.entry().op else {
        return Ok(());
    };
    if w.ctx.json {
        let mut out = json!({
            "hash": entry.hash().to_string(),
            "group": r.group,
            "seq": r.seq,
            "version": r.version,
            "app": r.app(),
            "image": r.spec.image,
        });
        // Only when asked for, so a release without them prints what it always did.
        if !r.spec.volumes.is_empty() {
            out["volumes"] = json!(r.spec.volumes);
        }
        if !r.spec.devices.is_empty() {
            out["devices"] = json!(r.spec.devices);
        }
        if r.spec.volume_exclusive {
            out["volume_exclusive"] = json!(true);
        }
        print_json(&out)?;
    } else {
        println!("{} {} {}", r.version, r.app(), entry.hash());
    }
    if let Some(serving) = serving {
        serving
            .wait(serve_for, w.chosen.id, entry.hash(), |line| {
                w.ctx.note(line)
            })
            .await?;
    }
    Ok(())
}

/// The configured gateways this write reached (robots are dialled through them only).
fn reached_gateways(
    w: &Writer<'_>,
) -> Vec<(peercompute_p2p::PeerId, Vec<peercompute_p2p::Multiaddr>)> {
    w.ctx
        .gateways
        .iter()
        .filter(|(peer, _)| w.session.reached.contains(peer))
        .cloned()
        .collect()
}

/// A member named by peer id or by its name in the fleet.
pub(super) fn resolve_member(state: &FleetState, arg: &str) -> Result<MemberKey, CliError> {
    if let Ok(key) = arg.parse::<MemberKey>() {
        return Ok(key);
    }
    state
        .members
        .values()
        .find(|m| m.name == arg)
        .map(|m| m.key)
        .ok_or_else(|| {
            CliError::new(
                Kind::NotFound,
                format!(
                    "`{arg}` is neither a peer id (12D3KooW…) nor the name of a member of fleet {} (see `peerctl fleet members`)",
                    state.name
                ),
            )
        })
}

/// Says where the entries went: the gateways reached and what they did, or why none was.
fn report(ctx: &Ctx, session: &Session, pushed: Option<Vec<String>>) {
    for line in session.notes.iter().chain(pushed.iter().flatten()) {
        ctx.note(line);
    }
    for line in &session.failed {
        ctx.note(&format!("warning: {line}"));
    }
    if ctx.gateways.is_empty() {
        ctx.note("no gateway configured: what was written is kept in the local copy and goes out with the next fleet command that reaches one (add one with `peerctl gateways add PEERID@MULTIADDR`)");
    } else if session.reached.is_empty() {
        ctx.note("no gateway reached: what was written is kept in the local copy and goes out with the next fleet command that reaches one");
    }
}
