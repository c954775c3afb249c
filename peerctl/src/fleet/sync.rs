//! Talking to the gateways (`peerctl gateways`): they are the fleet's always-on
//! store-and-forward members. Before a write, the local copy is brought in step with each
//! reachable gateway (anti-entropy both ways: robots' joins and other members' entries come
//! back, entries written offline go out); after it, the new entry is pushed. A gateway that
//! cannot be reached is reported, never fatal: the entry stays in the local copy and goes out
//! with the next command that reaches one.

use std::time::Duration;

use peercompute_fleet::{FleetId, PushResult, SignedEntry, SignedStatus};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{push_to, request_statuses, sync_with};
use peercompute_p2p::{Multiaddr, Node, PeerId};

use crate::client::{dial_gateway, start_bare_node};
use crate::exit::CliError;
use crate::places::Places;

use super::local::Local;

/// The gateways this client knows, as (peer id, addresses).
pub(crate) fn configured(places: &Places) -> Vec<(PeerId, Vec<Multiaddr>)> {
    places
        .gateways()
        .iter()
        .filter_map(crate::places::Gateway::parsed)
        .collect()
}

/// Gateways reached for one command, with the node that reached them.
#[derive(Debug)]
pub(crate) struct Session {
    node: Option<Node>,
    /// Reached gateways.
    pub(crate) reached: Vec<PeerId>,
    /// One line per gateway that could not be used.
    pub(crate) failed: Vec<String>,
    /// One line per exchange that brought or sent entries.
    pub(crate) notes: Vec<String>,
}

impl Session {
    /// No gateway: everything stays local.
    pub(crate) fn offline() -> Self {
        Self {
            node: None,
            reached: Vec::new(),
            failed: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Dials every gateway within `timeout` and syncs `fleet` with each one reached.
    pub(crate) async fn open(
        identity: &Identity,
        gateways: &[(PeerId, Vec<Multiaddr>)],
        local: &Local,
        fleet: FleetId,
        timeout: Duration,
    ) -> Result<Self, CliError> {
        let mut session = Self::offline();
        if gateways.is_empty() {
            return Ok(session);
        }
        let node = start_bare_node(identity).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        for (gw, addrs) in gateways {
            if let Err(why) = dial_gateway(&node, *gw, addrs, deadline).await {
                session.failed.push(why);
                continue;
            }
            match sync_with(&node, *gw, &local.hub, fleet).await {
                Ok(report) => {
                    if report.received + report.sent > 0 {
                        session.notes.push(format!(
                            "gateway {gw}: {} entr{} received, {} sent",
                            report.received,
                            plural(report.received),
                            report.sent
                        ));
                    }
                    for reason in report.refused {
                        session
                            .notes
                            .push(format!("gateway {gw}: an entry was refused: {reason}"));
                    }
                    session.reached.push(*gw);
                }
                Err(e) => session.failed.push(format!("gateway {gw}: {e}")),
            }
        }
        session.node = Some(node);
        Ok(session)
    }

    /// Pushes `entry` to every gateway reached; one line per gateway saying what happened.
    pub(crate) async fn push(&self, fleet: FleetId, entry: &SignedEntry) -> Vec<String> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        for gw in &self.reached {
            let bytes = vec![entry.bytes().to_vec()];
            let line = match push_to(node, *gw, fleet, bytes).await {
                Ok(results) => match results.first() {
                    Some(PushResult::Stored(_)) => format!("sent to gateway {gw}"),
                    Some(PushResult::Duplicate(_)) => format!("gateway {gw} already had it"),
                    Some(PushResult::Refused { reason }) => {
                        format!("gateway {gw} refused it: {reason}")
                    }
                    None => format!("gateway {gw} did not answer for it"),
                },
                Err(e) => format!("cannot send it to gateway {gw}: {e}"),
            };
            lines.push(line);
        }
        lines
    }

    /// The statuses every reached gateway holds for `fleet`, the newest per robot.
    pub(crate) async fn statuses(&mut self, fleet: FleetId) -> Vec<SignedStatus> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        let mut all: Vec<SignedStatus> = Vec::new();
        for gw in &self.reached {
            match request_statuses(node, *gw, fleet).await {
                Ok(statuses) => all.extend(statuses),
                Err(e) => self.failed.push(format!("gateway {gw}: {e}")),
            }
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.report.at_ms));
        let mut seen = std::collections::BTreeSet::new();
        all.retain(|s| seen.insert(s.report.robot));
        all
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}
