//! Install without building: `scripts/package` makes the Debian packages and the static
//! tarball, the packages install into a throwaway root and hold what they promise (binaries,
//! units that parse, example configs as conffiles, system users, state kept on remove and
//! deleted on purge, the firewall step working), and the tarball's static programs run.
//!
//! The throwaway root is an overlay of this machine's `/` (read-only lower layer) with a
//! temporary upper layer, mounted in a private mount namespace and entered with `chroot`. dpkg
//! and the maintainer scripts run for real (adduser, the binaries), and everything they write
//! lands in the temporary layer: this machine's dpkg database, users and /etc stay untouched
//! (the test checks that too). A tmpfs on /run hides any running systemd from the scripts.
//! Needs root, like the rest of the end-to-end suite.
//!
//! Outside CI the install test is skipped, loudly, when cargo-deb is missing or we are not
//! root; with `CI` set it always runs. It reuses the static build of the packaging test
//! (target/static) for the tarball. The packages hold the debug build `scripts/test` made
//! (`scripts/package --deb-profile dev`): what is under test is the packaging, and a second cold
//! release build beside the static one cost CI about ten minutes on two cores.
//! `PEERCOMPUTE_DEB_TEST_PROFILE=release` packages a release build instead, as users get it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[path = "deb_package/root.rs"]
mod root;

use root::Root;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives in the workspace")
        .to_path_buf()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command to completion; panics with its output if it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Why the install test cannot run here, if it cannot; panics in CI instead of skipping.
fn skip_reason() -> Option<String> {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let reason = if !on_path("cargo-deb") {
        Some(
            "cargo-deb is not installed (cargo install cargo-deb --locked, or scripts/prerequisites)",
        )
    } else if !is_root() {
        Some("not root: mounting the throwaway root needs it")
    } else {
        None
    }?;
    assert!(!ci, "CI is set, so the .deb test must run, but {reason}");
    Some(reason.to_owned())
}

// ---- The packaged units stay in step with deploy/ ------------------------------------------

/// A unit's directives in order, without comments and blank lines.
fn directives(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The packaged unit is the deploy/ unit with the binaries in /usr/bin and, for the gateway,
/// the package's system user instead of DynamicUser= (which implied RemoveIPC=). A change to one
/// that is not made to the other fails here.
#[test]
fn packaged_units_are_the_deploy_units_with_package_paths_and_users() {
    for (unit, user) in [
        ("peercompute-gateway.service", Some("peercompute-gateway")),
        ("peercomputed.service", None),
    ] {
        let deploy = directives(&repo().join("deploy").join(unit));
        let packaged = directives(&repo().join("deploy/debian").join(unit));
        let mut expected = Vec::new();
        for line in deploy {
            let line = line.replace("/usr/local/bin/", "/usr/bin/");
            match user {
                Some(user) if line == "DynamicUser=yes" => expected.extend([
                    format!("User={user}"),
                    format!("Group={user}"),
                    "RemoveIPC=yes".to_owned(),
                ]),
                _ => expected.push(line),
            }
        }
        assert_eq!(
            packaged, expected,
            "deploy/debian/{unit} must be deploy/{unit} with /usr/bin paths (and the gateway's \
             system user): update the one you did not change"
        );
        assert!(
            !packaged.iter().any(|l| l.contains("/usr/local/")),
            "{unit}: {packaged:?}"
        );
    }
}

// ---- The test --------------------------------------------------------------------------------

/// Fields of a .deb's control file.
fn control(deb: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("dpkg-deb").arg("--field").arg(deb));
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in text(&out.stdout).lines() {
        if line.starts_with(' ') {
            if let Some(v) = fields.get_mut(&last) {
                *v = format!("{v}\n{line}");
            }
        } else if let Some((k, v)) = line.split_once(':') {
            last = k.to_owned();
            fields.insert(last.clone(), v.trim().to_owned());
        }
    }
    fields
}

