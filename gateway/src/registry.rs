//! Live routes: which tunnel connection serves which name right now.
//!
//! Entries are keyed by name and tagged with the QUIC connection's `stable_id`, so when an
//! old connection of a provider closes after its successor registered, the old close never
//! removes the new route.

use dashmap::DashMap;
use peercompute_identity::PeerId;

/// One live route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) conn: quinn::Connection,
    pub(crate) peer: PeerId,
}

/// name → live route.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    routes: DashMap<String, Route>,
}

impl Registry {
    /// The connection serving `name`, if one is online.
    pub(crate) fn lookup(&self, name: &str) -> Option<Route> {
        self.routes.get(name).map(|r| r.clone())
    }

    /// Routes `name` to `route`, replacing any previous connection for it.
    pub(crate) fn insert(&self, name: &str, route: Route) {
        self.routes.insert(name.to_owned(), route);
    }

    /// Removes `name` if it is still served by connection `stable_id`.
    pub(crate) fn remove_if(&self, name: &str, stable_id: usize) -> bool {
        self.routes
            .remove_if(name, |_, r| r.conn.stable_id() == stable_id)
            .is_some()
    }

    /// Number of names served by `peer` right now.
    pub(crate) fn count_for(&self, peer: &PeerId) -> usize {
        self.routes.iter().filter(|r| r.peer == *peer).count()
    }

    /// Number of live routes.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}
