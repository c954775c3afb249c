//! The tunnel's link to one gateway: dials QUIC and TCP as [`Choice`] says, reports what the
//! dials and the serving session saw back to it, and hands the session loop the [`Step`]s
//! that concern it (serve this connection, move to that one, back off). Dials run as tasks
//! so a session keeps serving while the other transport is tried beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peercompute_tunnel_transport::{MuxLimits, TunnelConn, tcp_connect};
use rustls::pki_types::ServerName;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::choice::{Action, Choice, Event, TransportMode, Via};
use super::session::{self, Opened, SessionEnd};
use super::tls::{self, PinMismatch};
use crate::config::GatewaySpec;

/// Longest wait for a first connection (handshake and Welcome) on either transport.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a QUIC probe while TCP serves.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The provider's side of a TCP tunnel: the gateway opens the data streams (QUIC lets it open
/// 4096 at once here; the gateway itself opens at most 512 on TCP), the provider only its
/// control stream.
const TCP_LIMITS: MuxLimits = MuxLimits {
    max_outbound: 4,
    max_inbound: 512,
    window_growth: 32 * 1024 * 1024,
};

/// What the session loop must do.
#[derive(Debug)]
pub(crate) enum Step {
    /// The first connection of an attempt is up: serve over it.
    Serve(Opened),
    /// Another connection is up while one serves: move to it.
    Migrate(Opened),
    /// Nothing is up and nothing is dialling: back off, then start again; this is why.
    Retry(SessionEnd),
}

/// Where and how the link dials.
pub(crate) struct Dialer {
    pub(crate) gateway: GatewaySpec,
    /// Where the TCP transport goes: the gateway's HTTPS listener.
    pub(crate) https: (String, u16),
    pub(crate) quic: quinn::ClientConfig,
    pub(crate) tcp: Arc<rustls::ClientConfig>,
    pub(crate) mismatch: Option<Arc<PinMismatch>>,
    pub(crate) endpoint: quinn::Endpoint,
}

/// A dial's outcome.
enum Dialled {
    Up(Opened),
    /// `silent`: nothing answered (no UDP reply, a TCP connect that timed out or was refused).
    Failed {
        end: SessionEnd,
        silent: bool,
    },
}

/// The link to one gateway.
pub(crate) struct Link {
    dialer: Arc<Dialer>,
    mode: TransportMode,
    choice: Choice,
    dials: JoinSet<(Via, Dialled)>,
    /// Why the last dial failed: what a [`Step::Retry`] reports.
    last_failure: Option<SessionEnd>,
}

