//! The state every part of the gateway shares, built once by [`crate::run`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use peercompute_identity::PeerId;

use crate::allow::Allowlist;
use crate::config::GatewayConfig;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::names::NameStore;
use crate::ratelimit::RateLimits;
use crate::registry::Registry;
use crate::tls::acme::Hooks as AcmeHooks;
use crate::tunnels::Tunnels;

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

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
