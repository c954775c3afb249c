//! `--tls acme` (and `auto` on a public domain): publicly trusted certificates from an ACME
//! server (RFC 8555), obtained, stored, renewed and hot-swapped with no manual step.
//!
//! Two modes, by the challenge [`super::auto`] picked:
//!
//! - **Wildcard** (DNS-01, when DNS-01 settings are given): one certificate for `D` and
//!   `*.D`. TXT records are published with TSIG-signed RFC 2136 updates ([`rfc2136`],
//!   [`dns01`], [`tsig`]).
//! - **Per name** (HTTP-01 or TLS-ALPN-01, needing no credentials): one certificate for the
//!   apex `D` at start and one per registered app name, ordered when a provider registers it,
//!   capped per hour; never for a host a visitor merely sends ([`http01`], [`tlsalpn01`]).
//!
//! Files, in data-path order: [`account`] (account + HTTPS client), [`order`] (one order),
//! [`solver`] (the challenge in use), [`store`] (certificates on disk), [`schedule`] (when to
//! renew or retry), [`renew`] (the manager task). Stored certificates are loaded by
//! [`prepare`] before the listeners start, so a restart never needs the ACME server.

mod account;
mod cluster;
mod dns01;
mod http01;
mod order;
mod renew;
mod rfc2136;
mod schedule;
mod solver;
mod store;
mod tlsalpn01;
mod tsig;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peercompute_cluster::ClusterStore;
use rustls::server::ResolvesServerCert;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::{AcmeChallenge, GatewayConfig};
use crate::state::Shared;
use crate::tls::{CertStore, TlsError};

pub(crate) use http01::Http01Tokens;
#[cfg(feature = "testsupport")]
pub(crate) use store::CertFiles;
pub(crate) use tlsalpn01::ACME_TLS_ALPN;

/// Registration events queued for the manager; beyond this they are picked up on its tick.
const REQUEST_QUEUE: usize = 256;

/// Which certificates are managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One certificate for `D` and `*.D` (DNS-01).
    Wildcard,
    /// One certificate per registered name (HTTP-01 / TLS-ALPN-01).
    PerName,
}

/// The ACME part of the configuration, checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) domain: String,
    pub(crate) directory: String,
    pub(crate) email: Option<String>,
    pub(crate) retry_initial: Duration,
}

/// What the rest of the gateway sees of ACME: the HTTP-01 answers for the port-80 listener
/// and the registration hook of the tunnel.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    http01: Http01Tokens,
    requests: Option<mpsc::Sender<String>>,
}

impl Hooks {
    /// The key authorization for `/.well-known/acme-challenge/<token>`, while it is live.
    pub(crate) fn http01_answer(&self, path: &str) -> Option<String> {
        self.http01.answer(path)
    }

    /// A provider registered `name`: in per-name mode its certificate gets ordered.
    pub(crate) fn name_registered(&self, name: &str) {
        if let Some(tx) = &self.requests
            && tx.try_send(name.to_owned()).is_err()
        {
            debug!(route = %name, "certificate request queue full; the manager's tick picks it up");
        }
    }
}

