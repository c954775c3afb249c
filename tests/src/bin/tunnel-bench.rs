//! `tunnel-bench`: measures the tunnel against the backend reached directly, in one run.
//!
//! ```text
//! cargo run --release -p peercompute-tests --bin tunnel-bench            # full run, every phase (~5 min)
//! cargo run --release -p peercompute-tests --bin tunnel-bench -- --quick # a few seconds
//! cargo run --release -p peercompute-tests --bin tunnel-bench -- --l1 --l2 --l3 --mtu1500
//! cargo run --release -p peercompute-tests --bin tunnel-bench -- --loss 0,1,5,10 --delay 50ms --jitter 10ms --cc cubic,bbr
//! cargo run --release -p peercompute-tests --bin tunnel-bench -- --hostile  # B7, ~3 min
//! ```
//!
//! It builds (or finds) the release `peercompute-gateway` and `peercomputed`, starts them as
//! child processes on 127.0.0.1 with a backend child, and measures, directly and through
//! gateway + QUIC tunnel (HTTPS as a visitor): closed-loop req/s and latency, open-loop latency
//! at a fixed rate, a bulk download, and gateway/provider memory, including while many TLS
//! connections are held open. It prints every figure, the ratio to direct and the issue's
//! targets with PASS/MISS. Then the checklist's load phases, each on a system of its own
//! (`--l1`, `--l2`, `--l3`, `--mtu1500` run only those): 1000 connections for 60 s, idle
//! connections up to the gateway's cap and past it, 200 providers × 50 streams with every
//! response checked, bulk over a 1500-byte-MTU link between network namespaces. Exit codes:
//! 0 measured, 1 could not run, 2 a correctness check failed (errors, non-2xx, bad download,
//! misrouted or corrupted responses). See `tunnel_bench` for the modules.

mod tunnel_bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use peercompute_tests::hostile_provider::Behaviour;
use tunnel_bench::procfs::Watched;
use tunnel_bench::setup::{self, Stack};
use tunnel_bench::suite::{self, Rig, Settings};
use tunnel_bench::target::Target;
use tunnel_bench::{alt, hostile};

#[derive(Parser, Debug)]
#[command(
    name = "tunnel-bench",
    about = "Benchmark of the Peer Compute tunnel: direct to the backend vs. through gateway + QUIC tunnel + provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Short smoke run (about 1 s per phase, 64 MiB bulk, 200 connections): checks the
    /// benchmark works; its figures are indicative only.
    #[arg(long)]
    quick: bool,
    /// Closed-loop measuring time per side [default: 10s; quick: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Closed-loop keep-alive connections [default: 64].
    #[arg(long)]
    connections: Option<usize>,
    /// Open-loop request rate, req/s [default: 1000].
    #[arg(long)]
    rate: Option<u32>,
    /// Open-loop time per side [default: 10s; quick: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    rate_duration: Option<Duration>,
    /// Bulk download size in MiB [default: 1024; quick: 64].
    #[arg(long)]
    bulk_mib: Option<u64>,
    /// Concurrent TLS connections held open for the gateway memory reading [default: 1000;
    /// quick: 200].
    #[arg(long)]
    concurrent: Option<usize>,
    /// Take `peercompute-gateway` and `peercomputed` from this directory instead of building.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build --release`; use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
    /// Instead of the suite, measure the tunnel through a link emulator that drops these
    /// percentages of datagrams each way, e.g. 0,1,5,10 (with --quick: 0,5).
    #[arg(long, value_delimiter = ',', value_name = "PERCENT,...")]
    loss: Vec<f64>,
    /// One-way delay of the emulated link [default: 50ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Each datagram's delay is delay ± U(jitter) [default: 10ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    jitter: Option<Duration>,
    /// Let jitter reorder datagrams (netem-like) instead of queueing them in order.
    #[arg(long)]
    reorder: bool,
    /// Congestion controllers to compare, both daemons' --tunnel-congestion [default:
    /// cubic,bbr].
    #[arg(long, value_delimiter = ',', value_name = "cubic|bbr|newreno,...")]
    cc: Vec<peercompute_tunnel_proto::TunnelCongestion>,
    /// Instead of the suite, run mixed load for this long (e.g. 10m) and judge whether the
    /// daemons' memory, file descriptors and tasks stay flat.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    soak: Option<Duration>,
    /// Soak: how often both daemons' /metrics are read [default: 10s; quick: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    sample: Option<Duration>,
    /// Soak: samples before this are left out of the slopes [default: 2m; quick: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// The checklist's load phases (`--l1`, `--l2`, `--l3`, `--mtu1500`).
    #[command(flatten)]
    phases: tunnel_bench::phases::PhaseArgs,
    /// Instead of the suite, run hostile providers (issue 17, B7) one after another beside
    /// the honest one and compare the honest visitors' p99 (at --rate, default 200/s here)
    /// in each attack with the quiet window before it.
    #[arg(long)]
    hostile: bool,
    /// Hostile: which behaviours [default: all ten].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "BEHAVIOUR,...")]
    behaviours: Vec<Behaviour>,
    /// Hostile: length of each quiet and each attack window [default: 8s; quick: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// Hostile: do not pin the gateway to CPU 0 and the rest to CPU 1.
    #[arg(long)]
    no_pin: bool,
    /// Set by `main` once this process runs on CPU 1 only.
    #[arg(skip)]
    pinned: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// (internal) Serve the test backend on 127.0.0.1:0, print `listening ADDR`, and exit
    /// when stdin closes.
    #[command(hide = true)]
    Backend {
        /// Also serve a WebSocket echo; its address follows on the same line.
        #[arg(long)]
        websocket: bool,
    },
    /// (internal) Relay every TCP connection accepted on 127.0.0.1:0 to ADDR, doing nothing
    /// else (the ceiling of any two-relay design); print `listening ADDR`; exit when stdin
    /// closes.
    #[command(hide = true)]
    Splice { to: std::net::SocketAddr },
    /// (internal) One hostile provider of `--hostile` and its name's visitors; prints a JSON
    /// report line.
    #[command(hide = true)]
    HostilePeer(hostile::PeerArgs),
}

