//! The tunnel side of the gateway: accepts provider connections over QUIC ([`accept_loop`])
//! or over TLS on the HTTPS port ([`serve_tcp_tunnel`], told apart from visitors by ALPN in
//! `server.rs`), authenticates them by the Ed25519 key of their client certificate against
//! the allowlist, runs the control stream (Hello/Welcome, Register/Registered|Refused,
//! RegisterGranted (version 2, in `grants`), RegisterFleet (version 3, in `fleets`), Unregister, Ping/Pong, GoAway) and keeps the
//! route [`Registry`](crate::registry::Registry)
//! in step with each connection's life. Both transports run the same [`serve_tunnel`] over a
//! [`TunnelConn`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peercompute_identity::{AnyEd25519ClientVerifier, Identity, PeerId, peer_id_from_cert};
use peercompute_tunnel_proto::{
    ALPN, ControlMessage, ControlReader, FLEET_NAMES_VERSION, GoAwayCode, MAX_VERSION, MIN_VERSION,
    RefuseCode, SHARED_NAMES_VERSION, negotiate_version, write_control,
};
use peercompute_tunnel_transport::{Mode, MuxHandle, MuxLimits, Transport, TunnelConn, tune_tcp};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, info, info_span, warn};

use self::budget::{ControlBudget, Verdict};
use crate::events::EventKind;
use crate::metrics::TransportLabel;
use crate::registry::Route;
use crate::state::Shared;
use crate::tls::{CertStore, TunnelResolver, certified_key};
use crate::tunnels::{Kick, TunnelInfo};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle upstream streams past their timeout are closed (checkout skips them anyway).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the allowlist file is checked for changes; live tunnels (and relay slots) are
/// re-checked when it changed, so a removed provider is cut off within this (revocation).
const ALLOWLIST_CHECK_EVERY: Duration = Duration::from_millis(500);
/// Longest wait to hand a GoAway to a provider before closing its connection anyway.
const GO_AWAY_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait to write any other control message. A provider that stops reading its control
/// stream fills its flow-control window; past this the tunnel ends rather than holding its
/// loop, and with it revocation, operator kicks and shutdown, for ever.
const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// GoAway code of a tunnel the gateway operator ended (gateway-local: `Other` on the wire, so
/// the provider reconnects with backoff like after any GoAway it does not know).
pub(crate) const OPERATOR_DISCONNECT: GoAwayCode = GoAwayCode::Other(6);
/// Refusal code of a name the gateway operator released (gateway-local: `Other` on the wire).
/// The provider drops a refused name and does not register it again.
pub(crate) const OPERATOR_RELEASE: RefuseCode = RefuseCode::Other(4);
/// On TCP the gateway pings the provider this often: the answer is the tunnel's RTT (QUIC
/// measures its own) and shows the provider's process still serves its control stream.
const TCP_PING_EVERY: Duration = Duration::from_secs(15);
/// A TCP tunnel whose control stream said nothing (not even a Pong) this long is closed:
/// three pings unanswered. (TCP keepalive notices a vanished host; this, a stuck process.)
const TCP_SILENT_MAX: Duration = Duration::from_secs(45);
/// A TCP tunnel's streams: the gateway opens the data streams (as many as QUIC's stream
/// credit usually allows at once), the provider only its control stream (QUIC lets it open 4).
const TCP_LIMITS: MuxLimits = MuxLimits {
    max_outbound: 512,
    max_inbound: 4,
    window_growth: 32 * 1024 * 1024,
};

