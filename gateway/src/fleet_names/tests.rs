//! The group-name rule, as a table over fleet logs built here (no sockets).

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetLog, HealthCheck, Op, Release, RotationProof};
use peercompute_tunnel_proto::DeployRequest;

use super::*;

const NOW: u64 = 1_780_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn mk(k: &SigningKey) -> MemberKey {
    MemberKey(k.verifying_key().to_bytes())
}

fn peer(seed: u8) -> PeerId {
    mk(&key(seed)).peer_id().expect("an ed25519 key")
}

fn write(log: &mut FleetLog, op: Op) {
    let e = log.author(&key(1), op, NOW).expect("valid");
    log.insert(e, NOW).expect("accepted");
}

fn release(group: &str, seq: u64, app: &str) -> Op {
    let mut spec = DeployRequest::new(format!("app@sha256:{}", "ab".repeat(32)), 8080);
    spec.name = Some(app.into());
    Op::Release(Release {
        group: group.into(),
        seq,
        version: format!("v{seq}"),
        spec,
        health: HealthCheck {
            path: None,
            timeout_secs: 30,
        },
    })
}

fn enroll(seed: u8, name: &str, groups: &[&str]) -> Op {
    Op::Enroll {
        member: mk(&key(seed)),
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// Fleet of root key 1: robots 2 and 3 in `prod`, robot 4 in `lab`; `prod` runs app `web`,
/// `lab` runs `cam`.
fn fleet() -> FleetLog {
    let mut log = FleetLog::new(FleetId(mk(&key(1)).0));
    write(&mut log, Op::Genesis { name: "lab".into() });
    write(&mut log, enroll(2, "r2", &["prod"]));
    write(&mut log, enroll(3, "r3", &["prod"]));
    write(&mut log, enroll(4, "r4", &["lab"]));
    write(&mut log, release("prod", 1, "web"));
    write(&mut log, release("lab", 1, "cam"));
    log
}

/// What, the log (`None`: not held), the robot's key seed, name, group, the verdict.
type Case<'a> = (
    &'a str,
    Option<&'a FleetLog>,
    u8,
    &'a str,
    &'a str,
    Result<(), Denied>,
);

#[test]
fn the_rule_as_a_table() {
    let base = fleet();
    let mut revoked = fleet();
    write(
        &mut revoked,
        Op::Revoke {
            member: mk(&key(3)),
            reason: "stolen".into(),
        },
    );
    let mut moved = fleet();
    write(
        &mut moved,
        Op::SetGroups {
            member: mk(&key(2)),
            groups: vec!["lab".into()],
        },
    );
    let mut rereleased = fleet();
    write(&mut rereleased, release("prod", 2, "shop"));
    let mut stopped = fleet();
    write(&mut stopped, Op::estop(vec!["prod".into()], "drill"));
    let mut no_release = FleetLog::new(FleetId(mk(&key(1)).0));
    write(&mut no_release, Op::Genesis { name: "lab".into() });
    write(&mut no_release, enroll(2, "r2", &["prod"]));
    let mut rotated = fleet();
    let proof = RotationProof::new(&key(2), &key(9));
    write(&mut rotated, Op::RotateMember(proof));

    let cases: Vec<Case<'_>> = vec![
        (
            "a robot of the group, its app",
            Some(&base),
            2,
            "web",
            "prod",
            Ok(()),
        ),
        (
            "the other robot of the group",
            Some(&base),
            3,
            "web",
            "prod",
            Ok(()),
        ),
        ("log not held", None, 2, "web", "prod", Err(Denied::NoLog)),
        (
            "a stranger",
            Some(&base),
            7,
            "web",
            "prod",
            Err(Denied::NotMember),
        ),
        (
            "the root key is no robot",
            Some(&base),
            1,
            "web",
            "prod",
            Err(Denied::NotMember),
        ),
        (
            "a robot of another group",
            Some(&base),
            4,
            "web",
            "prod",
            Err(Denied::NotInGroup {
                groups: vec!["lab".into()],
            }),
        ),
        (
            "another group's app named for this group",
            Some(&base),
            2,
            "cam",
            "prod",
            Err(Denied::OtherApp { app: "web".into() }),
        ),
        (
            "a group with no release",
            Some(&no_release),
            2,
            "web",
            "prod",
            Err(Denied::NoRelease),
        ),
        (
            "revoked",
            Some(&revoked),
            3,
            "web",
            "prod",
            Err(Denied::Revoked {
                reason: "stolen".into(),
            }),
        ),
        (
            "revocation of one robot leaves the other",
            Some(&revoked),
            2,
            "web",
            "prod",
            Ok(()),
        ),
        (
            "moved out of the group",
            Some(&moved),
            2,
            "web",
            "prod",
            Err(Denied::NotInGroup {
                groups: vec!["lab".into()],
            }),
        ),
        (
            "the group released another app",
            Some(&rereleased),
            2,
            "web",
            "prod",
            Err(Denied::OtherApp { app: "shop".into() }),
        ),
        ("its new app", Some(&rereleased), 2, "shop", "prod", Ok(())),
        (
            "an e-stop holds the group",
            Some(&stopped),
            2,
            "web",
            "prod",
            Err(Denied::Stopped {
                reason: "drill".into(),
            }),
        ),
        (
            "the e-stop of prod leaves lab",
            Some(&stopped),
            4,
            "cam",
            "lab",
            Ok(()),
        ),
        (
            "rotated away",
            Some(&rotated),
            2,
            "web",
            "prod",
            Err(Denied::Retired),
        ),
        (
            "its successor key serves",
            Some(&rotated),
            9,
            "web",
            "prod",
            Ok(()),
        ),
    ];
    for (what, log, robot, name, group, expected) in cases {
        let state = log.and_then(FleetLog::state);
        assert_eq!(
            authorise(state, &peer(robot), name, group),
            expected,
            "{what}"
        );
    }
}

#[test]
fn refusals_name_the_fleet_the_group_and_the_robot() {
    let fleet = FleetId(mk(&key(1)).0);
    let text = Denied::OtherApp { app: "shop".into() }.explain(&fleet, "prod", &peer(2), "web");
    assert_eq!(
        text,
        format!(
            "group name web refused for now: group prod of fleet {fleet} now runs app shop, not web"
        )
    );
    let text = Denied::NoLog.explain(&fleet, "prod", &peer(2), "web");
    assert!(text.contains(&fleet.to_string()), "{text}");
    assert!(
        Denied::NotMember
            .explain(&fleet, "prod", &peer(2), "web")
            .contains(&peer(2).to_string())
    );
}

#[test]
fn a_fleet_owner_is_never_a_peer_id() {
    let fleet = FleetId(mk(&key(1)).0);
    let owner = fleet_owner(&fleet);
    assert!(owner.starts_with("pcf"), "{owner}");
    assert!(owner.parse::<PeerId>().is_err());
    assert_ne!(
        owner,
        peer(1).to_string(),
        "not the fleet key's own peer id"
    );
}
