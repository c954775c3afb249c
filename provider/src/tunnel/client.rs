//! One link: the client of one gateway. Keeps a connection to it open forever, reconnects
//! with jittered exponential backoff ([`crate::backoff`]), re-registers every desired route
//! after each reconnect, and keeps accepting registrations while offline. Its state (desired
//! routes, accepted routes, waiters, backoff, transport choice) is its own: with several
//! gateways each link runs this loop beside the others ([`super::fanout`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::session::{self, SessionEnd};
use super::{Command, GatewayP2p, RegisterError, Routes, Target, TransportMode, TunnelStatus};
use super::{link, tls};
use crate::backoff::Backoff;
use crate::config::GatewaySpec;

/// A connection that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// State that outlives one connection.
pub(crate) struct ClientState {
    /// Routes we want published (re-registered after every reconnect).
    pub(crate) desired: HashMap<String, Target>,
    /// Routes the gateway accepted, read by the splicer.
    pub(crate) routes: Routes,
    /// Callers waiting for a registration answer.
    pub(crate) waiters: HashMap<String, Vec<oneshot::Sender<Result<String, RegisterError>>>>,
    pub(crate) splices: JoinSet<()>,
}

/// Where the client connects and how it checks the gateway.
pub(super) struct Dial {
    pub(super) gateway: GatewaySpec,
    /// The TCP transport's address.
    pub(super) https: (String, u16),
    pub(super) configs: tls::ClientConfigs,
    pub(super) mode: TransportMode,
}

pub(super) async fn run_client(
    dial: Dial,
    mut commands: mpsc::Receiver<Command>,
    (status, p2p): (
        watch::Sender<TunnelStatus>,
        watch::Sender<Option<GatewayP2p>>,
    ),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = ClientState {
        desired: HashMap::new(),
        routes: Arc::new(RwLock::new(HashMap::new())),
        waiters: HashMap::new(),
        splices: JoinSet::new(),
    };
    let Dial {
        gateway,
        https,
        configs,
        mode,
    } = dial;
    let mut backoff = Backoff::reconnect();
    let mut sessions = 0u64;
    let mut last_status = TunnelStatus::Stopped;
    let endpoint = match bind_endpoint(&gateway) {
        Ok(ep) => ep,
        Err(e) => {
            error!("cannot open a UDP socket for the tunnel: {e}");
            status.send_replace(TunnelStatus::Stopped);
            return;
        }
    };
    let mut link = link::Link::new(
        link::Dialer {
            gateway: gateway.clone(),
            https,
            quic: configs.quic,
            tcp: configs.tcp,
            mismatch: configs.mismatch,
            endpoint: endpoint.clone(),
        },
        mode,
    );
    // Connections the tunnel moved away from, finishing their streams.
    let mut draining = JoinSet::new();
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        if !matches!(*status.borrow(), TunnelStatus::Refused { .. }) {
            status.send_replace(TunnelStatus::Connecting);
        }
        link.start();
        let first = loop {
            tokio::select! {
                step = link.next_step() => match step {
                    link::Step::Serve(opened) => break Ok(opened),
                    link::Step::Retry(end) => break Err(end),
                    link::Step::Migrate(extra) => extra.close("no tunnel to move").await,
                },
                _ = shutdown.changed() => break 'outer,
                // Keep accepting registrations while we are offline.
                Some(cmd) = commands.recv() => session::apply_offline(&mut state, cmd),
                Some(_) = draining.join_next(), if !draining.is_empty() => {}
            }
        };
        let end = match first {
            Ok(mut opened) => {
                let since = Instant::now();
                info!(gateway = %gateway, transport = %opened.conn.transport(), "connected to the gateway");
                let end = loop {
                    sessions += 1;
                    let via = opened.conn.transport();
                    status.send_replace(TunnelStatus::Connected {
                        gateway: opened.conn.remote_address(),
                        session: sessions,
                        registered: 0,
                        transport: via,
                    });
                    let announce = session::Announce {
                        status: &status,
                        p2p: &p2p,
                    };
                    let end = session::run(
                        opened,
                        &mut state,
                        &mut commands,
                        &mut shutdown,
                        announce,
                        &mut link,
                    )
                    .await;
                    match end {
                        SessionEnd::Moved { next, old } => {
                            info!(
                                from = %via,
                                to = %next.conn.transport(),
                                "tunnel moved; {} streams finishing on {via}",
                                state.splices.len()
                            );
                            // The streams under way belong to the old connection.
                            let splices = std::mem::take(&mut state.splices);
                            draining.spawn(session::drain(*old, splices, state.routes.clone()));
                            opened = *next;
                        }
                        other => {
                            link.session_lost(via);
                            break other;
                        }
                    }
                };
                if since.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                end
            }
            Err(end) => end,
        };
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Lost(reason) => warn!("tunnel to {gateway} lost: {reason}"),
            SessionEnd::Refused(reason) => {
                error!("the gateway refused this provider: {reason}");
                status.send_replace(TunnelStatus::Refused { reason });
            }
            SessionEnd::Moved { next, old } => {
                // Not returned outside the serving loop; close both if it ever is.
                next.close("provider restarting its tunnel").await;
                old.close("provider restarting its tunnel").await;
            }
            // Only a pinned check notes a presented key, so `peer` is always set here.
            SessionEnd::WrongGateway(presented) => match gateway.peer {
                Some(expected) => {
                    error!(
                        "{}",
                        wrong_gateway(&gateway.host, gateway.port, expected, presented)
                    );
                    last_status = TunnelStatus::WrongGateway {
                        expected,
                        presented,
                    };
                    break;
                }
                None => warn!("tunnel to {gateway} refused: it presented {presented}"),
            },
        }
        let delay = backoff.next_delay();
        info!("reconnecting in {:.1} s", delay.as_secs_f64());
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = shutdown.changed() => break 'outer,
                Some(cmd) = commands.recv() => session::apply_offline(&mut state, cmd),
                Some(_) = draining.join_next(), if !draining.is_empty() => {}
            }
        }
    }
    status.send_replace(last_status);
    for (_, waiters) in state.waiters.drain() {
        for w in waiters {
            let _ = w.send(Err(RegisterError::Stopped));
        }
    }
    draining.abort_all();
    endpoint.close(
        peercompute_tunnel_proto::GoAwayCode::Shutdown
            .to_u16()
            .into(),
        b"provider stopping",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    // Let in-flight requests finish briefly, then drop the rest.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while state.splices.join_next().await.is_some() {}
    })
    .await;
}

/// What the operator reads once when the gateway is not the pinned one.
fn wrong_gateway(
    host: &str,
    port: u16,
    expected: peercompute_identity::PeerId,
    presented: peercompute_identity::PeerId,
) -> String {
    format!(
        "check --gateway {expected}@{host}:{port}: the gateway at {host}:{port} is {presented}, not {expected} \
         (`peercompute-gateway id` on the gateway prints its id). Not retrying: no route is published \
         until peercomputed restarts with the right id; deployments and the control plane keep running"
    )
}

fn bind_endpoint(gateway: &GatewaySpec) -> std::io::Result<quinn::Endpoint> {
    let v6 = gateway.host.parse::<std::net::Ipv6Addr>().is_ok();
    let local: SocketAddr = if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let (socket, granted) = peercompute_tunnel_proto::bind_udp(local)?;
    if granted < 4 * 1024 * 1024 {
        warn!(
            granted_bytes = granted,
            "the kernel capped the tunnel's UDP buffer; raise net.core.rmem_max for heavy traffic"
        );
    }
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}
