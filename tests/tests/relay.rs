//! The gateway as the control plane's meeting point, on loopback with real libp2p (TCP, QUIC,
//! Noise, Yamux, relay v2, rendezvous) and the real gateway, provider daemon and peerctl
//! client libraries: a provider is reached by peer id alone, errors say what failed, and the
//! relay refuses unadmitted peers and closes circuits that carry too much.

use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peercompute_identity::{Identity, TrustStore};
use peercompute_p2p::{Multiaddr, Node, NodeConfig, NodeError, Protocol, StreamProtocol};
use peercompute_provider::{GatewayP2p, Limits, RelayStatus};
use peercompute_tests::daemon::{TestClient, TestDaemon};
use peercompute_tests::gateway::{GatewayOptions, TestGateway};
use peercompute_tests::within;
use peercompute_tunnel_proto::{ControlPlaneMessage, ListRequest, Request};
use peerctl::{Client, ClientOptions, Kind};

/// A gateway with its meeting point on, admitting `allow`.
async fn gateway(allow: Vec<peercompute_identity::PeerId>, max_circuit_bytes: u64) -> TestGateway {
    TestGateway::start(GatewayOptions {
        allow,
        p2p: true,
        relay_max_circuit_bytes: max_circuit_bytes,
        ..GatewayOptions::default()
    })
    .await
}

/// A provider daemon admitted by `gw`, waiting until its relay slot is reserved; returns it
/// with the gateway's p2p addresses as its tunnel learned them.
async fn reserved_provider(gw: &TestGateway, home: tempfile::TempDir) -> (TestDaemon, GatewayP2p) {
    let daemon = TestDaemon::start(home, gw, Limits::default()).await;
    let running = daemon.daemon.as_ref().expect("running");
    let mut relay = running.relay.clone();
    let status = within(20, "relay reservation", async {
        relay
            .wait_for(|s| matches!(s, RelayStatus::Reserved { .. }))
            .await
            .map(|s| s.clone())
    })
    .await
    .expect("relay status");
    let RelayStatus::Reserved { address } = status else {
        unreachable!()
    };
    assert!(
        address.iter().any(|p| matches!(p, Protocol::P2pCircuit)),
        "{address}"
    );
    let p2p = running
        .tunnel
        .as_ref()
        .expect("tunnel")
        .gateway_p2p()
        .borrow()
        .clone()
        .expect("the Welcome announced p2p addresses");
    assert_eq!(p2p.peer, gw.peer_id);
    (daemon, p2p)
}

fn options(gateways: Vec<(peercompute_identity::PeerId, Vec<Multiaddr>)>) -> ClientOptions {
    ClientOptions {
        mdns: false,
        connect_timeout: Duration::from_secs(10),
        gateways,
        ..ClientOptions::default()
    }
}

/// A client that trusts `peer` with no address at all.
fn trusting(peer: &peercompute_identity::PeerId) -> TestClient {
    let client = TestClient::new();
    let mut store = TrustStore::open(client.home.path()).expect("trust store");
    store
        .add(&peer.to_string(), None, &[] as &[&str])
        .expect("trust");
    client
}

async fn connect(
    client: &TestClient,
    peer: &peercompute_identity::PeerId,
    options: &ClientOptions,
) -> Result<Client, peerctl::CliError> {
    let trust = TrustStore::open(client.home.path()).expect("trust store");
    Client::connect(client.identity.clone(), &trust, &peer.to_string(), options).await
}

/// A new client, trusting the provider and trusted by it, reaching it by peer id through the
/// gateway's relay alone (no stored address, no mDNS, no wait for a hole punch).
async fn fresh_client_reach(
    daemon: &TestDaemon,
    p2p: &GatewayP2p,
) -> Result<Client, peerctl::CliError> {
    let client = trusting(&daemon.peer_id);
    daemon.trust(&client.peer_id());
    let opts = ClientOptions {
        hole_punch_wait: Duration::ZERO,
        ..options(vec![(p2p.peer, p2p.addrs.clone())])
    };
    within(
        30,
        "reach through the relay",
        connect(&client, &daemon.peer_id, &opts),
    )
    .await
}

