//! The table of connected providers: one entry per live tunnel, for the admin API to list and
//! to steer (disconnect a provider, take a released name away from it).
//!
//! Entries are keyed by the tunnel connection's [`ConnId`], like the
//! [`Registry`](crate::registry::Registry)'s routes: a provider that reconnects gets a new
//! entry, and the old connection's exit removes only its own. Each entry carries a small
//! channel into its tunnel's loop; [`Kick`]s sent there are carried out by the tunnel itself,
//! which is the only writer of its control stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use dashmap::DashMap;
use peercompute_identity::PeerId;
pub(crate) use peercompute_tunnel_transport::Transport;
use peercompute_tunnel_transport::{ConnId, TunnelConn};
use tokio::sync::{Semaphore, mpsc};

use crate::fleet_names::FleetClaim;
use crate::traffic::TrafficCell;

/// Kicks a tunnel's loop can have waiting; more are refused (the operator retries).
pub(crate) const KICK_CAPACITY: usize = 4;

/// What the gateway operator asks of a live tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kick {
    /// End the tunnel with this reason (GoAway, then close). The provider reconnects later.
    Disconnect(String),
    /// The operator released this name: tell the provider it no longer has it (an unsolicited
    /// `Refused`, after which the provider stops asking for it) and forget it here.
    Released(String),
    /// The fleet log no longer lets this robot serve group name `name` (already dropped from
    /// the registry): tell it with an unsolicited `Refused{TryLater}` carrying `reason`.
    FleetDenied { name: String, reason: String },
}

/// One connected provider.
#[derive(Debug)]
pub(crate) struct TunnelInfo {
    pub(crate) peer: PeerId,
    /// The `agent` of its Hello (e.g. `peercomputed/0.9.0`).
    pub(crate) agent: String,
    /// The tunnel protocol version agreed in Welcome.
    pub(crate) version: u16,
    pub(crate) remote: SocketAddr,
    pub(crate) since: SystemTime,
    pub(crate) transport: Transport,
    /// For RTT (`conn.rtt()`) and wire bytes (`conn.wire_bytes()`), read when asked.
    pub(crate) conn: TunnelConn,
    /// Names this tunnel registered and still holds, in registration order.
    pub(crate) routes: Mutex<Vec<String>>,
    /// Of `routes`, the group names it holds as a fleet's robot (`RegisterFleet`), each with
    /// its fleet and group, checked again whenever that fleet's log changes.
    fleet_names: Mutex<BTreeMap<String, FleetClaim>>,
    /// Requests carried by this tunnel, all names together.
    pub(crate) traffic: Arc<TrafficCell>,
    /// One permit per data stream open toward the provider (in use or idle in a pool), at most
    /// `max_streams_per_tunnel`: whatever stream credit a provider grants, the gateway's
    /// memory for one tunnel stays bounded. That bound: 16 MiB received and unread (QUIC
    /// `receive_window`) + 16 MiB sent and unacknowledged (`send_window`) + per open stream
    /// its HTTP/1.1 client (at most 64 KiB of buffered response head, `MAX_UPSTREAM_BUF`) and
    /// its task and stream state, measured at ~70-80 KiB a held stream in `tunnel_hostile`
    /// (test process, clients included): ~32 MiB + 1024 × ~144 KiB ≈ 176 MiB at the default.
    pub(crate) streams: Arc<Semaphore>,
    kick: mpsc::Sender<Kick>,
}

impl TunnelInfo {
    /// A new entry and the receiving end of its kick channel, for the tunnel's loop.
    pub(crate) fn new(
        peer: PeerId,
        agent: String,
        version: u16,
        conn: TunnelConn,
        max_streams: usize,
    ) -> (Arc<Self>, mpsc::Receiver<Kick>) {
        let (kick, kicks) = mpsc::channel(KICK_CAPACITY);
        let info = Self {
            peer,
            agent,
            version,
            remote: conn.remote_address(),
            since: SystemTime::now(),
            transport: conn.transport(),
            conn,
            routes: Mutex::new(Vec::new()),
            fleet_names: Mutex::default(),
            traffic: Arc::default(),
            streams: Arc::new(Semaphore::new(max_streams.min(Semaphore::MAX_PERMITS))),
            kick,
        };
        (Arc::new(info), kicks)
    }

    /// The connection's id, this entry's key.
    pub(crate) fn id(&self) -> ConnId {
        self.conn.id()
    }

    /// A copy of the names this tunnel holds.
    pub(crate) fn routes(&self) -> Vec<String> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets `name` (withdrawn by the provider or released by the operator).
    pub(crate) fn forget(&self, name: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|n| n != name);
        self.fleet_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Records that `name` is held as a group name of `claim` (after it was admitted).
    pub(crate) fn hold_fleet_name(&self, name: &str, claim: FleetClaim) {
        self.fleet_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), claim);
    }

    /// A copy of the group names this tunnel holds, with their fleet and group.
    pub(crate) fn fleet_names(&self) -> Vec<(String, FleetClaim)> {
        self.fleet_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect()
    }

    /// Hands `kick` to the tunnel's loop without waiting. False when the loop has ended or
    /// already has [`KICK_CAPACITY`] kicks waiting.
    pub(crate) fn kick(&self, kick: Kick) -> bool {
        self.kick.try_send(kick).is_ok()
    }
}

/// Connection id → connected provider.
#[derive(Debug, Default)]
pub(crate) struct Tunnels(DashMap<ConnId, Arc<TunnelInfo>>);

impl Tunnels {
    pub(crate) fn insert(&self, info: Arc<TunnelInfo>) {
        self.0.insert(info.id(), info);
    }

    /// Removes the entry of connection `id` (and no other).
    pub(crate) fn remove(&self, id: ConnId) -> Option<Arc<TunnelInfo>> {
        self.0.remove(&id).map(|(_, info)| info)
    }

    /// Every connected provider, oldest connection first.
    pub(crate) fn list(&self) -> Vec<Arc<TunnelInfo>> {
        let mut all: Vec<_> = self.0.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|t| (t.since, t.id()));
        all
    }

    /// The live tunnels of `peer` (usually one; two while a reconnect overlaps the old one).
    pub(crate) fn of_peer(&self, peer: &PeerId) -> Vec<Arc<TunnelInfo>> {
        self.list()
            .into_iter()
            .filter(|t| t.peer == *peer)
            .collect()
    }

    /// The stream permits of connection `id`'s tunnel; `None` once it has ended.
    pub(crate) fn stream_permits(&self, id: ConnId) -> Option<Arc<Semaphore>> {
        self.0.get(&id).map(|t| t.streams.clone())
    }

    /// The tunnels that hold `name` right now.
    pub(crate) fn holding(&self, name: &str) -> Vec<Arc<TunnelInfo>> {
        self.list()
            .into_iter()
            .filter(|t| t.routes().iter().any(|n| n == name))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
