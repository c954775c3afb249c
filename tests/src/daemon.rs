//! The provider daemon and a peerctl client, for deploy tests.

use std::path::PathBuf;
use std::time::Duration;

use peercompute_identity::{Identity, PeerId, TrustStore};
use peercompute_provider::{Daemon, GatewaySpec, Limits, ProviderConfig};
use peercompute_tunnel_proto::{ControlPlaneMessage, Request};
use peerctl::{Client, ClientOptions};

use crate::gateway::TestGateway;

/// A running `peercomputed` (library), listening on 127.0.0.1 with mDNS off.
#[derive(Debug)]
pub struct TestDaemon {
    /// Removes every container this daemon ran when the test ends (declared first: dropped
    /// after the daemon stopped).
    _cleanup: peercompute_runtime::testsupport::Cleanup,
    pub home: tempfile::TempDir,
    pub peer_id: PeerId,
    pub daemon: Option<Daemon>,
    gateway: Option<GatewaySpec>,
    limits: Limits,
    /// Applied to the configuration at every start (restarts too).
    settings: fn(&mut ProviderConfig),
}

impl TestDaemon {
    /// A daemon whose identity is allowed by `gw` (pass `None` to start without a gateway).
    pub fn identity() -> (tempfile::TempDir, PeerId) {
        let home = tempfile::tempdir().expect("provider home");
        let (id, _) = Identity::load_or_create(home.path()).expect("provider identity");
        (home, id.peer_id())
    }

    pub async fn start(home: tempfile::TempDir, gw: &TestGateway, limits: Limits) -> Self {
        let gateway = GatewaySpec {
            peer: Some(gw.peer_id),
            host: gw.tunnel.ip().to_string(),
            port: gw.tunnel.port(),
        };
        Self::start_custom(home, gateway, limits, |_| {}).await
    }

    /// Like [`start`](Self::start), with `settings` applied to the configuration at this
    /// start and at every restart (volume limits, device grants).
    pub async fn start_with_settings(
        home: tempfile::TempDir,
        gw: &TestGateway,
        limits: Limits,
        settings: fn(&mut ProviderConfig),
    ) -> Self {
        let gateway = GatewaySpec {
            peer: Some(gw.peer_id),
            host: gw.tunnel.ip().to_string(),
            port: gw.tunnel.port(),
        };
        let mut daemon = Self::start_with(home, Some(gateway), limits, settings).await;
        daemon.settings = settings;
        daemon
    }

    /// A daemon with no gateway configured: deployments run without a public URL.
    pub async fn start_without_gateway(home: tempfile::TempDir, limits: Limits) -> Self {
        Self::start_with(home, None, limits, |_| {}).await
    }

    /// A daemon for the gateway at `gateway`, listening on 127.0.0.1 with mDNS off unless
    /// `tweak` changes the configuration.
    pub async fn start_custom(
        home: tempfile::TempDir,
        gateway: GatewaySpec,
        limits: Limits,
        tweak: impl FnOnce(&mut ProviderConfig),
    ) -> Self {
        Self::start_with(home, Some(gateway), limits, tweak).await
    }

    async fn start_with(
        home: tempfile::TempDir,
        gateway: Option<GatewaySpec>,
        limits: Limits,
        tweak: impl FnOnce(&mut ProviderConfig),
    ) -> Self {
        crate::init();
        let daemon = Self::launch(
            home.path().to_path_buf(),
            gateway.clone(),
            limits,
            "/ip4/127.0.0.1/tcp/0",
            tweak,
        )
        .await;
        let cleanup = peercompute_runtime::testsupport::Cleanup::new();
        cleanup.containers_labelled(
            peercompute_runtime::LABEL_PROVIDER,
            &daemon.peer_id.to_string(),
        );
        Self {
            _cleanup: cleanup,
            peer_id: daemon.peer_id,
            home,
            daemon: Some(daemon),
            gateway,
            limits,
            settings: |_| {},
        }
    }

    async fn launch(
        home: PathBuf,
        gateway: Option<GatewaySpec>,
        limits: Limits,
        listen: &str,
        tweak: impl FnOnce(&mut ProviderConfig),
    ) -> Daemon {
        let mut config = ProviderConfig::new(home);
        config.gateways = gateway.into_iter().collect();
        config.listen = vec![listen.parse().expect("multiaddr")];
        config.mdns = false;
        config.deploy.limits = limits;
        config.deploy.ready_timeout = Duration::from_secs(20);
        // Parallel test processes never race for the default admin port.
        config.admin_listen =
            peercompute_provider::AdminListen::At("127.0.0.1:0".parse().expect("addr"));
        tweak(&mut config);
        let daemon = crate::within(30, "provider daemon start", Daemon::start(config))
            .await
            .expect("provider daemon starts");
        if let Some(tunnel) = &daemon.tunnel {
            crate::within(
                15,
                "provider tunnel",
                tunnel.wait_for(|s| {
                    matches!(s, peercompute_provider::TunnelStatus::Connected { .. })
                }),
            )
            .await;
        }
        daemon
    }

    /// The control-plane address to give clients.
    pub fn addr(&self) -> String {
        let daemon = self.daemon.as_ref().expect("running");
        format!("{}", daemon.listen_addrs.first().expect("a listen address"))
    }

    /// The engine name of volume `app/volume` of `client`'s deploys on this daemon, removed
    /// (with its data) when the test ends.
    pub fn volume(&self, client: &PeerId, app: &str, volume: &str) -> String {
        let name = peercompute_runtime::volume_name(
            &self.peer_id.to_string(),
            &peercompute_provider::volumes::peer_scope(client),
            app,
            volume,
        );
        self._cleanup.volume(&name);
        name
    }