#[tokio::test]
async fn provider_is_reached_by_peer_id_alone_through_the_gateway() {
    let (home, provider_id) = TestDaemon::identity();
    let gw = gateway(vec![provider_id], 16 << 20).await;
    let (daemon, p2p) = reserved_provider(&gw, home).await;
    let client = trusting(&daemon.peer_id);
    daemon.trust(&client.peer_id());
    let opts = options(vec![(p2p.peer, p2p.addrs.clone())]);
    let c = within(
        20,
        "connect through the gateway",
        connect(&client, &daemon.peer_id, &opts),
    )
    .await
    .expect("reached by peer id through the gateway");
    let mut framed = c.send(&Request::List(ListRequest {})).await.expect("send");
    let answer = within(10, "list answer", Client::next(&mut framed))
        .await
        .expect("answer");
    assert!(
        matches!(answer, ControlPlaneMessage::ListResponse(_)),
        "{answer:?}"
    );
    let path = c.path().await.expect("connected");
    // On loopback hole punching may or may not win; either way the path is known.
    eprintln!("reached over {} at {}", path.kind, path.address);
    // The provider announces where it is registered: the client can learn the gateway.
    let circuits = c.provider_circuits().await;
    assert!(
        circuits
            .iter()
            .any(|a| a.to_string().contains(&gw.peer_id.to_string())),
        "{circuits:?}"
    );
}

#[tokio::test]
async fn errors_say_which_step_failed() {
    let (home, provider_id) = TestDaemon::identity();
    let gw = gateway(vec![provider_id], 16 << 20).await;
    let (_daemon, p2p) = reserved_provider(&gw, home).await;

    // Trusted, but registered nowhere.
    let stranger = Identity::generate().expect("id").peer_id();
    let client = trusting(&stranger);
    let opts = options(vec![(p2p.peer, p2p.addrs.clone())]);
    let err = within(
        20,
        "lookup of an unregistered peer",
        connect(&client, &stranger, &opts),
    )
    .await
    .expect_err("not registered");
    assert_eq!(err.kind, Kind::Unreachable);
    assert!(
        err.message.contains("not registered at any known gateway"),
        "{}",
        err.message
    );

    // A gateway nobody answers at.
    let nowhere = Identity::generate().expect("id").peer_id();
    let opts = options(vec![(
        nowhere,
        vec!["/ip4/127.0.0.1/tcp/1".parse().expect("ma")],
    )]);
    let err = within(
        20,
        "unreachable gateway",
        connect(&client, &stranger, &opts),
    )
    .await
    .expect_err("gateway unreachable");
    assert_eq!(err.kind, Kind::Unreachable);
    assert!(
        err.message
            .contains(&format!("gateway {nowhere} unreachable")),
        "{}",
        err.message
    );
}

/// A bare node with no listen address (so no hole punching can replace a relayed path).
async fn bare_node(identity: &Identity) -> Node {
    Node::start(
        identity,
        NodeConfig {
            mdns: false,
            hole_punch_wait: Duration::ZERO,
            ..NodeConfig::default()
        },
    )
    .await
    .expect("node")
}

/// The gateway's TCP p2p address, as the provider's tunnel learned it.
fn tcp_addr(p2p: &GatewayP2p) -> Multiaddr {
    p2p.addrs
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .expect("a TCP address")
        .clone()
        .with(Protocol::P2p(p2p.peer))
}

#[tokio::test]
async fn unadmitted_peer_cannot_reserve_a_relay_slot() {
    let admitted = Identity::generate().expect("id");
    let gw = gateway(vec![admitted.peer_id()], 16 << 20).await;
    // The gateway announces its p2p addresses to admitted providers in the tunnel's Welcome.
    let p2p = announced(&gw, &admitted).await;
    let addr = tcp_addr(&p2p);
    let stranger = Identity::generate().expect("id");
    let node = bare_node(&stranger).await;
    let admitted_node = bare_node(&admitted).await;

    let refused = within(15, "refused reservation", node.reserve(addr.clone())).await;
    match refused {
        // Relay v2 has one refusal code for this: RESOURCE_LIMIT_EXCEEDED (a closed
        // connection or a timeout would be other failures, not a refusal).
        Err(NodeError::RelayRefused { reason, .. }) => assert!(
            reason.contains("resource limit exceeded"),
            "refused for another reason: {reason}"
        ),
        other => panic!("an unadmitted peer got {other:?}"),
    }
    let granted = within(15, "admitted reservation", admitted_node.reserve(addr))
        .await
        .expect("the admitted peer reserves");
    assert!(granted.to_string().contains("p2p-circuit"), "{granted}");
}

/// The gateway's announced p2p addresses, read from the tunnel Welcome of a provider using
/// `identity` (which the gateway admits).
async fn announced(gw: &TestGateway, identity: &Identity) -> GatewayP2p {
    let home = tempfile::tempdir().expect("home");
    identity.save(home.path()).expect("save identity");
    let (daemon, p2p) = reserved_provider_in(gw, home).await;
    drop(daemon);
    p2p
}

