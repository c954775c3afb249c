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

mod fleets;
mod grants;

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
    start_gateway_configured(allow, GatewayConfig::default())
}

fn start_gateway_configured(allow: Allowlist, config: GatewayConfig) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = Identity::generate().expect("identity");
    let (cert, key) = self_signed_cert(&identity, &[]).expect("cert");
    let https = CertStore::new(certified_key(vec![cert], &key).expect("key"));
    let endpoint = quinn::Endpoint::server(
        server_config(
            tunnel_tls(&identity, https).expect("tunnel TLS"),
            crate::config::quic_congestion(Default::default()),
        )
        .expect("server config"),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("endpoint");
    let addr = endpoint.local_addr().expect("local addr");
    let config = GatewayConfig {
        state_dir: dir.path().to_owned(),
        ..config
    };
    let shared = Shared::new(
        config,
        identity.peer_id(),
        crate::cluster::Names::Local(NameStore::open(dir.path()).expect("names")),
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
        Self::connect_speaking(gw, identity, MAX_VERSION).await
    }

    /// Connects saying it speaks versions `MIN_VERSION..=max_version`.
    async fn connect_speaking(gw: &Gateway, identity: &Identity, max_version: u16) -> Self {
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
            max_version,
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
        .await
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
    assert_eq!(gw.shared.release_name("blog").await.expect("again"), None);

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

    // Its previous owner cannot take it back on its own (a reconnect re-registering it)...
    let again = ControlMessage::Register {
        name: "blog".into(),
    };
    write_control(&mut provider.send, &again)
        .await
        .expect("register again");
    let refused = provider.next().await.expect("refused");
    assert!(
        matches!(&refused, Some(ControlMessage::Refused { name, code, .. })
            if name == "blog" && *code == OPERATOR_RELEASE),
        "{refused:?}"
    );
    assert_eq!(gw.shared.names.owner("blog"), None);
    // An operator may lift the hold (a release by mistake).
    assert_eq!(
        gw.shared.lift_hold("blog").await.expect("lift"),
        Some(provider.peer.to_string())
    );
    assert!(!gw.shared.released_from("blog", &provider.peer));
    assert_eq!(gw.shared.lift_hold("blog").await.expect("lift"), None);

    // ...but the name is free: another key takes it, which ends the hold.
    let mut bob = Provider::connect(&gw).await;
    bob.register("blog").await;
    assert_eq!(gw.shared.names.owner("blog"), Some(bob.peer.to_string()));
    assert!(!gw.shared.released_from("blog", &provider.peer));

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

/// A provider at its name limit whose second connection comes up while the first still lives
/// (a reconnect, or a move between QUIC and TCP) takes over every name: re-registering a name
/// it serves is not a new name.
#[tokio::test]
async fn a_second_connection_at_the_name_limit_takes_over_every_name() {
    let gw = start_gateway_configured(
        Allowlist::new(true, &[], None).expect("allowlist"),
        GatewayConfig {
            max_names_per_provider: 2,
            ..GatewayConfig::default()
        },
    );
    let identity = Identity::generate().expect("identity");
    let mut first = Provider::connect_as(&gw, &identity).await;
    first.register("one").await;
    first.register("two").await;
    let mut second = Provider::connect_as(&gw, &identity).await;
    second.register("one").await;
    second.register("two").await;
    let second_port = second._endpoint.local_addr().expect("local addr").port();
    for name in ["one", "two"] {
        let route = gw.shared.registry.lookup(name).expect("routed");
        assert_eq!(route.peer, identity.peer_id());
        assert_eq!(
            route.conn.remote_address().port(),
            second_port,
            "`{name}` is served by the second connection"
        );
    }
    // A third name is still one too many.
    let msg = ControlMessage::Register {
        name: "three".into(),
    };
    write_control(&mut second.send, &msg)
        .await
        .expect("register");
    let reply = second.next().await.expect("reply");
    assert!(
        matches!(
            &reply,
            Some(ControlMessage::Refused {
                code: RefuseCode::TooManyNames,
                ..
            })
        ),
        "{reply:?}"
    );
}
