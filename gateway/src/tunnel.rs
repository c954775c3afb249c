//! The QUIC side of the gateway: accepts provider connections, authenticates them by the
//! Ed25519 key of their client certificate against the allowlist, runs the control stream
//! (Hello/Welcome, Register/Registered|Refused, Unregister, Ping/Pong, GoAway) and keeps the
//! route [`Registry`](crate::registry::Registry) in step with each connection's life.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peercompute_identity::{AnyEd25519ClientVerifier, Identity, PeerId, peer_id_from_cert};
use peercompute_tunnel_proto::{
    ALPN, ControlMessage, ControlReader, GoAwayCode, MAX_VERSION, MIN_VERSION, RefuseCode,
    negotiate_version, write_control,
};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::events::EventKind;
use crate::metrics::TransportLabel;
use crate::registry::Route;
use crate::state::Shared;
use crate::tls::{CertStore, TunnelResolver, certified_key};
use crate::tunnels::{Kick, Transport, TunnelInfo};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle upstream streams past their timeout are closed (checkout skips them anyway).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the allowlist file is checked for changes; live tunnels (and relay slots) are
/// re-checked when it changed, so a removed provider is cut off within this (revocation).
const ALLOWLIST_CHECK_EVERY: Duration = Duration::from_millis(500);
/// Longest wait to hand a GoAway to a provider before closing its connection anyway.
const GO_AWAY_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// GoAway code of a tunnel the gateway operator ended (gateway-local: `Other` on the wire, so
/// the provider reconnects with backoff like after any GoAway it does not know).
pub(crate) const OPERATOR_DISCONNECT: GoAwayCode = GoAwayCode::Other(6);
/// Refusal code of a name the gateway operator released (gateway-local: `Other` on the wire).
/// The provider drops a refused name and does not register it again.
pub(crate) const OPERATOR_RELEASE: RefuseCode = RefuseCode::Other(4);

/// Builds the QUIC server configuration: TLS 1.3, ALPN, mandatory Ed25519 client certs,
/// bounded windows and stream counts.
pub(crate) fn server_config(
    identity: &Identity,
    https: Arc<CertStore>,
) -> Result<quinn::ServerConfig, crate::GatewayError> {
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
        .keep_alive_interval(Some(Duration::from_secs(10)));
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
            let span = info_span!("tunnel", provider = %peer, %remote);
            serve_tunnel(conn, peer, shared, shutdown)
                .instrument(span)
                .await;
        });
    }
}

fn remote_peer(conn: &quinn::Connection) -> Option<PeerId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    peer_id_from_cert(certs.first()?).ok()
}

