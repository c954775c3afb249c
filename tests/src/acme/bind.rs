//! A throwaway bind9 primary on 127.0.0.1: one zone whose apex and every subdomain resolve
//! to 127.0.0.1, a `probe` TXT record, and an update policy letting one TSIG key (made with
//! bind's own `tsig-keygen`) change TXT records anywhere in the zone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::dns::{self, TYPE_TXT};
use super::process::{ChildGuard, command, free_port, require};

const NAMED: &str = "/usr/sbin/named";
const TSIG_KEYGEN: &str = "/usr/sbin/tsig-keygen";
/// Name of the TSIG key the gateway signs with.
pub const KEY_NAME: &str = "acme-gateway";

/// A running bind9.
#[derive(Debug)]
pub struct Bind9 {
    pub addr: SocketAddr,
    pub zone: String,
    /// The TSIG key file, as `tsig-keygen` wrote it.
    pub key_path: PathBuf,
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Bind9 {
    /// Starts bind9 serving `zone`; returns once it answers queries.
    pub async fn start(zone: &str) -> Self {
        require(NAMED, "bind9");
        require(TSIG_KEYGEN, "bind9");
        let dir = tempfile::tempdir().expect("bind9 dir");
        let d = dir.path().display().to_string();
        let key = Command::new(TSIG_KEYGEN)
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .expect("run tsig-keygen");
        assert!(key.status.success(), "tsig-keygen failed: {key:?}");
        let key_path = dir.path().join("gateway.key");
        std::fs::write(&key_path, &key.stdout).expect("write key");
        std::fs::write(
            dir.path().join("zone.db"),
            format!(
                "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\n\
                 ns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\nprobe IN TXT \"probe\"\n"
            ),
        )
        .expect("write zone");
        // A port can be taken between our probe and named's bind: retry a few times.
        for _ in 0..3 {
            let port = free_port();
            std::fs::write(
                dir.path().join("named.conf"),
                format!(
                    "include \"{d}/gateway.key\";\n\
                     options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n\
                     \x20 session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n\
                     \x20 listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
                     \x20 recursion no;\n  dnssec-validation no;\n  notify no;\n}};\n\
                     controls {{ }};\n\
                     zone \"{zone}\" {{\n  type primary;\n  file \"{d}/zone.db\";\n\
                     \x20 update-policy {{ grant {KEY_NAME}. zonesub TXT; }};\n}};\n"
                ),
            )
            .expect("write named.conf");
            let mut cmd = command(NAMED);
            cmd.args(["-g", "-c"]).arg(dir.path().join("named.conf"));
            let mut child = ChildGuard::spawn("named", cmd, dir.path().join("named.log"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if wait_ready(&mut child, addr, zone).await {
                return Self {
                    addr,
                    zone: zone.to_owned(),
                    key_path,
                    child,
                    _dir: dir,
                };
            }
            eprintln!("bind9 did not come up on port {port}; {}", child.log_tail());
        }
        panic!("bind9 did not start (see the logs above)");
    }

    /// TXT strings bind9 serves for `name` now (empty for none / NXDOMAIN).
    pub async fn txt(&self, name: &str) -> Vec<String> {
        let answer = dns::query(self.addr, name, TYPE_TXT).await;
        answer
            .unwrap_or_else(|| panic!("bind9 did not answer a TXT query for {name}"))
            .txt
    }

    /// Stops bind9 now.
    pub fn stop(&mut self) {
        self.child.kill();
    }
}

/// Polls until the zone's probe record is served, the process dies, or 10 s pass.
async fn wait_ready(child: &mut ChildGuard, addr: SocketAddr, zone: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if child.exited() {
            return false;
        }
        if let Some(a) = dns::query(addr, &format!("probe.{zone}"), TYPE_TXT).await
            && a.txt == ["probe"]
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
