//! Which peers a robot keeps its fleet logs in step with besides the gateway: the members and
//! grantees of the fleets it holds that are connected to it (found on the LAN by mDNS, or an
//! admin's peerctl), taken in turn for the periodic anti-entropy: [`LanMembers`] is the pure
//! bookkeeping, [`LanSync`] the task that dials and syncs. It is a task of its own, beside the
//! gateway rounds: a gateway round waits up to its dial timeout when the WAN is down, and a
//! fleet peer back on the LAN must be synced with at once meanwhile (measured before the
//! split: a robot back from a 60 s partition waited for a gateway round to time out, > 6 s).
//! The `Syncer` methods below are the LAN steps of joining.

use std::collections::BTreeSet;
use std::time::Duration;

use peercompute_fleet::{FleetId, MemberKey};
use peercompute_p2p::fleet_hub::{FleetHub, sync_with};
use peercompute_p2p::{Multiaddr, Node, PeerEvent, PeerId};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::{LAN_SYNC_EVERY, Syncer};

/// A LAN dial answers in milliseconds, or the peer is gone.
const LAN_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Most LAN peers a robot that is joining fetches the log from in one round.
const MAX_LAN_JOIN_PEERS: usize = 4;
/// While joining: how often the LAN is looked at again (mDNS may not have answered yet), and
/// for how long at most while the gateway's dial is pending.
const LAN_JOIN_POLL: Duration = Duration::from_millis(200);
const LAN_JOIN_WAIT: Duration = Duration::from_secs(10);
/// While joining: the longest a LAN peer's dial and log exchange may take, and how long the
/// other peers still get once one synced.
const LAN_JOIN_EXCHANGE: Duration = Duration::from_secs(5);
const LAN_JOIN_GRACE: Duration = Duration::from_millis(300);

/// The held fleets `peer` is a member or grantee of (and not revoked in).
pub(crate) fn shared_fleets(hub: &FleetHub, peer: &PeerId) -> Vec<FleetId> {
    let Some(key) = MemberKey::from_peer_id(peer) else {
        return Vec::new();
    };
    hub.fleet_ids()
        .into_iter()
        .filter(|fleet| {
            hub.with_log(fleet, |log| {
                log.state().is_some_and(|s| {
                    (s.members.contains_key(&key) || s.grants.contains_key(&key))
                        && !s.revoked.contains_key(&key)
                })
            })
            .unwrap_or(false)
        })
        .collect()
}

/// The fleet peers connected now, and whose turn the next periodic sync is.
#[derive(Debug, Default)]
pub(crate) struct LanMembers {
    connected: BTreeSet<PeerId>,
    turn: usize,
}

impl LanMembers {
    /// A connection to a fleet peer is up; true the first time since it was last
    /// [`disconnected`](Self::disconnected) (sync with it now).
    pub(crate) fn connected(&mut self, peer: PeerId) -> bool {
        self.connected.insert(peer)
    }

    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
    }

    pub(crate) fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains(peer)
    }

    /// The peers counted as connected (to check them after missed events).
    pub(crate) fn peers(&self) -> Vec<PeerId> {
        self.connected.iter().copied().collect()
    }

    /// The next connected peer in turn (each gets its turn before any gets a second).
    pub(crate) fn next(&mut self) -> Option<PeerId> {
        if self.connected.is_empty() {
            return None;
        }
        let peer = self.connected.iter().nth(self.turn % self.connected.len());
        self.turn = self.turn.wrapping_add(1);
        peer.copied()
    }
}

/// The LAN anti-entropy task: dials fleet peers mDNS finds, syncs with each as soon as it
/// connects, and with one connected fleet peer in turn every [`LAN_SYNC_EVERY`]. Each sync
/// runs as a task of its own (one per peer, [`MAX_LAN_SYNCS`] at most): an exchange with a
/// peer that vanished waits for its timeout (15 s) and must not hold back the sync with a
/// peer that just came back.
pub(super) struct LanSync {
    node: Node,
    hub: FleetHub,
    /// Rounds that synced every held fleet with some peer (shared with the gateway rounds).
    synced: watch::Sender<u32>,
    lan: LanMembers,
    in_flight: JoinSet<PeerId>,
    /// The peers a sync task runs for, and those to sync with again when it ends (a fresh
    /// connection came meanwhile).
    syncing: BTreeSet<PeerId>,
    again: BTreeSet<PeerId>,
}

/// Most LAN syncs under way at once.
const MAX_LAN_SYNCS: usize = 8;

impl LanSync {
    pub(super) fn new(node: Node, hub: FleetHub, synced: watch::Sender<u32>) -> Self {
        Self {
            node,
            hub,
            synced,
            lan: LanMembers::default(),
            in_flight: JoinSet::new(),
            syncing: BTreeSet::new(),
            again: BTreeSet::new(),
        }
    }