async fn serve_tunnel(
    conn: quinn::Connection,
    peer: PeerId,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    if !shared.allow.allows(&peer) {
        shared.metrics.tunnels_refused.inc();
        let reason = format!(
            "provider {peer} is not allowed by this gateway; ask its operator to add it with \
             --allow-provider {peer}"
        );
        warn!("refused: not on the allowlist");
        conn.close(GoAwayCode::NotAllowed.to_u16().into(), reason.as_bytes());
        return;
    }
    let (mut send, recv) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            info!("closed before opening its control stream: {e}");
            return;
        }
        Err(_) => {
            conn.close(
                GoAwayCode::ProtocolError.to_u16().into(),
                b"no control stream",
            );
            return;
        }
    };
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
    if write_control(&mut send, &welcome).await.is_err() {
        return;
    }

    shared.metrics.tunnels.inc();
    let by_transport = TransportLabel {
        transport: Transport::Quic.as_str(),
    };
    shared
        .metrics
        .tunnels_by_transport
        .get_or_create(&by_transport)
        .inc();
    shared.events.publish(EventKind::ProviderConnected {
        peer: peer.to_string(),
        agent: agent.clone(),
        remote: conn.remote_address().to_string(),
    });
    let (info, mut kicks) = TunnelInfo::new(peer, agent, version, conn.clone());
    shared.tunnels.insert(info.clone());
    let mut announced_shutdown = *shutdown.borrow();
    if announced_shutdown {
        let _ = write_control(&mut send, &shutdown_msg()).await;
    }
    let mut allowlist = shared.allow.changes();
    let mut allowlist_open = true;
    let reason = loop {
        tokio::select! {
            changed = allowlist.changed(), if allowlist_open => {
                allowlist_open = changed.is_ok();
                if !shared.allow.allows_cached(&peer) {
                    warn!("provider removed from the allowlist: closing its tunnel");
                    shared.metrics.tunnels_refused.inc();
                    let message = format!(
                        "provider {peer} was removed from this gateway's allowlist; ask its operator to add it again with --allow-provider {peer}"
                    );
                    go_away(&conn, &mut send, GoAwayCode::NotAllowed, &message).await;
                    shared.events.publish(EventKind::ProviderRevoked { peer: peer.to_string() });
                    break "removed from the allowlist".to_owned();
                }
            }
            msg = reader.next() => {
                let reply = match msg {
                    Ok(Some(ControlMessage::Register { name })) => {
                        let mut owned = info.routes.lock().unwrap_or_else(|p| p.into_inner());
                        Some(register(&shared, &info, &name, &mut owned))
                    }
                    Ok(Some(ControlMessage::Unregister { name })) => {
                        if shared.registry.unregister(&name, conn.stable_id()) {
                            info!(route = %name, "unregistered");
                        }
                        info.forget(&name);
                        None
                    }
                    Ok(Some(ControlMessage::Ping { nonce })) => Some(ControlMessage::Pong { nonce }),
                    Ok(Some(ControlMessage::Pong { .. })) => None,
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
                    && let Err(e) = write_control(&mut send, &reply).await
                {
                    break format!("cannot write to its control stream: {e}");
                }
            }
            Some(kick) = kicks.recv() => match kick {
                Kick::Disconnect(reason) => {
                    go_away(&conn, &mut send, OPERATOR_DISCONNECT, &reason).await;
                    break format!("disconnected by the gateway operator: {reason}");
                }
                Kick::Released(name) => {
                    info!(route = %name, "released by the gateway operator");
                    info.forget(&name);
                    released_again(&shared, &conn, peer, &name);
                    let refused = ControlMessage::Refused {
                        name,
                        code: OPERATOR_RELEASE,
                        reason: "released by the gateway operator".to_owned(),
                    };
                    if let Err(e) = write_control(&mut send, &refused).await {
                        break format!("cannot write to its control stream: {e}");
                    }
                }
            },
            changed = shutdown.changed(), if !announced_shutdown => {
                announced_shutdown = true;
                if changed.is_ok() {
                    // Tell the provider to reconnect later; in-flight streams keep running.
                    let _ = write_control(&mut send, &shutdown_msg()).await;
                }
            }
        }
    };
    shared.tunnels.remove(info.id());
    for name in info.routes().iter() {
        if shared.registry.disconnect(name, conn.stable_id()) {
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
fn released_again(shared: &Shared, conn: &quinn::Connection, peer: PeerId, name: &str) {
    shared.registry.unregister(name, conn.stable_id());
    if shared.names.owner(name) == Some(peer.to_string())
        && let Err(e) = shared.names.release(name)
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
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect()
}

fn shutdown_msg() -> ControlMessage {
    ControlMessage::GoAway {
        code: GoAwayCode::Shutdown,
        message: "gateway is shutting down; reconnect later".into(),
    }
}

/// Handles `Register { name }` from tunnel `info`, whose names `owned` the caller holds locked.
fn register(
    shared: &Shared,
    info: &TunnelInfo,
    name: &str,
    owned: &mut Vec<String>,
) -> ControlMessage {
    let peer = info.peer;
    let refuse = |code, reason: String| {
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
    };
    if !owned.iter().any(|n| n == name)
        && shared.registry.count_for(&peer) >= shared.config.max_names_per_provider
    {
        return refuse(
            RefuseCode::TooManyNames,
            format!(
                "this provider already holds {} names, the gateway's limit",
                shared.config.max_names_per_provider
            ),
        );
    }
    if let Err(e) = shared.names.claim(name, &peer) {
        return match e {
            crate::names::NameStoreError::Owned { .. } => refuse(
                RefuseCode::NameOwned,
                "name owned by another provider".into(),
            ),
            other => refuse(
                RefuseCode::Other(0),
                format!("gateway cannot record the name: {other}"),
            ),
        };
    }
    let route = Route::new(
        info.conn.clone(),
        peer,
        shared.traffic.cell_for(name),
        info.traffic.clone(),
    );
    shared.registry.insert(name, route);
    if !owned.iter().any(|n| n == name) {
        owned.push(name.to_owned());
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

async fn go_away(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
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
    conn.close(code.to_u16().into(), message.as_bytes());
}

#[cfg(test)]
mod tests {
    //! A real gateway tunnel endpoint on loopback and a hand-driven provider speaking the
    //! control protocol, to watch the tunnels table, the events and the operator's kicks.

    use std::net::SocketAddr;

    use peercompute_identity::{PinnedPeerServerVerifier, self_signed_cert};
    use peercompute_tunnel_proto::IoError;
    use quinn::crypto::rustls::QuicClientConfig;
    use tokio::sync::broadcast;

    use super::*;
    use crate::allow::Allowlist;
    use crate::config::GatewayConfig;
    use crate::events::Event;
    use crate::names::NameStore;
    use crate::tls::PINNED_SNI;
    use crate::tls::acme::Hooks as AcmeHooks;

    const WAIT: Duration = Duration::from_secs(5);

    struct Gateway {
        shared: Arc<Shared>,
        addr: SocketAddr,
        _stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn start_gateway() -> Gateway {
        start_gateway_with(Allowlist::new(true, &[], None).expect("allowlist"))
    }

    fn start_gateway_with(allow: Allowlist) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::generate().expect("identity");
        let (cert, key) = self_signed_cert(&identity, &[]).expect("cert");
        let https = CertStore::new(certified_key(vec![cert], &key).expect("key"));
        let endpoint = quinn::Endpoint::server(
            server_config(&identity, https).expect("server config"),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .expect("endpoint");
        let addr = endpoint.local_addr().expect("local addr");
        let config = GatewayConfig {
            state_dir: dir.path().to_owned(),
            ..GatewayConfig::default()
        };
        let shared = Shared::new(
            config,
            identity.peer_id(),
            NameStore::open(dir.path()).expect("names"),
            allow,
            AcmeHooks::default(),
            None,
        );
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(endpoint, shared.clone(), stop_rx));
        Gateway {
            shared,
            addr,
            _stop: stop,
            _dir: dir,
        }
    }

    struct Provider {
        peer: PeerId,
        conn: quinn::Connection,
        send: quinn::SendStream,
        reader: ControlReader<quinn::RecvStream>,
        _endpoint: quinn::Endpoint,
    }

    impl Provider {
        async fn connect(gw: &Gateway) -> Self {
            Self::connect_as(gw, &Identity::generate().expect("identity")).await
        }

        async fn connect_as(gw: &Gateway, identity: &Identity) -> Self {
            let (cert, key) = self_signed_cert(identity, &[]).expect("cert");
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls 1.3")
            .dangerous()
            .with_custom_certificate_verifier(PinnedPeerServerVerifier::new(gw.shared.peer_id))
            .with_client_auth_cert(vec![cert], key)
            .expect("client cert");
            tls.alpn_protocols = vec![ALPN.to_vec()];
            let mut endpoint =
                quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
            endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
                QuicClientConfig::try_from(tls).expect("quic tls"),
            )));
            let conn = endpoint
                .connect(gw.addr, PINNED_SNI)
                .expect("connect")
                .await
                .expect("handshake");
            let (mut send, recv) = conn.open_bi().await.expect("control stream");
            let hello = ControlMessage::Hello {
                min_version: MIN_VERSION,
                max_version: MAX_VERSION,
                agent: "test-provider/1".into(),
            };
            write_control(&mut send, &hello).await.expect("hello");
            let mut provider = Self {
                peer: identity.peer_id(),
                conn,
                send,
                reader: ControlReader::new(recv),
                _endpoint: endpoint,
            };
            let welcome = provider.next().await.expect("welcome");
            assert!(
                matches!(welcome, Some(ControlMessage::Welcome { .. })),
                "{welcome:?}"
            );
            provider
        }

        async fn next(&mut self) -> Result<Option<ControlMessage>, IoError> {
            tokio::time::timeout(WAIT, self.reader.next())
                .await
                .expect("the gateway answers in time")
        }

        async fn register(&mut self, name: &str) {
            let msg = ControlMessage::Register { name: name.into() };
            write_control(&mut self.send, &msg).await.expect("register");
            let reply = self.next().await.expect("reply");
            assert!(
                matches!(&reply, Some(ControlMessage::Registered { name: n, .. }) if n == name),
                "{reply:?}"
            );
        }
    }

    async fn event(rx: &mut broadcast::Receiver<Arc<Event>>) -> EventKind {
        let event = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("an event in time")
            .expect("event");
        event.kind.clone()
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn agents_are_cut_and_printable() {
        assert_eq!(clean_agent("peercomputed/0.1.0"), "peercomputed/0.1.0");
        assert_eq!(clean_agent("a\u{1b}[31mb\né"), "a?[31mb??");
        assert_eq!(clean_agent(&"x".repeat(70_000)).len(), MAX_AGENT);
    }

    #[tokio::test]
    async fn a_tunnel_is_listed_while_connected_and_publishes_its_life() {
        let gw = start_gateway();
        let mut events = gw.shared.events.subscribe();
        let mut provider = Provider::connect(&gw).await;
        let peer = provider.peer.to_string();
        match event(&mut events).await {
            EventKind::ProviderConnected { peer: p, agent, .. } => {
                assert_eq!(
                    (p.as_str(), agent.as_str()),
                    (peer.as_str(), "test-provider/1")
                );
            }
            other => panic!("{other:?}"),
        }
        provider.register("blog").await;
        assert_eq!(
            event(&mut events).await,
            EventKind::NameRegistered {
                name: "blog".into(),
                peer: peer.clone()
            }
        );
        let listed = gw.shared.tunnels.list();
        assert_eq!(listed.len(), 1);
        let info = &listed[0];
        assert_eq!(
            (info.peer, info.agent.as_str(), info.transport.as_str()),
            (provider.peer, "test-provider/1", "quic")
        );
        assert_eq!(info.version, MAX_VERSION);
        assert_eq!(
            info.remote.port(),
            provider._endpoint.local_addr().expect("addr").port()
        );
        assert_eq!(info.routes(), vec!["blog".to_owned()]);

        // Another key asking for the same name is refused, and that is published.
        let mut mallory = Provider::connect(&gw).await;
        let _connected = event(&mut events).await;
        let msg = ControlMessage::Register {
            name: "blog".into(),
        };
        write_control(&mut mallory.send, &msg)
            .await
            .expect("register");
        let reply = mallory.next().await.expect("reply");
        assert!(
            matches!(
                reply,
                Some(ControlMessage::Refused {
                    code: RefuseCode::NameOwned,
                    ..
                })
            ),
            "{reply:?}"
        );
        assert!(matches!(
            event(&mut events).await,
            EventKind::NameRefused { name, peer: p, .. }
                if name == "blog" && p == mallory.peer.to_string()
        ));

        provider.conn.close(0u32.into(), b"bye");
        match event(&mut events).await {
            EventKind::ProviderDisconnected { peer: p, reason } => {
                assert_eq!(p, peer);
                assert!(reason.contains("connection lost"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(gw.shared.tunnels.of_peer(&provider.peer).len(), 0);
        assert_eq!(gw.shared.tunnels.len(), 1, "mallory is still connected");
        assert!(gw.shared.registry.is_offline("blog"));
    }

    #[tokio::test]
    async fn the_operator_releases_a_name_and_the_provider_is_told() {
        let gw = start_gateway();
        let mut provider = Provider::connect(&gw).await;
        provider.register("blog").await;
        provider.register("shop").await;
        let mut events = gw.shared.events.subscribe();

        let released = gw
            .shared
            .release_name("blog")
            .expect("release")
            .expect("it had an owner");
        assert_eq!(released.previous_owner, provider.peer.to_string());
        assert!(released.was_online);
        let refused = provider.next().await.expect("refused");
        assert_eq!(
            refused,
            Some(ControlMessage::Refused {
                name: "blog".into(),
                code: OPERATOR_RELEASE,
                reason: "released by the gateway operator".into(),
            })
        );
        assert_eq!(
            event(&mut events).await,
            EventKind::NameReleased {
                name: "blog".into(),
                owner: provider.peer.to_string()
            }
        );
        assert!(gw.shared.registry.lookup("blog").is_none());
        assert!(
            !gw.shared.registry.is_offline("blog"),
            "released, not offline"
        );
        assert!(gw.shared.registry.lookup("shop").is_some());
        let info = gw
            .shared
            .tunnels
            .of_peer(&provider.peer)
            .pop()
            .expect("listed");
        assert_eq!(info.routes(), vec!["shop".to_owned()]);
        assert_eq!(gw.shared.release_name("blog").expect("again"), None);

        // A kick that finds the name registered again by this tunnel (a Register that was on
        // its way during the release) undoes that registration too.
        assert!(info.kick(Kick::Released("shop".into())));
        let refused = provider.next().await.expect("refused");
        assert!(
            matches!(&refused, Some(ControlMessage::Refused { name, .. }) if name == "shop"),
            "{refused:?}"
        );
        until("the route is gone", || {
            gw.shared.registry.lookup("shop").is_none()
        })
        .await;
        assert_eq!(gw.shared.names.owner("shop"), None);
        assert!(info.routes().is_empty());

        // The name is free: another key takes it.
        let mut bob = Provider::connect(&gw).await;
        bob.register("blog").await;
        assert_eq!(gw.shared.names.owner("blog"), Some(bob.peer.to_string()));

        // The first provider's exit leaves bob's route alone; it held nothing any more.
        provider.conn.close(0u32.into(), b"bye");
        until("the first tunnel is gone", || {
            gw.shared.tunnels.of_peer(&provider.peer).is_empty()
        })
        .await;
        assert!(gw.shared.registry.lookup("blog").is_some());
        assert!(!gw.shared.registry.is_offline("shop"));
    }

    #[tokio::test]
    async fn the_operator_disconnects_a_provider_with_a_reason() {
        let gw = start_gateway();
        let mut provider = Provider::connect(&gw).await;
        provider.register("blog").await;
        let other = Provider::connect(&gw).await;
        let mut events = gw.shared.events.subscribe();

        assert_eq!(
            gw.shared
                .disconnect_provider(&provider.peer, "maintenance window"),
            1
        );
        // The GoAway frame may lose the race with the close that follows it; the close carries
        // the same code and reason, and is what the provider surely sees.
        let closed = tokio::time::timeout(WAIT, provider.conn.closed())
            .await
            .expect("closed in time");
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, OPERATOR_DISCONNECT.to_u16().into());
                assert_eq!(&close.reason[..], b"maintenance window");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            event(&mut events).await,
            EventKind::ProviderDisconnected {
                peer: provider.peer.to_string(),
                reason: "disconnected by the gateway operator: maintenance window".into(),
            }
        );
        until("the tunnel is gone", || {
            gw.shared.tunnels.of_peer(&provider.peer).is_empty()
        })
        .await;
        assert!(gw.shared.registry.is_offline("blog"));
        assert_eq!(gw.shared.tunnels.of_peer(&other.peer).len(), 1);
        assert_eq!(gw.shared.disconnect_provider(&provider.peer, "again"), 0);

        // A long reason is cut to MAX_DISCONNECT_REASON characters.
        let long = "é".repeat(crate::state::MAX_DISCONNECT_REASON + 50);
        assert_eq!(gw.shared.disconnect_provider(&other.peer, &long), 1);
        match event(&mut events).await {
            EventKind::ProviderDisconnected { reason, .. } => assert_eq!(
                reason.chars().filter(|c| *c == 'é').count(),
                crate::state::MAX_DISCONNECT_REASON
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_provider_removed_from_the_allowlist_is_revoked_and_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("providers");
        let identity = Identity::generate().expect("identity");
        std::fs::write(&file, format!("{}\n", identity.peer_id())).expect("write");
        let gw = start_gateway_with(Allowlist::new(false, &[], Some(file.clone())).expect("list"));
        let mut provider = Provider::connect_as(&gw, &identity).await;
        provider.register("blog").await;
        let mut events = gw.shared.events.subscribe();

        std::fs::write(&file, "# nobody\n").expect("rewrite");
        let peer = provider.peer.to_string();
        assert_eq!(
            event(&mut events).await,
            EventKind::ProviderRevoked { peer: peer.clone() }
        );
        assert_eq!(
            event(&mut events).await,
            EventKind::ProviderDisconnected {
                peer,
                reason: "removed from the allowlist".into()
            }
        );
        assert!(gw.shared.tunnels.list().is_empty());
    }
}
