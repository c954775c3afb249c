//! The asking side of the fleet exchange: anti-entropy with one peer, pushes, forwarding of
//! new entries, robot statuses, and a robot's container logs.

use std::sync::Arc;

use libp2p::PeerId;
use peercompute_fleet::{
    FleetId, FleetLog, FleetMessage, LogsQuery, MAX_ENTRIES_PER_MESSAGE, PushResult, SignedStatus,
};
use tokio::sync::broadcast;
use tracing::{debug, info};

use crate::fleet::{FleetStream, fleet_protocol};
use crate::fleet_hub::{
    EXCHANGE_TIMEOUT, FleetHub, HubError, LogLines, MAX_PULL_BYTES, decode_entries, send_pages,
};
use crate::node::Node;

/// What one anti-entropy exchange did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Entries we received and stored.
    pub received: usize,
    /// Entries we sent that the peer stored.
    pub sent: usize,
    /// Entries refused (either side), with reasons.
    pub refused: Vec<String>,
}

async fn open(node: &Node, peer: PeerId) -> Result<FleetStream, HubError> {
    let mut control = node.control();
    let stream = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        control.open_stream(peer, fleet_protocol()),
    )
    .await
    .map_err(|_| HubError::Timeout { peer })?
    .map_err(|e| HubError::Open {
        peer,
        reason: e.to_string(),
    })?;
    Ok(FleetStream::new(stream))
}

/// Anti-entropy with `peer` for `fleet`, both ways (the peer must already be reachable).
pub async fn sync_with(
    node: &Node,
    peer: PeerId,
    hub: &FleetHub,
    fleet: FleetId,
) -> Result<SyncReport, HubError> {
    let exchange = async {
        let mut stream = open(node, peer).await?;
        let io = |source| HubError::Stream { peer, source };
        let heads = hub.heads(&fleet);
        stream
            .write(&FleetMessage::Pull { fleet, heads })
            .await
            .map_err(io)?;
        let mut report = SyncReport::default();
        let first = stream.read().await.map_err(io)?;
        if let Some(FleetMessage::Error { message }) = first {
            return Err(HubError::Remote { peer, message });
        }
        let mut received = Vec::new();
        let mut bytes = 0usize;
        let mut next = first;
        loop {
            match next {
                Some(FleetMessage::Entries { entries, more }) => {
                    bytes += entries.iter().map(Vec::len).sum::<usize>();
                    if bytes > MAX_PULL_BYTES {
                        return Err(HubError::Unexpected {
                            peer,
                            what: "more than 64 MiB of entries in one exchange".into(),
                        });
                    }
                    received.extend(entries);
                    if !more {
                        break;
                    }
                }
                other => {
                    return Err(HubError::Unexpected {
                        peer,
                        what: format!("{other:?}"),
                    });
                }
            }
            next = stream.read().await.map_err(io)?;
        }
        let (ok, bad) = decode_entries(&received);
        for r in bad.into_iter().chain(hub.insert(fleet, ok, Some(peer))) {
            match r {
                PushResult::Stored(_) => report.received += 1,
                PushResult::Duplicate(_) => {}
                PushResult::Refused { reason } => report.refused.push(reason),
            }
        }
        match stream.read().await.map_err(io)? {
            Some(FleetMessage::Pull { heads, .. }) => {
                let missing = hub.missing_for(&fleet, &heads).unwrap_or_default();
                send_pages(&mut stream, missing).await.map_err(io)?;
            }
            other => {
                return Err(HubError::Unexpected {
                    peer,
                    what: format!("{other:?}"),
                });
            }
        }
        if let Some(FleetMessage::Ack { results }) = stream.read().await.map_err(io)? {
            for r in results {
                match r {
                    PushResult::Stored(_) => report.sent += 1,
                    PushResult::Duplicate(_) => {}
                    PushResult::Refused { reason } => report.refused.push(reason),
                }
            }
        }
        stream.close().await;
        Ok(report)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| HubError::Timeout { peer })?
}

/// Sends `entries` (wire bytes, canonical order) of `fleet` to `peer`; its verdict on each.
pub async fn push_to(
    node: &Node,
    peer: PeerId,
    fleet: FleetId,
    entries: Vec<Vec<u8>>,
) -> Result<Vec<PushResult>, HubError> {
    let exchange = async {
        let mut stream = open(node, peer).await?;
        let io = |source| HubError::Stream { peer, source };
        let mut results = Vec::new();
        for page in entries.chunks(MAX_ENTRIES_PER_MESSAGE) {
            let push = FleetMessage::Push {
                fleet,
                entries: page.to_vec(),
            };
            stream.write(&push).await.map_err(io)?;
            match stream.read().await.map_err(io)? {
                Some(FleetMessage::Ack { results: r }) => results.extend(r),
                Some(FleetMessage::Error { message }) => {
                    return Err(HubError::Remote { peer, message });
                }
                other => {
                    return Err(HubError::Unexpected {
                        peer,
                        what: format!("{other:?}"),
                    });
                }
            }
        }
        stream.close().await;
        Ok(results)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| HubError::Timeout { peer })?
}

