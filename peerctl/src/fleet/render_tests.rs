//! Rows and tables of `fleet log` and `fleet members` from a log built in memory.

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetId, FleetLog, Grant, HealthCheck, MemberKey, Op, Release, Role};
use peercompute_tunnel_proto::DeployRequest;

use super::*;

const T0: u64 = 1_780_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn member(k: &SigningKey) -> MemberKey {
    MemberKey(k.verifying_key().to_bytes())
}

/// A fleet: genesis, admin grant to `admin`, a robot, a developer of staging, a release.
fn fleet() -> (FleetLog, SigningKey, SigningKey, SigningKey) {
    let (root, admin, robot, dev) = (key(1), key(2), key(3), key(4));
    let mut log = FleetLog::new(FleetId(root.verifying_key().to_bytes()));
    let add = |log: &mut FleetLog, by: &SigningKey, op: Op, at: u64| {
        let e = log.author(by, op, at).expect("valid entry");
        log.insert(e, at).expect("accepted");
    };
    add(
        &mut log,
        &root,
        Op::Genesis {
            name: "lekiwi".into(),
        },
        T0,
    );
    let grant = |m: MemberKey, role, groups: Vec<String>| {
        Op::Grant(Grant {
            member: m,
            role,
            groups,
            expires_at: None,
        })
    };
    add(
        &mut log,
        &root,
        grant(member(&admin), Role::Admin, vec![]),
        T0,
    );
    let enroll = Op::Enroll {
        member: member(&robot),
        name: "lekiwi-1".into(),
        groups: vec!["production".into()],
    };
    add(&mut log, &admin, enroll, T0 + 10);
    let dev_grant = grant(member(&dev), Role::Developer, vec!["staging".into()]);
    add(&mut log, &admin, dev_grant, T0 + 20);
    let mut spec = DeployRequest::new(format!("r/app@sha256:{}", "ab".repeat(32)), 80);
    spec.name = Some("app".into());
    let release = Op::Release(Release {
        group: "production".into(),
        seq: 1,
        version: "v1".into(),
        spec,
        health: HealthCheck {
            path: None,
            timeout_secs: 30,
        },
    });
    add(&mut log, &admin, release, T0 + 30);
    (log, root, admin, dev)
}

#[test]
fn log_rows_name_authors_with_their_role_then() {
    let (log, root, admin, _) = fleet();
    let rows = log_rows(&log, Some(member(&admin)));
    let summary: Vec<(u64, &str, Option<&str>, &str)> = rows
        .iter()
        .map(|r| (r.clock, r.op, r.author_name.as_deref(), r.role.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, "genesis", Some("fleet key"), "fleet key"),
            (1, "grant", Some("fleet key"), "fleet key"),
            (2, "enroll", Some("you"), "admin"),
            (3, "grant", Some("you"), "admin"),
            (4, "release", Some("you"), "admin"),
        ]
    );
    assert_eq!(rows[0].author, member(&root).to_string());
    assert_eq!(rows[0].what, "fleet lekiwi created");
    assert_eq!(rows[1].what, "you made admin of every group");
    assert!(
        rows[2].what.starts_with("enrolled lekiwi-1 (12D3KooW"),
        "{}",
        rows[2].what
    );
    assert!(
        rows[3].what.ends_with("made developer of staging"),
        "{}",
        rows[3].what
    );
    assert!(
        rows[4]
            .what
            .starts_with("release app v1 to production (seq 1): r/app@sha256:abab"),
        "{}",
        rows[4].what
    );
    assert!(rows[4].what.ends_with("port 80"), "{}", rows[4].what);
    assert_eq!(rows[4].hash.len(), 12);
    let table = log_table(&rows);
    let header = table.lines().next().expect("header");
    assert!(header.starts_with("HASH"), "{header}");
    assert!(header.contains("AUTHOR (ROLE)"), "{header}");
    assert!(table.contains("you (admin)"), "{table}");
    assert!(table.contains(&time(T0 + 30)), "{table}");
}

#[test]
fn members_list_robots_then_keys_with_roles() {
    let (log, _, admin, dev) = fleet();
    let rows = member_rows(&log, Some(member(&admin)));
    let summary: Vec<(&str, &str, Option<&str>, u64)> = rows
        .iter()
        .map(|r| (r.name.as_str(), r.kind, r.role.as_deref(), r.since))
        .collect();
    assert_eq!(summary[0], ("lekiwi-1", "robot", None, T0 + 10));
    assert!(summary.contains(&("you", "person", Some("admin"), T0)));
    assert!(summary.contains(&("-", "person", Some("developer (staging)"), T0 + 20)));
    let dev_row = rows
        .iter()
        .find(|r| r.peer_id == member(&dev).to_string())
        .expect("dev");
    assert_eq!(dev_row.role_groups, ["staging"]);
    let table = members_table(&rows);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("lekiwi-1"), "{table}");
    assert!(table.contains("production"), "{table}");
}

#[test]
fn time_is_rfc3339_utc() {
    assert_eq!(time(0), "1970-01-01T00:00:00Z");
}

#[test]
fn a_release_names_its_volumes_and_devices() {
    let mut spec = DeployRequest::new("r/app@sha256:00", 80);
    spec.volumes = vec![
        peercompute_tunnel_proto::parse_volume("data:/var/lib/app:2G").expect("volume"),
        peercompute_tunnel_proto::parse_volume("cache:/cache").expect("volume"),
    ];
    spec.devices = vec!["arm".into(), "cam".into()];
    spec.volume_exclusive = true;
    assert_eq!(
        attachments_text(&spec),
        ", volumes data:/var/lib/app (2.0 GiB) cache:/cache, devices arm cam, exclusive"
    );
    assert_eq!(attachments_text(&DeployRequest::new("r/app", 80)), "");
}

#[test]
fn a_revoked_robot_stays_listed_with_its_name_and_reason() {
    let (mut log, _, admin, _) = fleet();
    let revoke = Op::Revoke {
        member: member(&key(3)),
        reason: "stolen from the lab".into(),
    };
    let e = log.author(&admin, revoke, T0 + 40).expect("valid entry");
    log.insert(e, T0 + 40).expect("accepted");
    let rows = member_rows(&log, Some(member(&admin)));
    let revoked: Vec<&MemberRow> = rows.iter().filter(|r| r.revoked.is_some()).collect();
    assert_eq!(revoked.len(), 1, "{rows:?}");
    let row = revoked[0];
    assert_eq!(
        (row.name.as_str(), row.kind, row.since, row.role.as_deref()),
        ("lekiwi-1", "robot", T0 + 40, None)
    );
    assert_eq!(row.revoked.as_deref(), Some("stolen from the lab"));
    assert_eq!(rows.iter().filter(|r| r.name == "lekiwi-1").count(), 1);
    let table = members_table(&rows);
    assert!(table.contains("revoked: stolen from the lab"), "{table}");
    let log_rows = log_rows(&log, None);
    let last = log_rows.last().expect("rows");
    assert_eq!(last.op, "revoke");
    assert_eq!(last.what, "lekiwi-1 revoked: stolen from the lab");
}
