//! `RegisterGranted` at the gateway: a granted key joins the owner's routes, a bad grant is
//! refused with its reason, and a v1 tunnel may not send the message at all.

use std::time::{SystemTime, UNIX_EPOCH};

use peercompute_tunnel_proto::NameGrant;

use super::*;

const DOMAIN: &str = "apps.test";

fn gateway() -> Gateway {
    start_gateway_configured(
        Allowlist::new(true, &[], None).expect("allowlist"),
        GatewayConfig {
            domain: DOMAIN.into(),
            ..GatewayConfig::default()
        },
    )
}

fn grant(owner: &Identity, grantee: PeerId) -> NameGrant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    NameGrant::sign(
        owner.signing_key(),
        DOMAIN,
        "blog",
        grantee,
        now + 3600,
        now,
    )
    .expect("signs")
}

async fn send_granted(
    p: &mut Provider,
    grant: NameGrant,
) -> Result<Option<ControlMessage>, IoError> {
    let msg = ControlMessage::RegisterGranted {
        name: "blog".into(),
        grant: Box::new(grant),
    };
    write_control(&mut p.send, &msg)
        .await
        .expect("register granted");
    p.next().await
}

/// The owner registers `blog`, then a second key presents the owner's grant; both connected.
struct Pair {
    owner: Identity,
    _first: Provider,
    grantee: Identity,
    second: Provider,
    reply: Result<Option<ControlMessage>, IoError>,
}

async fn owner_and_grantee(gw: &Gateway) -> Pair {
    let owner = Identity::generate().expect("identity");
    let mut first = Provider::connect_as(gw, &owner).await;
    first.register("blog").await;
    let grantee = Identity::generate().expect("identity");
    let mut second = Provider::connect_as(gw, &grantee).await;
    let reply = send_granted(&mut second, grant(&owner, grantee.peer_id())).await;
    Pair {
        owner,
        _first: first,
        grantee,
        second,
        reply,
    }
}

#[tokio::test]
async fn a_granted_key_joins_the_owners_routes_and_leaves_on_disconnect() {
    let gw = gateway();
    let Pair {
        owner,
        _first,
        grantee: _,
        second,
        reply,
    } = owner_and_grantee(&gw).await;
    assert!(
        matches!(&reply, Ok(Some(ControlMessage::Registered { name, .. })) if name == "blog"),
        "{reply:?}"
    );
    let one = gw.shared.registry.lookup("blog").expect("routed");
    let other = gw
        .shared
        .registry
        .lookup_other("blog", one.conn.id())
        .expect("two providers serve blog");
    assert_ne!(one.peer, other.peer);
    assert_eq!(
        gw.shared.names.owner("blog"),
        Some(owner.peer_id().to_string())
    );

    second.conn.close(0u32.into(), b"bye");
    until("the grantee's route is gone", || {
        gw.shared.registry.lookup("blog").is_some_and(|r| {
            gw.shared
                .registry
                .lookup_other("blog", r.conn.id())
                .is_none()
        })
    })
    .await;
    assert_eq!(
        gw.shared.registry.lookup("blog").map(|r| r.peer),
        Some(owner.peer_id())
    );
    assert!(!gw.shared.registry.is_offline("blog"));
}

#[tokio::test]
async fn a_grant_not_signed_by_the_owner_is_refused() {
    let gw = gateway();
    let owner = Identity::generate().expect("identity");
    let mut first = Provider::connect_as(&gw, &owner).await;
    first.register("blog").await;
    let stranger = Identity::generate().expect("identity");
    let mut second = Provider::connect_as(&gw, &stranger).await;
    let reply = send_granted(&mut second, grant(&stranger, stranger.peer_id())).await;
    match reply {
        Ok(Some(ControlMessage::Refused { code, reason, .. })) => {
            assert_eq!(code, RefuseCode::NameOwned);
            assert!(reason.contains("belongs to"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!gw.shared.registry.serves("blog", &stranger.peer_id()));
}

#[tokio::test]
async fn a_v1_tunnel_may_not_send_register_granted() {
    let gw = gateway();
    let owner = Identity::generate().expect("identity");
    let mut first = Provider::connect_as(&gw, &owner).await;
    first.register("blog").await;
    let grantee = Identity::generate().expect("identity");
    let mut old = Provider::connect_speaking(&gw, &grantee, 1).await;
    // The GoAway, or the close right behind it, says why.
    let reply = send_granted(&mut old, grant(&owner, grantee.peer_id())).await;
    let seen = format!("{reply:?}");
    assert!(
        seen.contains(
            "RegisterGranted (`blog`) needs tunnel protocol version 2; this tunnel agreed on 1"
        ),
        "{seen}"
    );
    assert!(!gw.shared.registry.serves("blog", &grantee.peer_id()));
}

#[tokio::test]
async fn lookup_prefers_the_least_loaded_healthy_member() {
    let gw = gateway();
    let Pair {
        owner,
        _first,
        grantee,
        second: _second,
        reply,
    } = owner_and_grantee(&gw).await;
    assert!(
        matches!(reply, Ok(Some(ControlMessage::Registered { .. }))),
        "{reply:?}"
    );
    let registry = &gw.shared.registry;
    let peer_of = |n: usize| {
        (0..n)
            .map(|_| registry.lookup("blog").expect("routed").peer)
            .collect::<Vec<_>>()
    };

    // Idle: ties go round-robin.
    let picks = peer_of(4);
    assert_eq!(
        picks.iter().filter(|p| **p == owner.peer_id()).count(),
        2,
        "{picks:?}"
    );

    // One outstanding request on the owner's route: the grantee's is picked.
    let owner_route = (0..4)
        .filter_map(|_| registry.lookup("blog"))
        .find(|r| r.peer == owner.peer_id())
        .expect("the owner's route");
    assert_eq!(owner_route.peer, owner.peer_id());
    let busy = owner_route.begin();
    assert!(peer_of(4).iter().all(|p| *p == grantee.peer_id()));
    drop(busy);

    // Three failed opens in a row eject the grantee's route, even while the owner's is busier.
    let grantee_route = registry
        .lookup_other("blog", owner_route.conn.id())
        .expect("grantee's route");
    let _busy = owner_route.begin();
    for _ in 0..crate::registry::FAILS_TO_EJECT {
        grantee_route.open_failed(Instant::now());
    }
    assert!(peer_of(4).iter().all(|p| *p == owner.peer_id()));
}
