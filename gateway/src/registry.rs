//! Live routes: which tunnel connection serves which name right now.
//!
//! Entries are keyed by name and tagged with the tunnel connection's [`ConnId`], so when an
//! old connection of a provider closes after its successor registered, the old close never
//! removes the new route. Each registration carries its pool of idle upstream streams; the
//! registry closes that pool whenever the registration ends (withdrawn, replaced, offline), so
//! no request is ever sent on a stream opened for an earlier registration.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use dashmap::DashMap;
use peercompute_identity::PeerId;
use peercompute_tunnel_transport::{ConnId, TunnelConn};

use crate::proxy::UpstreamPool;
use crate::traffic::TrafficCell;

/// One live route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) conn: TunnelConn,
    pub(crate) peer: PeerId,
    /// Idle upstream streams of this registration.
    pub(crate) pool: Arc<UpstreamPool>,
    /// The name's traffic counters (or the shared `other` ones past the cap).
    pub(crate) traffic: Arc<TrafficCell>,
    /// The tunnel's traffic counters.
    pub(crate) tunnel_traffic: Arc<TrafficCell>,
}

impl Route {
    pub(crate) fn new(
        conn: TunnelConn,
        peer: PeerId,
        traffic: Arc<TrafficCell>,
        tunnel_traffic: Arc<TrafficCell>,
    ) -> Self {
        Self {
            conn,
            peer,
            pool: Arc::default(),
            traffic,
            tunnel_traffic,
        }
    }
}

/// name → live route, plus the names whose provider dropped without unregistering them
/// (visitors get 502 "offline" for those, 404 for names nobody serves).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    routes: DashMap<String, Route>,
    /// name → when its provider dropped.
    offline: DashMap<String, SystemTime>,
}

impl Registry {
    /// The connection serving `name`, if one is online.
    pub(crate) fn lookup(&self, name: &str) -> Option<Route> {
        self.routes.get(name).map(|r| r.clone())
    }

    /// Routes `name` to `route`, replacing any previous connection for it.
    pub(crate) fn insert(&self, name: &str, route: Route) {
        self.offline.remove(name);
        if let Some(old) = self.routes.insert(name.to_owned(), route) {
            old.pool.close();
        }
    }

    /// The provider withdrew `name` (if connection `id` still serves it).
    pub(crate) fn unregister(&self, name: &str, id: ConnId) -> bool {
        let removed = self.routes.remove_if(name, |_, r| r.conn.id() == id);
        removed.map(|(_, route)| route.pool.close()).is_some()
    }

    /// Connection `id` is gone: its names become offline until re-registered.
    pub(crate) fn disconnect(&self, name: &str, id: ConnId) -> bool {
        let removed = self.unregister(name, id);
        if removed {
            self.offline.insert(name.to_owned(), SystemTime::now());
        }
        removed
    }

    /// The operator released `name`: whoever serves it stops (its pool is closed) and it is
    /// not reported offline either. True when a provider was serving it.
    pub(crate) fn remove_any(&self, name: &str) -> bool {
        self.offline.remove(name);
        self.routes
            .remove(name)
            .map(|(_, route)| route.pool.close())
            .is_some()
    }

    /// Whether `name`'s provider dropped without withdrawing it.
    pub(crate) fn is_offline(&self, name: &str) -> bool {
        self.offline.contains_key(name)
    }

    /// When `name`'s provider dropped without withdrawing it (`None`: online or unknown).
    pub(crate) fn offline_since(&self, name: &str) -> Option<SystemTime> {
        self.offline.get(name).map(|t| *t)
    }

    /// Names whose provider dropped without withdrawing them.
    pub(crate) fn offline_names(&self) -> Vec<String> {
        self.offline.iter().map(|e| e.key().clone()).collect()
    }

    /// Number of names served by `peer` right now.
    pub(crate) fn count_for(&self, peer: &PeerId) -> usize {
        self.routes.iter().filter(|r| r.peer == *peer).count()
    }

    /// Names with a live route.
    pub(crate) fn names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.key().clone()).collect()
    }

    /// Closes idle upstream streams that passed their idle timeout or broke.
    pub(crate) fn evict_idle(&self, now: Instant) -> usize {
        self.routes.iter().map(|r| r.pool.evict_expired(now)).sum()
    }

    /// Number of live routes.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}
