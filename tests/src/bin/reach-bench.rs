//! Time to reach a provider behind NAT: the first successful control round trip (connect +
//! one signed `ls` answered) from a fresh client, in an emulated internet of network
//! namespaces (needs root, like the NAT-traversal tests):
//!
//! - direct: a client on the provider's own LAN dials its stored address;
//! - relayed: a client behind a symmetric NAT looks the provider up at the gateway and goes
//!   through its relay (hole punching cannot work there);
//! - hole punched: a client behind an endpoint-independent NAT does the same, then DCUtR
//!   replaces the relayed path with a direct one before the request is sent.
//!
//! Each figure is the median of `--runs` fresh clients; ratios are to the direct median
//! measured in the same run. The round trip over the path once established is printed too.
//!
//! `cargo run --release -p peercompute-tests --bin reach-bench -- --runs 9`

use std::time::Duration;

use clap::Parser;
use peercompute_identity::PeerId;
use peercompute_p2p::{Multiaddr, PathKind};
use peercompute_tests::daemon::TestDaemon;
use peercompute_tests::nat::{P2P_PORT, reach_once, start_gateway, start_provider};
use peercompute_tests::netns::{Host, NatKind, World};

#[derive(Parser, Debug)]
#[command(about = "Time to reach a provider directly, relayed and after hole punching")]
struct Args {
    /// Fresh clients per path.
    #[arg(long, default_value_t = 9)]
    runs: usize,
}

/// One way of reaching the provider, measured on its own.
struct Path<'a> {
    label: &'static str,
    /// Where the client runs.
    host: &'a Host,
    /// Addresses the client stores for the provider.
    addrs: Vec<Multiaddr>,
    /// Gateways the client knows.
    gateways: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Time allowed for a hole punch before the path is judged.
    wait: Duration,
    expected: PathKind,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let world = World::new();
    let gw_host = world.public_host("gw");
    let (home_site, root) = world.nat_site_root("home", NatKind::EndpointIndependent);
    let lan_pc = home_site.host("pc");
    let sym = world.nat_site("sym", NatKind::Symmetric);
    let sym_laptop = sym.host("laptop");
    let cone = world.nat_site("cone", NatKind::EndpointIndependent);
    let cone_laptop = cone.host("laptop");

    let (provider_home, provider) = TestDaemon::identity();
    let gw = start_gateway(&gw_host, &provider).await;
    let daemon = start_provider(provider_home, &root, &gw_host, &gw).await;
    let direct: Vec<Multiaddr> = daemon
        .daemon
        .as_ref()
        .map(|d| d.listen_addrs.clone())
        .unwrap_or_default();
    let gateways = vec![(
        gw.id,
        vec![format!("/ip4/{}/udp/{P2P_PORT}/quic-v1", gw_host.ip()).parse()?],
    )];

    let paths = [
        Path {
            label: "direct (LAN, stored address)",
            host: &lan_pc,
            addrs: direct,
            gateways: Vec::new(),
            wait: Duration::ZERO,
            expected: PathKind::DirectLan,
        },
        Path {
            label: "relayed (symmetric NAT)",
            host: &sym_laptop,
            addrs: Vec::new(),
            gateways: gateways.clone(),
            wait: Duration::ZERO,
            expected: PathKind::Relayed,
        },
        Path {
            label: "hole punched (cone NATs)",
            host: &cone_laptop,
            addrs: Vec::new(),
            gateways,
            wait: Duration::from_secs(3),
            expected: PathKind::HolePunched,
        },
    ];
    println!(
        "reach-bench: {} fresh clients per path; reach = connect + first signed round trip",
        args.runs
    );
    let mut direct_median = None;
    for Path {
        label,
        host,
        addrs,
        gateways: gws,
        wait,
        expected,
    } in paths
    {
        let mut reach = Vec::new();
        let mut rtt = Vec::new();
        for i in 0..args.runs {
            match reach_once(host, provider, addrs.clone(), gws.clone(), wait, &daemon).await {
                Ok(s) if s.kind == expected => {
                    reach.push(s.reach);
                    rtt.push(s.rtt);
                }
                Ok(s) => eprintln!(
                    "{label} run {i}: reached over {} instead: not counted",
                    s.kind
                ),
                Err(e) => eprintln!("{label} run {i}: {e}"),
            }
        }
        if reach.is_empty() {
            println!("{label:<32} no successful run");
            continue;
        }
        let (min, max) = (
            *reach.iter().min().expect("non-empty"),
            *reach.iter().max().expect("non-empty"),
        );
        let m = median(reach.clone());
        let ratio = direct_median.map_or_else(
            || "baseline".to_owned(),
            |d: Duration| format!("{:.1}x direct", m.as_secs_f64() / d.as_secs_f64()),
        );
        direct_median.get_or_insert(m);
        println!(
            "{label:<32} reach median {} (min {}, max {}, {}/{} runs) {ratio}; round trip once there {}",
            ms(m),
            ms(min),
            ms(max),
            reach.len(),
            args.runs,
            ms(median(rtt)),
        );
    }
    drop(daemon);
    drop(world);
    Ok(())
}