/// The TLS side of a provider tunnel, for QUIC and TCP alike: TLS 1.3 only, the tunnel's ALPN
/// alone, a mandatory Ed25519 client certificate, and the gateway's identity certificate for
/// a pinned SNI (the HTTPS certificate otherwise).
pub(crate) fn tunnel_tls(
    identity: &Identity,
    https: Arc<CertStore>,
) -> Result<rustls::ServerConfig, crate::GatewayError> {
    let (cert, key) = peercompute_identity::self_signed_cert(identity, &[])
        .map_err(|e| crate::GatewayError::Tls(e.to_string()))?;
    let identity_key =
        certified_key(vec![cert], &key).map_err(|e| crate::GatewayError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| crate::GatewayError::Tls(e.to_string()))?
    .with_client_cert_verifier(AnyEd25519ClientVerifier::new_arc())
    .with_cert_resolver(Arc::new(TunnelResolver {
        identity: identity_key,
        https,
    }));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

/// Builds the QUIC server configuration from [`tunnel_tls`]: bounded windows and stream
/// counts, and the congestion controller of what it sends.
pub(crate) fn server_config(
    tls: rustls::ServerConfig,
    congestion: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>,
) -> Result<quinn::ServerConfig, crate::GatewayError> {
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| crate::GatewayError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        // Providers open only the control stream toward the gateway.
        .max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .receive_window((16u32 * 1024 * 1024).into())
        .stream_receive_window((2u32 * 1024 * 1024).into())
        .send_window(16 * 1024 * 1024)
        .max_idle_timeout(Some(
            Duration::from_secs(30)
                .try_into()
                .expect("30 s is a valid QUIC idle timeout"),
        ))
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .congestion_controller_factory(congestion);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts provider connections until `shutdown` fires; meanwhile closes idle upstream streams
/// past their timeout and notices changes to the allowlist file.
pub(crate) async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut allowlist_check = tokio::time::interval(ALLOWLIST_CHECK_EVERY);
    allowlist_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = sweep.tick() => {
                shared.registry.evict_idle(Instant::now());
                continue;
            }
            _ = allowlist_check.tick() => {
                shared.allow.refresh();
                continue;
            }
            _ = stop.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    info!(%remote, "provider handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    info!(%remote, "provider handshake timed out");
                    return;
                }
            };
            let Some(peer) = remote_peer(&conn) else {
                warn!(%remote, "provider presented no usable identity");
                conn.close(
                    GoAwayCode::NotAllowed.to_u16().into(),
                    b"no Ed25519 identity",
                );
                return;
            };
            let span = info_span!("tunnel", provider = %peer, %remote, transport = "quic");
            serve_tunnel(TunnelConn::quic(conn), peer, shared, shutdown)
                .instrument(span)
                .await;
        });
    }
}

/// Serves a provider tunnel that arrived over TLS on the HTTPS port (its handshake done with
/// [`tunnel_tls`]): yamux inside, then the same control and data streams as over QUIC. Returns
/// when the tunnel ends.
pub(crate) async fn serve_tcp_tunnel(
    tls: TlsStream<TcpStream>,
    remote: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = tune_tcp(tls.get_ref().0) {
        debug!(%remote, "cannot set the tunnel's socket options: {e}");
    }
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| peer_id_from_cert(cert).ok());
    let (mux, _driver) = MuxHandle::spawn(tls, remote, Mode::Server, TCP_LIMITS);
    let conn = TunnelConn::tcp(mux);
    let Some(peer) = peer else {
        // The verifier requires an Ed25519 certificate, so this is not expected.
        warn!(%remote, "provider presented no usable identity");
        conn.close(GoAwayCode::NotAllowed, "no Ed25519 identity");
        return;
    };
    let span = info_span!("tunnel", provider = %peer, %remote, transport = "tcp");
    serve_tunnel(conn, peer, shared, shutdown)
        .instrument(span)
        .await;
}

fn remote_peer(conn: &quinn::Connection) -> Option<PeerId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    peer_id_from_cert(certs.first()?).ok()
}

