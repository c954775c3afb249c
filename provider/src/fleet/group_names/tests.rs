//! Which group names a robot asks for, and what changes, as tables (no Docker, no gateway).

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetLog, HealthCheck, Op, Release};
use peercompute_tunnel_proto::DeployRequest;

use super::*;
use crate::fleet::applied::{AppliedFleet, AppliedGroup, Serving};

const NOW: u64 = 1_800_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn me() -> MemberKey {
    MemberKey(key(2).verifying_key().to_bytes())
}

fn write(log: &mut FleetLog, op: Op) {
    let e = log.author(&key(1), op, NOW).expect("author");
    log.insert(e, NOW).expect("insert");
}

fn release(group: &str, seq: u64, app: &str) -> Op {
    Op::Release(Release {
        group: group.into(),
        seq,
        version: format!("v{seq}"),
        spec: DeployRequest {
            name: Some(app.into()),
            ..DeployRequest::new(format!("web@sha256:{}", "ab".repeat(32)), 80)
        },
        health: HealthCheck {
            path: None,
            timeout_secs: 10,
        },
    })
}

/// Robot `r1` (seed 2) in `prod` and `lab`; `prod` runs `web`, `lab` runs `cam`.
fn log() -> FleetLog {
    let mut log = FleetLog::new(FleetId(key(1).verifying_key().to_bytes()));
    write(&mut log, Op::Genesis { name: "f".into() });
    write(
        &mut log,
        Op::Enroll {
            member: me(),
            name: "r1".into(),
            groups: vec!["lab".into(), "prod".into()],
        },
    );
    write(&mut log, release("prod", 1, "web"));
    write(&mut log, release("lab", 1, "cam"));
    log
}

fn serving(route: &str, container: &str) -> AppliedGroup {
    AppliedGroup {
        serving: Some(Serving {
            route: route.into(),
            container_id: container.into(),
            ..Serving::default()
        }),
        ..AppliedGroup::default()
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// This robot serving `web-r1` (container c1, port 1001) and `cam-r1` (c2, port 1002).
fn running(log: &FleetLog) -> (Applied, HashMap<String, SocketAddr>) {
    let mut fleet = AppliedFleet::default();
    fleet.groups.insert("prod".into(), serving("web-r1", "c1"));
    fleet.groups.insert("lab".into(), serving("cam-r1", "c2"));
    let mut applied = Applied::default();
    applied.fleets.insert(log.fleet().to_string(), fleet);
    let published = HashMap::from([("c1".into(), addr(1001)), ("c2".into(), addr(1002))]);
    (applied, published)
}

fn names(w: &BTreeMap<String, Wanted>) -> Vec<(&str, &str, u16)> {
    w.iter()
        .map(|(n, w)| (n.as_str(), w.group.as_str(), w.addr.port()))
        .collect()
}

#[test]
fn each_serving_group_of_its_current_app_wants_its_name() {
    let log = log();
    let state = log.state().expect("state").clone();
    let (applied, published) = running(&log);
    let got = wanted(std::slice::from_ref(&state), &me(), &applied, &published);
    assert_eq!(names(&got), [("cam", "lab", 1002), ("web", "prod", 1001)]);

    // Cases that take the `web` name away (or keep it), one change each.
    let mut stopped = log.clone();
    write(&mut stopped, Op::estop(vec!["prod".into()], "drill"));
    let mut moved = log.clone();
    write(
        &mut moved,
        Op::SetGroups {
            member: me(),
            groups: vec!["lab".into()],
        },
    );
    let mut new_app = log.clone();
    write(&mut new_app, release("prod", 2, "shop"));
    let mut new_version = log.clone();
    write(&mut new_version, release("prod", 2, "web"));
    let cases: [(&str, &FleetLog, bool); 4] = [
        ("an e-stop of the group", &stopped, false),
        ("moved out of the group", &moved, false),
        (
            "the group now runs another app (not serving yet)",
            &new_app,
            false,
        ),
        (
            "a new version of the same app (old one still serving)",
            &new_version,
            true,
        ),
    ];
    for (what, log, keeps) in cases {
        let state = log.state().expect("state").clone();
        let got = wanted(&[state], &me(), &applied, &published);
        assert_eq!(got.contains_key("web"), keeps, "{what}");
        assert!(got.contains_key("cam"), "{what}: lab is untouched");
    }

    // Not published (no address yet), stopped by an e-stop here, or another robot: nothing.
    let mut unpublished = published.clone();
    unpublished.remove("c1");
    assert!(
        !wanted(std::slice::from_ref(&state), &me(), &applied, &unpublished).contains_key("web")
    );
    let mut halted = applied.clone();
    if let Some(s) = halted
        .group_mut(&log.fleet().to_string(), "prod")
        .serving
        .as_mut()
    {
        s.stopped = Some("drill".into());
    }
    assert!(!wanted(std::slice::from_ref(&state), &me(), &halted, &published).contains_key("web"));
    let stranger = MemberKey(key(9).verifying_key().to_bytes());
    assert!(wanted(&[state], &stranger, &applied, &published).is_empty());
}

#[test]
fn two_groups_with_one_app_give_the_name_to_the_first_group() {
    let mut log = log();
    write(&mut log, release("lab", 2, "web"));
    let mut fleet = AppliedFleet::default();
    fleet.groups.insert("prod".into(), serving("web-r1", "c1"));
    fleet.groups.insert("lab".into(), serving("web-r1", "c2"));
    let mut applied = Applied::default();
    applied.fleets.insert(log.fleet().to_string(), fleet);
    let published = HashMap::from([("c1".into(), addr(1001)), ("c2".into(), addr(1002))]);
    let state = log.state().expect("state").clone();
    let got = wanted(&[state], &me(), &applied, &published);
    assert_eq!(names(&got), [("web", "lab", 1002)]);
}

#[test]
fn the_diff_withdraws_what_is_gone_and_registers_what_is_new_or_moved() {
    let fleet = FleetId([1; 32]);
    let at = |group: &str, port| Wanted {
        fleet,
        group: group.into(),
        addr: addr(port),
    };
    let held = BTreeMap::from([
        ("web".to_owned(), at("prod", 1001)),
        ("cam".to_owned(), at("lab", 1002)),
        ("old".to_owned(), at("lab", 1003)),
    ]);
    let wanted = BTreeMap::from([
        ("web".to_owned(), at("prod", 1001)),
        ("cam".to_owned(), at("lab", 2002)),
        ("shop".to_owned(), at("prod", 1004)),
    ]);
    let (withdraw, register) = diff(&held, &wanted);
    assert_eq!(withdraw, ["old"]);
    let register: Vec<_> = register
        .iter()
        .map(|(n, w)| (n.as_str(), w.addr.port()))
        .collect();
    assert_eq!(register, [("cam", 2002), ("shop", 1004)]);
    let (withdraw, register) = diff(&wanted, &wanted);
    assert!(
        withdraw.is_empty() && register.is_empty(),
        "in step: nothing"
    );
}
