//! Dial and hole-punch bookkeeping, sans-IO: which [`Node::dial`](crate::Node::dial) calls
//! wait for what, and which path each connection is.
//!
//! [`DialBook`] never touches the swarm and never reads the clock: the event loop feeds it
//! what happened (a dial asked for, a connection up or closed, a dial failed, DCUtR's verdict,
//! the time) and carries out the [`DialAction`]s it returns, as quinn-proto does. The rules it
//! keeps are the ones three bugs taught (table tests at the bottom):
//! - a relayed connection answers a dial only after `hole_punch_wait`, or as soon as a direct
//!   connection appears — whichever side's dial made it (c006fc1: dcutr reports success only
//!   for our own dial, which may be a QUIC probe timeout late);
//! - once direct, the relayed connections are closed and the dial is answered only when they
//!   are gone, so no stream lands on one (76772f5);
//! - a dial asked for while that close is under way waits for it too (7df2846).
//!
//! A dial asked for while one is under way joins it, unless that one is older than
//! [`STALE_DIAL`]: then a second dial goes out beside it. A TCP dial sent while a peer was
//! unreachable lingers as long as the kernel retries its SYN (minutes, backing off), and a
//! peer back on the LAN was reached only at its next retry — 3-4.5 s after mDNS found it again
//! in the 60 s partition test, and it could be 30 s. Each dial is known by its connection id,
//! so only the failure of the last one under way fails the waiting calls.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use crate::path::{PathKind, PeerPath};

/// A dial under way for this long no longer holds back a new one of the same peer.
pub(crate) const STALE_DIAL: Duration = Duration::from_secs(2);

/// Names one waiting [`Node::dial`](crate::Node::dial) call; the event loop keeps the reply
/// channel under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ReplyId(pub(crate) u64);

/// What the event loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialAction {
    /// Ask the swarm to dial `peer` (with the addresses the command carried), even while
    /// another dial of it is under way; report the dial's connection id with
    /// [`DialBook::dial_started`], or the swarm's refusal with [`DialBook::dial_failed`].
    Dial(PeerId),
    /// Close this connection; report it with [`DialBook::closed`] if the swarm no longer
    /// knows it.
    Close(ConnectionId),
    /// Answer a waiting dial: `Err` carries the reason.
    Answer {
        reply: ReplyId,
        peer: PeerId,
        outcome: Result<(), String>,
    },
}

/// The dials of one peer under way and the calls waiting for them.
#[derive(Debug)]
struct Pending {
    /// When the last dial went out.
    since: Instant,
    dials: HashSet<ConnectionId>,
    waiting: Vec<ReplyId>,
}

#[derive(Debug, Clone)]
struct Conn {
    peer: PeerId,
    address: Multiaddr,
    kind: PathKind,
    rtt: Option<Duration>,
}

/// The dial and connection table of one node.
#[derive(Debug)]
pub(crate) struct DialBook {
    hole_punch_wait: Duration,
    /// Dials under way, answered by their outcome.
    pending: HashMap<PeerId, Pending>,
    /// Dials answered by a relayed connection, waiting for DCUtR until the deadline.
    awaiting_punch: HashMap<PeerId, (Instant, Vec<ReplyId>)>,
    /// Dials whose hole punch succeeded, waiting for the relayed connections being closed to
    /// be gone.
    closing_relayed: HashMap<PeerId, (HashSet<ConnectionId>, Vec<ReplyId>)>,
    conns: HashMap<ConnectionId, Conn>,
}

