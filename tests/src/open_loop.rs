//! Open-loop visitors and memory sampling for load and fault tests: GETs sent on a fixed
//! schedule whatever the answers take (so a slow gateway shows as latency, not as fewer
//! requests), their latency percentiles over a window, and this process's resident memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procfs;

/// One visitor request: when it started, how long it took, and its status (or the error).
#[derive(Debug, Clone)]
pub struct Visit {
    pub started: Instant,
    pub took: Duration,
    pub outcome: Result<(u16, String), String>,
}

/// Most requests one [`visit_loop`] sends.
pub const MAX_VISITS: usize = 200_000;

/// Sends GET `url` every `every` until `until` (or [`MAX_VISITS`]), without waiting for
/// answers (open loop).
pub fn visit_loop(
    client: reqwest::Client,
    url: String,
    every: Duration,
    until: Arc<Mutex<Option<Instant>>>,
    read_body: bool,
) -> tokio::task::JoinHandle<Vec<Visit>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut pending = Vec::new();
        loop {
            tick.tick().await;
            let stop = *until.lock().expect("until");
            if stop.is_some_and(|s| Instant::now() >= s) {
                break;
            }
            pending.push(tokio::spawn(visit(client.clone(), url.clone(), read_body)));
            // Bounded: at most 200,000 requests (17 minutes at 200/s).
            if pending.len() >= MAX_VISITS {
                break;
            }
        }
        let mut visits = Vec::new();
        for p in pending {
            visits.push(p.await.expect("visit task"));
        }
        visits
    })
}

/// One GET with a 12 s client timeout, past every gateway bound of the tests that use it (a
/// hang shows as an error). `read_body`: read a non-200 body, or any body, up to 5 s.
pub async fn visit(client: reqwest::Client, url: String, read_body: bool) -> Visit {
    let started = Instant::now();
    let resp = client
        .get(&url)
        .timeout(Duration::from_secs(12))
        .send()
        .await;
    let outcome = match resp {
        // The head is the answer; an endless body is dropped unread.
        Ok(r) if r.status() == 200 && !read_body => Ok((200, String::new())),
        Ok(r) => {
            let status = r.status().as_u16();
            let body = tokio::time::timeout(Duration::from_secs(5), r.text()).await;
            Ok((status, body.ok().and_then(Result::ok).unwrap_or_default()))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    Visit {
        started,
        took: started.elapsed(),
        outcome,
    }
}

/// The p99 latency of the visits started in `from..to`, and their count.
pub fn p99(visits: &[Visit], from: Instant, to: Instant) -> (Duration, usize) {
    let mut took: Vec<Duration> = visits
        .iter()
        .filter(|v| v.started >= from && v.started < to)
        .map(|v| v.took)
        .collect();
    took.sort();
    let n = took.len();
    let at = (n * 99).div_ceil(100).saturating_sub(1);
    (took.get(at).copied().unwrap_or_default(), n)
}

/// Samples this process's resident memory every 50 ms; returns the highest, in KiB.
pub fn rss_peak(stop: Arc<Mutex<bool>>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..2400 {
            let mem = procfs::memory(std::process::id()).expect("our own status");
            peak = peak.max(mem.rss_kib);
            if *stop.lock().expect("stop") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    })
}

/// This process's resident memory now, in KiB.
pub fn rss_kib() -> u64 {
    procfs::memory(std::process::id())
        .expect("our own status")
        .rss_kib
}
