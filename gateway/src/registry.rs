//! Live routes: which tunnel connections serve which name right now.
//!
//! A name has a set of routes, one per tunnel: its owner's, plus those of the provider keys the
//! owner granted it to (`RegisterGranted`). [`Registry::lookup`] picks the member with the
//! least outstanding requests (ties: round-robin); a member whose stream opens failed
//! [`FAILS_TO_EJECT`] times in a row sits out for [`EJECT_FOR`] unless no other member is
//! left. A name with one route takes the same path as before shared names: no scan.
//!
//! Entries are keyed by name and tagged with the tunnel connection's [`ConnId`], so when an
//! old connection of a provider closes after its successor registered, the old close never
//! removes the new route. Each registration carries its pool of idle upstream streams; the
//! registry closes that pool whenever the registration ends (withdrawn, replaced, offline), so
//! no request is ever sent on a stream opened for an earlier registration.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
    /// Outstanding requests and health, shared by every clone of this route.
    load: Arc<RouteLoad>,
}

/// Consecutive stream-open failures that take a member out of its name's set.
pub(crate) const FAILS_TO_EJECT: u32 = 3;
/// How long an ejected member sits out.
pub(crate) const EJECT_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct RouteLoad {
    inflight: AtomicU32,
    fails: AtomicU32,
    out_until: Mutex<Option<Instant>>,
}

/// One outstanding request on a route; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct Inflight(Arc<RouteLoad>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Route {
    /// A route on `conn`, whose open streams each hold one of `permits` (the tunnel's).
    pub(crate) fn new(
        conn: TunnelConn,
        peer: PeerId,
        traffic: Arc<TrafficCell>,
        tunnel_traffic: Arc<TrafficCell>,
        permits: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self {
            conn,
            peer,
            pool: Arc::new(UpstreamPool::default().with_permits(permits)),
            traffic,
            tunnel_traffic,
            load: Arc::default(),
        }
    }

    /// Counts a request as outstanding on this route until the guard drops.
    pub(crate) fn begin(&self) -> Inflight {
        self.load.inflight.fetch_add(1, Ordering::Relaxed);
        Inflight(self.load.clone())
    }

    /// A stream to the provider opened: the failure streak ends.
    pub(crate) fn opened(&self) {
        self.load.fails.store(0, Ordering::Relaxed);
    }

    /// A stream to the provider could not be opened; the third in a row ejects the route for
    /// [`EJECT_FOR`].
    pub(crate) fn open_failed(&self, now: Instant) {
        if self.load.fails.fetch_add(1, Ordering::Relaxed) + 1 >= FAILS_TO_EJECT {
            self.load.fails.store(0, Ordering::Relaxed);
            *self
                .load
                .out_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(now + EJECT_FOR);
        }
    }

    fn healthy(&self, now: Instant) -> bool {
        self.load
            .out_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|until| now >= until)
    }

    fn inflight(&self) -> u32 {
        self.load.inflight.load(Ordering::Relaxed)
    }
}

/// The routes of one name, one per tunnel.
#[derive(Debug, Default)]
struct RouteSet {
    members: Vec<Route>,
    /// Round-robin start for ties.
    next: AtomicUsize,
}

impl RouteSet {
    /// The healthy member (other than `except`) with the least outstanding requests, ties
    /// broken round-robin; when every candidate is ejected, the least loaded of them.
    fn pick(&self, except: Option<ConnId>, now: Instant) -> Option<Route> {
        if let [only] = self.members.as_slice() {
            return (except != Some(only.conn.id())).then(|| only.clone());
        }
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .filter(|r| except != Some(r.conn.id()));
        let mut best: Option<(bool, u32, &Route)> = None;
        for r in candidates {
            let key = (r.healthy(now), r.inflight());
            // Healthy beats ejected, then fewer outstanding; the first seen wins a tie.
            let better =
                best.is_none_or(|(h, load, _)| (key.0 && !h) || (key.0 == h && key.1 < load));
            if better {
                best = Some((key.0, key.1, r));
            }
        }
        best.map(|(_, _, r)| r.clone())
    }
}

/// name → live routes, plus the names whose providers all dropped without unregistering them
/// (visitors get 502 "offline" for those, 404 for names nobody serves).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    routes: DashMap<String, RouteSet>,
    /// name → when its provider dropped.
    offline: DashMap<String, SystemTime>,
}

impl Registry {
    /// A connection serving `name`, if one is online: the least loaded healthy one.
    pub(crate) fn lookup(&self, name: &str) -> Option<Route> {
        self.routes.get(name)?.pick(None, Instant::now())
    }

    /// Another connection serving `name` than `except`, for a retry.
    pub(crate) fn lookup_other(&self, name: &str, except: ConnId) -> Option<Route> {
        self.routes.get(name)?.pick(Some(except), Instant::now())
    }

    /// Whether `peer` serves `name` right now (on any of its connections).
    pub(crate) fn serves(&self, name: &str, peer: &PeerId) -> bool {
        self.routes
            .get(name)
            .is_some_and(|set| set.members.iter().any(|r| r.peer == *peer))
    }

    /// Adds `route` to `name`'s set, replacing the previous connection of the same provider
    /// key (a reconnect); other keys' routes (grantees, or the owner) stay.
    pub(crate) fn insert(&self, name: &str, route: Route) {
        self.offline.remove(name);
        let mut set = self.routes.entry(name.to_owned()).or_default();
        set.members.retain(|old| {
            let same = old.peer == route.peer;
            if same {
                old.pool.close();
            }
            !same
        });
        set.members.push(route);
    }

    /// The provider withdrew `name` (if connection `id` still serves it).
    pub(crate) fn unregister(&self, name: &str, id: ConnId) -> bool {
        let mut removed = false;
        if let Some(mut set) = self.routes.get_mut(name) {
            set.members.retain(|r| {
                let this = r.conn.id() == id;
                if this {
                    r.pool.close();
                    removed = true;
                }
                !this
            });
        }
        self.routes.remove_if(name, |_, set| set.members.is_empty());
        removed
    }

    /// Connection `id` is gone: when it was the name's last route, the name is offline until
    /// re-registered.
    pub(crate) fn disconnect(&self, name: &str, id: ConnId) -> bool {
        let removed = self.unregister(name, id);
        if removed && !self.routes.contains_key(name) {
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
            .map(|(_, set)| set.members.iter().for_each(|r| r.pool.close()))
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
        self.routes
            .iter()
            .filter(|set| set.members.iter().any(|r| r.peer == *peer))
            .count()
    }

    /// Names with a live route.
    pub(crate) fn names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.key().clone()).collect()
    }

    /// Closes idle upstream streams that passed their idle timeout or broke.
    pub(crate) fn evict_idle(&self, now: Instant) -> usize {
        self.routes
            .iter()
            .map(|set| {
                set.members
                    .iter()
                    .map(|r| r.pool.evict_expired(now))
                    .sum::<usize>()
            })
            .sum()
    }

    /// Number of names with a live route.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}