/// Everything `--tls acme` sets up before the gateway serves.
pub(crate) struct Prepared {
    /// The certificates served to visitors (and to CA-verifying providers).
    pub(crate) store: Arc<CertStore>,
    /// The visitor resolver (answers TLS-ALPN-01 challenges when that mode is on).
    pub(crate) resolver: Arc<dyn ResolvesServerCert>,
    /// Whether the visitor TLS config must offer ALPN `acme-tls/1`.
    pub(crate) offer_acme_tls: bool,
    manager: renew::Manager,
    /// With `--cluster`: the store and the sealing key, for [`cluster::ClusterAcme`].
    cluster: Option<(ClusterStore, [u8; 32])>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

impl Prepared {
    /// Starts the manager task; it returns after `stop` fires and challenges are withdrawn.
    pub(crate) fn spawn(
        mut self,
        shared: Arc<Shared>,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        if let Some((store, secret)) = self.cluster {
            let by = shared.peer_id.to_string();
            self.manager.cluster = Some(cluster::ClusterAcme::start(
                store,
                secret,
                by,
                shared.metrics.cluster_acme_lock.clone(),
                stop.clone(),
            ));
        }
        tokio::spawn(self.manager.run(shared, stop))
    }
}

/// Reads the TSIG key and CA, loads stored certificates into a new [`CertStore`], and builds
/// the manager (not yet running). Fails only on configuration problems, never because the
/// ACME or DNS server is unreachable.
pub(crate) fn prepare(
    config: &GatewayConfig,
    challenge: AcmeChallenge,
    cluster: Option<&ClusterStore>,
) -> Result<(Prepared, Hooks), TlsError> {
    let acme_err = |reason: String| TlsError::Invalid {
        path: PathBuf::from("--tls acme"),
        reason,
    };
    let mode = match challenge {
        AcmeChallenge::Dns01 => Mode::Wildcard,
        AcmeChallenge::Http01 | AcmeChallenge::TlsAlpn01 => Mode::PerName,
    };
    let settings = Settings {
        mode,
        domain: config.domain.clone(),
        directory: config.acme_directory.clone(),
        email: config.acme_email.clone(),
        retry_initial: config.acme_retry_initial,
    };
    let http01 = Http01Tokens::default();
    let alpn = tlsalpn01::AlpnChallenges::default();
    let solver = match challenge {
        AcmeChallenge::Dns01 => {
            let (Some(server), Some(key_path)) = (&config.dns_server, &config.dns_tsig_key) else {
                return Err(acme_err(
                    "DNS-01 needs --dns-server and --dns-tsig-key".into(),
                ));
            };
            let key = tsig::TsigKey::load(key_path).map_err(|e| acme_err(e.to_string()))?;
            let signer = key.signer().map_err(acme_err)?;
            let zone = config.dns_zone.as_deref().unwrap_or(&config.domain);
            let client =
                rfc2136::Rfc2136::new(server, zone, signer).map_err(|e| acme_err(e.to_string()))?;
            info!(server = %server, %zone, key = %key.name, "DNS-01 via RFC 2136 updates");
            solver::Solver::Dns01(dns01::Dns01::new(client))
        }
        AcmeChallenge::Http01 => solver::Solver::http01(http01.clone()),
        AcmeChallenge::TlsAlpn01 => solver::Solver::tls_alpn01(alpn.clone()),
    };
    let http = account::AcmeHttp::new(config.acme_ca.as_deref())?;
    let files = store::CertFiles::new(&config.state_dir);
    let store = CertStore::empty();
    let certs = load_stored(&files, &settings, &store);

    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let resolver: Arc<dyn ResolvesServerCert> = match challenge {
        AcmeChallenge::TlsAlpn01 => Arc::new(tlsalpn01::AlpnResolver {
            store: store.clone(),
            challenges: alpn,
        }),
        _ => store.clone(),
    };
    let manager = renew::Manager {
        settings,
        store: store.clone(),
        files,
        http,
        solver,
        account: None,
        certs,
        cap: schedule::HourlyCap::new(config.acme_orders_per_hour),
        requests: Some(rx),
        cluster: None,
    };
    let cluster = match cluster {
        Some(store) => {
            let secret = config
                .cluster_secret()
                .map_err(|e| acme_err(e.to_string()))?
                .ok_or_else(|| acme_err("--cluster needs --cluster-secret-file".into()))?;
            Some((store.clone(), secret))
        }
        None => None,
    };
    let hooks = Hooks {
        http01,
        requests: (mode == Mode::PerName).then_some(tx),
    };
    let prepared = Prepared {
        store,
        resolver,
        offer_acme_tls: challenge == AcmeChallenge::TlsAlpn01,
        manager,
        cluster,
    };
    Ok((prepared, hooks))
}

/// Loads the stored certificates into `store`; returns what the manager looks after.
fn load_stored(
    files: &store::CertFiles,
    settings: &Settings,
    store: &CertStore,
) -> BTreeMap<String, renew::Managed> {
    let mut certs = BTreeMap::new();
    let domain = &settings.domain;
    match settings.mode {
        Mode::Wildcard => {
            let names = vec![domain.clone(), format!("*.{domain}")];
            let managed = match files.load(domain) {
                Ok(Some(c)) => {
                    info!(certificate = %domain, not_after = %humantime::format_rfc3339_seconds(c.not_after), "serving the stored certificate");
                    store.swap(c.key.clone());
                    renew::Managed::stored(names, c, &settings.directory)
                }
                Ok(None) => {
                    info!(certificate = %domain, "no stored certificate yet: ordering one (HTTPS handshakes fail until it arrives)");
                    renew::Managed::missing(names)
                }
                Err(e) => {
                    warn!(certificate = %domain, "stored certificate unusable, ordering a new one: {e}");
                    renew::Managed::missing(names)
                }
            };
            certs.insert(domain.clone(), managed);
        }
        Mode::PerName => {
            let suffix = format!(".{domain}");
            for host in files.stored_names() {
                let app_name = host
                    .strip_suffix(&suffix)
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'));
                if !(app_name || host == *domain) {
                    continue;
                }
                match files.load(&host) {
                    Ok(Some(c)) => {
                        store.swap_name(&host, c.key.clone());
                        certs.insert(
                            host.clone(),
                            renew::Managed::stored(vec![host.clone()], c, &settings.directory),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => warn!(certificate = %host, "stored certificate unusable: {e}"),
                }
            }
            info!(
                stored = certs.len(),
                "per-name ACME certificates: {domain} now, an app's name when a provider registers it"
            );
            // The apex: the gateway's own page, and the name providers that verify the
            // gateway by CA (no pinned id) may dial.
            certs
                .entry(domain.clone())
                .or_insert_with(|| renew::Managed::missing(vec![domain.clone()]));
        }
    }
    certs
}
