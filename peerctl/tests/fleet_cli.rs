//! `peerctl fleet …` as a user runs it, with no gateway configured (every entry stays in the
//! local copy): create → invite → enroll → grant → release (pinned digest) → rollback →
//! `log --verify` (good, then one byte flipped in an entry file: non-zero exit naming it) →
//! `members --json`.

use std::path::Path;
use std::process::{Command, Output};

fn peerctl(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerctl"))
        .env_remove("PEERCOMPUTE_HOME")
        .env_remove("DOCKER_HOST")
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("peerctl runs")
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = peerctl(home, args);
    assert!(
        out.status.success(),
        "peerctl {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn fails(home: &Path, args: &[&str], code: i32) -> String {
    let out = peerctl(home, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "peerctl {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn a_fleet_kept_locally_from_create_to_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("admin");
    let me = ok(&home, &["init"]).trim().to_owned();
    let robot = ok(&dir.path().join("robot"), &["init"]).trim().to_owned();
    let dev = ok(&dir.path().join("dev"), &["init"]).trim().to_owned();

    // create: the fleet id on stdout, the key 0600, the first fleet the default.
    let fleet = ok(&home, &["fleet", "create", "lekiwi"]).trim().to_owned();
    assert!(fleet.starts_with("pcf"), "{fleet}");
    let key = home.join("fleets").join("lekiwi.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let err = fails(&home, &["fleet", "create", "lekiwi"], 8);
    assert!(err.contains("exists already"), "{err}");
    let key_text = key.to_str().expect("utf-8 path");
    let err = fails(
        &home,
        &["fleet", "create", "other", "--fleet-key", key_text],
        8,
    );
    assert!(err.contains("never overwritten"), "{err}");

    // invite: a token, and the entry kept locally for want of a gateway.
    let out = peerctl(
        &home,
        &["fleet", "invite", "--group", "production", "--uses", "2"],
    );
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout);
    assert!(token.trim().starts_with("pcjoin1."), "{token}");
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("no gateway configured"), "{notes}");

    ok(
        &home,
        &[
            "fleet",
            "enroll",
            &robot,
            "--group",
            "production",
            "--name",
            "lekiwi-1",
        ],
    );
    let err = fails(
        &home,
        &[
            "fleet",
            "enroll",
            &dev,
            "--group",
            "production",
            "--name",
            "lekiwi-1",
        ],
        8,
    );
    assert!(err.contains("taken"), "{err}");
    ok(
        &home,
        &[
            "fleet",
            "grant",
            &dev,
            "--role",
            "developer",
            "--groups",
            "staging",
            "--expires",
            "90d",
        ],
    );

    // release: pinned images only without an engine; seq and version follow the group.
    let image = format!("127.0.0.1:5000/teleop@sha256:{}", "ab".repeat(32));
    let args = [
        "fleet",
        "release",
        &image,
        "--group",
        "production",
        "--port",
        "8080",
    ];
    let v1 = json(&ok(&home, &[&args[..], &["--json"]].concat()));
    assert_eq!(
        (v1["seq"].as_u64(), v1["version"].as_str()),
        (Some(1), Some("v1"))
    );
    assert_eq!(v1["app"], "teleop");
    assert!(v1.get("volumes").is_none() && v1.get("devices").is_none());
    let v2 = ok(&home, &[&args[..], &["--health-path", "/healthz"]].concat());
    assert!(v2.starts_with("v2 teleop "), "{v2}");
    // With a volume and a device (a ReleaseV2 entry); exclusive without a volume is refused.
    let attach = ["--volume", "maps:/var/lib/teleop:2G", "--device", "arm"];
    let v3 = json(&ok(
        &home,
        &[&args[..], &attach, &["--volume-exclusive", "--json"]].concat(),
    ));
    assert_eq!(v3["version"], "v3");
    assert_eq!(v3["volumes"][0]["path"], "/var/lib/teleop");
    assert_eq!(v3["volumes"][0]["size_bytes"], 2u64 << 30);
    assert_eq!(v3["devices"][0], "arm");
    assert_eq!(v3["volume_exclusive"], true);
    let err = fails(&home, &[&args[..], &["--volume-exclusive"]].concat(), 8);
    assert!(err.contains("volume_exclusive"), "{err}");
    let err = fails(
        &home,
        &[
            "fleet",
            "release",
            "teleop@sha256:12",
            "--group",
            "production",
            "--port",
            "80",
        ],
        8,
    );
    assert!(err.contains("pinned by digest"), "{err}");
    // A tag is resolved through the Docker engine; without one, the error says how to pin.
    let out = Command::new(env!("CARGO_BIN_EXE_peerctl"))
        .env_remove("PEERCOMPUTE_HOME")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .arg("--home")
        .arg(&home)
        .args(["fleet", "release", "127.0.0.1:5000/teleop:v3"])
        .args(["--group", "production", "--port", "80"])
        .output()
        .expect("peerctl runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("release 127.0.0.1:5000/teleop@sha256:<digest>"),
        "{err}"
    );

    ok(&home, &["fleet", "rollback", "--group", "production"]);
    let err = fails(
        &home,
        &["fleet", "rollback", "--group", "production", "--to", "v7"],
        8,
    );
    assert!(err.contains("no release v7"), "{err}");

    // log: every entry, who wrote it and what it did.
    let log = json(&ok(&home, &["fleet", "log", "--json"]));
    let ops: Vec<&str> = log
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["op"].as_str())
        .collect();
    assert_eq!(
        ops,
        [
            "genesis", "grant", "invite", "enroll", "grant", "release", "release", "release",
            "rollback"
        ]
    );
    assert_eq!(log[2]["author"], me.as_str());
    assert_eq!(log[2]["role"], "admin");
    let table = ok(&home, &["fleet", "log", "--verify"]);
    assert!(
        table.contains("release teleop v2 to production (seq 2)"),
        "{table}"
    );
    assert!(
        table.contains("volumes maps:/var/lib/teleop (2.0 GiB), devices arm, exclusive"),
        "{table}"
    );

    // One byte flipped in the first release's file: --verify fails and names it.
    let release = v1["hash"].as_str().expect("hash");
    let file = home
        .join("fleets")
        .join(&fleet)
        .join("entries")
        .join(format!("{release}.entry"));
    let mut bytes = std::fs::read(&file).expect("entry file");
    bytes[40] ^= 0x01;
    std::fs::write(&file, bytes).expect("write");
    let err = fails(&home, &["fleet", "log", "--verify"], 3);
    assert!(err.contains(&format!("{release}.entry is bad")), "{err}");

    // members: the robot with its groups, the developer with its role.
    let members = json(&ok(&home, &["fleet", "members", "--json"]));
    let members = members.as_array().expect("array");
    let robot_row = members
        .iter()
        .find(|m| m["peer_id"] == robot.as_str())
        .expect("robot");
    assert_eq!(robot_row["name"], "lekiwi-1");
    assert_eq!(robot_row["kind"], "robot");
    assert_eq!(robot_row["groups"], serde_json::json!(["production"]));
    let dev_row = members
        .iter()
        .find(|m| m["peer_id"] == dev.as_str())
        .expect("developer");
    assert_eq!(dev_row["role"], "developer (staging)");
    assert!(dev_row["role_expires_at"].as_u64().is_some());
    let me_row = members
        .iter()
        .find(|m| m["peer_id"] == me.as_str())
        .expect("me");
    assert_eq!(
        (me_row["name"].as_str(), me_row["role"].as_str()),
        (Some("you"), Some("admin"))
    );
}

