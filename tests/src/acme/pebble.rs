//! Pebble, the ACME test server, on 127.0.0.1. Debian ships it without test certificates:
//! its HTTPS uses a CA and a `localhost` certificate made by the gateway's own dev-TLS code.
//! Challenges are validated against our bind9 (`-dnsserver`) and the ports the test gateway
//! listens on; the issuing root changes every run and is fetched from the management port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::process::{ChildGuard, command, free_port, require};

const PEBBLE: &str = "/usr/bin/pebble";

/// How to start pebble.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// DNS server pebble resolves and reads TXT records from.
    pub dns: SocketAddr,
    /// Port HTTP-01 validation connects to (the gateway's HTTP listener).
    pub http_port: u16,
    /// Port TLS-ALPN-01 validation connects to (the gateway's HTTPS listener).
    pub tls_port: u16,
    /// Certificate lifetime in seconds (pebble's default is five years).
    pub validity_secs: Option<u64>,
}

/// A running pebble.
#[derive(Debug)]
pub struct Pebble {
    /// `https://localhost:<port>/dir`
    pub directory: String,
    /// CA that signed pebble's HTTPS certificate (give it to the gateway as `--acme-ca`).
    pub ca_path: PathBuf,
    management: u16,
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts pebble; returns once its directory answers.
    pub async fn start(options: PebbleOptions) -> Self {
        require(PEBBLE, "pebble");
        let dir = tempfile::tempdir().expect("pebble dir");
        let ca_path =
            peercompute_gateway::dev_tls(dir.path(), "localhost").expect("pebble TLS certificate");
        let cert = dir.path().join("dev-cert.pem");
        let key = dir.path().join("dev-key.pem");
        for _ in 0..3 {
            let (listen, management) = (free_port(), free_port());
            let mut pebble = serde_json::json!({
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": options.http_port,
                "tlsPort": options.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            });
            if let Some(v) = options.validity_secs {
                pebble["certificateValidityPeriod"] = v.into();
            }
            let config = dir.path().join("pebble.json");
            std::fs::write(&config, serde_json::json!({ "pebble": pebble }).to_string())
                .expect("write pebble config");
            let mut cmd = command(PEBBLE);
            cmd.arg("-config")
                .arg(&config)
                .arg("-dnsserver")
                .arg(options.dns.to_string())
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0");
            let mut child = ChildGuard::spawn("pebble", cmd, dir.path().join("pebble.log"));
            let directory = format!("https://localhost:{listen}/dir");
            let http = client(&std::fs::read(&ca_path).expect("read CA"));
            if wait_ready(&mut child, &http, &directory).await {
                return Self {
                    directory,
                    ca_path,
                    management,
                    child,
                    _dir: dir,
                };
            }
            eprintln!("pebble did not come up; {}", child.log_tail());
        }
        panic!("pebble did not start (see the logs above)");
    }

    /// PEM of the root that issues this run's certificates (management port `/roots/0`).
    pub async fn root_pem(&self) -> Vec<u8> {
        let ca = std::fs::read(&self.ca_path).expect("read CA");
        let http = client(&ca);
        let url = format!("https://localhost:{}/roots/0", self.management);
        let resp = crate::within(10, "pebble root", http.get(&url).send())
            .await
            .expect("fetch pebble root");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.bytes().await.expect("root body").to_vec()
    }

    /// Stops pebble now (the ACME server "goes down").
    pub fn stop(&mut self) {
        self.child.kill();
    }

    pub fn log_tail(&self) -> String {
        self.child.log_tail()
    }

    /// How many certificates pebble issued so far (its log's "Issued certificate" lines).
    pub fn issued(&self) -> usize {
        self.child
            .log_text()
            .lines()
            .filter(|l| l.contains("Issued certificate"))
            .count()
    }
}

/// A client trusting `ca` that reaches pebble's `localhost` ports over IPv4.
fn client(ca: &[u8]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    // URL ports win over the port given here; this only pins `localhost` to IPv4.
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .expect("reqwest client")
}

async fn wait_ready(child: &mut ChildGuard, http: &reqwest::Client, directory: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if child.exited() {
            return false;
        }
        if let Ok(r) = http.get(directory).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
