//! The state every part of the gateway shares, built once by [`crate::run`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use peercompute_identity::PeerId;
use peercompute_p2p::fleet_hub::FleetHub;
use prometheus_client::collector::Collector;

use crate::access_log::AccessLog;
use crate::allow::Allowlist;
use crate::cluster::Names;
use crate::config::GatewayConfig;
use crate::events::{EventKind, Events};
use crate::metrics::{AccessLogDropped, Metrics};
use crate::names::NameStoreError;
use crate::ratelimit::RateLimits;
use crate::registry::Registry;
use crate::tls::acme::Hooks as AcmeHooks;
use crate::tls::status::{CertCollector, CertInfo, CertStatus};
use crate::traffic::{Traffic, TrafficCollector, TrafficTotals};
use crate::tunnels::{Kick, Tunnels};

/// How long a released name's previous owner is refused it (unless another key took it).
pub(crate) const RELEASE_HOLD: Duration = Duration::from_secs(24 * 3600);

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

/// A connected provider, as the admin API lists it.
#[derive(Debug, Clone)]
pub(crate) struct ProviderSnapshot {
    pub(crate) peer: String,
    pub(crate) agent: String,
    pub(crate) protocol_version: u16,
    pub(crate) remote: SocketAddr,
    pub(crate) connected_since: SystemTime,
    pub(crate) transport: &'static str,
    /// QUIC's current round-trip estimate.
    pub(crate) rtt: Duration,
    pub(crate) routes: Vec<String>,
    /// Requests this tunnel carried (all its names).
    pub(crate) traffic: TrafficTotals,
    /// UDP payload bytes received from / sent to the provider (QUIC overhead included).
    pub(crate) wire_rx_bytes: u64,
    pub(crate) wire_tx_bytes: u64,
}

/// A name, as the admin API lists it.
#[derive(Debug, Clone)]
pub(crate) struct RouteSnapshot {
    pub(crate) name: String,
    /// The key that owns it (`None`: served or offline but not in names.json).
    pub(crate) owner: Option<String>,
    /// Peers of the tunnels holding it.
    pub(crate) providers: Vec<String>,
    pub(crate) online: bool,
    /// When its provider dropped without withdrawing it (`None` while online or withdrawn).
    pub(crate) last_seen: Option<SystemTime>,
    pub(crate) req_per_s_1m: f64,
    /// Zero for names sharing `route="other"` (past `--metrics-max-routes`).
    pub(crate) traffic: TrafficTotals,
}

/// Shared gateway state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) peer_id: PeerId,
    pub(crate) registry: Registry,
    /// Who owns which name: `names.json`, or the cluster store with `--cluster`.
    pub(crate) names: Names,
    pub(crate) allow: Allowlist,
    pub(crate) limits: RateLimits,
    pub(crate) metrics: Metrics,
    /// What happened to providers, names, certificates and limits, for the admin API.
    pub(crate) events: Events,
    /// Connected providers, one entry per live tunnel.
    pub(crate) tunnels: Tunnels,
    /// Per-app counters, the per-second ticks and rate-limit episodes.
    pub(crate) traffic: Arc<Traffic>,
    /// The served certificates, for the admin API and the expiry gauge.
    pub(crate) certs: Arc<CertStatus>,
    /// The fleets' logs and robots' statuses, when the p2p meeting point runs.
    pub(crate) fleet: OnceLock<FleetHub>,
    /// `--access-log`, when on.
    pub(crate) access_log: Option<AccessLog>,
    /// Released names → (previous owner, when): that owner may not take the name back on its
    /// own (a reconnect or restart re-registering it) for [`RELEASE_HOLD`]. Not persisted.
    released: std::sync::Mutex<std::collections::HashMap<String, (String, Instant)>>,
    /// HTTP-01 answers and the registration hook of `--tls acme` (inert otherwise).
    pub(crate) acme: AcmeHooks,
    draining: AtomicBool,
    /// libp2p addresses sent to providers in Welcome (empty when p2p is off).
    pub(crate) p2p_addrs: std::sync::OnceLock<Vec<String>>,
    /// `--cluster`: every gateway's tunnel records (`tunnels/`), for the fast 502.
    pub(crate) elsewhere: OnceLock<tokio::sync::watch::Receiver<peercompute_cluster::Followed>>,
}

