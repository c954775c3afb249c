//! [`FleetMember`]: a libp2p node with its own fleet hub, dialled to a gateway — an admin's
//! peerctl copy or a robot's log, in-process — and entry shortcuts for tests and the fleet
//! benchmark.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    FleetId, FleetLog, Grant, HealthCheck, MemberKey, Op, PushResult, Release, Role, SignedEntry,
};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{self, FleetHub, HubPolicy, unix_now};
use peercompute_p2p::{Multiaddr, Node, NodeConfig, PeerId, Protocol};
use peercompute_tunnel_proto::DeployRequest;

use crate::within;

/// A member: its identity, libp2p node and fleet hub.
#[derive(Debug)]
pub struct FleetMember {
    pub identity: Identity,
    pub node: Node,
    pub hub: FleetHub,
    _home: tempfile::TempDir,
}

impl FleetMember {
    /// Starts a member and dials the gateway at `gateway` (`…/p2p/<id>`). An admin's copy
    /// takes any fleet (`accept_new_fleets`); a robot only the fleets it holds.
    pub async fn start(gateway: &Multiaddr, accept_new_fleets: bool) -> Self {
        let identity = Identity::generate().expect("identity");
        let home = tempfile::tempdir().expect("home");
        let node = Node::start(
            &identity,
            NodeConfig {
                mdns: false,
                hole_punch_wait: Duration::ZERO,
                ..NodeConfig::default()
            },
        )
        .await
        .expect("node");
        let policy = HubPolicy {
            admit: Arc::new(|_| true),
            accept_new_fleets,
            max_fleets: 4,
            max_entries: 100_000,
        };
        let (hub, _) = FleetHub::open(home.path(), policy).expect("hub");
        tokio::spawn(fleet_hub::serve(node.clone(), hub.clone()));
        let gw = peer_of(gateway);
        within(15, "dial the gateway", node.dial(gw, vec![gateway.clone()]))
            .await
            .expect("dial");
        FleetMember {
            identity,
            node,
            hub,
            _home: home,
        }
    }

    pub fn key(&self) -> MemberKey {
        MemberKey(self.identity.public_key_bytes())
    }

    /// Authors `op` with `key` on this member's copy (a genesis on an empty one) and stores
    /// it locally.
    pub fn write(&self, fleet: FleetId, key: &SigningKey, op: Op) -> SignedEntry {
        let entry = self
            .hub
            .with_log(&fleet, |log| log.author(key, op.clone(), unix_now()))
            .unwrap_or_else(|| FleetLog::new(fleet).author(key, op, unix_now()))
            .expect("a valid entry");
        let results = self.hub.insert(fleet, vec![entry.clone()], None);
        assert!(
            matches!(results[..], [PushResult::Stored(_)]),
            "stored locally: {results:?}"
        );
        entry
    }

    /// Founds a fleet on this member's copy: the genesis signed by `fleet_key`, then this
    /// member granted admin of every group (as `peerctl fleet create` does).
    pub fn found(&self, fleet_key: &SigningKey, name: &str) -> FleetId {
        let fleet = FleetId(fleet_key.verifying_key().to_bytes());
        self.write(fleet, fleet_key, genesis(name));
        let grant = Op::Grant(Grant {
            member: self.key(),
            role: Role::Admin,
            groups: vec![],
            expires_at: None,
        });
        self.write(fleet, fleet_key, grant);
        fleet
    }

    /// Entries held of `fleet` (0 when not held).
    pub fn len(&self, fleet: &FleetId) -> usize {
        self.hub.with_log(fleet, FleetLog::len).unwrap_or(0)
    }
}

/// The peer id in a `…/p2p/<id>` address.
pub fn peer_of(addr: &Multiaddr) -> PeerId {
    addr.iter()
        .find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .expect("/p2p/ in the address")
}

/// A genesis op.
pub fn genesis(name: &str) -> Op {
    Op::Genesis { name: name.into() }
}

/// A release of app `app` for `group`, pinned to a made-up digest.
pub fn release(group: &str, seq: u64, version: &str) -> Op {
    let image = format!("127.0.0.1:5000/app@sha256:{}", "ab".repeat(32));
    release_of(group, seq, version, "app", &image, 30)
}

/// A release of `image` (pinned) as app `app` on port 8080 for `group`, health-checked at
/// `/healthz` within `timeout_secs`.
pub fn release_of(
    group: &str,
    seq: u64,
    version: &str,
    app: &str,
    image: &str,
    timeout_secs: u32,
) -> Op {
    let mut spec = DeployRequest::new(image.to_owned(), 8080);
    spec.name = Some(app.into());
    Op::Release(Release {
        group: group.into(),
        seq,
        version: version.into(),
        spec,
        health: HealthCheck {
            path: Some("/healthz".into()),
            timeout_secs,
        },
    })
}