async fn reserved_provider_in(
    gw: &TestGateway,
    home: tempfile::TempDir,
) -> (TestDaemon, GatewayP2p) {
    let daemon = TestDaemon::start(home, gw, Limits::default()).await;
    let running = daemon.daemon.as_ref().expect("running");
    let mut p2p = running.tunnel.as_ref().expect("tunnel").gateway_p2p();
    let got = within(15, "Welcome p2p addresses", async {
        p2p.wait_for(Option::is_some).await.map(|g| g.clone())
    })
    .await
    .expect("watch")
    .expect("addresses");
    (daemon, got)
}

#[tokio::test]
async fn a_circuit_over_its_byte_limit_is_closed() {
    const LIMIT: u64 = 64 * 1024;
    let provider = Identity::generate().expect("id");
    let gw = gateway(vec![provider.peer_id()], LIMIT).await;
    let p2p = announced(&gw, &provider).await;
    let addr = tcp_addr(&p2p);
    let sink = StreamProtocol::new("/peercompute-test/sink/1");

    // The "provider": reserves, then counts what arrives on the sink protocol.
    let p = bare_node(&provider).await;
    let relayed = within(15, "reservation", p.reserve(addr))
        .await
        .expect("reserved");
    let mut incoming = p.control().accept(sink.clone()).expect("accept sink");
    let counter = tokio::spawn(async move {
        let mut total = 0u64;
        if let Some((_, mut stream)) = incoming.next().await {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
        }
        total
    });

    // The client: dials through the relay and pushes 1 MiB.
    let client = bare_node(&Identity::generate().expect("id")).await;
    within(
        15,
        "relayed dial",
        client.dial(provider.peer_id(), vec![relayed]),
    )
    .await
    .expect("relayed connection");
    let path = client.path(provider.peer_id()).await.expect("connected");
    assert_eq!(
        path.kind,
        peercompute_p2p::PathKind::Relayed,
        "{}",
        path.address
    );
    let mut stream = client
        .control()
        .open_stream(provider.peer_id(), sink)
        .await
        .expect("open stream over the circuit");
    let chunk = vec![7u8; 8 * 1024];
    let pushed = within(20, "pushing past the limit", async {
        let mut sent = 0u64;
        while sent < 1 << 20 {
            if stream.write_all(&chunk).await.is_err() || stream.flush().await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        let _ = stream.close().await;
        sent
    })
    .await;
    let received = within(20, "the circuit closing", counter)
        .await
        .expect("counter task");
    eprintln!("sent {pushed} B, the far side received {received} B, limit {LIMIT} B");
    assert!(
        received <= LIMIT,
        "{received} B crossed a circuit limited to {LIMIT} B"
    );
    assert!(
        received >= LIMIT / 4,
        "the circuit closed far below its limit ({received} B): something else cut it"
    );
    // The relayed connection is gone.
    within(10, "relayed connection closed", async {
        while client.path(provider.peer_id()).await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn provider_reserves_again_after_the_gateway_restarts() {
    let (home, provider_id) = TestDaemon::identity();
    let gw = gateway(vec![provider_id], 16 << 20).await;
    let (daemon, before) = reserved_provider(&gw, home).await;
    let running = daemon.daemon.as_ref().expect("running");
    let mut relay = running.relay.clone();
    let first = relay.borrow().clone();

    // The restarted gateway listens for p2p on new ports; the provider learns them from
    // the next Welcome and reserves again.
    let gw = gw.restart().await;
    let again = within(40, "a new reservation after the restart", async {
        relay
            .wait_for(|s| matches!(s, RelayStatus::Reserved { .. }) && *s != first)
            .await
            .map(|s| s.clone())
    })
    .await
    .expect("relay status");
    eprintln!("before: {first:?}\nafter: {again:?}");
    let after = running
        .tunnel
        .as_ref()
        .expect("tunnel")
        .gateway_p2p()
        .borrow()
        .clone()
        .expect("addresses");
    assert_ne!(before.addrs, after.addrs, "new p2p ports after the restart");

    // And a client finds it there again.
    let client = trusting(&daemon.peer_id);
    daemon.trust(&client.peer_id());
    let opts = options(vec![(after.peer, after.addrs.clone())]);
    let c = within(
        20,
        "connect after the restart",
        connect(&client, &daemon.peer_id, &opts),
    )
    .await
    .expect("reached through the restarted gateway");
    let mut framed = c.send(&Request::List(ListRequest {})).await.expect("send");
    assert!(matches!(
        within(10, "list answer", Client::next(&mut framed)).await,
        Ok(ControlPlaneMessage::ListResponse(_))
    ));
    drop(gw);
}

#[tokio::test]
async fn a_provider_removed_from_the_allowlist_loses_its_relay_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("providers.txt");
    let (home, provider_id) = TestDaemon::identity();
    std::fs::write(&file, format!("{provider_id}\n")).expect("write");
    let gw = TestGateway::start(GatewayOptions {
        allow_file: Some(file.clone()),
        p2p: true,
        ..GatewayOptions::default()
    })
    .await;
    let (daemon, p2p) = reserved_provider(&gw, home).await;
    fresh_client_reach(&daemon, &p2p)
        .await
        .expect("reached through the relay while admitted");

    std::fs::write(&file, "# nobody\n").expect("revoke");
    let mut relay = daemon.daemon.as_ref().expect("running").relay.clone();
    let status = within(5, "the relay slot is taken away", async {
        relay
            .wait_for(|s| !matches!(s, RelayStatus::Reserved { .. }))
            .await
            .map(|s| s.clone())
    })
    .await
    .expect("relay status");
    eprintln!("after revocation the provider's relay status is {status:?}");
    // A new client can no longer reach the provider through this gateway.
    let refused = fresh_client_reach(&daemon, &p2p)
        .await
        .expect_err("a revoked provider is not reachable through the relay");
    assert_eq!(refused.kind, Kind::Unreachable, "{refused}");
    assert!(
        refused
            .message
            .contains("not registered at any known gateway")
            && refused.message.contains("no longer admits it"),
        "the error says the gateway holds no slot for the provider: {refused}"
    );
}

#[tokio::test]
async fn a_short_relay_slot_is_renewed_before_it_ends() {
    const SLOT: Duration = Duration::from_secs(3);
    let (home, provider_id) = TestDaemon::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![provider_id],
        p2p: true,
        relay_reservation_duration: SLOT,
        ..GatewayOptions::default()
    })
    .await;
    let (daemon, p2p) = reserved_provider(&gw, home).await;
    // Over three slot lifetimes the reservation never lapses...
    let mut relay = daemon.daemon.as_ref().expect("running").relay.clone();
    let lapsed = tokio::time::timeout(
        3 * SLOT + Duration::from_secs(1),
        relay.wait_for(|s| !matches!(s, RelayStatus::Reserved { .. })),
    )
    .await;
    if let Ok(status) = lapsed {
        panic!(
            "the relay slot lapsed: {:?}",
            status.map(|s| s.clone()).ok()
        );
    }
    // ...and a new client still reaches the provider through the relay (no stored address
    // and no mDNS: the first connection can only be the relayed one).
    fresh_client_reach(&daemon, &p2p)
        .await
        .expect("reached through the renewed slot");
}

#[tokio::test]
async fn strangers_can_neither_list_nor_fill_the_gateway_directory() {
    let (home, provider_id) = TestDaemon::identity();
    let gw = gateway(vec![provider_id], 16 << 20).await;
    let (daemon, p2p) = reserved_provider(&gw, home).await;
    let addr = tcp_addr(&p2p);
    let stranger = bare_node(&Identity::generate().expect("id")).await;
    within(15, "dial the gateway", stranger.dial(p2p.peer, vec![addr]))
        .await
        .expect("anyone may connect to the gateway (clients do)");
    // The registered provider's namespace is its peer id.
    let lookup = within(
        15,
        "a stranger's lookup",
        stranger.discover(p2p.peer, daemon.peer_id.to_string()),
    )
    .await;
    assert!(
        lookup.is_err(),
        "the directory answered a stranger: {lookup:?}"
    );
    let squat = within(
        15,
        "a stranger's registration",
        stranger.register(
            p2p.peer,
            daemon.peer_id.to_string(),
            Duration::from_secs(7200),
        ),
    )
    .await;
    assert!(squat.is_err(), "the directory took a stranger's record");
    // Clients are strangers to the directory too, yet reach the provider: the relay's slot is
    // what they use.
    fresh_client_reach(&daemon, &p2p)
        .await
        .expect("reached through the relay");
}

/// Several tasks dialling the same peer at once all get the one connection: a dial while
/// another is under way waits for its outcome instead of failing (`peerctl fleet logs` asks
/// every robot of a group through the gateway at once).
#[tokio::test]
async fn concurrent_dials_of_one_peer_share_the_connection() {
    let gw = TestGateway::start(GatewayOptions {
        p2p: true,
        open: true,
        ..GatewayOptions::default()
    })
    .await;
    let addr = gw.p2p_addr().await;
    let node = bare_node(&Identity::generate().expect("identity")).await;
    let dials = (0..8).map(|_| node.dial(gw.peer_id, vec![addr.clone()]));
    let results = within(20, "eight dials", futures_util::future::join_all(dials)).await;
    for r in &results {
        assert!(r.is_ok(), "every dial succeeds: {results:?}");
    }
}