impl Link {
    pub(crate) fn new(dialer: Dialer, mode: TransportMode) -> Self {
        let seed = u64::from(std::process::id())
            ^ u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
                    & u128::from(u64::MAX),
            )
            .unwrap_or(1);
        Self {
            dialer: Arc::new(dialer),
            mode,
            choice: Choice::new(mode, seed),
            dials: JoinSet::new(),
            last_failure: None,
        }
    }

    /// Starts an attempt: nothing serves; dial as the mode says.
    pub(crate) fn start(&mut self) {
        self.dials.abort_all();
        self.choice.abandon_dials();
        self.last_failure = None;
        let actions = self.choice.start(Instant::now());
        self.perform_dials(&actions);
    }

    /// The session over `via` ended (not by a move): tells the choice (a QUIC session that
    /// dies soon after a move to it means UDP flaps) and stops every dial.
    pub(crate) fn session_lost(&mut self, via: Via) {
        let _ = self.choice.on(Instant::now(), Event::SessionLost { via });
        self.dials.abort_all();
        self.choice.abandon_dials();
    }

    /// On QUIC, a Pong is late: the choice may dial TCP beside it.
    pub(crate) fn pong_late(&mut self) {
        let actions = self.choice.on(Instant::now(), Event::PongLate);
        self.perform_dials(&actions);
    }

    pub(crate) fn pong_back(&mut self) {
        let _ = self.choice.on(Instant::now(), Event::PongBack);
    }

    /// Waits for the next thing the session loop must do. Cancel-safe: a dial's result is
    /// never half-handled.
    pub(crate) async fn next_step(&mut self) -> Step {
        loop {
            let timer = self.choice.next_timeout();
            let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
            let at = timer.map_or_else(far, tokio::time::Instant::from_std);
            tokio::select! {
                Some(joined) = self.dials.join_next(), if !self.dials.is_empty() => {
                    let Ok((via, dialled)) = joined else { continue };
                    if let Some(step) = self.on_dialled(via, dialled).await {
                        return step;
                    }
                }
                _ = tokio::time::sleep_until(at), if timer.is_some() => {
                    let actions = self.choice.on_timeout(Instant::now());
                    self.perform_dials(&actions);
                }
                else => std::future::pending::<()>().await,
            }
        }
    }

    async fn on_dialled(&mut self, via: Via, dialled: Dialled) -> Option<Step> {
        let now = Instant::now();
        let (event, mut opened) = match dialled {
            Dialled::Up(opened) => (
                match via {
                    Via::Quic => Event::QuicUp,
                    Via::Tcp => Event::TcpUp,
                },
                Some(opened),
            ),
            Dialled::Failed { end, silent } => {
                let serving = self.choice.serving();
                // A gateway that answers and refuses, or is not the pinned one, is not a
                // transport problem: the attempt ends with it.
                if serving.is_none()
                    && matches!(end, SessionEnd::Refused(_) | SessionEnd::WrongGateway(_))
                {
                    self.dials.abort_all();
                    self.choice.abandon_dials();
                    return Some(Step::Retry(end));
                }
                match (&end, via, serving) {
                    (_, Via::Quic, Some(Via::Tcp)) => {
                        info!("QUIC probe failed ({}); staying on TCP", end_text(&end));
                    }
                    (_, Via::Quic, None) => info!(
                        silent,
                        "QUIC to {} failed: {}",
                        self.dialer.gateway,
                        end_text(&end)
                    ),
                    (_, Via::Tcp, _) => warn!(
                        "TCP to {}:{} failed: {}",
                        self.dialer.https.0,
                        self.dialer.https.1,
                        end_text(&end)
                    ),
                    _ => {}
                }
                self.last_failure = Some(end);
                (
                    match via {
                        Via::Quic => Event::QuicSilent,
                        Via::Tcp => Event::TcpFailed,
                    },
                    None,
                )
            }
        };
        let actions = self.choice.on(now, event);
        self.perform_dials(&actions);
        for action in actions {
            match action {
                Action::Serve(v) if v == via => {
                    if v == Via::Tcp && self.mode == TransportMode::Auto {
                        warn!(
                            "UDP to {} got no answer; serving over TCP ({}:{}) and trying QUIC again every {}-{} s",
                            self.dialer.gateway,
                            self.dialer.https.0,
                            self.dialer.https.1,
                            self.choice.probe_every().as_secs(),
                            self.choice.probe_every().as_secs() * 2
                        );
                    }
                    return opened.take().map(Step::Serve);
                }
                Action::Migrate { to } if to == via => {
                    info!(
                        "{} works: moving the tunnel to it",
                        to.as_str().to_uppercase()
                    );
                    return opened.take().map(Step::Migrate);
                }
                Action::Close(v) if v == via => {
                    if let Some(extra) = opened.take() {
                        tokio::spawn(extra.close("another transport serves"));
                    }
                }
                Action::Retry => {
                    let end = self.last_failure.take().unwrap_or_else(|| {
                        SessionEnd::Lost("no transport reached the gateway".into())
                    });
                    return Some(Step::Retry(end));
                }
                _ => {}
            }
        }
        if let Some(extra) = opened {
            tokio::spawn(extra.close("not needed"));
        }
        None
    }

    fn perform_dials(&mut self, actions: &[Action]) {
        for action in actions {
            match *action {
                Action::DialQuic { probe } => {
                    let dialer = self.dialer.clone();
                    let timeout = if probe {
                        PROBE_TIMEOUT
                    } else {
                        CONNECT_TIMEOUT
                    };
                    self.dials
                        .spawn(async move { (Via::Quic, dial_quic(&dialer, timeout).await) });
                }
                Action::DialTcp => {
                    let dialer = self.dialer.clone();
                    self.dials
                        .spawn(async move { (Via::Tcp, dial_tcp(&dialer).await) });
                }
                _ => {}
            }
        }
    }
}

