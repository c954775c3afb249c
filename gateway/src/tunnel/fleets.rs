//! `RegisterFleet` (protocol version 3): a fleet's robot serves its group's app name
//! `<app>.<domain>` beside the group's other robots. The fleet log this gateway holds decides
//! ([`authorise`]); the name is claimed for the fleet ([`fleet_owner`]) on first use, so a
//! provider key that owns the name already gets `NameOwned`, and the tunnel joins the name's
//! route set. Checks, in order: the fleet log (member, group, current release's app, no
//! e-stop), the operator's release, the per-provider name limit, then the claim.

use peercompute_fleet::FleetId;
use peercompute_tunnel_proto::{ControlMessage, FLEET_ID_LEN, RefuseCode};

use super::{OPERATOR_RELEASE, admit, claim_refusal, refusal, within_name_limit};
use crate::fleet_names::{Denied, FleetClaim, authorise, fleet_owner};
use crate::state::Shared;
use crate::tunnels::TunnelInfo;

/// Handles `RegisterFleet { name, fleet, group }` from tunnel `info`.
pub(super) async fn register_fleet(
    shared: &Shared,
    info: &TunnelInfo,
    name: &str,
    fleet: [u8; FLEET_ID_LEN],
    group: &str,
) -> ControlMessage {
    let peer = info.peer;
    let fleet = FleetId(fleet);
    let refuse = |code, reason| refusal(shared, &peer, name, code, reason);
    let verdict = match shared.fleet.get() {
        Some(hub) => hub
            .with_log(&fleet, |log| authorise(log.state(), &peer, name, group))
            .unwrap_or(Err(Denied::NoLog)),
        None => Err(Denied::NoLog),
    };
    if let Err(denied) = verdict {
        let reason = denied.explain(&fleet, group, &peer, name);
        return refuse(RefuseCode::TryLater, reason);
    }
    let owner = fleet_owner(&fleet);
    if shared.released_from_owner(name, &owner) {
        return refuse(
            OPERATOR_RELEASE,
            "released by the gateway operator; the fleet may not take it back".into(),
        );
    }
    if let Err(reason) = within_name_limit(shared, info, name) {
        return refuse(RefuseCode::TooManyNames, reason);
    }
    if let Err(e) = shared.names.claim_for(name, &owner).await {
        let (code, reason) = claim_refusal(shared, e);
        return refuse(code, reason);
    }
    let reply = admit(shared, info, name);
    info.hold_fleet_name(
        name,
        FleetClaim {
            fleet,
            group: group.to_owned(),
        },
    );
    reply
}
