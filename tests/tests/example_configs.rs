//! The example configuration files in `deploy/` are parsed with the programs' real parsers,
//! so they never rot: a renamed, removed or newly added key fails here until the example
//! follows. Also checks that every key of the gateway's configuration is documented in its
//! example (set, or shown commented out), and that the commented-out examples parse too.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use peercompute_gateway::{AcmeChallenge, GatewayConfig, TlsMode, TlsSource};
use peercompute_provider::devices::DeviceKind;
use peercompute_provider::{ProviderConfig, ProviderFile};
use peercompute_runtime::DeviceAccess;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives in the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Field names of `struct NAME { ... }` in a Rust source file: the configuration keys, read
/// from the code itself so that a new field cannot be forgotten in the example.
fn struct_fields(source: &str, name: &str) -> BTreeSet<String> {
    let start = source
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not found"));
    let body = &source[start..];
    let end = body.find("\n}").expect("struct end");
    body[..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let (field, _) = l.split_once(':')?;
            field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| field.to_owned())
        })
        .collect()
}

/// Keys set in the file (`key = ...`) and keys shown commented out (`# key = ...`).
fn documented_keys(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let key_of = |line: &str| {
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        (!key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .then(|| key.to_owned())
    };
    let mut set = BTreeSet::new();
    let mut commented = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('#') {
            commented.extend(key_of(rest.trim()));
        } else {
            set.extend(key_of(line));
        }
    }
    (set, commented)
}

/// The file with its commented-out `# key = value` lines (for keys it does not set) enabled.
fn uncommented(text: &str, keys: &BTreeSet<String>, set: &BTreeSet<String>) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let Some(rest) = trimmed.strip_prefix("# ") else {
                return line.to_owned();
            };
            match rest.split_once('=') {
                Some((key, _)) if keys.contains(key.trim()) && !set.contains(key.trim()) => {
                    rest.to_owned()
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write a temp file");
    path
}

#[test]
fn gateway_example_parses_and_validates() {
    let path = repo().join("deploy/gateway.toml");
    let config = GatewayConfig::from_file(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .validate()
        .unwrap_or_else(|e| panic!("deploy/gateway.toml does not validate: {e}"));
    assert_eq!(config.domain, "apps.example.com");
    assert_eq!(config.tls, TlsMode::Auto, "the example shows the default");
    assert_eq!(
        config.tls_choice().source,
        TlsSource::Acme(AcmeChallenge::Dns01),
        "a public domain with the dns_* keys: the DNS-01 wildcard"
    );
    assert!(!config.open, "the example must not accept any provider");
    assert_eq!(
        config.state_dir,
        PathBuf::from("/var/lib/peercompute-gateway"),
        "the systemd unit's StateDirectory and the images' volume use this path"
    );
}

#[test]
fn gateway_example_documents_every_key() {
    let fields = struct_fields(&read("gateway/src/config.rs"), "GatewayConfig");
    assert!(
        fields.len() > 20,
        "read the fields of GatewayConfig: {fields:?}"
    );
    let text = read("deploy/gateway.toml");
    let (set, commented) = documented_keys(&text);
    let missing: Vec<_> = fields
        .iter()
        .filter(|f| !set.contains(*f) && !commented.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/gateway.toml does not document {missing:?}: add each with a comment saying what it does"
    );
    // Every key line comes right after a comment explaining it.
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some((key, _)) = line.split_once(" = ")
            && set.contains(key)
        {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "deploy/gateway.toml: `{key}` has no comment above it"
            );
        }
    }
    // The commented-out examples are valid values too.
    let dir = tempfile::tempdir().expect("tempdir");
    let all = write_temp(&dir, "all.toml", &uncommented(&text, &fields, &set));
    if let Err(e) = GatewayConfig::from_file(&all) {
        panic!("deploy/gateway.toml with its commented-out keys enabled: {e}");
    }
}

#[test]
fn provider_example_parses_and_applies() {
    let path = repo().join("deploy/provider.toml");
    let file = ProviderFile::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let gateway = file
        .gateways
        .first()
        .cloned()
        .expect("the example sets a gateway");
    assert!(gateway.peer.is_some(), "the example pins the gateway's key");
    let mut config = ProviderConfig::new(PathBuf::from("/var/lib/peercomputed"));
    let defaults = |c: &ProviderConfig| {
        format!(
            "{:?} {} {:?}",
            c.deploy, c.max_volumes_size, c.volume_check_interval
        )
    };
    let before = defaults(&config);
    file.apply_to(&mut config);
    assert_eq!(config.gateways, [gateway]);
    assert_eq!(
        defaults(&config),
        before,
        "the example's limits are the documented defaults"
    );
    assert!(config.devices.is_empty(), "the example grants no device");
}

