//! The state every part of the gateway shares, built once by [`crate::run`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use peercompute_identity::PeerId;

use crate::allow::Allowlist;
use crate::config::GatewayConfig;
use crate::events::{EventKind, Events};
use crate::metrics::Metrics;
use crate::names::{NameStore, NameStoreError};
use crate::ratelimit::RateLimits;
use crate::registry::Registry;
use crate::tls::acme::Hooks as AcmeHooks;
use crate::tunnels::{Kick, Tunnels};

/// Characters of an operator's disconnect reason that are sent to the provider (the rest is cut).
pub(crate) const MAX_DISCONNECT_REASON: usize = 200;

/// What [`Shared::release_name`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Released {
    /// The peer id that owned the name.
    pub(crate) previous_owner: String,
    /// Whether a provider was serving the name when it was released.
    pub(crate) was_online: bool,
}

/// Shared gateway state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) peer_id: PeerId,
    pub(crate) registry: Registry,
    pub(crate) names: NameStore,
    pub(crate) allow: Allowlist,
    pub(crate) limits: RateLimits,
    pub(crate) metrics: Metrics,
    /// What happened to providers, names, certificates and limits, for the admin API.
    pub(crate) events: Events,
    /// Connected providers, one entry per live tunnel.
    pub(crate) tunnels: Tunnels,
    /// HTTP-01 answers and the registration hook of `--tls acme` (inert otherwise).
    pub(crate) acme: AcmeHooks,
    draining: AtomicBool,
    /// libp2p addresses sent to providers in Welcome (empty when p2p is off).
    pub(crate) p2p_addrs: std::sync::OnceLock<Vec<String>>,
}

impl Shared {
    pub(crate) fn new(
        config: GatewayConfig,
        peer_id: PeerId,
        names: NameStore,
        allow: Allowlist,
        acme: AcmeHooks,
    ) -> Arc<Self> {
        let limits = RateLimits::new(config.rate_limit, config.rate_limit_ip);
        Arc::new(Self {
            config,
            peer_id,
            registry: Registry::default(),
            names,
            allow,
            limits,
            metrics: Metrics::new(),
            events: Events::default(),
            tunnels: Tunnels::default(),
            acme,
            draining: AtomicBool::new(false),
            p2p_addrs: std::sync::OnceLock::new(),
        })
    }

    /// The operator releases `name`: its ownership is forgotten (on disk first), visitors get
    /// 404 for it, and a provider still holding it is told it lost it (an unsolicited `Refused`,
    /// after which it stops registering it). The next key that registers the name owns it.
    /// `Ok(None)` when nobody owned it.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "called by the admin API (issue 12, next step)")
    )]
    pub(crate) fn release_name(&self, name: &str) -> Result<Option<Released>, NameStoreError> {
        let Some(previous_owner) = self.names.release(name)? else {
            return Ok(None);
        };
        let was_online = self.registry.remove_any(name);
        for tunnel in self.tunnels.holding(name) {
            // Forgotten here even when its loop is too busy for the kick, so a later exit of
            // that tunnel does not mark the name offline.
            tunnel.forget(name);
            if !tunnel.kick(Kick::Released(name.to_owned())) {
                tracing::warn!(
                    route = %name,
                    provider = %tunnel.peer,
                    "could not tell the provider its name was released (tunnel busy or closing)"
                );
            }
        }
        tracing::info!(route = %name, owner = %previous_owner, "name released by the operator");
        self.events.publish(EventKind::NameReleased {
            name: name.to_owned(),
            owner: previous_owner.clone(),
        });
        Ok(Some(Released {
            previous_owner,
            was_online,
        }))
    }

    /// The operator ends every tunnel of `peer` with `reason` (sent in the GoAway; the provider
    /// reconnects after its backoff unless it is also removed from the allowlist). Returns how
    /// many tunnels were asked to close; 0 when `peer` is not connected.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "called by the admin API (issue 12, next step)")
    )]
    pub(crate) fn disconnect_provider(&self, peer: &PeerId, reason: &str) -> usize {
        // The reason travels in the GoAway and the QUIC close frame: keep it short.
        let reason = match reason.char_indices().nth(MAX_DISCONNECT_REASON) {
            Some((end, _)) => &reason[..end],
            None => reason,
        };
        self.tunnels
            .of_peer(peer)
            .iter()
            .filter(|t| t.kick(Kick::Disconnect(reason.to_owned())))
            .count()
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
