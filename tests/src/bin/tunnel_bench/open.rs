//! Open loop at a fixed rate. A ticker thread (plain `std::thread::sleep`, finer than tokio's
//! 1 ms timer wheel) puts request i's scheduled instant `t0 + i / rate` on a queue; whichever
//! keep-alive connection is free takes it. Latency is measured from the *scheduled* instant, so
//! when the system stalls, every request that should have been sent meanwhile carries the
//! stall — coordinated omission is not hidden. The service time (from the actual send) and
//! the send lag (send − schedule) are reported beside it to show the generator kept up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use super::stats::Latencies;
use super::target::Target;

const MAX_RECONNECTS: u32 = 100;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct OpenLoop {
    pub(crate) rate: u32,
    pub(crate) duration: Duration,
    pub(crate) connections: usize,
    pub(crate) path: String,
}

/// What was measured.
#[derive(Debug)]
pub(crate) struct OpenResult {
    pub(crate) scheduled: u64,
    pub(crate) completed: u64,
    pub(crate) non_2xx: u64,
    pub(crate) errors: u64,
    /// From the scheduled instant to the end of the response body.
    pub(crate) latency: Latencies,
    /// From the actual send to the end of the response body.
    pub(crate) service: Latencies,
    /// Actual send − scheduled instant.
    pub(crate) lag: Latencies,
    pub(crate) elapsed: Duration,
}

impl OpenResult {
    pub(crate) fn achieved_rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Default)]
struct Tally {
    completed: u64,
    non_2xx: u64,
    errors: u64,
    last_done: Option<Instant>,
    latency: Latencies,
    service: Latencies,
    lag: Latencies,
}

pub(crate) async fn run(target: &Target, spec: &OpenLoop) -> anyhow::Result<OpenResult> {
    if spec.rate == 0 || spec.connections == 0 {
        bail!("open loop needs a rate and connections");
    }
    let total = (f64::from(spec.rate) * spec.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(spec.rate));

    // Connect and warm every connection with one request (not measured).
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let mut conn = target.connect().await?;
        conn.fetch(target.get(&spec.path))
            .await
            .with_context(|| format!("warm-up request to {}", target.label))?;
        conns.push(conn);
    }

    // One second of backlog: when it is full the ticker waits, and the wait still shows up
    // in the latency because it is measured from the scheduled instant.
    let (tx, rx) = mpsc::channel::<Instant>(usize::try_from(spec.rate).unwrap_or(1024).max(16));
    let rx = Arc::new(Mutex::new(rx));
    let t0 = Instant::now() + Duration::from_millis(10);
    let ticker = std::thread::Builder::new()
        .name("open-loop-ticker".into())
        .spawn(move || {
            for i in 0..total {
                let at = t0 + interval.mul_f64(i as f64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.blocking_send(at).is_err() {
                    break;
                }
            }
        })
        .context("start the ticker thread")?;

    let mut tasks = JoinSet::new();
    let per_conn = usize::try_from(total).unwrap_or(0) / spec.connections + 16;
    for mut conn in conns {
        let (target, path, rx) = (target.clone(), spec.path.clone(), rx.clone());
        tasks.spawn(async move {
            let mut tally = Tally {
                latency: Latencies::with_capacity(per_conn),
                service: Latencies::with_capacity(per_conn),
                lag: Latencies::with_capacity(per_conn),
                ..Tally::default()
            };
            let mut reconnects = 0;
            // Bounded: the ticker sends exactly `total` instants, then closes the queue.
            loop {
                let scheduled = { rx.lock().await.recv().await };
                let Some(scheduled) = scheduled else { break };
                let sent = Instant::now();
                match conn.fetch(target.get(&path)).await {
                    Ok((status, _)) => {
                        let done = Instant::now();
                        tally.completed += 1;
                        tally.non_2xx += u64::from(!status.is_success());
                        tally.latency.record(done - scheduled);
                        tally.service.record(done - sent);
                        tally.lag.record(sent.saturating_duration_since(scheduled));
                        tally.last_done = Some(done);
                    }
                    Err(_) => {
                        tally.errors += 1;
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

    // Only the workers hold the queue now: if they all stop, the ticker's send fails and it
    // stops too.
    drop(rx);
    let mut tally = Tally::default();
    let deadline = spec.duration + Duration::from_secs(90);
    tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            let t = joined.context("load task panicked")?;
            tally.completed += t.completed;
            tally.non_2xx += t.non_2xx;
            tally.errors += t.errors;
            tally.latency.merge(t.latency);
            tally.service.merge(t.service);
            tally.lag.merge(t.lag);
            tally.last_done = tally.last_done.max(t.last_done);
        }
        anyhow::Ok(())
    })
    .await
    .context("open loop did not finish in time")??;
    // Every worker has returned, so the queue's receiver is gone and the ticker has stopped.
    ticker
        .join()
        .map_err(|_| anyhow::anyhow!("ticker thread panicked"))?;
    Ok(OpenResult {
        scheduled: total,
        completed: tally.completed,
        non_2xx: tally.non_2xx,
        errors: tally.errors,
        latency: tally.latency.finish(),
        service: tally.service.finish(),
        lag: tally.lag.finish(),
        elapsed: tally.last_done.map_or(Duration::ZERO, |d| d - t0),
    })
}