impl DialBook {
    pub(crate) fn new(hole_punch_wait: Duration) -> Self {
        Self {
            hole_punch_wait,
            pending: HashMap::new(),
            awaiting_punch: HashMap::new(),
            closing_relayed: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    /// Whether any connection to `peer` is up.
    pub(crate) fn is_connected(&self, peer: &PeerId) -> bool {
        self.conns.values().any(|c| c.peer == *peer)
    }

    /// When [`DialBook::tick`] next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.awaiting_punch.values().map(|(d, _)| *d).min()
    }

    /// `Node::dial(peer)` was called. `doubtful`: the connections up to `peer` failed their
    /// pings lately ([`Liveness::doubtful`](crate::liveness::Liveness::doubtful)), so they do
    /// not answer the dial: a new connection is dialled (the swarm must dial even though
    /// connected).
    pub(crate) fn dial_requested(
        &mut self,
        peer: PeerId,
        reply: ReplyId,
        doubtful: bool,
        now: Instant,
    ) -> Vec<DialAction> {
        if self.is_connected(&peer) && !doubtful {
            if let Some((_, waiting)) = self.awaiting_punch.get_mut(&peer) {
                waiting.push(reply);
            } else if let Some((_, waiting)) = self.closing_relayed.get_mut(&peer) {
                // Not before the relayed connection is gone: a stream opened now could land
                // on it.
                waiting.push(reply);
            } else {
                return vec![answer(reply, peer, Ok(()))];
            }
            return Vec::new();
        }
        if let Some(pending) = self.pending.get_mut(&peer) {
            // A dial of this peer is under way: its outcome answers this one too, unless it
            // is stale (see the module docs).
            pending.waiting.push(reply);
            if now.saturating_duration_since(pending.since) < STALE_DIAL {
                return Vec::new();
            }
            pending.since = now;
            return vec![DialAction::Dial(peer)];
        }
        self.pending.insert(
            peer,
            Pending {
                since: now,
                dials: HashSet::new(),
                waiting: vec![reply],
            },
        );
        vec![DialAction::Dial(peer)]
    }

    /// The swarm took the dial of `peer` asked for by [`DialAction::Dial`]: `connection`.
    pub(crate) fn dial_started(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(pending) = self.pending.get_mut(&peer) {
            pending.dials.insert(connection);
        }
    }

    /// A dial of `peer` failed: every address of dial `connection` failed, or the swarm
    /// refused to start one (`None`). The calls waiting fail when no other dial of theirs is
    /// under way. A failure of a dial that is not theirs (another behaviour's, or one that a
    /// connection already answered) is ignored; once a connection came up none wait (it
    /// answered them) unless they asked to replace doubtful connections.
    pub(crate) fn dial_failed(
        &mut self,
        peer: PeerId,
        connection: Option<ConnectionId>,
        reason: &str,
    ) -> Vec<DialAction> {
        let Some(pending) = self.pending.get_mut(&peer) else {
            return Vec::new();
        };
        if let Some(connection) = connection
            && !pending.dials.remove(&connection)
        {
            return Vec::new();
        }
        if !pending.dials.is_empty() {
            return Vec::new();
        }
        let waiting = self
            .pending
            .remove(&peer)
            .map(|p| p.waiting)
            .unwrap_or_default();
        answer_all(waiting, peer, &Err(reason.to_string()))
    }

    /// A connection to `peer` is up at `address` (the dialled one, or the peer's send-back
    /// address); `found_on_lan` when mDNS announced that address. Returns its kind.
    pub(crate) fn connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        address: Multiaddr,
        found_on_lan: bool,
        now: Instant,
    ) -> (PathKind, Vec<DialAction>) {
        // Relayed now, or hole punched already (both sides dial, and the relayed connection
        // may be closed by the time the second direct connection is up).
        let relayed_already = self
            .conns
            .values()
            .any(|c| c.peer == peer && matches!(c.kind, PathKind::Relayed | PathKind::HolePunched));
        let kind = if found_on_lan {
            PathKind::DirectLan
        } else {
            match PathKind::of_address(&address) {
                // A direct connection that appears while we are relayed to the peer comes
                // from hole punching (both sides dial at once, so there may be two). When the
                // peer's dial arrives first, it is used at once: dcutr reports only our own.
                PathKind::DirectLan | PathKind::DirectPublic if relayed_already => {
                    PathKind::HolePunched
                }
                other => other,
            }
        };
        self.conns.insert(
            connection,
            Conn {
                peer,
                address,
                kind,
                rtt: None,
            },
        );
        let mut actions = Vec::new();
        if kind == PathKind::HolePunched {
            actions.extend(self.leave_relay(peer));
        }
        let replies = self
            .pending
            .remove(&peer)
            .map(|p| p.waiting)
            .unwrap_or_default();
        if kind == PathKind::Relayed && !self.hole_punch_wait.is_zero() && !replies.is_empty() {
            let deadline = now + self.hole_punch_wait;
            self.awaiting_punch
                .entry(peer)
                .or_insert_with(|| (deadline, Vec::new()))
                .1
                .extend(replies);
        } else {
            actions.extend(answer_all(replies, peer, &Ok(())));
        }
        (kind, actions)
    }