fn host_state() -> String {
    let users = Command::new("getent")
        .args(["passwd", "peercompute", "peercompute-gateway"])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    let packages = Command::new("dpkg-query")
        .args(["-W", "peercomputed", "peercompute-gateway", "peerctl"])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    format!("users: {users:?}, packages: {packages:?}")
}

/// What `scripts/package` built, by kind.
#[derive(Debug)]
struct Built {
    gateway: PathBuf,
    provider: PathBuf,
    peerctl: PathBuf,
    tarball: PathBuf,
}

impl Built {
    /// The .deb paths in the order dpkg gets them.
    fn debs(&self) -> Vec<String> {
        [&self.peerctl, &self.gateway, &self.provider]
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }
}

#[test]
fn debs_install_into_a_throwaway_root_and_the_tarball_runs() {
    if let Some(reason) = skip_reason() {
        eprintln!(
            "\n*** SKIPPED: the .deb install test: {reason}. The Debian packages were NOT \
             built or installed. ***\n"
        );
        return;
    }
    let started = std::time::Instant::now();
    let dist = tempfile::tempdir().expect("tempdir");
    let built = package(dist.path());
    let package_time = started.elapsed();
    eprintln!("deb_package: scripts/package took {package_time:.1?}");
    check_control(&built);

    let before = host_state();
    let root = Root::mount();
    let debs = built.debs();
    let mut install: Vec<&str> = vec!["dpkg", "-i"];
    install.extend(debs.iter().map(String::as_str));
    let said = root.run(&install);
    check_installed(&root, &said);
    check_units(&root);
    check_programs(&root);
    check_upgrade(&root, &install);
    check_remove_and_purge(&root);
    assert!(
        root.upper.join("var/lib/dpkg/status").exists(),
        "dpkg wrote into the throwaway layer"
    );
    drop(root);
    assert_eq!(host_state(), before, "the install reached this machine");

    check_tarball(&built.tarball);
    eprintln!(
        "deb_package: total {:.1?} (scripts/package {package_time:.1?})",
        started.elapsed()
    );
}

/// Runs the documented command into `dist` (with the test's profile for the packages); every
/// file it printed is in SHA256SUMS.
fn package(dist: &Path) -> Built {
    let profile =
        std::env::var("PEERCOMPUTE_DEB_TEST_PROFILE").unwrap_or_else(|_| "dev".to_string());
    let out = run(Command::new(repo().join("scripts/package"))
        .arg("--out")
        .arg(dist)
        .args(["--deb-profile", &profile])
        .stderr(Stdio::inherit()));
    let built: Vec<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).expect("SHA256SUMS");
    for p in &built {
        let name = p.file_name().and_then(|n| n.to_str()).expect("file name");
        assert!(sums.contains(name), "SHA256SUMS lacks {name}:\n{sums}");
    }
    let find = |prefix: &str, suffix: &str| -> PathBuf {
        built
            .iter()
            .find(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(prefix) && name.ends_with(suffix)
            })
            .unwrap_or_else(|| panic!("scripts/package built no {prefix}*{suffix}: {built:?}"))
            .clone()
    };
    Built {
        gateway: find("peercompute-gateway_", "_amd64.deb"),
        provider: find("peercomputed_", "_amd64.deb"),
        peerctl: find("peerctl_", "_amd64.deb"),
        tarball: find("peercompute-", "-x86_64-linux.tar.gz"),
    }
}

/// What apt sees before installing: the dependencies.
fn check_control(built: &Built) {
    let depends = control(&built.provider)
        .get("Depends")
        .cloned()
        .unwrap_or_default();
    for dep in ["libc6", "adduser", "nftables", "peerctl"] {
        assert!(depends.contains(dep), "peercomputed Depends: {depends}");
    }
    let depends = control(&built.gateway)
        .get("Depends")
        .cloned()
        .unwrap_or_default();
    for dep in ["libc6", "adduser"] {
        assert!(
            depends.contains(dep),
            "peercompute-gateway Depends: {depends}"
        );
    }
}

