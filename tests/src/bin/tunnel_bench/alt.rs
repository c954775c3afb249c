//! What a self-hoster assembles instead of Peer Compute (issue 15's yardstick): **nginx**
//! terminating TLS 1.3 on 127.0.0.1 and proxying with keep-alive upstream connections to a
//! **rathole** server, whose noise-encrypted tunnel (Noise_NK_25519_ChaChaPoly_BLAKE2s, its
//! default pattern) reaches a rathole client beside the backend. The same backend, the same
//! load generator and the same host name as the tunnel's row, so the two rows compare.
//!
//! Both programs are found, never built here: `nginx` on PATH or in `/usr/sbin` (Debian's
//! `nginx-light`), `rathole` on PATH or in `~/.cargo/bin`. When one is missing the bench says
//! how to install it and leaves the row out. nginx runs 2 workers (one per core, as
//! `worker_processes auto` would here) as root, with no access log; its certificate is a
//! fresh CA and leaf made with rcgen for this run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::setup::{ChildProc, free_tcp_port, output, wait_until};
use super::target::Target;

/// How to get the programs when they are missing (Debian, crates.io).
const INSTALL_NGINX: &str = "apt-get install nginx-light";
/// rathole's own lock file pins a `time` that no longer builds with this toolchain, so no
/// `--locked`; the TLS transports are left out (no OpenSSL headers needed).
const INSTALL_RATHOLE: &str =
    "cargo install rathole --no-default-features --features server,client,noise";

