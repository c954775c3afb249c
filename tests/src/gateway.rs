//! A gateway started from its library on 127.0.0.1 port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peercompute_gateway::{GatewayConfig, Listeners, TlsMode};
use peercompute_identity::PeerId;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Domain every test gateway serves.
pub const DOMAIN: &str = "apps.test";

/// Knobs a test may turn; defaults are short so failures show quickly.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub allow: Vec<PeerId>,
    pub allow_file: Option<PathBuf>,
    pub open: bool,
    pub rate_limit: u32,
    pub rate_limit_ip: u32,
    pub upstream_timeout: Duration,
    pub header_read_timeout: Duration,
    pub grace_period: Duration,
    pub max_connections: usize,
    /// Run the libp2p meeting point (relay + rendezvous) on 127.0.0.1 (TCP and QUIC).
    pub p2p: bool,
    pub relay_max_circuit_bytes: u64,
    pub relay_reservation_duration: Duration,
    /// `--admin-token-file`.
    pub admin_token_file: Option<PathBuf>,
    /// `--admin-host` names.
    pub admin_host: Vec<String>,
    /// `--metrics-max-routes`.
    pub metrics_max_routes: usize,
    /// `--access-log` with its rotation size and count.
    pub access_log: Option<PathBuf>,
    pub access_log_max_bytes: u64,
    pub access_log_keep: usize,
    /// Where the state directory is made (a [`crate::small_disk::SmallDisk`]); `/tmp` if None.
    pub state_parent: Option<PathBuf>,
    /// `max_owned_names_per_provider`.
    pub max_owned_names_per_provider: usize,
    /// `max_streams_per_tunnel`.
    pub max_streams_per_tunnel: usize,
    /// `--cluster` endpoints (`etcd://127.0.0.1:PORT`, see [`crate::etcd::EtcdServer`]).
    pub cluster: Option<Vec<String>>,
    /// `--cluster-ca`, `--cluster-cert`, `--cluster-key` (for `etcds://`).
    pub cluster_tls: Option<[PathBuf; 3]>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            allow_file: None,
            open: false,
            rate_limit: 0,
            rate_limit_ip: 0,
            upstream_timeout: Duration::from_secs(3),
            header_read_timeout: Duration::from_secs(2),
            grace_period: Duration::from_secs(10),
            max_connections: 1000,
            p2p: false,
            relay_max_circuit_bytes: 16 * 1024 * 1024,
            relay_reservation_duration: Duration::from_secs(3600),
            admin_token_file: None,
            admin_host: Vec::new(),
            metrics_max_routes: 500,
            access_log: None,
            access_log_max_bytes: 100 * 1024 * 1024,
            access_log_keep: 5,
            state_parent: None,
            max_owned_names_per_provider: GatewayConfig::default().max_owned_names_per_provider,
            max_streams_per_tunnel: GatewayConfig::default().max_streams_per_tunnel,
            cluster: None,
            cluster_tls: None,
        }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct TestGateway {
    pub state: Arc<tempfile::TempDir>,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub tunnel: SocketAddr,
    pub peer_id: PeerId,
    pub ca_pem: Vec<u8>,
    pub options: GatewayOptions,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(options: GatewayOptions) -> Self {
        let state = match &options.state_parent {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        };
        let state = Arc::new(state.expect("gateway state dir"));
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        Self::start_on(state, options, any, any, any).await
    }

    async fn start_on(
        state: Arc<tempfile::TempDir>,
        options: GatewayOptions,
        https: SocketAddr,
        admin: SocketAddr,
        tunnel: SocketAddr,
    ) -> Self {
        crate::init();
        let https_l = TcpListener::bind(https).await.expect("bind https");
        let admin_l = TcpListener::bind(admin).await.expect("bind admin");
        let udp = bind_udp_retry(tunnel).await;
        let (https, admin, tunnel) = (
            https_l.local_addr().expect("addr"),
            admin_l.local_addr().expect("addr"),
            udp.local_addr().expect("addr"),
        );
        let ca = peercompute_gateway::dev_tls(state.path(), DOMAIN).expect("dev tls");
        let ca_pem = std::fs::read(ca).expect("read dev CA");
        let (identity, _) = peercompute_gateway::identity(state.path()).expect("identity");
        let config = GatewayConfig {
            domain: DOMAIN.into(),
            state_dir: state.path().to_path_buf(),
            public_port: Some(https.port()),
            tls: TlsMode::Dev,
            allow_providers: options.allow.iter().map(ToString::to_string).collect(),
            allow_providers_file: options.allow_file.clone(),
            open: options.open,
            rate_limit: options.rate_limit,
            rate_limit_ip: options.rate_limit_ip,
            upstream_timeout: options.upstream_timeout,
            header_read_timeout: options.header_read_timeout,
            grace_period: options.grace_period,
            max_connections: options.max_connections,
            p2p_listen: if options.p2p {
                vec![
                    "/ip4/127.0.0.1/tcp/0".into(),
                    "/ip4/127.0.0.1/udp/0/quic-v1".into(),
                ]
            } else {
                Vec::new()
            },
            relay_max_circuit_bytes: options.relay_max_circuit_bytes,
            relay_reservation_duration: options.relay_reservation_duration,
            admin_token_file: options.admin_token_file.clone(),
            admin_host: options.admin_host.clone(),
            metrics_max_routes: options.metrics_max_routes,
            access_log: options.access_log.clone(),
            access_log_max_bytes: options.access_log_max_bytes,
            access_log_keep: options.access_log_keep,
            max_owned_names_per_provider: options.max_owned_names_per_provider,
            max_streams_per_tunnel: options.max_streams_per_tunnel,
            cluster: options.cluster.clone().unwrap_or_default(),
            cluster_ca: options.cluster_tls.as_ref().map(|[ca, _, _]| ca.clone()),
            cluster_cert: options
                .cluster_tls
                .as_ref()
                .map(|[_, cert, _]| cert.clone()),
            cluster_key: options.cluster_tls.as_ref().map(|[_, _, key]| key.clone()),
            ..GatewayConfig::default()
        };
        let listeners = Listeners {
            https: https_l,
            http: None,
            tunnel: udp,
            admin: Some(admin_l),
        };
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            peercompute_gateway::run(config, listeners, shutdown)
                .await
                .expect("gateway run");
        });
        Self {
            state,
            https,
            admin,
            tunnel,
            peer_id: identity.peer_id(),
            ca_pem,
            options,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `https://<name>.apps.test:<port><path>`
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("https://{name}.{DOMAIN}:{}{path}", self.https.port())
    }

    /// Graceful shutdown (SIGTERM path): returns once `run` returned.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            crate::within(60, "gateway shutdown", task)
                .await
                .expect("gateway task");
        }
    }

    /// Ends the gateway as a crash would, as far as one process allows: its task is aborted
    /// (no drain, no GoAway, no lease revoke: its etcd records go when its lease expires).
    pub async fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        // Only now: a dropped sender would start a graceful shutdown.
        self.stop.take();
    }

    /// Signals shutdown without waiting; returns the task to await later.
    pub fn begin_shutdown(&mut self) -> Option<JoinHandle<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take()
    }

    /// Shuts down, then starts again on the same ports with the same state directory.
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let (state, options) = (self.state.clone(), self.options.clone());
        Self::start_on(state, options, self.https, self.admin, self.tunnel).await
    }

    /// The gateway's p2p TCP address with its peer id (`/ip4/127.0.0.1/tcp/P/p2p/ID`), as
    /// the gateway writes it to its state dir once its node listens (needs `p2p: true`).
    pub async fn p2p_addr(&self) -> peercompute_p2p::Multiaddr {
        let path = self
            .state
            .path()
            .join(peercompute_gateway::P2P_ADDRESSES_FILE);
        let text = crate::within(15, "the gateway's p2p addresses", async {
            loop {
                if let Ok(text) = tokio::fs::read_to_string(&path).await {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let line = text
            .lines()
            .find(|l| l.contains("/tcp/"))
            .expect("a TCP p2p address");
        let (_, addr) = line.split_once('@').expect("PEERID@ADDR");
        let addr: peercompute_p2p::Multiaddr = addr.parse().expect("multiaddr");
        addr.with(peercompute_p2p::Protocol::P2p(self.peer_id))
    }

    /// GET on the admin listener; returns the body.
    pub async fn admin_get(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.admin);
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("admin request")
            .text()
            .await
            .expect("admin body")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds the tunnel's UDP socket. Re-binding the same port right after a graceful shutdown
/// can race the old endpoint driver's release of the socket for a moment: retry, bounded.
async fn bind_udp_retry(addr: SocketAddr) -> std::net::UdpSocket {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match peercompute_tunnel_proto::bind_udp(addr) {
            Ok((socket, _)) => return socket,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("cannot bind UDP {addr}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
