//! `peerctl fleet` argument parsing: defaults, lists, durations, required values.

use clap::Parser;

use super::*;

#[derive(Parser, Debug)]
struct Top {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    Fleet(FleetCommand),
}

fn parse(args: &[&str]) -> Result<FleetCommand, clap::Error> {
    let argv = ["peerctl", "fleet"].iter().chain(args);
    Top::try_parse_from(argv).map(|t| match t.command {
        Sub::Fleet(f) => f,
    })
}

#[test]
fn groups_split_on_commas_and_repeat() {
    let cmd =
        parse(&["invite", "--group", "production,staging", "--group", "lab"]).expect("parses");
    match cmd.action {
        FleetAction::Invite {
            groups,
            expires,
            uses,
            ..
        } => {
            assert_eq!(groups, ["production", "staging", "lab"]);
            assert_eq!(expires, Duration::from_secs(24 * 3600));
            assert_eq!(uses, 10);
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["invite"]).is_err(), "a group is required");
}

#[test]
fn fleet_is_global_to_the_subcommands() {
    let cmd = parse(&["members", "--fleet", "lab", "--json"]).expect("parses");
    assert_eq!(cmd.fleet.as_deref(), Some("lab"));
    assert!(cmd.wants_json());
    let cmd = parse(&["--fleet", "pcfabc", "log", "--verify"]).expect("parses");
    assert_eq!(cmd.fleet.as_deref(), Some("pcfabc"));
    assert!(!cmd.wants_json());
}

#[test]
fn grant_reads_roles_and_durations() {
    let cmd = parse(&[
        "grant",
        "12D3KooW",
        "--role",
        "developer",
        "--groups",
        "staging",
        "--expires",
        "90d",
    ])
    .expect("parses");
    match cmd.action {
        FleetAction::Grant {
            role,
            groups,
            expires,
            ..
        } => {
            assert_eq!(role, peercompute_fleet::Role::Developer);
            assert_eq!(groups, ["staging"]);
            assert_eq!(expires, Some(Duration::from_secs(90 * 86_400)));
        }
        other => panic!("{other:?}"),
    }
    let err = parse(&["grant", "12D3KooW", "--role", "owner"]).expect_err("no such role");
    assert!(err.to_string().contains("admin, developer"), "{err}");
    let err = parse(&["invite", "--group", "g", "--expires", "soon"]).expect_err("bad");
    assert!(err.to_string().contains("like 30s"), "{err}");
}

#[test]
fn estop_needs_a_reason_and_takes_groups() {
    let cmd = parse(&["estop", "--group", "a,b", "--reason", "drill", "--json"]).expect("parses");
    assert!(cmd.wants_json());
    match cmd.action {
        FleetAction::Estop { groups, reason, .. } => {
            assert_eq!(
                (groups.as_slice(), reason.as_str()),
                (&["a".to_owned(), "b".to_owned()][..], "drill")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        parse(&["estop", "--group", "a"]).is_err(),
        "a reason is required"
    );
    let cmd = parse(&["resume"]).expect("parses");
    assert!(
        matches!(cmd.action, FleetAction::Resume { ref groups, json: false } if groups.is_empty())
    );
}

#[test]
fn release_defaults() {
    let cmd = parse(&["release", "app@sha256:00", "--group", "g", "--port", "80"]).expect("parses");
    match cmd.action {
        FleetAction::Release { release, .. } => {
            assert_eq!(release.health_timeout, Duration::from_secs(30));
            assert_eq!((release.version, release.name), (None, None));
            assert!(release.attach.volumes.is_empty() && release.attach.devices.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn release_takes_volumes_and_devices() {
    let cmd = parse(&[
        "release",
        "app@sha256:00",
        "--group",
        "g",
        "--port",
        "80",
        "--volume",
        "data:/var/lib/app:2G",
        "--volume",
        "cache:/cache",
        "--device",
        "arm",
        "--volume-exclusive",
    ])
    .expect("parses");
    let FleetAction::Release { release, .. } = cmd.action else {
        panic!("not a release")
    };
    let a = release.attach;
    assert_eq!(a.volumes.len(), 2);
    assert_eq!(a.volumes[0].size_bytes, Some(2 << 30));
    assert_eq!(
        (a.devices.as_slice(), a.volume_exclusive),
        (&["arm".to_owned()][..], true)
    );
    let base = ["release", "app@sha256:00", "--group", "g", "--port", "80"];
    let err = parse(&[&base[..], &["--device", "/dev/kvm"]].concat()).expect_err("a path");
    assert!(
        err.to_string().contains("paths are never accepted"),
        "{err}"
    );
    let err = parse(&[&base[..], &["--volume", "/srv:/data"]].concat()).expect_err("a bind");
    assert!(err.to_string().contains("not a volume name"), "{err}");
}

#[test]
fn estop_all_takes_no_group_and_revoke_needs_a_reason() {
    let cmd = parse(&["estop", "--all", "--reason", "fire"]).expect("parses");
    assert!(matches!(cmd.action, FleetAction::Estop { all: true, .. }));
    let err = parse(&["estop", "--all", "--group", "a", "--reason", "x"]).expect_err("both");
    assert!(err.to_string().contains("cannot be used with"), "{err}");
    let cmd = parse(&["revoke", "lekiwi-2", "--reason", "stolen", "--json"]).expect("parses");
    assert!(cmd.wants_json());
    match cmd.action {
        FleetAction::Revoke { member, reason, .. } => {
            assert_eq!((member.as_str(), reason.as_str()), ("lekiwi-2", "stolen"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        parse(&["revoke", "lekiwi-2"]).is_err(),
        "a reason is required"
    );
}

#[test]
fn the_lan_flags_parse_on_every_command_and_bound_the_wait() {
    let cmd = parse(&["estop", "--reason", "drill", "--no-lan"]).expect("parses");
    assert!(cmd.lan.no_lan);
    assert_eq!(cmd.lan.lan_wait, Duration::from_millis(300));
    let cmd = parse(&["--lan-wait", "2s", "revoke", "r1", "--reason", "x"]).expect("parses");
    assert_eq!(
        (cmd.lan.lan_wait, cmd.lan.no_lan),
        (Duration::from_secs(2), false)
    );
    let cmd = parse(&["status", "--lan-wait", "1500ms"]).expect("parses");
    assert_eq!(cmd.lan.lan_wait, Duration::from_millis(1500));
    let err = parse(&["estop", "--reason", "x", "--lan-wait", "61s"]).expect_err("too long");
    assert!(err.to_string().contains("at most 60s"), "{err}");
}
