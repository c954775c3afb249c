//! The gateway library started with `--tls acme` (or `auto` on a public domain) on
//! 127.0.0.1. Listeners are bound first
//! (port 0) so pebble can be told where to validate HTTP-01 and TLS-ALPN-01; a restart
//! rebinds the same ports with the same state directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peercompute_gateway::{GatewayConfig, Listeners, TlsMode};
use peercompute_identity::PeerId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Domain of every ACME test gateway (and of the bind9 zone).
pub const ACME_DOMAIN: &str = "acme.test";

/// Where a test gateway listens.
#[derive(Debug, Clone, Copy)]
pub struct AcmePorts {
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub tunnel: SocketAddr,
}

/// A running gateway with `--tls acme`.
#[derive(Debug)]
pub struct AcmeGateway {
    pub state: Arc<tempfile::TempDir>,
    pub ports: AcmePorts,
    pub peer_id: PeerId,
    pub config: GatewayConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AcmeGateway {
    /// Binds fresh loopback listeners (port 0).
    pub async fn bind() -> (AcmePorts, Listeners) {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        bind_on(any, any, any, any).await
    }

    /// A configuration for `ports` and `state` with the test knobs set; the caller adds the
    /// ACME directory, CA and challenge settings.
    pub fn config(state: &tempfile::TempDir, ports: &AcmePorts) -> GatewayConfig {
        GatewayConfig {
            domain: ACME_DOMAIN.into(),
            state_dir: state.path().to_path_buf(),
            https_listen: ports.https,
            http_listen: Some(ports.http),
            tunnel_listen: ports.tunnel,
            admin_listen: Some(ports.admin),
            public_port: Some(ports.https.port()),
            tls: TlsMode::Acme,
            open: true,
            rate_limit: 0,
            rate_limit_ip: 0,
            acme_retry_initial: Duration::from_millis(500),
            grace_period: Duration::from_secs(5),
            p2p_listen: Vec::new(),
            ..GatewayConfig::default()
        }
    }

    /// Runs the gateway on `listeners`.
    pub fn start(
        state: Arc<tempfile::TempDir>,
        ports: AcmePorts,
        listeners: Listeners,
        config: GatewayConfig,
    ) -> Self {
        crate::init();
        let (identity, _) = peercompute_gateway::identity(state.path()).expect("identity");
        let (stop, rx) = oneshot::channel::<()>();
        let run_config = config.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            peercompute_gateway::run(run_config, listeners, shutdown)
                .await
                .expect("gateway run");
        });
        Self {
            state,
            ports,
            peer_id: identity.peer_id(),
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown; returns once `run` returned.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            crate::within(30, "gateway shutdown", task)
                .await
                .expect("gateway task");
        }
    }

    /// Ends the gateway as a crash would, as far as one process allows: its task is aborted
    /// (no drain, no lease revoke: what it held in etcd goes when its lease expires).
    pub async fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        // Only now: a dropped sender would start a graceful shutdown.
        self.stop.take();
    }

    /// Shuts down, then starts again on the same ports and state directory.
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let p = self.ports;
        let (ports, listeners) = bind_on(p.https, p.http, p.admin, p.tunnel).await;
        Self::start(self.state.clone(), ports, listeners, self.config.clone())
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.ports.admin);
        let resp = crate::within(10, "metrics", reqwest::Client::new().get(url).send())
            .await
            .expect("metrics request");
        resp.text().await.expect("metrics body")
    }

    /// Sum of the samples whose line starts with `series` (name plus optional labels).
    pub async fn metric(&self, series: &str) -> f64 {
        sum_metric(&self.metrics().await, series)
    }

    /// Polls `series` until it reaches `at_least`; fails the test after `secs`.
    pub async fn wait_metric(&self, series: &str, at_least: f64, secs: u64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.metrics().await;
            let v = sum_metric(&text, series);
            if v >= at_least {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{series} stayed at {v} (< {at_least}) for {secs}s; metrics:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A TLS handshake with SNI `sni`, trusting only `root_pem`, offering `alpn`; returns
    /// the leaf the gateway served.
    pub async fn handshake(
        &self,
        sni: &str,
        root_pem: &[u8],
        alpn: &[&[u8]],
    ) -> Result<CertificateDer<'static>, String> {
        let connector = TlsConnector::from(Arc::new(tls_config(root_pem, alpn)));
        let tcp = TcpStream::connect(self.ports.https)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no certificate")?
            .clone()
            .into_owned();
        Ok(leaf)
    }

    /// An HTTPS client trusting only `root_pem` that resolves `<name>.<domain>` for each of
    /// `names` (and the apex) to this gateway.
    pub fn client(&self, root_pem: &[u8], names: &[&str]) -> reqwest::Client {
        let domain = &self.config.domain;
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(root_pem, &[b"h2", b"http/1.1"]))
            .no_proxy()
            .resolve(domain, self.ports.https);
        for n in names {
            b = b.resolve(&format!("{n}.{domain}"), self.ports.https);
        }
        b.build().expect("reqwest client")
    }

    /// `https://<name>.<domain>:<port><path>` (the domain is `acme.test` unless the test set
    /// another).
    pub fn url(&self, name: &str, path: &str) -> String {
        format!(
            "https://{name}.{}:{}{path}",
            self.config.domain,
            self.ports.https.port()
        )
    }
}

impl Drop for AcmeGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn tls_config(root_pem: &[u8], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert.expect("root PEM")).expect("add root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

fn sum_metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn bind_on(
    https: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    tunnel: SocketAddr,
) -> (AcmePorts, Listeners) {
    let tcp = |addr: SocketAddr| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("cannot bind {addr}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    let (https, http, admin) = (tcp(https).await, tcp(http).await, tcp(admin).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let udp = loop {
        match peercompute_tunnel_proto::bind_udp(tunnel) {
            Ok((socket, _)) => break socket,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("cannot bind UDP {tunnel}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let ports = AcmePorts {
        https: https.local_addr().expect("addr"),
        http: http.local_addr().expect("addr"),
        admin: admin.local_addr().expect("addr"),
        tunnel: udp.local_addr().expect("addr"),
    };
    let listeners = Listeners {
        https,
        http: Some(http),
        tunnel: udp,
        admin: Some(admin),
    };
    (ports, listeners)
}
