//! Rendezvous client requests and their answers: [`Node::register`](crate::Node::register)
//! and [`Node::discover`](crate::Node::discover) calls wait here, keyed by (server, namespace),
//! until the rendezvous behaviour reports the outcome.
//!
//! The behaviour's events do not carry a request id, so every call waiting on the same
//! (server, namespace) gets the same answer; a discovery answer from a server answers every
//! namespace asked of it (the ones it did not list get an empty list).

use std::collections::HashMap;
use std::time::Duration;

use libp2p::{PeerId, rendezvous};
use tracing::debug;

use crate::node::{Found, NodeError};

type Reply<T> = tokio::sync::oneshot::Sender<Result<T, NodeError>>;

/// Registrations and discoveries waiting for the rendezvous server's answer.
#[derive(Default)]
pub(crate) struct RendezvousMatch {
    registrations: HashMap<(PeerId, String), Vec<Reply<()>>>,
    discoveries: HashMap<(PeerId, String), Vec<Reply<Vec<Found>>>>,
}

impl RendezvousMatch {
    /// Sends a registration of our external addresses under `namespace` to `server`.
    pub(crate) fn register(
        &mut self,
        client: &mut rendezvous::client::Behaviour,
        server: PeerId,
        namespace: String,
        ttl: Duration,
        reply: Reply<()>,
    ) {
        let fail = |reason: String| NodeError::Rendezvous { server, reason };
        let ns = match rendezvous::Namespace::new(namespace.clone()) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = reply.send(Err(fail(e.to_string())));
                return;
            }
        };
        match client.register(ns, server, Some(ttl.as_secs())) {
            Ok(()) => self
                .registrations
                .entry((server, namespace))
                .or_default()
                .push(reply),
            Err(e) => {
                let _ = reply.send(Err(fail(e.to_string())));
            }
        }
    }

    /// Asks `server` who registered under `namespace`.
    pub(crate) fn discover(
        &mut self,
        client: &mut rendezvous::client::Behaviour,
        server: PeerId,
        namespace: String,
        reply: Reply<Vec<Found>>,
    ) {
        let ns = match rendezvous::Namespace::new(namespace.clone()) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = reply.send(Err(NodeError::Rendezvous {
                    server,
                    reason: e.to_string(),
                }));
                return;
            }
        };
        client.discover(Some(ns), None, None, server);
        self.discoveries
            .entry((server, namespace))
            .or_default()
            .push(reply);
    }

    /// Answers the calls an event of the rendezvous client settles.
    pub(crate) fn on_event(&mut self, event: rendezvous::client::Event) {
        use rendezvous::client::Event as E;
        match event {
            E::Registered {
                rendezvous_node,
                ttl,
                namespace,
            } => {
                debug!(%rendezvous_node, %namespace, ttl, "registered");
                self.answer_registrations(rendezvous_node, namespace.to_string(), || Ok(()));
            }
            E::RegisterFailed {
                rendezvous_node,
                namespace,
                error,
            } => {
                self.answer_registrations(rendezvous_node, namespace.to_string(), || {
                    Err(NodeError::Rendezvous {
                        server: rendezvous_node,
                        reason: format!("registration refused: {error:?}"),
                    })
                });
            }
            E::Discovered {
                rendezvous_node,
                registrations,
                ..
            } => {
                let mut by_ns: HashMap<String, Vec<Found>> = HashMap::new();
                for r in registrations {
                    by_ns
                        .entry(r.namespace.to_string())
                        .or_default()
                        .push(Found {
                            peer: r.record.peer_id(),
                            addrs: r.record.addresses().to_vec(),
                        });
                }
                for key in self.asked_of(rendezvous_node, None) {
                    let found = by_ns.remove(&key.1).unwrap_or_default();
                    for reply in self.discoveries.remove(&key).unwrap_or_default() {
                        let _ = reply.send(Ok(found.clone()));
                    }
                }
            }
            E::DiscoverFailed {
                rendezvous_node,
                namespace,
                error,
            } => {
                let namespace = namespace.map(|n| n.to_string());
                for key in self.asked_of(rendezvous_node, namespace.as_deref()) {
                    for reply in self.discoveries.remove(&key).unwrap_or_default() {
                        let _ = reply.send(Err(NodeError::Rendezvous {
                            server: rendezvous_node,
                            reason: format!("lookup failed: {error:?}"),
                        }));
                    }
                }
            }
            E::Expired { .. } => {}
        }
    }

    fn answer_registrations(
        &mut self,
        server: PeerId,
        namespace: String,
        outcome: impl Fn() -> Result<(), NodeError>,
    ) {
        for reply in self
            .registrations
            .remove(&(server, namespace))
            .unwrap_or_default()
        {
            let _ = reply.send(outcome());
        }
    }

    /// The discoveries waiting on `server`, for `namespace` or every one.
    fn asked_of(&self, server: PeerId, namespace: Option<&str>) -> Vec<(PeerId, String)> {
        self.discoveries
            .keys()
            .filter(|(s, ns)| *s == server && namespace.is_none_or(|n| n == ns))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn server() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn a_failed_lookup_answers_its_namespace_only() {
        let s = server();
        let mut m = RendezvousMatch::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        m.discoveries.entry((s, "one".into())).or_default().push(a);
        m.discoveries.entry((s, "two".into())).or_default().push(b);
        m.on_event(rendezvous::client::Event::DiscoverFailed {
            rendezvous_node: s,
            namespace: Some(rendezvous::Namespace::from_static("one")),
            error: rendezvous::ErrorCode::Unavailable,
        });
        assert!(matches!(
            a_rx.try_recv(),
            Ok(Err(NodeError::Rendezvous { .. }))
        ));
        assert!(b_rx.try_recv().is_err(), "the other namespace still waits");
    }

    #[test]
    fn a_discovery_answers_every_namespace_asked_of_that_server() {
        let s = server();
        let other = server();
        let mut m = RendezvousMatch::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        m.discoveries.entry((s, "one".into())).or_default().push(a);
        m.discoveries
            .entry((other, "one".into()))
            .or_default()
            .push(b);
        m.on_event(rendezvous::client::Event::Discovered {
            rendezvous_node: s,
            registrations: Vec::new(),
            cookie: rendezvous::Cookie::for_all_namespaces(),
        });
        assert!(matches!(a_rx.try_recv(), Ok(Ok(v)) if v.is_empty()));
        assert!(
            b_rx.try_recv().is_err(),
            "another server's lookup still waits"
        );
    }

    #[test]
    fn registration_outcome_reaches_every_waiter() {
        let s = server();
        let mut m = RendezvousMatch::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        m.registrations.entry((s, "ns".into())).or_default().push(a);
        m.registrations.entry((s, "ns".into())).or_default().push(b);
        m.on_event(rendezvous::client::Event::RegisterFailed {
            rendezvous_node: s,
            namespace: rendezvous::Namespace::from_static("ns"),
            error: rendezvous::ErrorCode::NotAuthorized,
        });
        assert!(matches!(a_rx.try_recv(), Ok(Err(_))));
        assert!(matches!(b_rx.try_recv(), Ok(Err(_))));
    }
}
