//! `tunnel-bench --soak 10m [--sample 10s] [--warmup 2m]` (issue 17, L6): mixed open-loop
//! load for a long time while the gateway's and the provider's `/metrics` are sampled, then a
//! least-squares slope of each series after the warm-up decides whether it is flat (no leak).
//!
//! Load, each on its own clock: HTTP/1.1 GETs at 200/s, HTTP/2 GETs at 200/s, 2 WebSockets/s
//! (10 echoes each, then close), a SHA-256-checked 1 MiB download every 5 s, and a provider
//! kick (`POST /api/v1/providers/{id}/disconnect`) every 3 minutes. At most 256 requests of
//! each kind are in flight; a request that finds none free is counted `skipped` (the stack
//! is saturated), never queued. Errors within 10 s after a kick are counted apart.
//!
//! A series GROWS when its slope × run exceeds its allowance (RSS: 5 % of its mean; fds: 2;
//! tasks: 1 % of the mean + 5) **and** the slope is significant: more than 3 standard errors
//! above zero. Under load, fds and tasks count the connections open at the instant of the
//! sample, so they swing by ±10 from one sample to the next; a least-squares line through
//! such noise has a slope of either sign, and only a steady climb is a leak. Samples go to a
//! CSV under `target/bench/`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use peercompute_tests::tunnel_load::{self, ms};
use tokio::sync::Semaphore;

/// Durations of a soak.
#[derive(Debug, Clone)]
pub(crate) struct SoakSettings {
    pub(crate) duration: Duration,
    pub(crate) sample: Duration,
    pub(crate) warmup: Duration,
    pub(crate) kick_every: Duration,
    /// Requests per second of each of HTTP/1.1 and HTTP/2.
    pub(crate) rate: u32,
    /// Where the CSV goes; `None`: no CSV.
    pub(crate) csv_dir: Option<std::path::PathBuf>,
}

/// Where the soak sends load and what it samples.
#[derive(Debug, Clone)]
pub(crate) struct SoakRig {
    pub(crate) https: SocketAddr,
    pub(crate) ca_pem: Vec<u8>,
    /// `<name>.<domain>` of the HTTP backend and of the WebSocket echo.
    pub(crate) http_host: String,
    pub(crate) ws_host: String,
    /// The gateway's admin listener (its `/metrics`, the kick).
    pub(crate) gateway_admin: SocketAddr,
    /// The provider's admin listener; `None` when the provider has no `/metrics` of its own.
    pub(crate) provider_admin: Option<SocketAddr>,
    pub(crate) provider_id: String,
}

/// One kind of load's counts.
#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    after_kick: AtomicU64,
    skipped: AtomicU64,
}

impl Counts {
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<10} ok {:>7}  errors {:>4}  errors ≤ 10 s after a kick {:>4}  skipped (saturated) {:>4}",
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.after_kick.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed)
        )
    }

    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// State the load tasks share.
struct Shared {
    started: Instant,
    deadline: Instant,
    /// Milliseconds since `started` of the last kick; `u64::MAX`: none yet.
    last_kick_ms: AtomicU64,
    window: Duration,
    /// Latencies of HTTP/1.1 GETs per window.
    windows: std::sync::Mutex<Vec<Vec<Duration>>>,
}

impl Shared {
    fn near_kick(&self) -> bool {
        let last = self.last_kick_ms.load(Ordering::Relaxed);
        last != u64::MAX
            && (self.started.elapsed().as_millis() as u64).saturating_sub(last) < 10_000
    }