/// The first install's files, users and words: what to do next, with the identities it
/// created; the configs as conffiles identical to deploy/; 0700 state directories; units
/// installed but not enabled.
fn check_installed(root: &Root, said: &str) {
    assert!(
        said.contains("peercompute-gateway is installed but not running")
            && said.contains("gateway peer id (providers pin it): 12D3KooW"),
        "gateway postinst:\n{said}"
    );
    assert!(
        said.contains("peercomputed is installed but not running")
            && said
                .contains("provider peer id (add it to the gateway's allow_providers): 12D3KooW"),
        "provider postinst:\n{said}"
    );
    for path in [
        "/usr/bin/peercompute-gateway",
        "/usr/bin/peercomputed",
        "/usr/bin/peerctl",
        "/usr/lib/systemd/system/peercompute-gateway.service",
        "/usr/lib/systemd/system/peercomputed.service",
    ] {
        assert!(root.exists(path), "{path} is not installed");
    }
    for (file, package) in [
        ("gateway.toml", "peercompute-gateway"),
        ("provider.toml", "peercomputed"),
    ] {
        let installed = root.run(&["cat", &format!("/etc/peercompute/{file}")]);
        let shipped = std::fs::read_to_string(repo().join("deploy").join(file)).expect("read");
        assert_eq!(installed, shipped, "/etc/peercompute/{file}");
        let conffiles = root.run(&["dpkg-query", "-W", "-f=${Conffiles}", package]);
        assert!(
            conffiles.contains(&format!("/etc/peercompute/{file}")),
            "{package} conffiles: {conffiles}"
        );
    }
    let copyright = root.run(&["cat", "/usr/share/doc/peercomputed/copyright"]);
    assert!(copyright.contains("Apache"), "copyright:\n{copyright}");
    for (user, home) in [
        ("peercompute-gateway", "/var/lib/peercompute-gateway"),
        ("peercompute", "/var/lib/peercomputed"),
    ] {
        let entry = root.run(&["getent", "passwd", user]);
        assert!(
            entry.contains(&format!(":{home}:/usr/sbin/nologin")),
            "{user}: {entry}"
        );
        assert_eq!(root.owner_mode(home), format!("{user} 700"), "{home}");
    }
    for unit in ["peercompute-gateway.service", "peercomputed.service"] {
        assert!(
            !root.exists(&format!(
                "/etc/systemd/system/multi-user.target.wants/{unit}"
            )),
            "{unit} was enabled on install"
        );
    }
}

/// The units parse, with the binaries and users the packages brought: a structural check, and
/// `systemd-analyze verify` where it exists.
fn check_units(root: &Root) {
    let units = [
        "/usr/lib/systemd/system/peercompute-gateway.service",
        "/usr/lib/systemd/system/peercomputed.service",
    ];
    for unit in units {
        let body = root.run(&["cat", unit]);
        for section in ["[Unit]", "[Service]", "[Install]"] {
            assert!(body.contains(section), "{unit} lacks {section}");
        }
        for line in body.lines() {
            if let Some(cmd) = line
                .strip_prefix("ExecStart=")
                .or_else(|| line.strip_prefix("ExecStartPre=+"))
            {
                let bin = cmd.split_whitespace().next().unwrap_or("");
                assert!(
                    bin.starts_with("/usr/bin/") && root.exists(bin),
                    "{unit}: {line}"
                );
            }
            if let Some(user) = line.strip_prefix("User=") {
                root.run(&["getent", "passwd", user]);
            }
        }
    }
    if !root.exists("/usr/bin/systemd-analyze") {
        eprintln!("deb_package: no systemd-analyze here; the units got the structural check only");
        return;
    }
    let out = root
        .command(&["systemd-analyze", "verify"])
        .args(units)
        .output()
        .expect("run systemd-analyze");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // Docker may be absent from this root; anything else about our units is a failure.
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| !l.contains("docker.service") && !l.trim().is_empty())
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
}

