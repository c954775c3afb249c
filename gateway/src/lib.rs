//! `peercompute-gateway`: the public edge of Peer Compute.
//!
//! Visitors speak HTTPS (HTTP/1.1 or HTTP/2) to `https://<name>.<domain>`; providers keep a
//! QUIC connection open to the gateway and each visitor request travels to them on its own
//! QUIC stream. Data path, in file order:
//!
//! - [`server`](crate::server): HTTPS accept loop, connection cap, TLS, hyper, graceful drain.
//! - [`proxy`](crate::proxy): per request — host → route, rate limits, stream to the provider,
//!   header rewriting (`proxy/headers.rs`), WebSocket upgrades.
//! - [`host`](crate::host): host normalisation and the host → route rule.
//! - [`ratelimit`](crate::ratelimit): per-host and per-IP token buckets.
//! - [`tunnel`](crate::tunnel): QUIC listener, provider authentication, control stream.
//! - [`registry`](crate::registry) (live routes) and [`names`](crate::names) (persistent name
//!   ownership); [`allow`](crate::allow): which providers may connect;
//!   [`cluster`](crate::cluster): with `--cluster`, both shared by several gateways in etcd.
//! - [`tunnels`](crate::tunnels): the connected providers, and the operator's kicks (disconnect,
//!   name released); [`events`](crate::events): the numbered event bus for the admin API;
//!   [`traffic`](crate::traffic): per-app and per-tunnel counters, the `route` metric labels
//!   (capped) and the per-second ticks of the dashboard.
//! - [`tls`](crate::tls): `--tls auto` (`tls/auto.rs`: dev CA for local names, ACME for public
//!   ones), dev CA / PEM files / ACME (`tls/acme/`: DNS-01 over RFC 2136, HTTP-01,
//!   TLS-ALPN-01, renewal and hot swap) behind SNI resolvers; `tls/status.rs`: what the
//!   operator sees of each certificate.
//! - [`plain`](crate::plain): the port-80 redirect (and HTTP-01 answers);
//!   [`admin`](crate::admin): the admin listener (health, metrics, the JSON API, the event
//!   stream, the dashboard); [`metrics`](crate::metrics).
//! - [`config`](crate::config): every setting, from flags or TOML;
//!   [`access_log`](crate::access_log): the optional JSON-lines access log.
//! - `fleet`: the fleets' logs, held as a member without keys — verified, stored, pushed on
//!   to robots — and robots' signed statuses (on the p2p node). `fleet_names`: a group's
//!   robots all serve `<app>.<domain>`, as the fleet log held here allows (`RegisterFleet`),
//!   checked again on every change of that log.
//!
//! The binary parses flags and calls [`run`] with listeners it bound, so tests bind port 0.

pub mod access_log;
mod admin;
mod allow;
mod cluster;
mod config;
mod events;
mod fleet;
mod fleet_follow;
mod fleet_names;
mod h2guard;
mod host;
mod metrics;
mod names;
mod p2p;
mod plain;
mod proxy;
mod ratelimit;
mod registry;
mod server;
mod state;
#[cfg(feature = "testsupport")]
pub mod testsupport;
mod tls;
mod traffic;
mod tunnel;
mod tunnels;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peercompute_identity::Identity;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub use allow::AllowlistError;
pub use config::{
    AcmeChallenge, ConfigError, DnsProvider, GatewayConfig, LETS_ENCRYPT, LETS_ENCRYPT_STAGING,
    TlsMode, TunnelCongestion,
};
pub use names::NameStoreError;
pub use p2p::P2P_ADDRESSES_FILE;
pub use tls::{
    ChallengeReason, PINNED_SNI, PrivateName, TlsChoice, TlsError, TlsReason, TlsSource,
};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {what} on {addr}: {source} (is another process using it?)")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] peercompute_identity::IdentityError),
    #[error(transparent)]
    Names(#[from] NameStoreError),
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
    #[error("--cluster: {0}")]
    Cluster(#[from] peercompute_cluster::ClusterError),
    #[error(transparent)]
    Certificates(#[from] TlsError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("QUIC endpoint: {0}")]
    Quic(std::io::Error),
    #[error("p2p meeting point (--p2p-listen): {0}")]
    P2p(String),
    #[error("cannot open the access log {path}: {source} (check --access-log)")]
    AccessLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin listener (--admin-listen): {0}")]
    Admin(std::io::Error),
    #[error(transparent)]
    AdminTokens(#[from] peercompute_ops::tokens::TokenFileError),
}

/// Sockets the gateway serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    pub https: TcpListener,
    pub http: Option<TcpListener>,
    pub tunnel: std::net::UdpSocket,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address of `config`.
    pub async fn bind(config: &GatewayConfig) -> Result<Self, GatewayError> {
        let tcp = |what, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { what, addr, source })
        };
        let https = tcp("HTTPS", config.https_listen).await?;
        let http = match config.http_listen {
            Some(addr) => Some(tcp("HTTP", addr).await?),
            None => None,
        };
        let admin = match config.admin_listen {
            Some(addr) => Some(tcp("admin", addr).await?),
            None => None,
        };
        let (tunnel, granted) =
            peercompute_tunnel_proto::bind_udp(config.tunnel_listen).map_err(|source| {
                GatewayError::Bind {
                    what: "tunnel (UDP)",
                    addr: config.tunnel_listen,
                    source,
                }
            })?;
        warn_small_udp_buffer(granted);
        Ok(Self {
            https,
            http,
            tunnel,
            admin,
        })
    }
}

