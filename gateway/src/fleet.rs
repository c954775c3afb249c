//! The gateway as every fleet's always-on member without keys: it holds the logs of the
//! fleets that use it (`<state dir>/fleets`), verifies every entry exactly as a robot does —
//! so it stores and forwards, and can neither forge nor alter an entry — pushes each new
//! entry at once to the fleet's robots, and keeps the latest signed status of each robot for
//! `peerctl fleet status`. A key a fleet revokes loses its tunnel, relay slot and names here
//! when it took part in that fleet (`fleet_follow`).

use std::sync::Arc;

use peercompute_p2p::fleet_hub::{self, FleetHub, ForwardTargets, HubPolicy, Reach};
use peercompute_p2p::{Node, PeerId};
use tracing::{info, warn};

use crate::GatewayError;
use crate::state::Shared;

/// Most fleets one gateway holds.
const MAX_FLEETS: usize = 1000;
/// Most entries kept per fleet.
const MAX_ENTRIES: usize = 100_000;

/// Opens the fleet logs and starts serving and forwarding them on `node`, and following their
/// revocations (`fleet_follow`). Returns the hub (for the admin API's fleet view) and the
/// tasks.
pub(crate) fn start(
    shared: &Arc<Shared>,
    node: &Node,
) -> Result<(FleetHub, Vec<tokio::task::JoinHandle<()>>), GatewayError> {
    let state_dir = &shared.config.state_dir;
    let policy = HubPolicy {
        // Entries are verified one by one and streams are bounded: any peer may offer them.
        admit: Arc::new(|_| true),
        accept_new_fleets: true,
        max_fleets: MAX_FLEETS,
        max_entries: MAX_ENTRIES,
    };
    let (hub, reports) = FleetHub::open(&state_dir.join("fleets"), policy)
        .map_err(|e| GatewayError::P2p(format!("cannot open the fleet logs: {e}")))?;
    for (fleet, report) in reports {
        for bad in report.bad {
            warn!(%fleet, file = %bad.file, "fleet log entry skipped: {}", bad.reason);
        }
    }
    info!(fleets = hub.fleet_ids().len(), "fleet logs ready");
    let robots: ForwardTargets = Arc::new(|_, log| {
        log.state()
            .map(|s| {
                s.members
                    .keys()
                    .filter_map(|m| m.peer_id())
                    .collect::<Vec<PeerId>>()
            })
            .unwrap_or_default()
    });
    let tasks = vec![
        tokio::spawn(fleet_hub::serve(node.clone(), hub.clone())),
        tokio::spawn(fleet_hub::forward_changes(
            node.clone(),
            hub.clone(),
            robots,
            Reach::Dial,
        )),
        tokio::spawn(crate::fleet_follow::follow(
            hub.clone(),
            shared.clone(),
            node.clone(),
            state_dir.join("fleets"),
        )),
    ];
    Ok((hub, tasks))
}
