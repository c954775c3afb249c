//! `RegisterFleet` at the gateway, with a fleet log held in a real hub: a robot of the group
//! joins its app's name, which the fleet owns; a plain key cannot take it; a log the gateway
//! does not hold, or a robot outside the group, is "try later"; a change of the log drops the
//! robot and tells it; a v2 tunnel may not send the message at all.

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetId, FleetLog, HealthCheck, MemberKey, Op, Release};
use peercompute_p2p::fleet_hub::{FleetHub, HubPolicy, unix_now};
use peercompute_tunnel_proto::{DeployRequest, SHARED_NAMES_VERSION};

use super::*;

/// The admin's copy of a fleet (root key only) and the gateway's hub it pushes to.
struct Fleet {
    key: SigningKey,
    id: FleetId,
    log: FleetLog,
    hub: FleetHub,
}

impl Fleet {
    /// A fleet held by `gw`'s hub (installed as the gateway's fleet hub).
    fn held_by(gw: &Gateway) -> Self {
        let policy = HubPolicy {
            admit: Arc::new(|_| true),
            accept_new_fleets: true,
            max_fleets: 4,
            max_entries: 1000,
        };
        let (hub, _) =
            FleetHub::open(&gw.shared.config.state_dir.join("fleets"), policy).expect("hub");
        gw.shared.fleet.set(hub.clone()).expect("one hub");
        let key = Identity::generate()
            .expect("identity")
            .signing_key()
            .clone();
        let id = FleetId(key.verifying_key().to_bytes());
        let mut fleet = Fleet {
            key,
            id,
            log: FleetLog::new(id),
            hub,
        };
        fleet.write(Op::Genesis { name: "lab".into() });
        fleet
    }

    fn write(&mut self, op: Op) {
        let now = unix_now();
        let entry = self.log.author(&self.key, op, now).expect("author");
        self.log.insert(entry.clone(), now).expect("insert");
        self.hub.insert(self.id, vec![entry], None);
    }

    fn enroll(&mut self, robot: &Identity, groups: &[&str]) {
        self.write(Op::Enroll {
            member: MemberKey(robot.public_key_bytes()),
            name: format!("r{}", self.log.len()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        });
    }

    fn release(&mut self, group: &str, seq: u64, app: &str) {
        let spec = DeployRequest {
            name: Some(app.into()),
            ..DeployRequest::new(format!("web@sha256:{}", "ab".repeat(32)), 80)
        };
        self.write(Op::Release(Release {
            group: group.into(),
            seq,
            version: format!("v{seq}"),
            spec,
            health: HealthCheck {
                path: None,
                timeout_secs: 10,
            },
        }));
    }
}

async fn register_fleet(
    p: &mut Provider,
    fleet: FleetId,
    group: &str,
) -> Result<Option<ControlMessage>, IoError> {
    let msg = ControlMessage::RegisterFleet {
        name: "web".into(),
        fleet: fleet.0,
        group: group.into(),
    };
    write_control(&mut p.send, &msg)
        .await
        .expect("register fleet");
    p.next().await
}

fn refused_try_later(reply: &Result<Option<ControlMessage>, IoError>, says: &str) {
    match reply {
        Ok(Some(ControlMessage::Refused {
            code: RefuseCode::TryLater,
            reason,
            ..
        })) => assert!(reason.contains(says), "{reason}"),
        other => panic!("expected Refused TryLater ({says}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_robot_of_the_group_joins_its_apps_name_and_leaves_when_the_log_says() {
    let gw = start_gateway();
    let robot = Identity::generate().expect("identity");
    let mut p = Provider::connect_as(&gw, &robot).await;
    let unknown = FleetId(SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes());
    refused_try_later(
        &register_fleet(&mut p, unknown, "prod").await,
        "does not hold the log",
    );

    let mut fleet = Fleet::held_by(&gw);
    fleet.enroll(&robot, &["prod"]);
    refused_try_later(
        &register_fleet(&mut p, fleet.id, "prod").await,
        "has no current release",
    );
    fleet.release("prod", 1, "web");
    let reply = register_fleet(&mut p, fleet.id, "prod").await;
    assert!(
        matches!(&reply, Ok(Some(ControlMessage::Registered { name, .. })) if name == "web"),
        "{reply:?}"
    );
    assert!(gw.shared.registry.serves("web", &robot.peer_id()));
    assert_eq!(gw.shared.names.owner("web"), Some(fleet.id.to_string()));

    // Another robot of the fleet, in another group: not for it.
    let other = Identity::generate().expect("identity");
    fleet.enroll(&other, &["lab"]);
    let mut q = Provider::connect_as(&gw, &other).await;
    refused_try_later(
        &register_fleet(&mut q, fleet.id, "prod").await,
        "is not in group prod",
    );
    // A plain registration of the fleet's name is another owner's name.
    let write = ControlMessage::Register { name: "web".into() };
    write_control(&mut q.send, &write).await.expect("register");
    let reply = q.next().await;
    assert!(
        matches!(
            &reply,
            Ok(Some(ControlMessage::Refused {
                code: RefuseCode::NameOwned,
                ..
            }))
        ),
        "{reply:?}"
    );

    // The group releases another app: the sweep drops the robot and tells it.
    fleet.release("prod", 2, "shop");
    assert_eq!(crate::fleet_names::sweep(&gw.shared, &fleet.id), 1);
    assert!(!gw.shared.registry.serves("web", &robot.peer_id()));
    refused_try_later(&p.next().await, "now runs app shop, not web");
    assert_eq!(
        crate::fleet_names::sweep(&gw.shared, &fleet.id),
        0,
        "dropped once"
    );
}

#[tokio::test]
async fn a_v2_tunnel_may_not_send_register_fleet() {
    let gw = start_gateway();
    let identity = Identity::generate().expect("identity");
    let mut p = Provider::connect_speaking(&gw, &identity, SHARED_NAMES_VERSION).await;
    // The GoAway, or the close right behind it, says why.
    let reply = register_fleet(&mut p, FleetId([1; 32]), "prod").await;
    let seen = format!("{reply:?}");
    assert!(
        seen.contains(
            "RegisterFleet (`web`) needs tunnel protocol version 3; this tunnel agreed on 2"
        ),
        "{seen}"
    );
    assert!(!gw.shared.registry.serves("web", &identity.peer_id()));
}