/// Sends a signed status to `peer` (a gateway that collects them).
pub async fn send_status(node: &Node, peer: PeerId, status: SignedStatus) -> Result<(), HubError> {
    let exchange = async {
        let mut stream = open(node, peer).await?;
        let io = |source| HubError::Stream { peer, source };
        stream
            .write(&FleetMessage::Status(status))
            .await
            .map_err(io)?;
        let _ = stream.read().await.map_err(io)?;
        stream.close().await;
        Ok(())
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| HubError::Timeout { peer })?
}

/// Asks `peer` for the statuses it collected for `fleet`.
pub async fn request_statuses(
    node: &Node,
    peer: PeerId,
    fleet: FleetId,
) -> Result<Vec<SignedStatus>, HubError> {
    match ask_once(node, peer, FleetMessage::StatusRequest { fleet }).await? {
        FleetMessage::Statuses { statuses } => {
            Ok(statuses.into_iter().filter(SignedStatus::verify).collect())
        }
        other => Err(unexpected(peer, other)),
    }
}

/// Asks the robot `peer` for the container logs of its app for `query.group` (the peer must
/// already be reachable; the robot checks our role). `HubError::Remote` carries a refusal.
pub async fn request_logs(
    node: &Node,
    peer: PeerId,
    fleet: FleetId,
    query: LogsQuery,
) -> Result<LogLines, HubError> {
    match ask_once(node, peer, FleetMessage::LogsRequest { fleet, query }).await? {
        FleetMessage::Logs { lines, truncated } => Ok(LogLines { lines, truncated }),
        other => Err(unexpected(peer, other)),
    }
}

/// One request, one answer, within [`EXCHANGE_TIMEOUT`]; an `Error` answer is
/// [`HubError::Remote`].
async fn ask_once(
    node: &Node,
    peer: PeerId,
    request: FleetMessage,
) -> Result<FleetMessage, HubError> {
    let exchange = async {
        let mut stream = open(node, peer).await?;
        let io = |source| HubError::Stream { peer, source };
        stream.write(&request).await.map_err(io)?;
        let answer = stream.read().await.map_err(io)?;
        stream.close().await;
        match answer {
            Some(FleetMessage::Error { message }) => Err(HubError::Remote { peer, message }),
            Some(answer) => Ok(answer),
            None => Err(HubError::Unexpected {
                peer,
                what: "the stream closed without an answer".to_owned(),
            }),
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| HubError::Timeout { peer })?
}

fn unexpected(peer: PeerId, message: FleetMessage) -> HubError {
    HubError::Unexpected {
        peer,
        what: format!("{message:?}"),
    }
}

/// Who new entries of a fleet are pushed to.
pub type ForwardTargets = Arc<dyn Fn(&FleetId, &FleetLog) -> Vec<PeerId> + Send + Sync>;

/// Which of the targets [`forward_changes`] pushes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every target, dialled when not connected (the gateway: robots keep a connection and a
    /// relay slot there).
    Dial,
    /// Only the targets connected now (a robot: the members it already talks to, on its LAN
    /// say; the gateway reaches the others).
    Connected,
}

/// Pushes every new entry of a fleet to `targets(fleet, log)` but the peer it came from (the
/// gateway: every member robot; a robot: the members connected to it, [`Reach::Connected`]).
/// An entry that is not new to a receiver is not forwarded again, so pushes end. Runs until
/// the hub is dropped.
pub async fn forward_changes(node: Node, hub: FleetHub, targets: ForwardTargets, reach: Reach) {
    let mut changes = hub.subscribe();
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                info!("fleet forwarder lagged by {n} changes; members catch up on reconnect");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some((peers, bytes)) = hub.with_log(&change.fleet, |log| {
            let bytes: Vec<Vec<u8>> = change
                .entries
                .iter()
                .filter_map(|h| log.get(h).map(|e| e.bytes().to_vec()))
                .collect();
            (targets(&change.fleet, log), bytes)
        }) else {
            continue;
        };
        for peer in peers.into_iter().filter(|p| Some(*p) != change.from) {
            let (node, bytes, fleet) = (node.clone(), bytes.clone(), change.fleet);
            tokio::spawn(async move {
                if reach == Reach::Connected && node.path(peer).await.is_none() {
                    return;
                }
                if let Err(e) = push_to(&node, peer, fleet, bytes).await {
                    debug!(%peer, "forwarding fleet entries failed: {e}");
                }
            });
        }
    }
}
