//! The pieces of an emulated internet with Peer Compute in it (see [`crate::netns`]): the
//! real gateway binary on a public host, with its p2p meeting point, and the provider daemon
//! in the root namespace behind a NAT. Shared by the NAT-traversal tests and `reach-bench`.

use std::time::{Duration, Instant};

use peercompute_identity::{Identity, PeerId, TrustStore};
use peercompute_p2p::{Multiaddr, PathKind};
use peercompute_provider::{GatewaySpec, Limits, RelayStatus};
use peercompute_tunnel_proto::{ControlPlaneMessage, ListRequest, Request};
use peerctl::{Client, ClientOptions};

use crate::daemon::{TestDaemon, workspace_bin};
use crate::gateway::DOMAIN;
use crate::netns::Host;
use crate::within;

/// Ports inside the gateway's namespace (private to it, so fixed ports never collide).
pub const HTTPS_PORT: u16 = 10443;
pub const TUNNEL_PORT: u16 = 8443;
pub const P2P_PORT: u16 = 4001;

/// The gateway binary running on a public host.
#[derive(Debug)]
pub struct Gateway {
    pub state: tempfile::TempDir,
    _child: tokio::process::Child,
    pub id: PeerId,
    pub ca: std::path::PathBuf,
}

/// Starts `peercompute-gateway` on `host`, admitting `provider`.
pub async fn start_gateway(host: &Host, provider: &PeerId) -> Gateway {
    let state = tempfile::tempdir().expect("gateway state");
    let (identity, _) = peercompute_gateway::identity(state.path()).expect("gateway identity");
    let ca = peercompute_gateway::dev_tls(state.path(), DOMAIN).expect("dev tls");
    let ip = host.ip();
    let log = std::fs::File::create(state.path().join("gateway.log")).expect("log");
    let child = host
        .command(workspace_bin("peercompute-gateway"))
        .args(["run", "--domain", DOMAIN, "--state-dir"])
        .arg(state.path())
        .args(["--https-listen", &format!("{ip}:{HTTPS_PORT}"), "--no-http"])
        .args(["--tunnel-listen", &format!("{ip}:{TUNNEL_PORT}")])
        .args(["--admin-listen", "127.0.0.1:9180"])
        .args(["--public-port", &HTTPS_PORT.to_string()])
        .args(["--allow-provider", &provider.to_string()])
        .args(["--rate-limit", "0", "--rate-limit-ip", "0"])
        .args(["--p2p-listen", &format!("/ip4/{ip}/tcp/{P2P_PORT}")])
        .args(["--p2p-listen", &format!("/ip4/{ip}/udp/{P2P_PORT}/quic-v1")])
        .env("RUST_LOG", "info,peercompute_p2p=debug,libp2p_relay=debug")
        .stderr(log)
        .spawn()
        .expect("gateway starts");
    Gateway {
        state,
        _child: child,
        id: identity.peer_id(),
        ca,
    }
}

/// The provider daemon in the root namespace (the home site's LAN host), tunnel to the
/// gateway through the home NAT, waiting until its relay slot is reserved.
pub async fn start_provider(
    home: tempfile::TempDir,
    root: &Host,
    gw_host: &Host,
    gw: &Gateway,
) -> TestDaemon {
    let spec = GatewaySpec {
        peer: Some(gw.id),
        host: gw_host.ip().to_string(),
        port: TUNNEL_PORT,
    };
    let ip = root.ip();
    let daemon = TestDaemon::start_custom(home, spec, Limits::default(), |c| {
        c.listen = vec![
            format!("/ip4/{ip}/udp/0/quic-v1").parse().expect("ma"),
            format!("/ip4/{ip}/tcp/0").parse().expect("ma"),
        ];
    })
    .await;
    let mut relay = daemon.daemon.as_ref().expect("running").relay.clone();
    let status = within(30, "relay slot at the gateway", async {
        relay
            .wait_for(|s| matches!(s, RelayStatus::Reserved { .. }))
            .await
            .map(|s| s.clone())
    })
    .await
    .expect("relay status");
    eprintln!("provider relay: {status:?}");
    daemon
}

impl Gateway {
    /// `PEERID@/ip4/IP/udp/P2P_PORT/quic-v1`, what `peerctl gateways add` takes.
    pub fn p2p_addr(&self, host: &Host) -> String {
        format!("{}@/ip4/{}/udp/{P2P_PORT}/quic-v1", self.id, host.ip())
    }
}

/// What one fresh client measured reaching the provider.
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    /// Connect + the first signed round trip (an `ls`) answered.
    pub reach: Duration,
    /// A second `ls` over the path once it is established.
    pub rtt: Duration,
    /// How the client was connected when it sent the second request.
    pub kind: PathKind,
}

/// One fresh client (new identity, trusted by `daemon`) on `host` reaches `provider` through
/// the in-process `peerctl` client: `addrs` stored for it, `gateways` known, `hole_punch_wait`
/// allowed for DCUtR, mDNS off.
pub async fn reach_once(
    host: &Host,
    provider: PeerId,
    addrs: Vec<Multiaddr>,
    gateways: Vec<(PeerId, Vec<Multiaddr>)>,
    hole_punch_wait: Duration,
    daemon: &TestDaemon,
) -> Result<Reach, String> {
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (identity, _) = Identity::load_or_create(home.path()).map_err(|e| e.to_string())?;
    daemon.trust(&identity.peer_id());
    let mut trust = TrustStore::open(home.path()).map_err(|e| e.to_string())?;
    trust
        .add(
            &provider.to_string(),
            None,
            &addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
        .map_err(|e| e.to_string())?;
    let options = ClientOptions {
        mdns: false,
        connect_timeout: Duration::from_secs(20),
        gateways,
        hole_punch_wait,
        ..ClientOptions::default()
    };
    let thread = host.spawn_thread(move || async move {
        let trust = TrustStore::open(home.path()).map_err(|e| e.to_string())?;
        let ls = || Request::List(ListRequest {});
        let start = Instant::now();
        let client = Client::connect(identity, &trust, &provider.to_string(), &options)
            .await
            .map_err(|e| e.to_string())?;
        let mut framed = client.send(&ls()).await.map_err(|e| e.to_string())?;
        match Client::next(&mut framed).await.map_err(|e| e.to_string())? {
            ControlPlaneMessage::ListResponse(_) => {}
            other => return Err(format!("unexpected {other:?}")),
        }
        let reach = start.elapsed();
        let again = Instant::now();
        let mut framed = client.send(&ls()).await.map_err(|e| e.to_string())?;
        Client::next(&mut framed).await.map_err(|e| e.to_string())?;
        let rtt = again.elapsed();
        let kind = client.path().await.map(|p| p.kind).ok_or("not connected")?;
        Ok(Reach { reach, rtt, kind })
    });
    tokio::time::timeout(Duration::from_secs(60), thread.join())
        .await
        .map_err(|_| "no answer in 60 s".to_owned())?
}