async fn serve_tunnel(
    conn: TunnelConn,
    peer: PeerId,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The control stream comes first, so that every refusal, the allowlist's too, is a GoAway
    // the provider reads: on TCP the connection's close carries no reason.
    let control = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            info!("closed before opening its control stream: {e}");
            return;
        }
        Err(_) => {
            conn.close(GoAwayCode::ProtocolError, "no control stream");
            return;
        }
    };
    let (recv, mut send) = tokio::io::split(control);
    if !shared.allow.allows(&peer) {
        shared.metrics.tunnels_refused.inc();
        let reason = match shared.allow.cluster_revoked(&peer) {
            Some(why) => format!("provider {peer} was revoked in the gateways' cluster: {why}"),
            None => format!(
                "provider {peer} is not allowed by this gateway; ask its operator to add it with \
                 --allow-provider {peer}"
            ),
        };
        warn!("refused: not on the allowlist");
        go_away(&conn, &mut send, GoAwayCode::NotAllowed, &reason).await;
        return;
    }
    let mut reader = ControlReader::new(recv);
    let (version, agent) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(ControlMessage::Hello {
            min_version,
            max_version,
            agent,
        }))) => match negotiate_version(min_version, max_version) {
            Some(v) => {
                let agent = clean_agent(&agent);
                info!(%agent, version = v, "provider connected");
                (v, agent)
            }
            None => {
                let message = format!(
                    "no common protocol version: provider speaks {min_version}..={max_version}, \
                     gateway {MIN_VERSION}..={MAX_VERSION}; upgrade the older side"
                );
                go_away(&conn, &mut send, GoAwayCode::UnsupportedVersion, &message).await;
                return;
            }
        },
        _ => {
            go_away(
                &conn,
                &mut send,
                GoAwayCode::ProtocolError,
                "expected Hello",
            )
            .await;
            return;
        }
    };
    let welcome = ControlMessage::Welcome {
        version,
        gateway_id: shared.peer_id.to_string(),
        p2p_addrs: shared.p2p_addrs.get().cloned().unwrap_or_default(),
    };
    if let Err(e) = send_control(&mut send, &welcome).await {
        e.close(&shared, &conn, &mut send).await;
        return;
    }

    shared.metrics.tunnels.inc();
    let transport = conn.transport();
    let by_transport = TransportLabel {
        transport: transport.as_str(),
    };
    shared
        .metrics
        .tunnels_by_transport
        .get_or_create(&by_transport)
        .inc();
    let (info, mut kicks) = TunnelInfo::new(
        peer,
        agent.clone(),
        version,
        conn.clone(),
        shared.config.max_streams_per_tunnel,
    );
    // Listed before it is announced: a client reacting to the event finds it.
    shared.tunnels.insert(info.clone());
    shared.events.publish(EventKind::ProviderConnected {
        peer: peer.to_string(),
        agent,
        remote: conn.remote_address().to_string(),
        transport: transport.as_str().to_owned(),
    });
    let mut announced_shutdown = *shutdown.borrow();
    if announced_shutdown {
        let _ = send_control(&mut send, &shutdown_msg()).await;
    }
    let mut allowlist = shared.allow.changes();
    let mut allowlist_open = true;
    let mut budget = ControlBudget::standard(Instant::now());
    let tcp = transport == Transport::Tcp;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + TCP_PING_EVERY, TCP_PING_EVERY);
    let mut last_ping: Option<(u64, Instant)> = None;
    let mut heard = Instant::now();
    let reason = loop {
        tokio::select! {
            changed = allowlist.changed(), if allowlist_open => {
                allowlist_open = changed.is_ok();
                if !shared.allow.allows_cached(&peer) {
                    warn!("provider removed from the allowlist: closing its tunnel");
                    shared.metrics.tunnels_refused.inc();
                    let message = match shared.allow.cluster_revoked(&peer) {
                        Some(why) => format!("provider {peer} was revoked in the gateways' cluster: {why}"),
                        None => format!(
                            "provider {peer} was removed from this gateway's allowlist; ask its operator to add it again with --allow-provider {peer}"
                        ),
                    };
                    go_away(&conn, &mut send, GoAwayCode::NotAllowed, &message).await;
                    shared.events.publish(EventKind::ProviderRevoked { peer: peer.to_string() });
                    break "removed from the allowlist".to_owned();
                }
            }
            _ = ping.tick(), if tcp => {
                if heard.elapsed() >= TCP_SILENT_MAX {
                    let message = format!(
                        "the provider's control stream was silent for {} s (pings unanswered)",
                        TCP_SILENT_MAX.as_secs()
                    );
                    go_away(&conn, &mut send, GoAwayCode::ProtocolError, &message).await;
                    break message;
                }
                let nonce = last_ping.map_or(1, |(n, _)| n.wrapping_add(1));
                last_ping = Some((nonce, Instant::now()));
                if let Err(e) = send_control(&mut send, &ControlMessage::Ping { nonce }).await {
                    break e.close(&shared, &conn, &mut send).await;
                }
            }
            msg = reader.next() => {
                heard = Instant::now();
                if msg.as_ref().is_ok_and(Option::is_some)
                    && let Verdict::Exceeded { count, over } = budget.take(Instant::now())
                {
                    let message = budget.message(count, over);
                    shared.metrics.tunnels_abuse.inc();
                    go_away(&conn, &mut send, GoAwayCode::ProtocolError, &message).await;
                    break message;
                }
                let reply = match msg {
                    Ok(Some(ControlMessage::Register { name })) => {
                        Some(register(&shared, &info, &name).await)
                    }
                    Ok(Some(ControlMessage::RegisterGranted { name, grant }))
                        if version >= SHARED_NAMES_VERSION =>
                    {
                        Some(grants::register_granted(&shared, &info, &name, &grant))
                    }
                    Ok(Some(ControlMessage::RegisterGranted { name, .. })) => {
                        let message = format!(
                            "RegisterGranted (`{name}`) needs tunnel protocol version \
                             {SHARED_NAMES_VERSION}; this tunnel agreed on {version}"
                        );
                        go_away(&conn, &mut send, GoAwayCode::ProtocolError, &message).await;
                        break message;
                    }
                    Ok(Some(ControlMessage::RegisterFleet { name, fleet, group }))
                        if version >= FLEET_NAMES_VERSION =>
                    {
                        Some(fleets::register_fleet(&shared, &info, &name, fleet, &group).await)
                    }
                    Ok(Some(ControlMessage::RegisterFleet { name, .. })) => {
                        let message = format!(
                            "RegisterFleet (`{name}`) needs tunnel protocol version \
                             {FLEET_NAMES_VERSION}; this tunnel agreed on {version}"
                        );
                        go_away(&conn, &mut send, GoAwayCode::ProtocolError, &message).await;
                        break message;
                    }
                    Ok(Some(ControlMessage::Unregister { name })) => {
                        if shared.registry.unregister(&name, conn.id()) {
                            info!(route = %name, "unregistered");
                        }
                        info.forget(&name);
                        None
                    }
                    Ok(Some(ControlMessage::Ping { nonce })) => Some(ControlMessage::Pong { nonce }),
                    Ok(Some(ControlMessage::Pong { nonce })) => {
                        if let Some((sent, at)) = last_ping
                            && sent == nonce
                        {
                            conn.set_rtt(at.elapsed());
                        }
                        None
                    }
                    Ok(Some(ControlMessage::GoAway { code, message })) => {
                        info!(?code, %message, "provider is leaving");
                        break format!("the provider left ({code:?}): {message}");
                    }
                    Ok(None) => break "the provider closed its control stream".to_owned(),
                    Ok(Some(other)) => {
                        let message = format!("unexpected message from a provider: {other:?}");
                        go_away(&conn, &mut send, GoAwayCode::ProtocolError, &message).await;
                        break message;
                    }
                    Err(e) => {
                        if let Some(closed) = conn.close_reason() {
                            break format!("connection lost: {closed}");
                        }
                        let message = format!("bad control frame: {e}");
                        go_away(&conn, &mut send, GoAwayCode::ProtocolError, &message).await;
                        break message;
                    }
                };
                if let Some(reply) = reply
                    && let Err(e) = send_control(&mut send, &reply).await
                {
                    break e.close(&shared, &conn, &mut send).await;
                }
            }
            Some(kick) = kicks.recv() => match kick {
                Kick::Disconnect(reason) => {
                    go_away(&conn, &mut send, OPERATOR_DISCONNECT, &reason).await;
                    break format!("disconnected by the gateway operator: {reason}");
                }
                Kick::FleetDenied { name, reason } => {
                    let refused = ControlMessage::Refused {
                        name,
                        code: RefuseCode::TryLater,
                        reason,
                    };
                    if let Err(e) = send_control(&mut send, &refused).await {
                        break e.close(&shared, &conn, &mut send).await;
                    }
                }
                Kick::Released(name) => {
                    info!(route = %name, "released by the gateway operator");
                    info.forget(&name);
                    released_again(&shared, &conn, peer, &name).await;
                    let refused = ControlMessage::Refused {
                        name,
                        code: OPERATOR_RELEASE,
                        reason: "released by the gateway operator".to_owned(),
                    };
                    if let Err(e) = send_control(&mut send, &refused).await {
                        break e.close(&shared, &conn, &mut send).await;
                    }
                }
            },
            changed = shutdown.changed(), if !announced_shutdown => {
                announced_shutdown = true;
                if changed.is_ok() {
                    // Tell the provider to reconnect later; in-flight streams keep running.
                    if let Err(e) = send_control(&mut send, &shutdown_msg()).await {
                        break e.close(&shared, &conn, &mut send).await;
                    }
                }
            }
        }
    };
    shared.tunnels.remove(info.id());
    for name in info.routes().iter() {
        if shared.registry.disconnect(name, conn.id()) {
            info!(route = %name, "route offline");
        }
    }
    shared.metrics.tunnels.dec();
    shared
        .metrics
        .tunnels_by_transport
        .get_or_create(&by_transport)
        .dec();
    info!(%reason, "provider disconnected");
    shared.events.publish(EventKind::ProviderDisconnected {
        peer: peer.to_string(),
        reason,
    });
}

