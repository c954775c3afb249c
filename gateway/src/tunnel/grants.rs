//! `RegisterGranted` (protocol version 2): a provider serves a name another key owns, as that
//! owner's signed [`NameGrant`] allows. The tunnel joins the name's route set beside the
//! owner's; it never becomes the owner, so the name's record is not touched.
//!
//! Checks, in order: the grant itself (this gateway's domain, the name, the tunnel's peer as
//! grantee, not expired, at most 90 days, the owner's signature), then that its owner is the
//! name's recorded owner, then the operator's release and the per-provider name limit.

use std::time::{SystemTime, UNIX_EPOCH};

use peercompute_tunnel_proto::{ControlMessage, NameGrant, RefuseCode};

use super::{OPERATOR_RELEASE, admit, refusal, within_name_limit};
use crate::state::Shared;
use crate::tunnels::TunnelInfo;

/// Handles `RegisterGranted { name, grant }` from tunnel `info`.
pub(super) fn register_granted(
    shared: &Shared,
    info: &TunnelInfo,
    name: &str,
    grant: &NameGrant,
) -> ControlMessage {
    let peer = info.peer;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let refused = |code, reason| refusal(shared, &peer, name, code, reason);
    if let Err(e) = grant.verify(&shared.config.domain, name, &peer, now) {
        return refused(RefuseCode::NameOwned, format!("grant refused: {e}"));
    }
    match shared.names.owner(name) {
        Some(owner) if owner == grant.owner.to_string() => {}
        Some(owner) => {
            return refused(
                RefuseCode::NameOwned,
                format!(
                    "grant refused: it is signed by {}, but {name} belongs to {owner}",
                    grant.owner
                ),
            );
        }
        None => {
            return refused(
                RefuseCode::TryLater,
                format!(
                    "grant refused for now: {name} has no owner on this gateway yet; its owner \
                     {} must register it first",
                    grant.owner
                ),
            );
        }
    }
    if shared.released_from(name, &grant.owner) {
        return refused(OPERATOR_RELEASE, "released by the gateway operator".into());
    }
    if let Err(reason) = within_name_limit(shared, info, name) {
        return refused(RefuseCode::TooManyNames, reason);
    }
    admit(shared, info, name)
}
