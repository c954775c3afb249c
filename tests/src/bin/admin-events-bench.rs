//! `admin-events-bench`: how long the gateway's admin events take to reach their subscribers,
//! idle and under visitor load.
//!
//! ```text
//! cargo run -p peercompute-tests --bin admin-events-bench                        # debug, defaults
//! cargo run --release -p peercompute-tests --bin admin-events-bench -- --connections 1000
//! ```
//!
//! In one process, on 127.0.0.1: a gateway (the library, with its admin listener), a backend,
//! one provider publishing `app` and another cycling a name (register, wait until every
//! subscriber saw `name_registered`, unregister). `--subscribers` clients read
//! `/api/v1/events`. Phase 1 runs `--cycles` cycles on an idle gateway; phase 2 the same while
//! `--connections` keep-alive HTTPS visitors hammer `app` from their own runtime thread. For
//! each phase it prints p50, p99 and max of cause→delivered (register call → message read,
//! monotonic) and emitted→delivered (the event's `at_unix_ms` → message read, wall clock,
//! 1 ms resolution), and the visitors' req/s. The issue's target: p99 < 100 ms under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use peercompute_tests::admin::AdminClient;
use peercompute_tests::event_log::EventLog;
use peercompute_tests::{Alpn, Backend, GatewayOptions, TestGateway, TestProvider, https_client};

#[derive(Parser, Debug)]
#[command(
    name = "admin-events-bench",
    about = "Delivery time of the gateway's admin events to SSE subscribers, idle and under visitor load",
    after_help = "Examples:\n  cargo run -p peercompute-tests --bin admin-events-bench\n  cargo run --release -p peercompute-tests --bin admin-events-bench -- --cycles 2000 --subscribers 10 --connections 1000"
)]
struct Cli {
    /// Register/unregister cycles per phase.
    #[arg(long, default_value_t = 2000)]
    cycles: usize,
    /// Event-stream subscribers.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Keep-alive HTTPS visitor connections during the load phase.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Names registered (63 per provider) before the `/metrics` scrape phase; the gateway
    /// keeps its default cap of 500 route labels. 0 skips the phase.
    #[arg(long, default_value_t = 1000)]
    scrape_routes: usize,
}

/// Delivery times of one phase, in milliseconds.
#[derive(Debug, Default)]
struct Figures {
    cause: Vec<f64>,
    emitted: Vec<f64>,
}

impl Figures {
    fn print(&mut self, phase: &str) {
        for (what, v) in [
            ("cause→delivered", &mut self.cause),
            ("emitted→delivered", &mut self.emitted),
        ] {
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            println!(
                "{phase:<6} {what:<18} n={:<6} p50={:>6.2} ms  p99={:>6.2} ms  max={:>7.2} ms",
                v.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let (a, b) = (TestProvider::identity(), TestProvider::identity());
    let gw = TestGateway::start(GatewayOptions {
        // Any key: the scrape phase brings one provider per 63 names.
        open: true,
        max_connections: cli.connections + 100,
        ..GatewayOptions::default()
    })
    .await;
    let admin = AdminClient::new(gw.admin);
    let mut logs = Vec::new();
    for _ in 0..cli.subscribers {
        logs.push(EventLog::start(&admin).await);
    }
    let backend = Backend::start().await;
    let app = TestProvider::start(a, &gw);
    app.register("app", backend.addr)
        .await
        .expect("register app");
    let cycler = TestProvider::start(b, &gw);
    cycler.connected().await;
    if cli.scrape_routes > 0 {
        scrape(&gw, &backend, cli.scrape_routes).await;
    }

    let mut idle = cycles(&cli, &logs, &cycler, &backend).await;
    idle.print("idle");

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let clients: Vec<reqwest::Client> = (0..cli.connections)
            .map(|_| https_client(&gw, &["app"], Alpn::H1))
            .collect();
        let (url, stop, served) = (gw.url("app", "/"), stop.clone(), served.clone());
        std::thread::spawn(move || visitors(clients, url, stop, served))
    };
    // Let every connection open before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, started) = (served.load(Ordering::Relaxed), Instant::now());
    let mut loaded = cycles(&cli, &logs, &cycler, &backend).await;
    let rate = (served.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let failed = load.join().expect("visitor thread");
    loaded.print("load");
    println!(
        "load   visitors: {} connections, {rate:.0} req/s during the phase, {failed} failed requests",
        cli.connections
    );
    println!(
        "target p99 < 100 ms under load (cause→delivered): {}",
        if loaded.cause[((loaded.cause.len() - 1) as f64 * 0.99).round() as usize] < 100.0 {
            "PASS"
        } else {
            "MISS"
        }
    );
}

/// Registers `routes` names with one request each, then times 20 scrapes of `/metrics`.
async fn scrape(gw: &TestGateway, backend: &Backend, routes: usize) {
    const PER_PROVIDER: usize = 63;
    let names: Vec<String> = (0..routes).map(|i| format!("r{i}")).collect();
    let mut providers = Vec::new();
    for chunk in names.chunks(PER_PROVIDER) {
        let id = TestProvider::identity();
        let provider = TestProvider::start(id, gw);
        for name in chunk {
            provider
                .register(name, backend.addr)
                .await
                .expect("register");
        }
        providers.push(provider);
    }
    // One keep-alive connection; the Host header names each app.
    let client = https_client(gw, &["r0"], Alpn::H1);
    for name in &names {
        let resp = client
            .get(gw.url("r0", "/"))
            .header("host", format!("{name}.apps.test"))
            .send()
            .await
            .expect("visit");
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
    }
    let admin = reqwest::Client::new();
    let url = format!("http://{}/metrics", gw.admin);
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let text = admin
            .get(&url)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        times.push(started.elapsed().as_secs_f64() * 1e3);
        size = text.len();
        assert!(text.contains("route=\"other\""), "past the cap");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "scrape {routes} routes (cap 500): {size} bytes, p50 {:.1} ms, max {:.1} ms (target < 50 ms)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// `cli.cycles` cycles of register → every subscriber saw it → unregister.
async fn cycles(cli: &Cli, logs: &[EventLog], cycler: &TestProvider, backend: &Backend) -> Figures {
    let mut figures = Figures::default();
    for i in 0..cli.cycles {
        let name = "cycle";
        let marks: Vec<usize> = logs.iter().map(EventLog::mark).collect();
        let cause = Instant::now();
        cycler
            .register(name, backend.addr)
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        for (log, mark) in logs.iter().zip(marks) {
            let seen = log
                .wait_from(mark, 10, "name_registered", |j| j["name"] == name)
                .await;
            figures.cause.push(seen.cause_ms(cause));
            figures.emitted.push(seen.emitted_ms());
        }
        cycler.handle.unregister(name).await;
    }
    figures
}

/// Visitors on their own runtime: each client loops GET until `stop`; returns failures.
fn visitors(
    clients: Vec<reqwest::Client>,
    url: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("visitor runtime");
    rt.block_on(async move {
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for client in clients {
            let (url, stop, served, failed) =
                (url.clone(), stop.clone(), served.clone(), failed.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            // The first few failures say what they were.
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                match other {
                                    Ok(r) => eprintln!("visitor failure: HTTP {}", r.status()),
                                    Err(e) => eprintln!("visitor failure: {e}"),
                                }
                            }
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        failed.load(Ordering::Relaxed)
    })
}