/// The commented-out `[[devices]]` tables at the end of the example parse, as the owner would
/// enable them, and mean what their comments say.
#[test]
fn provider_example_device_tables_parse() {
    let text = read("deploy/provider.toml");
    let start = text
        .find("\n# [[devices]]")
        .expect("the example shows [[devices]] tables");
    let mut enabled = text[..start].to_owned();
    for line in text[start..].lines() {
        enabled.push_str(line.strip_prefix("# ").unwrap_or(line));
        enabled.push('\n');
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_temp(&dir, "devices.toml", &enabled);
    let file = ProviderFile::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = file.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["arm", "cam", "gpu0"]);
    let [arm, cam, gpu] = &file.devices[..] else {
        panic!("three grants: {:?}", file.devices);
    };
    let DeviceKind::Char {
        container_path,
        access,
        ..
    } = &arm.kind
    else {
        panic!("arm is a char device: {arm:?}");
    };
    assert_eq!(container_path, "/dev/ttyACM0");
    assert_eq!(*access, DeviceAccess::Rw);
    assert!(!arm.shared && arm.peers.len() == 1 && arm.fleets.len() == 1);
    assert!(cam.shared && cam.peers.is_empty(), "{cam:?}");
    assert!(
        matches!(gpu.kind, DeviceKind::Gpu(_)) && gpu.shared,
        "{gpu:?}"
    );
}

#[test]
fn provider_example_documents_every_key() {
    let keys = struct_fields(&read("provider/src/config_file.rs"), "Keys");
    assert!(
        keys.contains("max_memory"),
        "read the provider's keys: {keys:?}"
    );
    let text = read("deploy/provider.toml");
    let (set, commented) = documented_keys(&text);
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !set.contains(*k) && !commented.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/provider.toml does not document {missing:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let all = write_temp(&dir, "all.toml", &uncommented(&text, &keys, &set));
    if let Err(e) = ProviderFile::from_file(&all) {
        panic!("deploy/provider.toml with its commented-out keys enabled: {e}");
    }
}

#[test]
fn refused_keys_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = write_temp(&dir, "g.toml", "domian = \"apps.example.com\"\n");
    let err = GatewayConfig::from_file(&gateway).expect_err("unknown key");
    assert!(err.to_string().contains("domian"), "{err}");
    let provider = write_temp(&dir, "p.toml", "max_memroy = \"1G\"\n");
    let err = ProviderFile::from_file(&provider).expect_err("unknown key");
    assert!(err.to_string().contains("max_memroy"), "{err}");
}

/// The systemd units point where the examples are installed and where their state lives, and
/// `systemd-analyze verify` accepts them (where systemd-analyze exists; it needs no running
/// systemd: it reads the units in a throwaway root with stand-in executables).
#[test]
fn systemd_units_verify() {
    let gateway = read("deploy/peercompute-gateway.service");
    let provider = read("deploy/peercomputed.service");
    for (unit, text, config, state) in [
        (
            "peercompute-gateway.service",
            &gateway,
            "/etc/peercompute/gateway.toml",
            "peercompute-gateway",
        ),
        (
            "peercomputed.service",
            &provider,
            "/etc/peercompute/provider.toml",
            "peercomputed",
        ),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ExecStart=") && l.ends_with(&format!("--config {config}"))),
            "{unit} runs with --config {config}"
        );
        assert!(
            text.contains(&format!("\nStateDirectory={state}\n")),
            "{unit} keeps its state in /var/lib/{state}"
        );
    }
    assert!(provider.contains("\nEnvironment=PEERCOMPUTE_HOME=/var/lib/peercomputed\n"));
    assert!(provider.contains("\nSupplementaryGroups=docker\n"));
    // The daemon has no capability: the egress firewall is installed, privileged, before it.
    assert!(provider.contains("\nExecStartPre=+/usr/local/bin/peercomputed firewall\n"));
    assert!(provider.contains(" run --firewall external --config "));
    assert!(gateway.contains("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));

    let available = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let units = Path::new("/usr/lib/systemd/system");
    if !available || !units.is_dir() {
        eprintln!(
            "SKIPPED systemd-analyze verify: no systemd-analyze or {}",
            units.display()
        );
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let dir = |p: &str| {
        let d = root.path().join(p);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    };
    let bin = dir("usr/local/bin");
    for exe in ["peercompute-gateway", "peercomputed"] {
        let path = bin.join(exe);
        std::fs::write(&path, "#!/bin/sh\n").expect("write a stand-in executable");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let system = dir("etc/systemd/system");
    let vendor = dir("usr/lib/systemd/system");
    for entry in std::fs::read_dir(units).expect("read the system's units") {
        let entry = entry.expect("dir entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::copy(entry.path(), vendor.join(entry.file_name()));
        }
    }
    for (unit, text) in [
        ("peercompute-gateway.service", &gateway),
        ("peercomputed.service", &provider),
    ] {
        std::fs::write(system.join(unit), text).expect("write the unit");
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(unit)
            .output()
            .expect("run systemd-analyze");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {unit}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `deploy/compose.yaml` is a valid Compose file (checked only where a Compose CLI exists:
/// `docker compose` or Debian's `docker-compose`; it does not need an engine).
#[test]
fn compose_file_is_valid() {
    let compose = repo().join("deploy/compose.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_temp(&dir, "gateway.toml", &read("deploy/gateway.toml"));
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    for cli in candidates {
        let probe = std::process::Command::new(cli[0])
            .args(&cli[1..])
            .arg("version")
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            continue;
        }
        let out = std::process::Command::new(cli[0])
            .args(&cli[1..])
            .arg("-f")
            .arg(&compose)
            .args(["config", "-q"])
            .env("PEERCOMPUTE_GATEWAY_CONFIG", &config)
            .output()
            .expect("run compose");
        assert!(
            out.status.success(),
            "{} config: {}",
            cli.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    eprintln!("SKIPPED compose_file_is_valid: no `docker compose` or `docker-compose` here");
}