/// --help of each binary, and the firewall step exactly as ExecStartPre runs it (in a network
/// namespace of its own, so this machine's rules stay untouched).
fn check_programs(root: &Root) {
    for bin in [
        "/usr/bin/peercompute-gateway",
        "/usr/bin/peercomputed",
        "/usr/bin/peerctl",
    ] {
        let help = root.run(&[bin, "--help"]);
        assert!(help.contains("Usage:"), "{bin} --help:\n{help}");
    }
    let firewall = root.run(&[
        "unshare",
        "--net",
        "sh",
        "-ec",
        "/usr/bin/peercomputed firewall 2>&1; nft list tables",
    ]);
    assert!(
        firewall.contains("table inet peercompute_sandbox"),
        "the firewall step from the package:\n{firewall}"
    );
}

/// An upgrade (the same version again) keeps an edit to a conffile and the identities, and
/// does not greet as a first install.
fn check_upgrade(root: &Root, install: &[&str]) {
    let gateway_id = || {
        root.run(&[
            "setpriv",
            "--reuid=peercompute-gateway",
            "--regid=peercompute-gateway",
            "--clear-groups",
            "/usr/bin/peercompute-gateway",
            "id",
            "--state-dir",
            "/var/lib/peercompute-gateway",
        ])
    };
    let id = gateway_id();
    root.sh("echo '# edited by the operator' >> /etc/peercompute/gateway.toml");
    let said = root.run(install);
    assert!(
        !said.contains("installed but not running"),
        "upgrade:\n{said}"
    );
    assert_eq!(gateway_id(), id, "the gateway identity changed on upgrade");
    assert!(
        root.run(&["cat", "/etc/peercompute/gateway.toml"])
            .contains("# edited by the operator"),
        "the operator's edit was lost on upgrade"
    );
}

/// Remove keeps configuration and state; purge deletes them; the system users stay.
fn check_remove_and_purge(root: &Root) {
    let packages = ["peercomputed", "peercompute-gateway", "peerctl"];
    root.run(&[&["dpkg", "-r"][..], &packages[..]].concat());
    assert!(!root.exists("/usr/bin/peercomputed") && !root.exists("/usr/bin/peerctl"));
    for path in [
        "/etc/peercompute/gateway.toml",
        "/etc/peercompute/provider.toml",
        "/var/lib/peercompute-gateway",
        "/var/lib/peercomputed/identity.key",
    ] {
        assert!(root.exists(path), "remove deleted {path}");
    }
    root.run(&[&["dpkg", "-P"][..], &packages[..]].concat());
    for path in [
        "/etc/peercompute",
        "/var/lib/peercompute-gateway",
        "/var/lib/peercomputed",
        "/usr/lib/systemd/system/peercomputed.service",
    ] {
        assert!(!root.exists(path), "purge left {path}");
    }
    root.run(&["getent", "passwd", "peercompute"]);
}

/// The static tarball: its layout, and its programs run with no library from this machine
/// (no program interpreter) and answer --help.
fn check_tarball(tarball: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(dir.path()));
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .expect("tarball name");
    let top = dir.path().join(name);
    for file in [
        "bin/peercompute-gateway",
        "bin/peercomputed",
        "bin/peerctl",
        "systemd/peercompute-gateway.service",
        "systemd/peercomputed.service",
        "etc/gateway.toml",
        "etc/provider.toml",
        "README.md",
        "LICENSE",
        "INSTALL",
    ] {
        assert!(top.join(file).is_file(), "{name}.tar.gz lacks {file}");
    }
    let license = std::fs::read_to_string(top.join("LICENSE")).expect("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
    for bin in ["peercompute-gateway", "peercomputed", "peerctl"] {
        let path = top.join("bin").join(bin);
        let elf = text(&run(Command::new("readelf").arg("-lW").arg(&path)).stdout);
        assert!(
            !elf.contains("Requesting program interpreter"),
            "{bin} in the tarball is dynamically linked"
        );
        let help = text(&run(Command::new(&path).arg("--help")).stdout);
        assert!(help.contains("Usage:"), "{bin} --help:\n{help}");
    }
    let listing = text(
        &run(Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(tarball))
        .stdout,
    );
    assert!(
        listing.lines().all(|l| l.contains(" 0/0 ")),
        "tarball entries are owned by 0/0:\n{listing}"
    );
}
