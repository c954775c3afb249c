//! Closed loop: `connections` keep-alive connections, each sending its next request as soon as
//! the previous response body has been read, for a warm-up and then a measured duration.
//! Gives the saturation throughput (req/s) and the latency at that load.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::task::JoinSet;

use super::stats::Latencies;
use super::target::Target;

/// Upper bound on requests per connection, so no loop is unbounded in count.
const MAX_REQUESTS_PER_CONN: u64 = 50_000_000;
/// Connections opened at once before the loop starts.
const CONNECT_PARALLEL: usize = 32;
/// Reconnects a connection may need before it gives up.
const MAX_RECONNECTS: u32 = 100;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ClosedLoop {
    pub(crate) connections: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) path: String,
}

/// What was measured (requests started during the measured window only).
#[derive(Debug)]
pub(crate) struct ClosedResult {
    pub(crate) requests: u64,
    pub(crate) non_2xx: u64,
    /// How many of each non-2xx status.
    pub(crate) statuses: std::collections::BTreeMap<u16, u64>,
    /// The body of the first non-2xx answer.
    pub(crate) first_non_2xx: Option<String>,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Latencies,
}

impl ClosedResult {
    pub(crate) fn req_per_sec(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Default)]
struct ConnTally {
    requests: u64,
    non_2xx: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    first_non_2xx: Option<String>,
    errors: u64,
    last_done: Option<Instant>,
    latency: Latencies,
}

/// Connects every connection first (not measured), then runs the loop.
pub(crate) async fn run(target: &Target, spec: &ClosedLoop) -> anyhow::Result<ClosedResult> {
    // A few handshakes at a time: 1000 in turn would leave the first idle long enough for
    // the gateway's idle timeout (its header read timeout, 10 s) to close them.
    let conns: Vec<_> = futures_util::stream::iter(0..spec.connections)
        .map(|_| target.connect())
        .buffer_unordered(CONNECT_PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .with_context(|| format!("open a connection to {}", target.label))?;
    let measure_from = Instant::now() + spec.warmup;
    let end = measure_from + spec.duration;
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let target = target.clone();
        let path = spec.path.clone();
        tasks.spawn(async move {
            let mut tally = ConnTally {
                latency: Latencies::with_capacity(64 * 1024),
                ..ConnTally::default()
            };
            let mut reconnects = 0;
            for _ in 0..MAX_REQUESTS_PER_CONN {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let measured = start >= measure_from;
                let outcome = conn.fetch_detail(target.get(&path)).await;
                let done = Instant::now();
                match outcome {
                    Ok((status, _, said)) => {
                        if measured {
                            tally.requests += 1;
                            if !status.is_success() {
                                tally.non_2xx += 1;
                                *tally.statuses.entry(status.as_u16()).or_default() += 1;
                                if tally.first_non_2xx.is_none() {
                                    tally.first_non_2xx = said;
                                }
                            }
                            tally.latency.record(done - start);
                            tally.last_done = Some(done);
                        }
                    }
                    Err(_) => {
                        tally.errors += u64::from(measured);
                        reconnects += 1;
                        if reconnects > MAX_RECONNECTS {
                            break;
                        }
                        match target.connect().await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            tally
        });
    }
    let mut result = ClosedResult {
        requests: 0,
        non_2xx: 0,
        statuses: std::collections::BTreeMap::new(),
        first_non_2xx: None,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Latencies::with_capacity(0),
    };
    let mut last_done = measure_from;
    // Requests in flight at `end` finish within the gateway's own timeouts.
    let deadline = spec.warmup + spec.duration + Duration::from_secs(90);
    tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            let tally = joined.context("load task panicked")?;
            result.requests += tally.requests;
            result.non_2xx += tally.non_2xx;
            if result.first_non_2xx.is_none() {
                result.first_non_2xx = tally.first_non_2xx;
            }
            for (status, n) in tally.statuses {
                *result.statuses.entry(status).or_default() += n;
            }
            result.errors += tally.errors;
            result.latency.merge(tally.latency);
            last_done = last_done.max(tally.last_done.unwrap_or(measure_from));
        }
        anyhow::Ok(())
    })
    .await
    .context("closed loop did not finish in time")??;
    result.elapsed = last_done - measure_from;
    result.latency = result.latency.finish();
    Ok(result)
}