    /// DCUtR upgraded the connection to `peer` (our own dial): `connection` is direct.
    pub(crate) fn punched(&mut self, peer: PeerId, connection: ConnectionId) -> Vec<DialAction> {
        if let Some(c) = self.conns.get_mut(&connection) {
            c.kind = PathKind::HolePunched;
        }
        self.leave_relay(peer)
    }

    /// A DCUtR attempt failed. When no direct connection is up, the waiting dials go on over
    /// the relay; returns whether that was the case (to log it).
    pub(crate) fn punch_failed(&mut self, peer: PeerId) -> (bool, Vec<DialAction>) {
        if self
            .conns
            .values()
            .any(|c| c.peer == peer && c.kind == PathKind::HolePunched)
        {
            // The peer's own dial reached us: we are direct already.
            return (false, Vec::new());
        }
        let waiting = self
            .awaiting_punch
            .remove(&peer)
            .map(|(_, r)| r)
            .unwrap_or_default();
        (true, answer_all(waiting, peer, &Ok(())))
    }

    /// A connection ended. Returns its peer and whether it was the last one to that peer.
    pub(crate) fn closed(
        &mut self,
        connection: ConnectionId,
    ) -> (Option<(PeerId, bool)>, Vec<DialAction>) {
        let Some(conn) = self.conns.remove(&connection) else {
            return (None, Vec::new());
        };
        let peer = conn.peer;
        let last = !self.is_connected(&peer);
        let mut actions = Vec::new();
        if let Some((closing, _)) = self.closing_relayed.get_mut(&peer) {
            closing.remove(&connection);
            if closing.is_empty()
                && let Some((_, replies)) = self.closing_relayed.remove(&peer)
            {
                let outcome = if last {
                    Err("the connection closed".to_string())
                } else {
                    Ok(())
                };
                actions.extend(answer_all(replies, peer, &outcome));
            }
        }
        if last && let Some((_, replies)) = self.awaiting_punch.remove(&peer) {
            actions.extend(answer_all(
                replies,
                peer,
                &Err("the connection closed".to_string()),
            ));
        }
        (Some((peer, last)), actions)
    }

    /// Time passed: dials whose hole-punch wait is over go on over the relay.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<DialAction> {
        let expired: Vec<PeerId> = self
            .awaiting_punch
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        let mut actions = Vec::new();
        for peer in expired {
            if let Some((_, replies)) = self.awaiting_punch.remove(&peer) {
                actions.extend(answer_all(replies, peer, &Ok(())));
            }
        }
        actions
    }

    /// Ping measured a connection's round trip.
    pub(crate) fn set_rtt(&mut self, connection: ConnectionId, rtt: Duration) {
        if let Some(c) = self.conns.get_mut(&connection) {
            c.rtt = Some(rtt);
        }
    }

    /// How `peer` is reached: a direct connection wins over a relayed one.
    pub(crate) fn path(&self, peer: &PeerId) -> Option<PeerPath> {
        self.conns
            .values()
            .filter(|c| c.peer == *peer)
            .min_by_key(|c| c.kind == PathKind::Relayed)
            .map(|c| PeerPath {
                address: c.address.clone(),
                kind: c.kind,
                rtt: c.rtt,
            })
    }

    /// A direct connection to `peer` replaced the relayed one: if dials wait for it, close the
    /// relayed connections (nothing was sent over them yet) and answer once they are gone.
    fn leave_relay(&mut self, peer: PeerId) -> Vec<DialAction> {
        let Some((_, replies)) = self.awaiting_punch.remove(&peer) else {
            return Vec::new();
        };
        let relayed: HashSet<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer == peer && c.kind == PathKind::Relayed)
            .map(|(id, _)| *id)
            .collect();
        if relayed.is_empty() {
            return answer_all(replies, peer, &Ok(()));
        }
        let actions = relayed.iter().map(|id| DialAction::Close(*id)).collect();
        let entry = self.closing_relayed.entry(peer).or_default();
        entry.0.extend(relayed);
        entry.1.extend(replies);
        actions
    }
}

fn answer(reply: ReplyId, peer: PeerId, outcome: Result<(), String>) -> DialAction {
    DialAction::Answer {
        reply,
        peer,
        outcome,
    }
}

fn answer_all(
    replies: Vec<ReplyId>,
    peer: PeerId,
    outcome: &Result<(), String>,
) -> Vec<DialAction> {
    replies
        .into_iter()
        .map(|r| answer(r, peer, outcome.clone()))
        .collect()
}

#[cfg(test)]
#[path = "dialing_tests.rs"]
mod tests;