/// The running alternative.
#[derive(Debug)]
pub(crate) struct Alternative {
    pub(crate) nginx: ChildProc,
    pub(crate) server: ChildProc,
    pub(crate) client: ChildProc,
    /// nginx's HTTPS listener.
    pub(crate) https: SocketAddr,
    /// The CA that signed nginx's certificate.
    pub(crate) ca_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// `nginx` and `rathole`, or why the row is left out (with how to install what is missing).
pub(crate) fn tools() -> Result<(PathBuf, PathBuf), String> {
    let cargo_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    let nginx = find("nginx", &[Some(PathBuf::from("/usr/sbin"))]);
    let rathole = find("rathole", &[cargo_bin]);
    match (nginx, rathole) {
        (Some(n), Some(r)) => Ok((n, r)),
        (n, r) => {
            let mut missing = Vec::new();
            if n.is_none() {
                missing.push(format!("nginx (`{INSTALL_NGINX}`)"));
            }
            if r.is_none() {
                missing.push(format!("rathole (`{INSTALL_RATHOLE}`)"));
            }
            Err(format!(
                "the nginx + rathole row is left out: {} not found; install and run again",
                missing.join(" and ")
            ))
        }
    }
}

/// `name` on PATH or in one of `extra`.
fn find(name: &str, extra: &[Option<PathBuf>]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().flatten().cloned())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Alternative {
    /// Starts rathole server and client (the client beside `backend`) and nginx in front of
    /// the rathole server's service port, and waits until `https://<host>/` answers through
    /// the whole chain.
    pub(crate) async fn start(
        (nginx_bin, rathole_bin): (PathBuf, PathBuf),
        backend: SocketAddr,
        host: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tunnel-bench-alt-")
            .tempdir()
            .context("temporary directory")?;
        let (private, public) = noise_keys(&rathole_bin).await?;
        let control = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let service = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let https = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let server_toml = dir.path().join("server.toml");
        std::fs::write(
            &server_toml,
            format!(
                "[server]\nbind_addr = \"{control}\"\n\n[server.transport]\ntype = \"noise\"\n\n\
                 [server.transport.noise]\nlocal_private_key = \"{private}\"\n\n\
                 [server.services.bench]\ntoken = \"bench\"\nbind_addr = \"{service}\"\nnodelay = true\n"
            ),
        )
        .context("write rathole's server.toml")?;
        let client_toml = dir.path().join("client.toml");
        std::fs::write(
            &client_toml,
            format!(
                "[client]\nremote_addr = \"{control}\"\n\n[client.transport]\ntype = \"noise\"\n\n\
                 [client.transport.noise]\nremote_public_key = \"{public}\"\n\n\
                 [client.services.bench]\ntoken = \"bench\"\nlocal_addr = \"{backend}\"\nnodelay = true\n"
            ),
        )
        .context("write rathole's client.toml")?;
        let mut server = ChildProc::spawn(
            "rathole-server",
            Command::new(&rathole_bin)
                .arg("--server")
                .arg(&server_toml)
                .stdin(Stdio::null()),
            dir.path().join("rathole-server.log"),
            true,
        )?;
        let mut client = ChildProc::spawn(
            "rathole-client",
            Command::new(&rathole_bin)
                .arg("--client")
                .arg(&client_toml)
                .stdin(Stdio::null()),
            dir.path().join("rathole-client.log"),
            true,
        )?;
        let plain = &Target::plain("rathole", service, host);
        wait_until(
            "a GET through rathole",
            &mut [&mut server, &mut client],
            move || async move { answers(plain).await },
        )
        .await?;

        let ca_pem = write_certs(dir.path(), host)?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), https, service, host))
            .context("write nginx.conf")?;
        let mut nginx = ChildProc::spawn(
            "nginx",
            Command::new(&nginx_bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null()),
            dir.path().join("nginx.log"),
            true,
        )?;
        let tls = &Target::https("alternative", https, host, &ca_pem)?;
        wait_until(
            "a GET through nginx and rathole",
            &mut [&mut nginx, &mut server, &mut client],
            move || async move { answers(tls).await },
        )
        .await?;
        Ok(Self {
            nginx,
            server,
            client,
            https,
            ca_pem,
            _dir: dir,
        })
    }

    /// Every process of the chain: nginx's master and workers, rathole server and client.
    pub(crate) fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut pids = vec![("nginx", self.nginx.pid)];
        pids.extend(
            children_of(self.nginx.pid)
                .into_iter()
                .map(|p| ("nginx", p)),
        );
        pids.push(("rathole", self.server.pid));
        pids.push(("rathole", self.client.pid));
        pids
    }

    pub(crate) fn log_tails(&self) -> String {
        [&self.nginx, &self.server, &self.client]
            .iter()
            .map(|c| c.log_tail(20))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the chain. nginx's workers are killed first: SIGKILL to the master alone (what
    /// dropping its handle does) leaves them running, still listening.
    pub(crate) async fn stop(self) {
        for worker in children_of(self.nginx.pid) {
            if let Ok(pid) = i32::try_from(worker) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.nginx.kill().await;
        self.server.kill().await;
        self.client.kill().await;
    }
}

/// One GET on a fresh connection answered 2xx.
async fn answers(target: &Target) -> anyhow::Result<bool> {
    let mut conn = target.connect().await?;
    let resp = tokio::time::timeout(Duration::from_secs(5), conn.send(target.get("/")))
        .await
        .context("the GET timed out")??;
    Ok(resp.status().is_success())
}

/// `rathole --genkey`: the server's private key and the public key the client pins.
async fn noise_keys(rathole: &Path) -> anyhow::Result<(String, String)> {
    let text = output(Command::new(rathole).arg("--genkey"), "rathole --genkey").await?;
    let after = |label: &str| {
        text.split_once(label)
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    match (after("Private Key:"), after("Public Key:")) {
        (Some(private), Some(public)) => Ok((private, public)),
        _ => bail!("unexpected `rathole --genkey` output: {text:?}"),
    }
}

/// A CA and a leaf for `host` signed by it, written as `cert.pem`/`key.pem`; the CA's PEM.
fn write_certs(dir: &Path, host: &str) -> anyhow::Result<Vec<u8>> {
    let ca_key = rcgen::KeyPair::generate().context("CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).context("CA")?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tunnel-bench alternative CA");
    let ca = ca_params.self_signed(&ca_key).context("sign the CA")?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().context("leaf key")?;
    let leaf = rcgen::CertificateParams::new(vec![host.to_owned()])
        .context("leaf")?
        .signed_by(&leaf_key, &issuer)
        .context("sign the leaf")?;
    std::fs::write(dir.join("cert.pem"), leaf.pem()).context("write cert.pem")?;
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).context("write key.pem")?;
    Ok(ca.pem().into_bytes())
}

fn nginx_conf(dir: &Path, https: SocketAddr, upstream: SocketAddr, host: &str) -> String {
    let d = dir.display();
    format!(
        "user root;\nworker_processes 2;\nerror_log {d}/nginx-error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/tmp-body;\n  proxy_temp_path {d}/tmp-proxy;\n\
           fastcgi_temp_path {d}/tmp-fastcgi;\n  uwsgi_temp_path {d}/tmp-uwsgi;\n  scgi_temp_path {d}/tmp-scgi;\n\
           upstream rathole {{ server {upstream}; keepalive 128; }}\n\
           server {{\n    listen {https} ssl;\n    server_name {host};\n\
             ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
             ssl_protocols TLSv1.3;\n    keepalive_requests 1000000;\n\
             location / {{\n      proxy_pass http://rathole;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
               proxy_buffering off;\n    }}\n  }}\n}}\n"
    )
}

/// Pids whose parent is `pid` (nginx's workers).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid …`: comm may hold spaces, so split after ')'.
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect()
}