fn warn_small_udp_buffer(granted: usize) {
    // Linux reports twice the usable size.
    if granted < 4 * 1024 * 1024 {
        warn!(
            granted_bytes = granted,
            "the kernel capped the tunnel's UDP receive buffer; under load QUIC will drop packets. \
             Raise it with: sysctl -w net.core.rmem_max=8388608 net.core.wmem_max=8388608"
        );
    }
}

/// Loads (or creates) the gateway identity kept in `state_dir`.
pub fn identity(state_dir: &Path) -> Result<(Identity, bool), GatewayError> {
    std::fs::create_dir_all(state_dir).map_err(|source| GatewayError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    Ok(Identity::load_or_create(state_dir)?)
}

/// Path of the dev CA certificate in `state_dir` (with `--tls dev`).
pub fn dev_ca_path(state_dir: &Path) -> PathBuf {
    state_dir.join("dev-ca.pem")
}

/// Prepares the dev CA and the certificate for `domain` in `state_dir` (what `--tls dev`
/// does at start; idempotent). Returns the CA certificate path.
pub fn dev_tls(state_dir: &Path, domain: &str) -> Result<PathBuf, GatewayError> {
    std::fs::create_dir_all(state_dir).map_err(|source| GatewayError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    Ok(tls::ensure_dev_certs(state_dir, domain)?.0)
}

/// Serves the admin listener on a runtime of its own (one thread, `admin`), so the event
/// stream and the API are never queued behind visitor traffic on the main runtime. Measured
/// with `admin-events-bench` (debug build, 1000 visitor connections, 2 busy cores): event
/// emitted→delivered p99 68 ms on the shared runtime, 22 ms apart. The receiver resolves when
/// the listener has stopped.
async fn serve_admin_apart(
    listener: TcpListener,
    router: axum::Router,
    stop: watch::Receiver<bool>,
) -> Result<tokio::sync::oneshot::Receiver<()>, GatewayError> {
    let listener = listener.into_std().map_err(GatewayError::Admin)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            // Built and dropped on this thread (never inside `run`'s async context); the
            // listener is re-registered with this runtime's own reactor.
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    let listener = {
                        let _inside = runtime.enter();
                        TcpListener::from_std(listener)?
                    };
                    Ok((runtime, listener))
                });
            match started {
                Ok((runtime, listener)) => {
                    let _ = ready_tx.send(Ok(()));
                    runtime.block_on(admin::serve(listener, router, stop));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
            let _ = done_tx.send(());
        })
        .map_err(GatewayError::Admin)?;
    match ready_rx.await {
        Ok(Ok(())) => Ok(done_rx),
        Ok(Err(e)) => Err(GatewayError::Admin(e)),
        Err(_) => Err(GatewayError::Admin(std::io::Error::other(
            "the admin thread ended while starting",
        ))),
    }
}

