//! `--mtu1500`: bulk through the tunnel over a link with the internet's 1500-byte MTU, where
//! loopback's 64 KiB MTU flatters UDP (issue 15).
//!
//! A [`World`] of two public hosts in network namespaces, `gw` and `prov`, each joined to the
//! world's bridge by a veth pair whose MTU is set to 1500. The real gateway runs in `gw`; two
//! real providers (QUIC, and the TCP transport) and the backend run in `prov`, so every tunnel
//! packet crosses the 1500-byte link. The visitor (this program's download client, on a thread
//! inside `gw`) fetches `/download` over HTTPS from the gateway on `gw`'s loopback, checked by
//! SHA-256. The loopback figures of the same downloads are printed beside them. Needs root,
//! `ip netns` and `nft`; without them the phase says so and is skipped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use peercompute_tests::netns::{Host, World};

use super::bulk::{self, BulkResult};
use super::gateway_proc::{GatewayProc, GatewaySpec};
use super::report::verdict;
use super::setup::{ChildProc, Helper, free_tcp_port, free_udp_port, output, wait_until};
use super::stats::ratio;
use super::target::Target;

/// The MTU of the link between gateway and provider.
const MTU: &str = "1500";
/// Everything inside the namespaces, beyond the downloads' own limits.
const SETUP_LIMIT: Duration = Duration::from_secs(120);

/// Bulk over the 1500-byte link, QUIC and TCP transport.
#[derive(Debug)]
pub(crate) struct MtuReport {
    pub(crate) bytes: u64,
    /// The MTU `ip link` shows on the gateway's and the provider's side.
    pub(crate) links: [String; 2],
    pub(crate) quic: BulkResult,
    pub(crate) tcp: BulkResult,
}

/// `1500` from `ip -o link` output (`… mtu 1500 qdisc …`), or the whole line.
fn mtu_of(link: &str) -> String {
    let mut words = link.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == "mtu")
        .and(words.next())
        .map_or_else(|| link.trim().to_owned(), str::to_owned)
}

/// Why the phase cannot run here, if it cannot.
pub(crate) fn unavailable() -> Option<String> {
    peercompute_tests::netns::prerequisites().err()
}

/// What the namespace thread needs, owned.
struct Plan {
    gateway_bin: PathBuf,
    provider_bin: PathBuf,
    exe: PathBuf,
    domain: String,
    gw_ip: std::net::Ipv4Addr,
    prov: Host,
    bytes: u64,
    expected: String,
    dir: PathBuf,
}

pub(crate) async fn run(
    bins: &super::setup::Binaries,
    domain: &str,
    bytes: u64,
) -> anyhow::Result<MtuReport> {
    let world = tokio::task::block_in_place(World::new);
    let (gw, prov) = tokio::task::block_in_place(|| {
        let gw = world.public_host("gw");
        let prov = world.public_host("prov");
        for host in [&gw, &prov] {
            host.run("ip", &["link", "set", "eth0", "mtu", MTU]);
        }
        (gw, prov)
    });
    let links = [
        gw.run("ip", &["-o", "link", "show", "eth0"]),
        prov.run("ip", &["-o", "link", "show", "eth0"]),
    ];
    let dir = tempfile::Builder::new()
        .prefix("tunnel-bench-mtu-")
        .tempdir()
        .context("temporary directory")?;
    let expected = tokio::task::spawn_blocking(move || peercompute_tests::download_sha256(bytes))
        .await
        .context("hash the expected download")?;
    let plan = Plan {
        gateway_bin: bins.gateway.clone(),
        provider_bin: bins.provider.clone(),
        exe: std::env::current_exe().context("locate this program")?,
        domain: domain.to_owned(),
        gw_ip: gw.ip(),
        prov,
        bytes,
        expected,
        dir: dir.path().to_path_buf(),
    };
    let limit = SETUP_LIMIT + 2 * Duration::from_secs_f64(bytes as f64 / 12.5e6);
    let thread = gw.spawn_thread(move || in_gateway_namespace(plan));
    let (quic, tcp) = tokio::time::timeout(limit, thread.join())
        .await
        .with_context(|| format!("the 1500-byte MTU phase took longer than {limit:?}"))??;
    // The world's drop kills what is left in its namespaces and deletes them.
    tokio::task::block_in_place(|| drop(world));
    Ok(MtuReport {
        bytes,
        links: links.map(|l| mtu_of(&l)),
        quic,
        tcp,
    })
}