fn end_text(end: &SessionEnd) -> String {
    match end {
        SessionEnd::Lost(why) | SessionEnd::Refused(why) => why.clone(),
        SessionEnd::WrongGateway(presented) => format!("the gateway presented {presented}"),
        SessionEnd::Shutdown => "shutting down".into(),
        SessionEnd::Moved { .. } => "moved".into(),
    }
}

/// A failed connect: the pinned check's note if the gateway was not the pinned one.
fn failed(dialer: &Dialer, reason: String, silent: bool) -> Dialled {
    match dialer.mismatch.as_ref().and_then(|m| m.take()) {
        Some(presented) => Dialled::Failed {
            end: SessionEnd::WrongGateway(presented),
            silent: false,
        },
        None => Dialled::Failed {
            end: SessionEnd::Lost(reason),
            silent,
        },
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

fn server_name(dialer: &Dialer, host: &str) -> String {
    if dialer.gateway.peer.is_some() {
        tls::PINNED_SNI.to_owned()
    } else {
        host.to_owned()
    }
}

async fn dial_quic(dialer: &Dialer, timeout: Duration) -> Dialled {
    let gateway = &dialer.gateway;
    let addr = match resolve(&gateway.host, gateway.port).await {
        Ok(a) => a,
        Err(e) => return failed(dialer, e, false),
    };
    let sni = server_name(dialer, &gateway.host);
    let connecting = match dialer
        .endpoint
        .connect_with(dialer.quic.clone(), addr, &sni)
    {
        Ok(c) => c,
        Err(e) => return failed(dialer, format!("cannot connect to {addr}: {e}"), false),
    };
    let conn = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => TunnelConn::quic(conn),
        Ok(Err(e)) => {
            let silent = matches!(e, quinn::ConnectionError::TimedOut);
            return failed(dialer, session::describe_close(&e), silent);
        }
        Err(_) => {
            return failed(
                dialer,
                format!("no answer over UDP from {addr} within {timeout:?}"),
                true,
            );
        }
    };
    welcome(conn, &gateway.host).await
}

async fn dial_tcp(dialer: &Dialer) -> Dialled {
    let (host, port) = (&dialer.https.0, dialer.https.1);
    let addr = match resolve(host, port).await {
        Ok(a) => a,
        Err(e) => return failed(dialer, e, false),
    };
    let sni = match ServerName::try_from(server_name(dialer, host)) {
        Ok(n) => n,
        Err(e) => {
            return failed(
                dialer,
                format!("`{host}` is not a TLS server name: {e}"),
                false,
            );
        }
    };
    let connect = tcp_connect(addr, sni, dialer.tcp.clone(), TCP_LIMITS);
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return failed(dialer, e.to_string(), true),
        Err(_) => {
            return failed(
                dialer,
                format!("no answer over TCP from {addr} within {CONNECT_TIMEOUT:?}"),
                true,
            );
        }
    };
    welcome(conn, &dialer.gateway.host).await
}

async fn welcome(conn: TunnelConn, host: &str) -> Dialled {
    match tokio::time::timeout(CONNECT_TIMEOUT, session::handshake(conn.clone(), host)).await {
        Ok(Ok(opened)) => Dialled::Up(opened),
        Ok(Err(end)) => Dialled::Failed { end, silent: false },
        Err(_) => {
            conn.close(
                peercompute_tunnel_proto::GoAwayCode::ProtocolError,
                "no Welcome",
            );
            Dialled::Failed {
                end: SessionEnd::Lost("no Welcome from the gateway".into()),
                silent: false,
            }
        }
    }
}