    fn record(&self, counts: &Counts, ok: bool) {
        if ok {
            counts.ok.fetch_add(1, Ordering::Relaxed);
        } else if self.near_kick() {
            counts.after_kick.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn latency(&self, d: Duration) {
        let index = (self.started.elapsed().as_secs_f64() / self.window.as_secs_f64()) as usize;
        let mut windows = self.windows.lock().expect("never poisoned");
        if windows.len() <= index {
            windows.resize(index + 1, Vec::new());
        }
        windows[index].push(d);
    }
}

/// One sample of one process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at_s: f64,
    rss: f64,
    fds: f64,
    tasks: f64,
    cpu: f64,
}

/// What the soak found; `flat` false when a series grows.
#[derive(Debug)]
pub(crate) struct SoakReport {
    pub(crate) flat: bool,
    pub(crate) errors: u64,
    pub(crate) samples: usize,
    pub(crate) http1_ok: u64,
    pub(crate) websockets_ok: u64,
    pub(crate) downloads_ok: u64,
}

/// Runs the soak and prints its tables.
pub(crate) async fn run(rig: &SoakRig, settings: &SoakSettings) -> anyhow::Result<SoakReport> {
    let h1 = tunnel_load::client(&rig.ca_pem, rig.https, &rig.http_host)?;
    let h2 = tunnel_load::client_h2(&rig.ca_pem, rig.https, &rig.http_host)?;
    let ws_tls = Arc::new(tunnel_load::tls_config(&rig.ca_pem, b"http/1.1")?);
    let admin = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("https://{}:{}", rig.http_host, rig.https.port());
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        deadline: started + settings.duration,
        last_kick_ms: AtomicU64::new(u64::MAX),
        window: Duration::from_secs(120)
            .min(settings.duration / 3)
            .max(Duration::from_secs(1)),
        windows: std::sync::Mutex::new(Vec::new()),
    });
    let kinds: [Arc<Counts>; 5] = Default::default();
    let [c_h1, c_h2, c_ws, c_dl, c_kick] = kinds.clone();
    let mut load = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / f64::from(settings.rate.max(1)));
    // HTTP/1.1 and HTTP/2 GETs, open loop.
    for (client, counts, timed) in [(h1, c_h1.clone(), true), (h2, c_h2.clone(), false)] {
        let (shared, url) = (shared.clone(), format!("{base}/"));
        load.spawn(open_loop(
            shared.clone(),
            period,
            counts.clone(),
            move || {
                let (client, url, shared, counts) =
                    (client.clone(), url.clone(), shared.clone(), counts.clone());
                async move {
                    let sent = Instant::now();
                    let ok = tokio::time::timeout(Duration::from_secs(30), async {
                        let resp = client.get(&url).send().await.ok()?;
                        let ok = resp.status() == 200;
                        resp.bytes().await.ok().map(|_| ok)
                    })
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(false);
                    if ok && timed {
                        shared.latency(sent.elapsed());
                    }
                    shared.record(&counts, ok);
                }
            },
        ));
    }
    // WebSockets: 2 per second.
    {
        let (shared, counts, tls, https, host) = (
            shared.clone(),
            c_ws.clone(),
            ws_tls.clone(),
            rig.https,
            rig.ws_host.clone(),
        );
        load.spawn(open_loop(
            shared.clone(),
            Duration::from_millis(500),
            counts.clone(),
            move || {
                let (shared, counts, tls, host) =
                    (shared.clone(), counts.clone(), tls.clone(), host.clone());
                async move {
                    let ok = tokio::time::timeout(
                        Duration::from_secs(30),
                        tunnel_load::websocket_echo(tls, https, &host, 10),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok());
                    shared.record(&counts, ok);
                }
            },
        ));
    }
    // 1 MiB every 5 s.
    {
        let (shared, counts, client, base) = (
            shared.clone(),
            c_dl.clone(),
            tunnel_load::client(&rig.ca_pem, rig.https, &rig.http_host)?,
            base.clone(),
        );
        load.spawn(open_loop(
            shared.clone(),
            Duration::from_secs(5),
            counts.clone(),
            move || {
                let (shared, counts, client, base) =
                    (shared.clone(), counts.clone(), client.clone(), base.clone());
                async move {
                    let t = tunnel_load::download(&client, &base, 1 << 20, Duration::from_secs(30))
                        .await;
                    shared.record(&counts, t.intact);
                }
            },
        ));
    }
    // A provider kick every `kick_every`.
    {
        let kick_every = settings.kick_every.max(Duration::from_secs(1));
        let (shared, counts, admin, url) = (
            shared.clone(),
            c_kick.clone(),
            admin.clone(),
            format!(
                "http://{}/api/v1/providers/{}/disconnect",
                rig.gateway_admin, rig.provider_id
            ),
        );
        load.spawn(async move {
            let mut next = shared.started + kick_every;
            while next < shared.deadline {
                tokio::time::sleep_until(next.into()).await;
                shared.last_kick_ms.store(
                    shared.started.elapsed().as_millis() as u64,
                    Ordering::Relaxed,
                );
                let ok = admin
                    .post(&url)
                    // The admin API takes mutations as JSON only (a CSRF guard).
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                // A refused kick is an error of the soak itself, not of the tunnel.
                counts.ok.fetch_add(u64::from(ok), Ordering::Relaxed);
                counts.errors.fetch_add(u64::from(!ok), Ordering::Relaxed);
                next += kick_every;
            }
        });
    }

    let gateway_metrics = format!("http://{}/metrics", rig.gateway_admin);
    let provider_metrics = rig.provider_admin.map(|a| format!("http://{a}/metrics"));
    let mut gw_samples = Vec::new();
    let mut pv_samples = Vec::new();
    let mut next = started;
    let max_samples =
        (settings.duration.as_secs_f64() / settings.sample.as_secs_f64()) as usize + 2;
    for _ in 0..max_samples {
        if next > shared.deadline {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let at_s = started.elapsed().as_secs_f64();
        gw_samples.push(scrape(&admin, &gateway_metrics, at_s).await?);
        if let Some(url) = &provider_metrics {
            pv_samples.push(scrape(&admin, url, at_s).await?);
        }
        next += settings.sample;
    }
    // Let in-flight requests end (each is bounded by 30 s).
    let drained = tokio::time::timeout(Duration::from_secs(40), async {
        while load.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        load.abort_all();
    }

    println!();
    println!(
        "== Soak: {:?} of mixed load, sampled every {:?}, slopes after a {:?} warm-up ==",
        settings.duration, settings.sample, settings.warmup
    );
    println!("{}", c_h1.line("HTTP/1.1"));
    println!("{}", c_h2.line("HTTP/2"));
    println!("{}", c_ws.line("WebSocket"));
    println!("{}", c_dl.line("1 MiB"));
    println!("{}", c_kick.line("kicks"));
    let windows = shared.windows.lock().expect("never poisoned").clone();
    let mut line = format!("HTTP/1.1 p99 per {:?} window (ms):", shared.window);
    for w in &windows {
        let mut w = w.clone();
        w.sort_unstable();
        let p99 = w
            .get(((w.len() as f64 - 1.0) * 0.99).round() as usize)
            .copied()
            .unwrap_or_default();
        let _ = write!(line, " {}", ms(p99));
    }
    println!("{line}");
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>10}",
        "series", "start", "end", "slope/min", "verdict (t)"
    );
    let warm = settings.warmup.as_secs_f64();
    let mut flat = true;
    for (process, samples) in [("gateway", &gw_samples), ("provider", &pv_samples)] {
        let kept: Vec<Sample> = samples.iter().copied().filter(|s| s.at_s >= warm).collect();
        if kept.len() < 3 {
            if !samples.is_empty() {
                println!("{process}: fewer than 3 samples after the warm-up: no verdict");
            }
            continue;
        }
        let run_min = (kept[kept.len() - 1].at_s - kept[0].at_s) / 60.0;
        for (series, value, allowed) in [
            (
                "RSS MiB",
                (|s: &Sample| s.rss / 1048576.0) as fn(&Sample) -> f64,
                Allowed::RelMean(0.05),
            ),
            ("open fds", |s: &Sample| s.fds, Allowed::Abs(2.0)),
            (
                "tokio tasks",
                |s: &Sample| s.tasks,
                Allowed::RelMeanPlus(0.01, 5.0),
            ),
        ] {
            let points: Vec<(f64, f64)> = kept.iter().map(|s| (s.at_s / 60.0, value(s))).collect();
            let (slope, t) = slope_t(&points);
            let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
            let growth = slope * run_min;
            let within = match allowed {
                Allowed::RelMean(f) => growth < f * mean,
                Allowed::Abs(a) => growth < a,
                Allowed::RelMeanPlus(f, a) => growth < f * mean + a,
            };
            let ok = within || t <= SIGNIFICANT_T;
            flat &= ok;
            println!(
                "{:<22} {:>12.1} {:>12.1} {:>12.3} {:>10}",
                format!("{process} {series}"),
                points[0].1,
                points[points.len() - 1].1,
                slope,
                format!("{} ({t:.1})", if ok { "flat" } else { "GROWS" })
            );
        }
        let cpu = kept[kept.len() - 1].cpu - kept[0].cpu;
        println!(
            "{process}: CPU {cpu:.1} s over {:.1} min after warm-up ({:.0} % of a core)",
            run_min,
            cpu / (run_min * 60.0) * 100.0
        );
    }
    if let Some(dir) = &settings.csv_dir {
        match write_csv(dir, &gw_samples, &pv_samples) {
            Ok(path) => println!("samples: {}", path.display()),
            Err(e) => println!("samples not written: {e:#}"),
        }
    }
    let errors = c_h1.errors() + c_h2.errors() + c_ws.errors() + c_dl.errors() + c_kick.errors();
    Ok(SoakReport {
        flat,
        errors,
        samples: gw_samples.len(),
        http1_ok: c_h1.ok.load(Ordering::Relaxed),
        websockets_ok: c_ws.ok.load(Ordering::Relaxed),
        downloads_ok: c_dl.ok.load(Ordering::Relaxed),
    })
}