    /// Runs until `stop` turns true.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut events = self.node.peer_events();
        let mut lan_tick = tokio::time::interval(LAN_SYNC_EVERY);
        lan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                event = events.recv() => {
                    tokio::select! {
                        () = self.on_peer_event(event) => {}
                        _ = stop.changed() => return,
                    }
                }
                _ = lan_tick.tick() => {
                    tokio::select! {
                        () = self.lan_round() => {}
                        _ = stop.changed() => return,
                    }
                }
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(peer) = done {
                        self.syncing.remove(&peer);
                        if self.again.remove(&peer) {
                            self.sync_peer(peer);
                        }
                    } else {
                        // A sync task panicked: forget every peer whose task is gone.
                        self.syncing.clear();
                        self.again.clear();
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// A fleet peer found on the LAN is dialled; one that connects is synced with at once
    /// when the connection is its first, or replaces connections whose pings failed (`fresh`:
    /// it may have been away, missing entries), or comes after a disconnection.
    async fn on_peer_event(&mut self, event: Result<PeerEvent, broadcast::error::RecvError>) {
        match event {
            Ok(PeerEvent::Lan { peer, addrs }) => self.dial_fleet_peer(peer, addrs),
            Ok(PeerEvent::Connected { peer, fresh, .. }) => {
                if !shared_fleets(&self.hub, &peer).is_empty() {
                    let new = self.lan.connected(peer);
                    if new || fresh {
                        debug!(%peer, new, fresh, "fleet peer connected: syncing now");
                        self.sync_peer(peer);
                    }
                }
            }
            Ok(PeerEvent::Disconnected { peer }) => self.lan.disconnected(&peer),
            // Missed events: a missed disconnection would keep a gone peer counted as
            // connected (never dialled again); the LAN table has every peer found, and the
            // next round dials those not connected.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                debug!("fleet sync: {n} peer events missed; looking at the LAN again");
                for peer in self.lan.peers() {
                    if self.node.path(peer).await.is_none() {
                        self.lan.disconnected(&peer);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    /// Dials `peer` in the background when it is a fleet peer not connected yet; its
    /// `Connected` event brings the sync.
    fn dial_fleet_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.lan.is_connected(&peer) || shared_fleets(&self.hub, &peer).is_empty() {
            return;
        }
        let node = self.node.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(LAN_DIAL_TIMEOUT, node.dial(peer, addrs)).await {
                Ok(Ok(())) => debug!(%peer, "fleet peer on the LAN reached"),
                Ok(Err(e)) => debug!(%peer, "cannot reach a fleet peer on the LAN: {e}"),
                Err(_) => debug!(%peer, "a fleet peer on the LAN did not answer in time"),
            }
        });
    }

    /// The periodic LAN step: dial fleet peers mDNS knows that are not connected (a robot
    /// enrolled since it was announced), then sync with one connected fleet peer in turn.
    async fn lan_round(&mut self) {
        for (peer, addrs) in self.node.lan_peers().await {
            if self.lan.is_connected(&peer) || shared_fleets(&self.hub, &peer).is_empty() {
                continue;
            }
            if self.node.path(peer).await.is_some() {
                // Connected before it was a fleet peer (its enrolment came later).
                self.lan.connected(peer);
            } else {
                self.dial_fleet_peer(peer, addrs);
            }
        }
        if let Some(peer) = self.lan.next() {
            self.sync_peer(peer);
        }
    }

    /// Anti-entropy with a fleet peer for every held fleet it shares; a sync of them all
    /// counts as a synced round when that is every held fleet. Started in the background; a
    /// peer whose sync is under way gets another once it ends.
    fn sync_peer(&mut self, peer: PeerId) {
        if self.syncing.contains(&peer) {
            self.again.insert(peer);
            return;
        }
        if self.syncing.len() >= MAX_LAN_SYNCS {
            debug!(%peer, "fleet sync: {MAX_LAN_SYNCS} LAN syncs under way; this one waits for the next round");
            return;
        }
        self.syncing.insert(peer);
        let (node, hub, synced) = (self.node.clone(), self.hub.clone(), self.synced.clone());
        self.in_flight.spawn(async move {
            sync_peer(&node, &hub, &synced, peer).await;
            peer
        });
    }
}

/// See [`LanSync::sync_peer`].
async fn sync_peer(node: &Node, hub: &FleetHub, synced: &watch::Sender<u32>, peer: PeerId) {
    let fleets = shared_fleets(hub, &peer);
    let mut all = !fleets.is_empty();
    for fleet in &fleets {
        match sync_with(node, peer, hub, *fleet).await {
            Ok(report) => {
                if report.received + report.sent > 0 {
                    info!(%fleet, %peer, received = report.received, sent = report.sent, "fleet log synced with a fleet peer");
                }
            }
            Err(e) => {
                debug!(%fleet, %peer, "fleet sync with a fleet peer failed: {e}");
                all = false;
            }
        }
    }
    if all && fleets.len() == hub.fleet_ids().len() {
        synced.send_modify(|n| *n += 1);
    }
}

impl Syncer {
    /// Before this robot joined: asks the LAN for `fleet`'s log (see [`Self::lan_join_peers`])
    /// until it is held here and a robot that is not revoked synced it (the join goes to it),
    /// or the dials of the `remote` peers are over (`dials_done`), or [`LAN_JOIN_WAIT`]; the
    /// LAN peers that synced.
    pub(super) async fn lan_join_log(
        &mut self,
        fleet: FleetId,
        remote: &[(PeerId, Vec<Multiaddr>)],
        dials_done: impl Fn() -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let deadline = tokio::time::Instant::now() + LAN_JOIN_WAIT;
        let mut lan: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        loop {
            let known: Vec<_> = remote.iter().chain(&lan).cloned().collect();
            lan.extend(self.lan_join_peers(&known).await);
            // The log alone is not enough: the join needs a member that will pass it on.
            if (self.holds_log(fleet) && !lan.is_empty())
                || lan.len() >= MAX_LAN_JOIN_PEERS
                || dials_done()
                || tokio::time::Instant::now() >= deadline
            {
                return lan;
            }
            tokio::time::sleep(LAN_JOIN_POLL).await;
        }
    }

    /// Before this robot joined: peers mDNS found (at most [`MAX_LAN_JOIN_PEERS`], not in
    /// `known`, not revoked) that hold the token's fleet and synced it with us; the Join then
    /// goes to them too. The peers are dialled and synced with all at once, each bounded by
    /// [`LAN_JOIN_EXCHANGE`], and once one of them synced the others get [`LAN_JOIN_GRACE`]:
    /// an exchange that stalls (a peer revoked in the very log it hands over, whose connection
    /// this node closes mid-exchange, was measured stalling > 10 s) must not hold back the join.
    pub(super) async fn lan_join_peers(
        &mut self,
        known: &[(PeerId, Vec<Multiaddr>)],
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let fleets = self.hub.fleet_ids();
        let mut tasks = JoinSet::new();
        for (peer, addrs) in self.node.lan_peers().await {
            if known.iter().any(|(p, _)| *p == peer)
                || fleets.iter().any(|f| self.hub.is_revoked_in(f, &peer))
            {
                continue;
            }
            let (node, hub, fleets) = (self.node.clone(), self.hub.clone(), fleets.clone());
            tasks.spawn(async move {
                let exchange = async {
                    let dialled = node.dial(peer, addrs.clone());
                    if !matches!(
                        tokio::time::timeout(LAN_DIAL_TIMEOUT, dialled).await,
                        Ok(Ok(()))
                    ) {
                        return false;
                    }
                    let mut any = false;
                    for fleet in &fleets {
                        any |= sync_with(&node, peer, &hub, *fleet).await.is_ok();
                    }
                    any
                };
                let any = tokio::time::timeout(LAN_JOIN_EXCHANGE, exchange)
                    .await
                    .unwrap_or(false);
                (peer, addrs, any)
            });
        }
        let mut synced = Vec::new();
        let mut deadline = tokio::time::Instant::now() + LAN_JOIN_EXCHANGE;
        while synced.len() < MAX_LAN_JOIN_PEERS {
            let next = tokio::time::timeout_at(deadline, tasks.join_next()).await;
            let Ok(Some(Ok((peer, addrs, any)))) = next else {
                // All done, or the grace is over (the rest are aborted with the set), or a
                // task panicked (counted as not synced).
                if matches!(next, Ok(Some(Err(_)))) {
                    continue;
                }
                break;
            };
            // A revoked robot still on the LAN may hand us the log, but members refuse what
            // it forwards: the join must go to others.
            if fleets.iter().any(|f| self.hub.is_revoked_in(f, &peer)) {
                info!(%peer, "a robot on the LAN gave the fleet log but is revoked in it: not joining through it");
                continue;
            }
            if any {
                info!(%peer, "fleet log fetched from a robot on the LAN (joining)");
                synced.push((peer, addrs));
                deadline = deadline.min(tokio::time::Instant::now() + LAN_JOIN_GRACE);
            }
        }
        synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_take_turns_and_leave() {
        let mut lan = LanMembers::default();
        assert_eq!(lan.next(), None);
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(lan.connected(a));
        assert!(!lan.connected(a), "a second connection is not new");
        assert!(lan.connected(b));
        let picks: BTreeSet<PeerId> = (0..2).filter_map(|_| lan.next()).collect();
        assert_eq!(picks, BTreeSet::from([a, b]), "each in turn");
        lan.disconnected(&a);
        assert!(!lan.is_connected(&a));
        assert_eq!(lan.next(), Some(b));
        assert_eq!(lan.next(), Some(b));
        assert!(lan.connected(a), "back after a disconnection: new again");
        assert_eq!(lan.peers().len(), 2);
    }
}