/// Runs the gateway until `shutdown` resolves, then drains and returns.
pub async fn run(
    config: GatewayConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let config = config.validate()?;
    let (identity, _) = identity(&config.state_dir)?;
    let cluster = cluster::connect(&config, &identity.peer_id()).await?;
    let names = match &cluster {
        Some(store) => cluster::Names::Cluster {
            store: store.clone(),
            max_owned: config.max_owned_names_per_provider,
        },
        None => cluster::Names::Local(
            names::NameStore::open(&config.state_dir)?
                .with_owned_limit(config.max_owned_names_per_provider),
        ),
    };
    let allow = allow::Allowlist::new(
        config.open,
        &config.allow_providers,
        config.allow_providers_file.clone(),
    )?
    .with_cluster(cluster.clone());
    let choice = config.tls_choice();
    info!("{}", config.tls_line());
    let mut served_leaf = None;
    let (cert_store, visitor_tls, acme) = match choice.source {
        TlsSource::Dev => {
            let (_, chain, key) = tls::ensure_dev_certs(&config.state_dir, &config.domain)?;
            served_leaf = chain.first().and_then(tls::status::Leaf::parse);
            let store = tls::CertStore::new(tls::certified_key(chain, &key)?);
            (store.clone(), server::visitor_tls(store, false), None)
        }
        TlsSource::Files => {
            let (cert, key) = match (&config.cert, &config.key) {
                (Some(c), Some(k)) => (c, k),
                _ => unreachable!("validate() requires --cert and --key with --tls files"),
            };
            let (chain, key) = tls::load_pem_files(cert, key)?;
            served_leaf = chain.first().and_then(tls::status::Leaf::parse);
            let store = tls::CertStore::new(tls::certified_key(chain, &key)?);
            (store.clone(), server::visitor_tls(store, false), None)
        }
        TlsSource::Acme(challenge) => {
            let (prepared, hooks) = tls::acme::prepare(&config, challenge, cluster.as_ref())?;
            let visitor = server::visitor_tls(prepared.resolver.clone(), prepared.offer_acme_tls);
            (prepared.store.clone(), visitor, Some((prepared, hooks)))
        }
    };
    let tunnel_tls = tunnel::tunnel_tls(&identity, cert_store)?;
    let quic_config = tunnel::server_config(
        tunnel_tls.clone(),
        config::quic_congestion(config.tunnel_congestion),
    )?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(quic_config),
        listeners.tunnel,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(GatewayError::Quic)?;

    let (acme, acme_hooks) = match acme {
        Some((prepared, hooks)) => (Some(prepared), hooks),
        None => (None, tls::acme::Hooks::default()),
    };
    let access_log = match &config.access_log {
        Some(path) => Some(
            access_log::AccessLog::open(path, config.access_log_max_bytes, config.access_log_keep)
                .map_err(|source| GatewayError::AccessLog {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let shared = state::Shared::new(
        config,
        identity.peer_id(),
        names,
        allow,
        acme_hooks,
        access_log,
    );
    if let Some(leaf) = served_leaf {
        let source = match choice.source {
            TlsSource::Files => "files",
            _ => "dev",
        };
        shared
            .certs
            .served(&shared.config.domain, source, &leaf, None);
    }
    // A bad token file is a start error, before anything is served.
    let admin = match listeners.admin {
        Some(l) => Some((l, admin::router(shared.clone())?)),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_done = match admin {
        Some((l, router)) => Some(serve_admin_apart(l, router, stop_rx.clone()).await?),
        None => None,
    };
    let acme_task = acme.map(|prepared| prepared.spawn(shared.clone(), stop_rx.clone()));
    let p2p_node = p2p::start(&identity, &shared).await?;
    let fleet_tasks = match &p2p_node {
        Some(node) => {
            let (hub, tasks) = fleet::start(&shared, node)?;
            let _ = shared.fleet.set(hub);
            tasks
        }
        None => Vec::new(),
    };
    info!(
        peer_id = %shared.peer_id,
        https = ?listeners.https.local_addr().ok(),
        tunnel = ?endpoint.local_addr().ok(),
        "gateway running; providers connect with --gateway {}@HOST:PORT",
        shared.peer_id
    );

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(tunnel::accept_loop(
        endpoint.clone(),
        shared.clone(),
        stop_rx.clone(),
    ));
    let https = tokio::spawn(server::serve_https(
        listeners.https,
        server::TlsConfigs {
            visitor: visitor_tls,
            tunnel: Arc::new(tunnel_tls),
        },
        shared.clone(),
        stop_rx.clone(),
    ));
    if let Some(l) = listeners.http {
        tasks.spawn(plain::serve_plain(
            l,
            shared.clone(),
            plain::redirect,
            stop_rx.clone(),
        ));
    }
    tasks.spawn(traffic::sample_loop(shared.clone(), stop_rx.clone()));
    if let Some(store) = cluster.clone() {
        let _ = shared.elsewhere.set(cluster::tunnels::follow(&store));
        tasks.spawn(cluster::tunnels::publish(
            shared.clone(),
            store.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(cluster::follow(shared.clone(), store, stop_rx.clone()));
    }
    let purge_shared = shared.clone();
    let mut purge_stop = stop_rx.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    purge_shared.limits.purge();
                    let keys = i64::try_from(purge_shared.limits.keys()).unwrap_or(i64::MAX);
                    purge_shared.metrics.rate_limit_keys.set(keys);
                }
                _ = purge_stop.changed() => return,
            }
        }
    });

    shutdown.await;
    info!("shutting down: telling providers to go away, draining requests");
    shared.start_draining();
    let _ = stop_tx.send(true);
    let _ = https.await;
    if let Some(log) = shared.access_log.clone() {
        // Writes the last queued lines before the process exits (bounded).
        let _ = tokio::task::spawn_blocking(move || log.close(Duration::from_secs(2))).await;
    }
    if let Some(done) = admin_done {
        // Its own drain is bounded (2 s); the port is free once it returns.
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
    }
    if let Some(task) = acme_task {
        // Lets the certificate manager withdraw any challenge record it published.
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    endpoint.close(
        peercompute_tunnel_proto::GoAwayCode::Shutdown
            .to_u16()
            .into(),
        b"gateway shut down",
    );
    // TCP tunnels have no endpoint to close: each was told to go away when the stop began.
    for tunnel in shared.tunnels.list() {
        tunnel.conn.close(
            peercompute_tunnel_proto::GoAwayCode::Shutdown,
            "gateway shut down",
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    tasks.abort_all();
    for task in fleet_tasks {
        task.abort();
    }
    if let Some(node) = p2p_node {
        node.shutdown().await;
    }
    if let Some(store) = cluster {
        // Writes the mirror a last time and gives the gateway lease back.
        store.shutdown().await;
    }
    info!("gateway stopped");
    Ok(())
}
