//! A provider tunnel client started from its library.

use std::net::SocketAddr;

use peercompute_identity::Identity;
use peercompute_provider::{
    GatewaySpec, RegisterError, TransportMode, TunnelHandle, TunnelSettings, TunnelStatus,
    start_tunnel,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::gateway::TestGateway;

/// The transport [`TestProvider::start`] uses: TCP in a test binary whose name ends in `_tcp`
/// (such a file includes another suite's file, `#[path = "tunnel_http.rs"] mod suite;`, to run
/// every test of it over the TCP transport), auto otherwise (QUIC on loopback).
pub fn suite_transport() -> TransportMode {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    // Test binaries are named `<file>-<hash>`.
    let name = stem.rsplit_once('-').map_or(stem, |(name, _)| name);
    if name.ends_with("_tcp") {
        TransportMode::Tcp
    } else {
        TransportMode::Auto
    }
}

/// A running provider.
#[derive(Debug)]
pub struct TestProvider {
    pub identity: Identity,
    pub handle: TunnelHandle,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl TestProvider {
    /// A fresh identity (to put on the gateway's allowlist before connecting).
    pub fn identity() -> Identity {
        Identity::generate().expect("provider identity")
    }

    /// Starts the tunnel to `gateway`, pinning its peer id, over [`suite_transport`].
    pub fn start(identity: Identity, gateway: &TestGateway) -> Self {
        Self::start_over(identity, gateway, suite_transport())
    }

    /// Starts the tunnel to an explicit address and pinned id.
    pub fn start_to(
        identity: Identity,
        peer: peercompute_identity::PeerId,
        addr: SocketAddr,
    ) -> Self {
        Self::start_with(
            identity,
            TunnelSettings::new(GatewaySpec {
                peer: Some(peer),
                host: addr.ip().to_string(),
                port: addr.port(),
            }),
        )
    }

    /// Starts the tunnel to `gateway` over `transport`: TCP goes to its HTTPS listener.
    pub fn start_over(identity: Identity, gateway: &TestGateway, transport: TransportMode) -> Self {
        let mut settings = TunnelSettings::new(GatewaySpec {
            peer: Some(gateway.peer_id),
            host: gateway.tunnel.ip().to_string(),
            port: gateway.tunnel.port(),
        });
        settings.transport = transport;
        settings.gateways[0].https = Some((gateway.https.ip().to_string(), gateway.https.port()));
        Self::start_with(identity, settings)
    }

    /// Starts the tunnel with explicit settings.
    pub fn start_with(identity: Identity, settings: TunnelSettings) -> Self {
        crate::init();
        let (stop, rx) = watch::channel(false);
        let (handle, task) = start_tunnel(&identity, settings, rx).expect("start tunnel");
        Self {
            identity,
            handle,
            stop,
            task: Some(task),
        }
    }

    /// Publishes `name` → `target` and returns the URL (fails the test after 15 s).
    pub async fn register(&self, name: &str, target: SocketAddr) -> Result<String, RegisterError> {
        crate::within(
            15,
            "registration",
            self.handle
                .register(name, &target.ip().to_string(), target.port()),
        )
        .await
    }

    /// Waits until the tunnel is connected.
    pub async fn connected(&self) {
        let status = crate::within(
            15,
            "tunnel connection",
            self.handle
                .wait_for(|s| matches!(s, TunnelStatus::Connected { .. })),
        )
        .await;
        assert!(
            matches!(status, TunnelStatus::Connected { .. }),
            "{status:?}"
        );
    }

    /// Waits until at least `n` names were accepted on a connection numbered `after_session`
    /// or later; returns that connection's number.
    pub async fn registered(&self, n: usize, after_session: u64) -> u64 {
        let status = crate::within(
            20,
            "registration on a fresh connection",
            self.handle.wait_for(|s| {
                matches!(s, TunnelStatus::Connected { registered, session, .. }
                    if *registered >= n && *session >= after_session)
            }),
        )
        .await;
        match status {
            TunnelStatus::Connected { session, .. } => session,
            other => panic!("expected a connection, got {other:?}"),
        }
    }

    /// Waits for the gateway's refusal and returns its reason.
    pub async fn refused(&self) -> String {
        let status = crate::within(
            15,
            "refusal by the gateway",
            self.handle
                .wait_for(|s| matches!(s, TunnelStatus::Refused { .. })),
        )
        .await;
        match status {
            TunnelStatus::Refused { reason } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Polite stop: GoAway, close, wait for the task.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = crate::within(10, "provider stop", task).await;
        }
    }

    /// Crash: the task is aborted mid-flight, nothing is said to the gateway beyond what
    /// dropping the QUIC endpoint does.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.kill();
    }
}
