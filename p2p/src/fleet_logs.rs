//! Answering `LogsRequest` on a robot: the asker's authority is checked against the robot's
//! own verified copy of the fleet log (its peer id carries its key; `FleetState::may_view`),
//! then the robot's [`LogSource`] reads the group's container. A node without a source (the
//! gateway, a client) answers that it is not a robot.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::PeerId;
use peercompute_fleet::{FleetId, FleetMessage, LogsQuery, MemberKey};

use crate::fleet_hub::{FleetHub, unix_now};

/// How long a robot's source may take to read the logs (inside the exchange's timeout).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The lines of one answer, oldest first, and whether a limit left some out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogLines {
    pub lines: Vec<String>,
    pub truncated: bool,
}

/// Reads a fleet group's container logs on a robot; `Err` is the reason the asker reads.
pub type LogSource =
    Arc<dyn Fn(FleetId, LogsQuery) -> BoxFuture<'static, Result<LogLines, String>> + Send + Sync>;

/// The answer to a `LogsRequest` from `peer`: `Logs`, or `Error` saying why not.
pub(crate) async fn answer_logs(
    hub: &FleetHub,
    peer: PeerId,
    fleet: FleetId,
    query: LogsQuery,
) -> FleetMessage {
    match read_logs(hub, peer, fleet, query).await {
        Ok(LogLines { lines, truncated }) => FleetMessage::Logs { lines, truncated },
        Err(message) => FleetMessage::Error { message },
    }
}

async fn read_logs(
    hub: &FleetHub,
    peer: PeerId,
    fleet: FleetId,
    query: LogsQuery,
) -> Result<LogLines, String> {
    let Some(source) = hub.log_source() else {
        return Err(
            "not a robot: this node runs no fleet containers (logs are asked of the robots)"
                .to_owned(),
        );
    };
    query.check()?;
    let who = MemberKey::from_peer_id(&peer)
        .ok_or_else(|| format!("{peer} is not an Ed25519 peer id, so it is no fleet member"))?;
    let state = hub
        .with_log(&fleet, |log| log.state().cloned())
        .flatten()
        .ok_or_else(|| format!("fleet {fleet} is not held by this robot"))?;
    state
        .may_view(&who, &query.group, unix_now())
        .map_err(|refusal| {
            format!(
                "refused: may not read the logs of group {}: {refusal}",
                query.group
            )
        })?;
    tokio::time::timeout(SOURCE_TIMEOUT, source(fleet, query))
        .await
        .map_err(|_| format!("reading the container logs took over {SOURCE_TIMEOUT:?}"))?
}