impl Shared {
    pub(crate) fn new(
        config: GatewayConfig,
        peer_id: PeerId,
        names: Names,
        allow: Allowlist,
        acme: AcmeHooks,
        access_log: Option<AccessLog>,
    ) -> Arc<Self> {
        let limits = RateLimits::new(config.rate_limit, config.rate_limit_ip);
        let traffic = Arc::new(Traffic::new(config.metrics_max_routes));
        let certs = Arc::<CertStatus>::default();
        let mut collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(TrafficCollector(traffic.clone())),
            Box::new(CertCollector(certs.clone())),
        ];
        if let Some(log) = &access_log {
            collectors.push(Box::new(AccessLogDropped(log.clone())));
        }
        let metrics = Metrics::new(collectors, names.cluster().is_some());
        Arc::new(Self {
            config,
            peer_id,
            registry: Registry::default(),
            names,
            allow,
            limits,
            metrics,
            events: Events::default(),
            tunnels: Tunnels::default(),
            traffic,
            certs,
            fleet: OnceLock::new(),
            access_log,
            released: Default::default(),
            acme,
            draining: AtomicBool::new(false),
            p2p_addrs: std::sync::OnceLock::new(),
            elsewhere: OnceLock::new(),
        })
    }

    /// The operator releases `name`: its ownership is forgotten (on disk first, or in etcd
    /// with `--cluster`, where every gateway sees it), visitors get 404 for it, and a provider
    /// still holding it is told it lost it (an unsolicited `Refused`, after which it stops
    /// registering it). The next key that registers the name owns it. `Ok(None)` when nobody
    /// owned it.
    pub(crate) async fn release_name(
        &self,
        name: &str,
    ) -> Result<Option<Released>, NameStoreError> {
        let Some(previous_owner) = self.names.release(name).await? else {
            return Ok(None);
        };
        if self.names.cluster().is_none() {
            // Clustered, the hold was written to etcd with the release.
            self.released
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_owned(), (previous_owner.clone(), Instant::now()));
        }
        let was_online = self.drop_name(name, &previous_owner);
        Ok(Some(Released {
            previous_owner,
            was_online,
        }))
    }

    /// What a release does on this gateway once the table says so (here, or through the
    /// cluster's watch for a release at another gateway): the route goes, its provider is
    /// told. Returns whether the name was online.
    pub(crate) fn drop_name(&self, name: &str, previous_owner: &str) -> bool {
        let was_online = self.registry.remove_any(name);
        self.traffic.release(name);
        // A per-name ACME certificate leaves the operator's view with its owner.
        self.certs.remove(&format!("{name}.{}", self.config.domain));
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
            owner: previous_owner.to_owned(),
        });
        was_online
    }

    /// The operator ends every tunnel of `peer` with `reason` (sent in the GoAway; the provider
    /// reconnects after its backoff unless it is also removed from the allowlist). Returns how
    /// many tunnels were asked to close; 0 when `peer` is not connected.
    pub(crate) fn disconnect_provider(&self, peer: &PeerId, reason: &str) -> usize {
        let reason = disconnect_reason(reason);
        self.tunnels
            .of_peer(peer)
            .iter()
            .filter(|t| t.kick(Kick::Disconnect(reason.clone())))
            .count()
    }

    /// Every connected provider with its traffic, RTT and wire bytes, oldest connection first.
    pub(crate) fn providers(&self) -> Vec<ProviderSnapshot> {
        self.tunnels
            .list()
            .iter()
            .map(|t| ProviderSnapshot {
                peer: t.peer.to_string(),
                agent: t.agent.clone(),
                protocol_version: t.version,
                remote: t.remote,
                connected_since: t.since,
                transport: t.transport.as_str(),
                rtt: t.conn.rtt().unwrap_or_default(),
                routes: t.routes(),
                traffic: t.traffic.counts().totals(),
                wire_rx_bytes: t.conn.wire_bytes().0,
                wire_tx_bytes: t.conn.wire_bytes().1,
            })
            .collect()
    }

    /// Every name that is owned, served or offline, sorted by name.
    pub(crate) fn routes(&self) -> Vec<RouteSnapshot> {
        let now = Instant::now();
        let mut owners: std::collections::BTreeMap<String, Option<String>> = self
            .names
            .owners()
            .into_iter()
            .map(|(name, owner)| (name, Some(owner)))
            .collect();
        for name in self
            .registry
            .names()
            .into_iter()
            .chain(self.registry.offline_names())
        {
            owners.entry(name).or_insert(None);
        }
        let mut serving: std::collections::HashMap<String, Vec<String>> = Default::default();
        for tunnel in self.tunnels.list() {
            for name in tunnel.routes() {
                serving
                    .entry(name)
                    .or_default()
                    .push(tunnel.peer.to_string());
            }
        }
        owners
            .into_iter()
            .map(|(name, owner)| RouteSnapshot {
                online: self.registry.lookup(&name).is_some(),
                last_seen: self.registry.offline_since(&name),
                providers: serving.remove(&name).unwrap_or_default(),
                req_per_s_1m: self.traffic.req_per_s_1m(&name, now),
                traffic: self
                    .traffic
                    .counts(&name)
                    .map(|c| c.totals())
                    .unwrap_or_default(),
                name,
                owner,
            })
            .collect()
    }

    /// Every served (or wanted) certificate.
    pub(crate) fn certificates(&self) -> Vec<CertInfo> {
        self.certs.list()
    }

    /// Whether `peer` owned `name` until the operator released it (within [`RELEASE_HOLD`]),
    /// so its Register is refused rather than quietly undoing the release.
    pub(crate) fn released_from(&self, name: &str, peer: &PeerId) -> bool {
        self.released_from_owner(name, &peer.to_string())
    }

    /// [`Self::released_from`] for any owner text (a fleet id for a group name).
    pub(crate) fn released_from_owner(&self, name: &str, owner: &str) -> bool {
        if let Some(store) = self.names.cluster() {
            return store.hold(name).as_deref() == Some(owner);
        }
        let released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        released
            .get(name)
            .is_some_and(|(held, at)| at.elapsed() < RELEASE_HOLD && held == owner)
    }

    /// The operator lifts the hold on `name` (a release by mistake): its previous owner may
    /// register it again (the provider has dropped it, so its operator re-exposes the app).
    /// Returns that previous owner; `None` when nothing was held. Clustered, the hold is
    /// lifted in etcd (an error while etcd is away).
    pub(crate) async fn lift_hold(&self, name: &str) -> Result<Option<String>, NameStoreError> {
        if let Some(store) = self.names.cluster() {
            return store
                .lift_hold(name)
                .await
                .map_err(crate::cluster::cluster_error);
        }
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        Ok(released
            .remove(name)
            .filter(|(_, at)| at.elapsed() < RELEASE_HOLD)
            .map(|(owner, _)| owner))
    }

    /// `name` has a new owner: the hold on its previous one ends.
    pub(crate) fn claimed(&self, name: &str) {
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        released.remove(name);
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The operator's disconnect reason as it travels in the GoAway, the QUIC close frame, the
/// event and both sides' logs: at most [`MAX_DISCONNECT_REASON`] characters, control
/// characters (a newline would forge a log line) turned into spaces.
fn disconnect_reason(reason: &str) -> String {
    reason
        .chars()
        .take(MAX_DISCONNECT_REASON)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod disconnect_reason_tests {
    use super::*;

    #[test]
    fn reasons_are_cut_and_lose_control_characters() {
        assert_eq!(disconnect_reason("maintenance"), "maintenance");
        assert_eq!(
            disconnect_reason("line\nforged=1\r\u{1b}[31m"),
            "line forged=1  [31m"
        );
        let long = "é".repeat(MAX_DISCONNECT_REASON + 5);
        assert_eq!(
            disconnect_reason(&long).chars().count(),
            MAX_DISCONNECT_REASON
        );
    }
}