impl Cli {
    fn settings(&self) -> Settings {
        let mut s = if self.quick {
            Settings::quick()
        } else {
            Settings::full()
        };
        s.duration = self.duration.unwrap_or(s.duration);
        s.connections = self.connections.unwrap_or(s.connections);
        s.rate = self.rate.unwrap_or(s.rate);
        s.rate_duration = self.rate_duration.unwrap_or(s.rate_duration);
        s.bulk_bytes = self.bulk_mib.map_or(s.bulk_bytes, |m| m << 20);
        s.concurrent = self.concurrent.unwrap_or(s.concurrent);
        s
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cli = Cli::parse();
    if cli.command.is_none() && cli.hostile && pin_hostile(&cli) {
        // Before the runtime's threads and the children exist: they inherit it.
        if let Err(e) = pin_to_cpu(1) {
            eprintln!("error: cannot pin this process to CPU 1 ({e}); try --no-pin");
            return ExitCode::from(1);
        }
        cli.pinned = true;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Backend { websocket }) => serve_backend(websocket).await.map(|()| true),
            Some(Command::Splice { to }) => serve_splice(to).await.map(|()| true),
            Some(Command::HostilePeer(ref args)) => hostile::run_peer(args).await.map(|()| true),
            // Leaving this block (interrupt, error or panic) drops the children: killed.
            None => tokio::select! {
                r = bench(&cli) => r,
                _ = interrupted() => Err(anyhow::anyhow!("interrupted; children stopped")),
            },
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether `--hostile` pins: asked for, and there are two CPUs to pin to.
fn pin_hostile(cli: &Cli) -> bool {
    !cli.no_pin && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// Runs this thread (and every thread and child it starts afterwards) on `cpu` only.
fn pin_to_cpu(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve_backend(websocket: bool) -> anyhow::Result<()> {
    let backend = peercompute_tests::Backend::start().await;
    if websocket {
        let ws = peercompute_tests::WsBackend::start().await;
        println!("listening {} {}", backend.addr, ws.addr);
        until_stdin_closes().await
    } else {
        println!("listening {}", backend.addr);
        until_stdin_closes().await
    }
}

/// Runs as long as the parent holds our stdin open; EOF (the parent ended) returns.
async fn until_stdin_closes() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.context("read stdin")? > 0 {}
    Ok(())
}

/// A zero-work TCP relay: what any relay must at least do (accept, connect, copy both ways).
async fn serve_splice(to: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the splice listener")?;
    println!("listening {}", listener.local_addr()?);
    let relay = async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    };
    tokio::select! {
        r = until_stdin_closes() => r,
        () = relay => Ok(()),
    }
}

/// The whole run; `Ok(false)` when a correctness check failed.
async fn bench(cli: &Cli) -> anyhow::Result<bool> {
    let settings = cli.settings();
    let machine = peercompute_tests::procfs::machine();
    println!("Peer Compute tunnel benchmark (tests/src/bin/tunnel-bench.rs)");
    println!(
        "machine: nproc {}, CPU {}, Linux {}, {:.1} GiB RAM; load average at start {}",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        machine.mem_total_kib as f64 / (1024.0 * 1024.0),
        peercompute_tests::procfs::loadavg()
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    if cfg!(debug_assertions) {
        println!("WARNING: the load generator is a debug build; run with `cargo run --release`");
    }

    let bins =
        tokio::task::block_in_place(|| setup::binaries(cli.bin_dir.as_deref(), cli.no_build))?;
    println!("binaries under test: {}", bins.how);

    let domain = peercompute_tests::DOMAIN;
    let host = format!("bench.{domain}");
    if !cli.loss.is_empty() {
        return loss_phase(cli, &bins, domain, &host).await;
    }
    if let Some(duration) = cli.soak {
        return soak_phase(cli, duration, &bins, domain, &host).await;
    }
    if cli.hostile {
        let window = cli.window.unwrap_or(if cli.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(8)
        });
        let settings = hostile::HostileSettings {
            quiet: window,
            attack: window,
            rate: cli.rate.unwrap_or(200),
            pin: cli.pinned,
            behaviours: if cli.behaviours.is_empty() {
                Behaviour::ALL.to_vec()
            } else {
                cli.behaviours.clone()
            },
        };
        eprintln!("measuring hostile providers beside the honest one:");
        let sound = hostile::run(&bins, domain, &host, &settings).await?;
        println!(
            "load average at end: {}",
            peercompute_tests::procfs::loadavg()
        );
        return Ok(sound);
    }
    let phases = cli.phases.plan(cli.quick);
    // L2 holds 10,000 connections at both ends; L3 200 providers' sockets and their backends'.
    println!(
        "open-file limit (this process and its children): {}",
        tunnel_bench::phases::raise_nofile(65_536)
    );
    if cli.phases.selected() {
        let sound = tunnel_bench::phases::run(&phases, &bins, domain, &host, None).await?;
        println!();
        println!(
            "load average at end: {}",
            peercompute_tests::procfs::loadavg()
        );
        return Ok(sound);
    }
    let stack = Stack::start(&bins, domain, &host).await?;
    println!(
        "processes: gateway pid {} ({}), provider pid {} ({}), backend pid {} (hyper HTTP/1.1 server of tests/src/backend.rs in its own process: `tunnel-bench backend`), load generator pid {} (this process: hyper HTTP/1.1 client + tokio-rustls, own code; wrk/oha not used)",
        stack.gateway.pid,
        bins.gateway.display(),
        stack.provider.pid,
        bins.provider.display(),
        stack.backend.pid,
        std::process::id()
    );
    println!(
        "direct:  http://{}/  (plain HTTP/1.1 keep-alive to the backend)",
        stack.backend_addr
    );
    println!(
        "through: https://{host}:{}/  (TLS 1.3, ALPN http/1.1, SNI/Host {host}, dev CA) → gateway → QUIC tunnel → provider → backend",
        stack.https.port()
    );

    println!(
        "through-tcp: https://{}.{domain}:{}/  (the same, with a second provider, pid {}, on the TCP transport: TLS 1.3 + yamux to the gateway's HTTPS port)",
        setup::TCP_NAME,
        stack.https.port(),
        stack.provider_tcp.pid
    );
    println!(
        "ceiling: http://{}/  (plain HTTP/1.1 through two zero-work TCP relays, `tunnel-bench splice`, pids {} and {}: the least any two-hop design costs)",
        stack.splice_addr, stack.splices[0].pid, stack.splices[1].pid
    );

    let alternative = match alt::tools() {
        Ok(tools) => match alt::Alternative::start(tools, stack.backend_addr, &host).await {
            Ok(a) => {
                println!(
                    "alternative: https://{host}:{}/  (nginx pid {}, TLS 1.3 → rathole server pid {} → noise tunnel → rathole client pid {} → the same backend)",
                    a.https.port(),
                    a.nginx.pid,
                    a.server.pid,
                    a.client.pid
                );
                Some(a)
            }
            Err(e) => return Err(stack.fail(e).await),
        },
        Err(why) => {
            println!("alternative: {why}");
            None
        }
    };
    let mut watched_procs = vec![
        watched("bench", std::process::id()),
        watched("backend", stack.backend.pid),
        watched("gateway", stack.gateway.pid),
        watched("provider", stack.provider.pid),
        watched("provider-tcp", stack.provider_tcp.pid),
        watched("relays", stack.splices[0].pid),
        watched("relays", stack.splices[1].pid),
    ];
    if let Some(a) = &alternative {
        watched_procs.extend(a.pids().into_iter().map(|(l, p)| watched(l, p)));
    }
    let rig = Rig {
        direct: Target::plain("direct", stack.backend_addr, &host),
        ceiling: Some(Target::plain("ceiling", stack.splice_addr, &host)),
        through: Target::https("through", stack.https, &host, &stack.ca_pem)?,
        through_tcp: Some(Target::https(
            "through-tcp",
            stack.https,
            &format!("{}.{domain}", setup::TCP_NAME),
            &stack.ca_pem,
        )?),
        alternative: match &alternative {
            Some(a) => Some(Target::https("nginx+rathole", a.https, &host, &a.ca_pem)?),
            None => None,
        },
        gateway_pid: stack.gateway.pid,
        provider_pid: stack.provider.pid,
        watched: watched_procs,
        admin: Some(stack.admin),
    };
    eprintln!("measuring (each phase direct, then through the tunnel):");
    let report = match suite::run(&rig, &settings).await {
        Ok(r) => r,
        Err(e) => {
            let e = match &alternative {
                Some(a) => e.context(a.log_tails()),
                None => e,
            };
            return Err(stack.fail(e).await);
        }
    };
    stack.stop().await;
    if let Some(a) = alternative {
        a.stop().await;
    }
    let mut sound = tunnel_bench::report::print(&report, cli.quick);
    let loopback = report
        .tcp
        .as_ref()
        .map(|(_, tcp)| (&report.bulk.through.result, &tcp.result));
    sound &= tunnel_bench::phases::run(&phases, &bins, domain, &host, loopback).await?;
    println!();
    println!(
        "load average at end: {}",
        peercompute_tests::procfs::loadavg()
    );
    Ok(sound)
}

/// `--loss`: the tunnel through a lossy link, per congestion controller.
async fn loss_phase(
    cli: &Cli,
    bins: &setup::Binaries,
    domain: &str,
    host: &str,
) -> anyhow::Result<bool> {
    use peercompute_tunnel_proto::TunnelCongestion;
    let mut losses: Vec<f64> = cli.loss.iter().map(|p| p / 100.0).collect();
    if let Some(bad) = losses.iter().find(|l| !(0.0..1.0).contains(*l)) {
        anyhow::bail!(
            "--loss {}: give percentages from 0 to below 100",
            bad * 100.0
        );
    }
    if cli.quick && losses.len() > 2 {
        losses.retain(|l| *l == 0.0 || (*l - 0.05).abs() < 1e-9);
    }
    let controllers = if cli.cc.is_empty() {
        vec![TunnelCongestion::Cubic, TunnelCongestion::Bbr]
    } else {
        cli.cc.clone()
    };
    let mut settings = if cli.quick {
        tunnel_bench::loss::LossSettings::quick(losses, controllers)
    } else {
        tunnel_bench::loss::LossSettings::full(losses, controllers)
    };
    settings.delay = cli.delay.unwrap_or(settings.delay);
    settings.jitter = cli.jitter.unwrap_or(settings.jitter);
    settings.reorder = cli.reorder;
    eprintln!("measuring the tunnel through the link emulator:");
    let sound = tunnel_bench::loss::run(bins, domain, host, &settings).await?;
    println!(
        "load average at end: {}",
        peercompute_tests::procfs::loadavg()
    );
    Ok(sound)
}

/// `--soak`: long mixed load against one stack, then the slope table.
async fn soak_phase(
    cli: &Cli,
    duration: Duration,
    bins: &setup::Binaries,
    domain: &str,
    host: &str,
) -> anyhow::Result<bool> {
    let options = setup::StackOptions {
        websocket: true,
        ..setup::StackOptions::default()
    };
    let stack = Stack::start_with(bins, domain, host, &options).await?;
    let rig = tunnel_bench::soak::SoakRig {
        https: stack.https,
        ca_pem: stack.ca_pem.clone(),
        http_host: host.to_owned(),
        ws_host: format!("ws.{domain}"),
        gateway_admin: stack.admin,
        provider_admin: Some(stack.provider_admin),
        provider_id: stack.provider_id.clone(),
    };
    let settings = tunnel_bench::soak::SoakSettings {
        duration,
        sample: cli.sample.unwrap_or(if cli.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        }),
        warmup: cli.warmup.unwrap_or(if cli.quick {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(120)
        }),
        kick_every: if cli.quick {
            (duration / 2).max(Duration::from_secs(5))
        } else {
            Duration::from_secs(180)
        },
        rate: if cli.quick { 50 } else { 200 },
        csv_dir: Some(setup::bench_dir()),
    };
    eprintln!(
        "soaking for {duration:?} (gateway pid {}, provider pid {}):",
        stack.gateway.pid, stack.provider.pid
    );
    let report = match tunnel_bench::soak::run(&rig, &settings).await {
        Ok(r) => r,
        Err(e) => return Err(stack.fail(e).await),
    };
    stack.stop().await;
    println!(
        "verdict: {} ({} errors outside kicks; {} samples, {} HTTP/1.1 GETs, {} WebSockets, {} downloads answered)",
        if report.flat {
            "flat"
        } else {
            "a series grows"
        },
        report.errors,
        report.samples,
        report.http1_ok,
        report.websockets_ok,
        report.downloads_ok
    );
    Ok(report.flat && report.errors == 0)
}

fn watched(label: &str, pid: u32) -> Watched {
    Watched {
        label: label.into(),
        pid,
    }
}