#[derive(Debug, Clone, Copy)]
enum Allowed {
    RelMean(f64),
    Abs(f64),
    RelMeanPlus(f64, f64),
}

/// Calls `fire` every `period` until the deadline, spawning each call; at most 256 in flight.
async fn open_loop<F, Fut>(shared: Arc<Shared>, period: Duration, counts: Arc<Counts>, fire: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < shared.deadline {
        ticker.tick().await;
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counts.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let job = fire();
        tasks.spawn(async move {
            job.await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A slope this many standard errors above zero is a trend, not noise.
const SIGNIFICANT_T: f64 = 3.0;

/// Least-squares slope of `(x, y)` points and its t statistic (slope / standard error);
/// a perfect line has an infinite t, fewer than 3 points or no spread in x give (0, 0).
pub(crate) fn slope_t(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if n < 2.0 {
        return (0.0, 0.0);
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        return (0.0, 0.0);
    }
    let slope = sxy / sxx;
    if n < 3.0 {
        return (slope, 0.0);
    }
    let intercept = my - slope * mx;
    let residuals: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let se = (residuals / (n - 2.0) / sxx).sqrt();
    let t = if se == 0.0 {
        if slope == 0.0 {
            0.0
        } else {
            f64::INFINITY.copysign(slope)
        }
    } else {
        slope / se
    };
    (slope, t)
}

/// `GET url`'s body; a connection the daemon closed just as it was reused (keep-alive race)
/// is tried again, at most three times in all, rather than ending a 10-minute soak.
async fn metrics_text(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let mut attempt = 1;
    loop {
        let got = match client.get(url).send().await {
            Ok(resp) => resp.text().await.with_context(|| format!("read {url}")),
            Err(e) => Err(e).with_context(|| format!("GET {url}")),
        };
        match got {
            Ok(text) => return Ok(text),
            Err(e) if attempt < 3 => {
                eprintln!("soak: {e:#}; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn scrape(client: &reqwest::Client, url: &str, at_s: f64) -> anyhow::Result<Sample> {
    let text = metrics_text(client, url).await?;
    let value = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let need = |name: &str| value(name).with_context(|| format!("{url} has no `{name}`"));
    Ok(Sample {
        at_s,
        rss: need("process_resident_memory_bytes")?,
        fds: need("process_open_fds")?,
        tasks: need("tokio_alive_tasks")?,
        cpu: need("process_cpu_seconds_total")?,
    })
}

fn write_csv(
    dir: &std::path::Path,
    gateway: &[Sample],
    provider: &[Sample],
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let path = dir.join(format!("soak-{stamp}.csv"));
    let mut text = String::from("process,seconds,rss_bytes,open_fds,tokio_tasks,cpu_seconds\n");
    for (process, samples) in [("gateway", gateway), ("provider", provider)] {
        for s in samples {
            let _ = writeln!(
                text,
                "{process},{:.1},{},{},{},{:.2}",
                s.at_s, s.rss, s.fds, s.tasks, s.cpu
            );
        }
    }
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 + 2.0 * f64::from(i)))
            .collect();
        assert!((super::slope_t(&line).0 - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), if i % 2 == 0 { 5.0 } else { 6.0 }))
            .collect();
        assert!(super::slope_t(&flat).0.abs() < 0.1);
        assert_eq!(super::slope_t(&[(1.0, 1.0)]).0, 0.0);
    }

    #[test]
    fn a_steady_climb_is_significant_and_noise_is_not() {
        // A leak: +1 per step with a little noise.
        let leak: Vec<(f64, f64)> = (0..40)
            .map(|i| {
                (
                    f64::from(i),
                    f64::from(i) + if i % 2 == 0 { 0.5 } else { -0.5 },
                )
            })
            .collect();
        let (slope, t) = super::slope_t(&leak);
        assert!((slope - 1.0).abs() < 0.05, "{slope}");
        assert!(t > super::SIGNIFICANT_T, "{t}");
        // The soak's provider fds: 21..36 at random, no trend, a small positive fitted slope.
        let noise = [
            21.0, 22.0, 36.0, 27.0, 25.0, 22.0, 30.0, 24.0, 23.0, 27.0, 24.0, 26.0, 24.0, 22.0,
            26.0, 23.0, 31.0, 21.0, 23.0, 25.0, 29.0,
        ];
        let points: Vec<(f64, f64)> = noise
            .iter()
            .enumerate()
            .map(|(i, y)| (i as f64, *y))
            .collect();
        let (_, t) = super::slope_t(&points);
        assert!(t.abs() < super::SIGNIFICANT_T, "{t}");
        // A perfect line.
        let line: Vec<(f64, f64)> = (0..5).map(|i| (f64::from(i), f64::from(i))).collect();
        assert!(super::slope_t(&line).1.is_infinite());
    }
}