    /// The containers this daemon runs, running or not (other tests run their own daemons
    /// on the same engine).
    pub async fn managed_count(&self) -> usize {
        let runtime = peercompute_runtime::DockerRuntime::connect()
            .await
            .expect("docker");
        let me = self.peer_id.to_string();
        runtime
            .list_managed()
            .await
            .expect("list")
            .iter()
            .filter(|c| c.labels.get(peercompute_runtime::LABEL_PROVIDER) == Some(&me))
            .count()
    }

    /// Trusts a client (what `peerctl --home <provider home> peers add` does).
    pub fn trust(&self, client: &PeerId) {
        let mut store = TrustStore::open(self.home.path()).expect("provider trust store");
        store
            .add(&client.to_string(), None, &[] as &[&str])
            .expect("trust client");
    }

    /// Graceful stop then start again with the same home and control-plane address
    /// (containers keep running).
    pub async fn restart(&mut self) {
        let addr = self.stop().await;
        self.start_again(&addr).await;
    }

    /// Graceful stop (containers keep running); the control-plane address to start again on.
    pub async fn stop(&mut self) -> String {
        let addr = self.addr();
        if let Some(d) = self.daemon.take() {
            d.shutdown().await;
        }
        addr
    }

    /// Starts a stopped daemon again with the same home, on `addr` (what [`stop`] returned).
    ///
    /// [`stop`]: TestDaemon::stop
    pub async fn start_again(&mut self, addr: &str) {
        assert!(self.daemon.is_none(), "stop the daemon first");
        let home = self.home.path().to_path_buf();
        let daemon =
            Self::launch(home, self.gateway.clone(), self.limits, addr, self.settings).await;
        self.daemon = Some(daemon);
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.abort();
        }
    }
}

/// A peerctl identity with its own home and trust file.
#[derive(Debug)]
pub struct TestClient {
    pub home: tempfile::TempDir,
    pub identity: Identity,
}

impl TestClient {
    pub fn new() -> Self {
        let home = tempfile::tempdir().expect("client home");
        let (identity, _) = Identity::load_or_create(home.path()).expect("client identity");
        Self { home, identity }
    }

    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// Trusts the provider at its address (`peerctl peers add ID --addr ADDR`).
    pub fn trust(&self, daemon: &TestDaemon) {
        let mut store = TrustStore::open(self.home.path()).expect("client trust store");
        store
            .add(&daemon.peer_id.to_string(), Some("prov"), &[daemon.addr()])
            .expect("trust provider");
    }

    /// Connects to the provider through the peerctl library.
    pub async fn connect(&self, daemon: &TestDaemon) -> Result<Client, peerctl::CliError> {
        let trust = TrustStore::open(self.home.path()).expect("trust store");
        let options = ClientOptions {
            mdns: false,
            connect_timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        Client::connect(
            self.identity.clone(),
            &trust,
            &daemon.peer_id.to_string(),
            &options,
        )
        .await
    }
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Sends `request` through `client` and returns the final answer (deploy progress skipped).
pub async fn answer(
    client: &Client,
    request: &Request,
) -> Result<ControlPlaneMessage, peerctl::CliError> {
    let mut framed = client.send(request).await?;
    loop {
        match Client::next(&mut framed).await? {
            ControlPlaneMessage::DeployProgress(_) => continue,
            other => return Ok(other),
        }
    }
}

/// A gateway admitting a fresh provider daemon, and the test image loaded: what every deploy
/// test starts from.
pub async fn deploy_world(limits: Limits) -> (TestGateway, TestDaemon, crate::TestImage) {
    let (home, provider_id) = TestDaemon::identity();
    let gw = TestGateway::start(crate::GatewayOptions {
        allow: vec![provider_id],
        ..crate::GatewayOptions::default()
    })
    .await;
    let image = crate::TestImage::load().await;
    let daemon = TestDaemon::start(home, &gw, limits).await;
    (gw, daemon, image)
}

/// The container of deployment `id` (any provider's), as the engine lists it.
pub async fn deployment_container(
    runtime: &peercompute_runtime::DockerRuntime,
    id: &str,
) -> peercompute_runtime::ManagedContainer {
    runtime
        .list_managed()
        .await
        .expect("list")
        .into_iter()
        .find(|m| m.deployment.as_ref().is_some_and(|d| d.deployment_id == id))
        .unwrap_or_else(|| panic!("no container for deployment {id}"))
}

/// Runs `peerctl --home HOME --no-mdns ARGS…` (60 s at most): exit code, stdout, stderr.
pub async fn run_peerctl(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let (code, out, err) = run_peerctl_bytes(home, args).await;
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

/// [`run_peerctl`] with stdout as bytes (an exported archive).
pub async fn run_peerctl_bytes(home: &std::path::Path, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = crate::within(
        60,
        "peerctl",
        tokio::process::Command::new(peerctl_bin())
            .arg("--home")
            .arg(home)
            .arg("--no-mdns")
            .args(args)
            .output(),
    )
    .await
    .expect("run peerctl");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Path of the `peerctl` binary built with the tests (target/<profile>/peerctl).
pub fn peerctl_bin() -> PathBuf {
    workspace_bin("peerctl")
}

/// Path of a workspace binary built with the tests (target/<profile>/NAME).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests live in target/<profile>/deps, benchmark programs in target/<profile>.
    let mut dir = exe.parent().expect("target/<profile>[/deps]");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run the tests with scripts/test, which builds the workspace binaries first (for a benchmark: cargo build --release --workspace --bins)",
        bin.display()
    );
    bin
}
