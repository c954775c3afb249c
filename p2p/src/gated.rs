//! A behaviour that serves only admitted peers. Every connection gets the wrapped behaviour's
//! handler (so the behaviour's own bookkeeping of connections stays whole), but what a
//! handler reports from a connection of a peer that was not admitted is dropped unread: a
//! request from a stranger is never answered (dropping it closes its stream, so the stranger
//! gets an error at once). The gateway wraps its rendezvous server in it, so only the
//! providers it admits can register or look anything up: strangers can neither list who is
//! registered nor fill the directory with records of their own.
//!
//! The peer is judged once, when the connection is established; a peer dropped from the
//! allowlist afterwards is disconnected by the relay's revocation check.

use std::collections::HashSet;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use tracing::debug;

use crate::node::AdmitFn;

/// `inner` for admitted peers only.
pub(crate) struct Gated<B> {
    inner: B,
    admit: AdmitFn,
    /// Connections of peers that were not admitted: their handlers' events are dropped.
    strangers: HashSet<ConnectionId>,
}

impl<B> Gated<B> {
    pub(crate) fn new(inner: B, admit: AdmitFn) -> Self {
        Self {
            inner,
            admit,
            strangers: HashSet::new(),
        }
    }

    fn judge(&mut self, connection_id: ConnectionId, peer: &PeerId) {
        if !(self.admit)(peer) {
            self.strangers.insert(connection_id);
        }
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = THandler<B>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let handler = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        self.judge(connection_id, &peer);
        Ok(handler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let handler = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        self.judge(connection_id, &peer);
        Ok(handler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionClosed(e) => {
                self.strangers.remove(&e.connection_id);
            }
            FromSwarm::ListenFailure(e) => {
                self.strangers.remove(&e.connection_id);
            }
            FromSwarm::DialFailure(e) => {
                self.strangers.remove(&e.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        if self.strangers.contains(&connection_id) {
            debug!(peer = %peer_id, "ignored a request from a peer this service does not admit");
            return;
        }
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}