#[test]
fn status_needs_a_gateway_and_says_how_to_add_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    ok(home, &["init"]);
    ok(home, &["fleet", "create", "lab"]);
    let err = fails(home, &["fleet", "status"], 4);
    assert!(err.contains("peerctl gateways add"), "{err}");
    let err = fails(home, &["fleet", "--fleet", "nope", "members"], 6);
    assert!(err.contains("fleet list"), "{err}");
    // A fleet id this copy does not hold: how to get it, not an empty table.
    let elsewhere = peercompute_identity::Identity::generate().expect("key");
    let id = peercompute_fleet::FleetId(elsewhere.public_key_bytes()).to_string();
    let err = fails(home, &["fleet", "--fleet", &id, "log"], 6);
    assert!(err.contains("peerctl gateways add"), "{err}");
}

/// Key rotation, kept locally: a robot's key moved by `fleet rotate-member` with the token
/// its owner made (`id --rotate`, as `peercomputed rotate-key` does on a robot); the admin's
/// own key rotated and switched to; the root handed to a new key, twice.
#[test]
fn keys_rotate_locally_member_admin_and_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("admin");
    let robot_home = dir.path().join("robot");
    let admin_old = ok(&home, &["init"]).trim().to_owned();
    let robot_old = ok(&robot_home, &["init"]).trim().to_owned();
    ok(&home, &["fleet", "create", "lekiwi"]);
    ok(
        &home,
        &[
            "fleet",
            "enroll",
            &robot_old,
            "--name",
            "lekiwi-1",
            "--group",
            "production",
        ],
    );

    // The robot's token: asking twice gives the same one.
    let t1 = json(&ok(&robot_home, &["id", "--rotate", "--json"]));
    let t2 = json(&ok(&robot_home, &["id", "--rotate", "--json"]));
    assert_eq!(t1["token"], t2["token"]);
    assert_eq!(
        (t1["made_now"].as_bool(), t2["made_now"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(t1["old_peer_id"], robot_old.as_str());
    let robot_new = t1["new_peer_id"].as_str().expect("new id").to_owned();
    let token = t1["token"].as_str().expect("token");

    let err = fails(&home, &["fleet", "rotate-member", "pcjoin1.abc"], 8);
    assert!(err.contains("not a rotation token"), "{err}");
    let forged = format!("{}A", &token[..token.len() - 1]);
    let err = fails(&home, &["fleet", "rotate-member", &forged], 8);
    assert!(
        err.contains("does not verify") || err.contains("damaged"),
        "{err}"
    );

    let out = json(&ok(&home, &["fleet", "rotate-member", token, "--json"]));
    assert_eq!(out["op"], "rotate-member");
    assert_eq!(out["name"], "lekiwi-1");
    assert_eq!(
        (out["old"].as_str(), out["new"].as_str()),
        (Some(robot_old.as_str()), Some(robot_new.as_str()))
    );
    let err = fails(&home, &["fleet", "rotate-member", token], 8);
    assert!(err.contains("already rotated"), "{err}");
    let members = json(&ok(&home, &["fleet", "members", "--json"]));
    let row = members
        .as_array()
        .expect("rows")
        .iter()
        .find(|m| m["name"] == "lekiwi-1")
        .expect("lekiwi-1 listed");
    assert_eq!(row["peer_id"], robot_new.as_str());
    assert_eq!(row["groups"][0], "production");

    // The admin rotates its own key: peerctl switches to it at once and keeps its role.
    let mine = json(&ok(&home, &["id", "--rotate", "--json"]));
    let admin_new = mine["new_peer_id"].as_str().expect("new id").to_owned();
    ok(
        &home,
        &[
            "fleet",
            "rotate-member",
            mine["token"].as_str().expect("token"),
        ],
    );
    assert_eq!(ok(&home, &["id"]).trim(), admin_new);
    let kept = std::fs::read_dir(&home)
        .expect("home")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("identity.key.retired-")
        });
    assert!(kept, "the old key is kept");
    ok(
        &home,
        &[
            "fleet",
            "estop",
            "--group",
            "production",
            "--reason",
            "drill",
        ],
    );
    let log = json(&ok(&home, &["fleet", "log", "--json"]));
    let last = log.as_array().and_then(|a| a.last()).expect("entries");
    assert_eq!(last["op"], "e-stop");
    assert_ne!(admin_old, admin_new);

    // The root, twice; the first root is then refused as the signer.
    let key0 = home.join("fleets").join("lekiwi.key");
    let r1 = json(&ok(&home, &["fleet", "rotate-root", "--json"]));
    assert_eq!(r1["op"], "rotate-root");
    let key1 = std::path::PathBuf::from(r1["new_key"].as_str().expect("path"));
    assert!(key1.exists() && key0.exists());
    let key2 = dir.path().join("lekiwi-2.key");
    let r2 = json(&ok(
        &home,
        &[
            "fleet",
            "rotate-root",
            "--new-key",
            key2.to_str().expect("utf-8"),
            "--json",
        ],
    ));
    assert_eq!(r2["old_root"], r1["new_root"]);
    let err = fails(
        &home,
        &[
            "fleet",
            "rotate-root",
            "--new-key",
            key2.to_str().expect("utf-8"),
        ],
        8,
    );
    assert!(err.contains("never overwritten"), "{err}");
    // Point this client back at the first root key: it may no longer sign.
    let fleets_file = home.join("fleets.json");
    let text = std::fs::read_to_string(&fleets_file).expect("fleets.json");
    let text = text.replace(key2.to_str().expect("utf-8"), key0.to_str().expect("utf-8"));
    std::fs::write(&fleets_file, text).expect("write");
    let err = fails(&home, &["fleet", "rotate-root"], 3);
    assert!(err.contains("was rotated to"), "{err}");
    ok(&home, &["fleet", "log", "--verify"]);
}