/// A Register of `name` this tunnel handled between the operator's release and its kick claimed
/// the name again: undo it, since the provider drops the name on the Refused that follows.
async fn released_again(shared: &Shared, conn: &TunnelConn, peer: PeerId, name: &str) {
    shared.registry.unregister(name, conn.id());
    if shared.names.owner(name) == Some(peer.to_string())
        && let Err(e) = shared.names.release(name).await
    {
        warn!(route = %name, "cannot release the name again: {e}");
    }
}

/// Longest provider `agent` kept: it is copied into events, API answers and the dashboard.
const MAX_AGENT: usize = 200;

/// The provider's `agent` as shown to the operator: printable ASCII, at most [`MAX_AGENT`]
/// characters (others become `?`).
fn clean_agent(agent: &str) -> String {
    agent
        .chars()
        .take(MAX_AGENT)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn shutdown_msg() -> ControlMessage {
    ControlMessage::GoAway {
        code: GoAwayCode::Shutdown,
        message: "gateway is shutting down; reconnect later".into(),
    }
}

/// Refuses `name` to `peer`: logged, published as a `NameRefused` event, and the answer the
/// tunnel sends (plain and granted registrations alike).
pub(super) fn refusal(
    shared: &Shared,
    peer: &PeerId,
    name: &str,
    code: RefuseCode,
    reason: String,
) -> ControlMessage {
    warn!(route = %name, %reason, "registration refused");
    shared.events.publish(EventKind::NameRefused {
        name: name.to_owned(),
        peer: peer.to_string(),
        reason: reason.clone(),
    });
    ControlMessage::Refused {
        name: name.to_owned(),
        code,
        reason,
    }
}

/// Handles `Register { name }` from tunnel `info`. With `--cluster` the claim is decided in
/// etcd (this tunnel's loop waits for it, at most the store's request timeout).
async fn register(shared: &Shared, info: &TunnelInfo, name: &str) -> ControlMessage {
    let peer = info.peer;
    let refuse = |code, reason| refusal(shared, &peer, name, code, reason);
    if let Err(reason) = within_name_limit(shared, info, name) {
        return refuse(RefuseCode::TooManyNames, reason);
    }
    if shared.released_from(name, &peer) {
        return refuse(
            OPERATOR_RELEASE,
            "released by the gateway operator; this key may not take it back".into(),
        );
    }
    if let Err(e) = shared.names.claim(name, &peer).await {
        let (code, reason) = claim_refusal(shared, e);
        return refuse(code, reason);
    }
    admit(shared, info, name)
}

/// The refusal of a failed claim, counted in `cluster_refusals_total` when the cluster
/// refused it.
fn claim_refusal(shared: &Shared, e: crate::names::NameStoreError) -> (RefuseCode, String) {
    let (code, reason, cluster_reason) = crate::cluster::refusal(e);
    if let Some(reason) = cluster_reason.filter(|_| shared.names.cluster().is_some()) {
        shared
            .metrics
            .cluster_refusals
            .get_or_create(&crate::metrics::ReasonLabel { reason })
            .inc();
    }
    (code, reason)
}

/// Whether tunnel `info` may take `name` under the per-provider name limit: a name this key
/// serves already (on this connection, or on the one this one replaces: a reconnect, a move
/// between QUIC and TCP) is not a new one. `Err`: the refusal's reason.
fn within_name_limit(shared: &Shared, info: &TunnelInfo, name: &str) -> Result<(), String> {
    let peer = info.peer;
    let serves_it = info.routes().iter().any(|n| n == name) || shared.registry.serves(name, &peer);
    if !serves_it && shared.registry.count_for(&peer) >= shared.config.max_names_per_provider {
        return Err(format!(
            "this provider already holds {} names, the gateway's limit",
            shared.config.max_names_per_provider
        ));
    }
    Ok(())
}

/// Adds tunnel `info` to `name`'s routes once its claim (or grant) was accepted.
fn admit(shared: &Shared, info: &TunnelInfo, name: &str) -> ControlMessage {
    let peer = info.peer;
    let route = Route::new(
        info.conn.clone(),
        peer,
        shared.traffic.cell_for(name),
        info.traffic.clone(),
        info.streams.clone(),
    );
    shared.registry.insert(name, route);
    shared.claimed(name);
    {
        let mut owned = info.routes.lock().unwrap_or_else(|p| p.into_inner());
        if !owned.iter().any(|n| n == name) {
            owned.push(name.to_owned());
        }
    }
    let url = shared.config.public_url(name);
    info!(route = %name, %url, "registered");
    shared.acme.name_registered(name);
    shared.events.publish(EventKind::NameRegistered {
        name: name.to_owned(),
        peer: peer.to_string(),
    });
    ControlMessage::Registered {
        name: name.to_owned(),
        url,
    }
}

/// Why a control message could not be written.
#[derive(Debug)]
enum ControlWriteError {
    /// It waited [`CONTROL_WRITE_TIMEOUT`]: the provider stopped reading.
    Stalled,
    Failed(peercompute_tunnel_proto::IoError),
}

impl ControlWriteError {
    /// Ends the tunnel (a GoAway when the provider stalled; the stream is broken otherwise) and
    /// returns the reason.
    async fn close(
        self,
        shared: &Shared,
        conn: &TunnelConn,
        send: &mut (impl AsyncWrite + Unpin),
    ) -> String {
        match self {
            Self::Stalled => {
                shared.metrics.tunnels_abuse.inc();
                let message = format!(
                    "the provider stopped reading its control stream (a message waited {} s)",
                    CONTROL_WRITE_TIMEOUT.as_secs()
                );
                go_away(conn, send, GoAwayCode::ProtocolError, &message).await;
                message
            }
            Self::Failed(e) => format!("cannot write to its control stream: {e}"),
        }
    }
}

/// Writes `msg` on the control stream within [`CONTROL_WRITE_TIMEOUT`].
async fn send_control(
    send: &mut (impl AsyncWrite + Unpin),
    msg: &ControlMessage,
) -> Result<(), ControlWriteError> {
    match tokio::time::timeout(CONTROL_WRITE_TIMEOUT, write_control(send, msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ControlWriteError::Failed(e)),
        Err(_) => Err(ControlWriteError::Stalled),
    }
}

async fn go_away(
    conn: &TunnelConn,
    send: &mut (impl AsyncWrite + Unpin),
    code: GoAwayCode,
    message: &str,
) {
    warn!(?code, %message, "closing tunnel");
    let msg = ControlMessage::GoAway {
        code,
        message: message.to_owned(),
    };
    // A provider that stopped reading cannot hold the close up: the GoAway gets a second.
    let _ = tokio::time::timeout(GO_AWAY_WRITE_TIMEOUT, write_control(send, &msg)).await;
    conn.close(code, message);
}

mod budget;
mod fleets;
mod grants;
#[cfg(test)]
mod tests;