/// Runs on a thread inside `gw`: the gateway started from here lives there, and so does the
/// visitor's client.
async fn in_gateway_namespace(plan: Plan) -> anyhow::Result<(BulkResult, BulkResult)> {
    let dir = &plan.dir;
    let mut backend_cmd = plan.prov.command(&plan.exe);
    backend_cmd.arg("backend");
    let (mut backend, _backend_stdin, addrs) =
        Helper::spawn_addrs("backend", backend_cmd, dir).await?;
    let backend_addr = addrs[0];
    let mut ids = Vec::new();
    for home in ["provider", "provider-tcp"] {
        let mut init = plan.prov.command(&plan.provider_bin);
        init.arg("--home").arg(dir.join(home)).arg("init");
        ids.push(output(&mut init, "peercomputed init").await?);
    }
    let https_port = free_tcp_port()?;
    let tunnel_port = free_udp_port()?;
    let spec = GatewaySpec {
        domain: plan.domain.clone(),
        https: SocketAddr::from(([0, 0, 0, 0], https_port)),
        tunnel: SocketAddr::from(([0, 0, 0, 0], tunnel_port)),
        admin: SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
        allow: ids,
        allow_file: None,
        extra: Vec::new(),
        cpu: None,
    };
    let mut gateway = GatewayProc::start(
        &plan.gateway_bin,
        &dir.join("gateway"),
        dir.join("gateway.log"),
        &spec,
    )
    .await?;
    let gw_id = &gateway.id;
    let quic_gateway = format!("{gw_id}@{}:{tunnel_port}", plan.gw_ip);
    let tcp_https = format!("{}:{https_port}", plan.gw_ip);
    let mut providers = Vec::new();
    for (home, name, transport) in [
        ("provider", "bench", "quic"),
        ("provider-tcp", "bench-tcp", "tcp"),
    ] {
        let mut cmd = plan.prov.command(&plan.provider_bin);
        cmd.arg("--home")
            .arg(dir.join(home))
            .arg("run")
            .args(["--gateway", &quic_gateway])
            .args(["--transport", transport, "--gateway-https", &tcp_https])
            .args(["--expose", &format!("{name}={backend_addr}")])
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
                "--no-relay",
            ])
            .args(["--admin-listen", "off"])
            .stdin(std::process::Stdio::null());
        let log = dir.join(format!("{home}.log"));
        let label = if transport == "quic" {
            "provider"
        } else {
            "provider-tcp"
        };
        providers.push(ChildProc::spawn(label, &mut cmd, log, true)?);
    }
    let visitor = SocketAddr::from(([127, 0, 0, 1], https_port));
    let mut results = Vec::new();
    for (name, provider) in ["bench", "bench-tcp"].into_iter().zip(providers.iter_mut()) {
        let host = format!("{name}.{}", plan.domain);
        let label = if name == "bench" {
            "over 1500 MTU, QUIC"
        } else {
            "over 1500 MTU, TCP"
        };
        let target = Target::https(label, visitor, &host, &gateway.ca_pem)?;
        let probe = &target;
        wait_until(
            &format!("200 from {host} across the namespaces"),
            &mut [&mut gateway.child, provider, &mut backend],
            move || async move {
                let (status, _) = probe.connect().await?.fetch(probe.get("/")).await?;
                anyhow::Ok(status.is_success())
            },
        )
        .await?;
        eprintln!(
            "  running: bulk download of {} MiB over the 1500-byte link, {label}",
            plan.bytes >> 20
        );
        results.push(bulk::run(&target, plan.bytes, &plan.expected).await?);
    }
    for child in providers {
        child.kill().await;
    }
    gateway.child.kill().await;
    backend.kill().await;
    let tcp = results.pop().context("two downloads")?;
    let quic = results.pop().context("two downloads")?;
    Ok((quic, tcp))
}

/// Prints the section beside the loopback figures `(QUIC, TCP)` when the run has them;
/// returns whether both downloads were intact.
pub(crate) fn print(report: &MtuReport, loopback: Option<(&BulkResult, &BulkResult)>) -> bool {
    println!();
    println!(
        "Bulk over a 1500-byte MTU link: {} MiB download, gateway and providers in two network namespaces joined by veth pairs (through a bridge), visitor on the gateway's loopback",
        report.bytes >> 20
    );
    println!(
        "  link MTU (ip link): gateway's eth0 {}, provider's eth0 {}",
        report.links[0], report.links[1]
    );
    println!(
        "  {:<34} {:>14} {:>14} {:>10}",
        "", "loopback", "MTU 1500", "1500/loop"
    );
    let check = |r: &BulkResult| {
        if r.ok() {
            "SHA-256 ok".to_owned()
        } else {
            format!("BAD {} {} B sha {}", r.status, r.bytes, r.sha_ok)
        }
    };
    for (label, over, lo) in [
        ("QUIC tunnel Gbit/s", &report.quic, loopback.map(|l| l.0)),
        ("TCP tunnel Gbit/s", &report.tcp, loopback.map(|l| l.1)),
    ] {
        println!(
            "  {label:<34} {:>14} {:>14.2} {:>10}  {}",
            lo.map_or_else(|| "—".into(), |l| format!("{:.2}", l.gbit_per_sec())),
            over.gbit_per_sec(),
            lo.map_or_else(
                || "n/a".into(),
                |l| ratio(over.gbit_per_sec(), l.gbit_per_sec())
            ),
            check(over)
        );
    }
    println!(
        "  QUIC / TCP over the 1500-byte link: {}",
        ratio(report.quic.gbit_per_sec(), report.tcp.gbit_per_sec())
    );
    let gbit = report.quic.gbit_per_sec();
    println!(
        "  goal: bulk through the tunnel ≥ 5 Gbit/s, at MTU 1500: {gbit:.2} {}",
        verdict(gbit >= 5.0)
    );
    report.quic.ok() && report.tcp.ok()
}
