//! Many concurrent connections: open `count` connections (at most `parallel` handshakes at a
//! time), complete one request on each, and keep them all open so the caller can measure the
//! gateway while they are. Dropping [`Held`] closes them.
//!
//! With the gateway's connection cap reached (L2), [`refusals`] times how long one more
//! visitor waits to be turned away, and [`Held::answer_times`] times a request on
//! connections already held: what a legitimate visitor still gets.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::stats::Latencies;
use super::target::{Conn, Target};

const PER_CONN_TIMEOUT: Duration = Duration::from_secs(20);

/// The open connections and how opening them went.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) conns: Vec<Conn>,
    pub(crate) failed: usize,
    pub(crate) non_2xx: usize,
    /// Time to open all of them and complete one request on each.
    pub(crate) elapsed: Duration,
    pub(crate) first_error: Option<String>,
}

pub(crate) async fn open(target: &Target, count: usize, parallel: usize, path: &str) -> Held {
    let started = Instant::now();
    let mut attempts = futures_util::stream::iter(0..count)
        .map(|_| async move {
            tokio::time::timeout(PER_CONN_TIMEOUT, async {
                let mut conn = target.connect().await?;
                let (status, _) = conn.fetch(target.get(path)).await?;
                anyhow::Ok((conn, status))
            })
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {PER_CONN_TIMEOUT:?}"))?
        })
        .buffer_unordered(parallel.max(1));
    let mut held = Held {
        conns: Vec::with_capacity(count),
        failed: 0,
        non_2xx: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    };
    // Bounded: the stream yields exactly `count` items, each bounded by PER_CONN_TIMEOUT.
    while let Some(outcome) = attempts.next().await {
        match outcome {
            Ok((conn, status)) => {
                held.non_2xx += usize::from(!status.is_success());
                held.conns.push(conn);
            }
            Err(e) => {
                held.failed += 1;
                held.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    held.elapsed = started.elapsed();
    held
}

/// One more connection past the cap, `attempts` times in turn.
#[derive(Debug)]
pub(crate) struct Refusals {
    pub(crate) attempts: usize,
    /// Turned away (TCP or TLS closed, or reset), with the time from connect to the refusal.
    pub(crate) refused: usize,
    pub(crate) refusal_time: Latencies,
    /// Served anyway: the cap did not hold.
    pub(crate) answered: usize,
    /// Neither within [`PER_CONN_TIMEOUT`]: the slowest possible refusal.
    pub(crate) hung: usize,
}

/// Tries `attempts` new connections and a request on each, one at a time.
pub(crate) async fn refusals(target: &Target, attempts: usize, path: &str) -> Refusals {
    let mut out = Refusals {
        attempts,
        refused: 0,
        refusal_time: Latencies::with_capacity(attempts),
        answered: 0,
        hung: 0,
    };
    for _ in 0..attempts {
        let started = Instant::now();
        let outcome = tokio::time::timeout(PER_CONN_TIMEOUT, async {
            let mut conn = target.connect().await?;
            conn.fetch(target.get(path)).await
        })
        .await;
        match outcome {
            Ok(Ok(_)) => out.answered += 1,
            Ok(Err(_)) => {
                out.refused += 1;
                out.refusal_time.record(started.elapsed());
            }
            Err(_) => out.hung += 1,
        }
    }
    out.refusal_time = out.refusal_time.finish();
    out
}

/// Requests on held connections while the cap holds: how long each took, and how many failed
/// or were not 2xx.
#[derive(Debug)]
pub(crate) struct Answers {
    pub(crate) times: Latencies,
    pub(crate) failed: usize,
}

impl Held {
    /// `GET path` on `n` held connections spread over all of them, one after another.
    pub(crate) async fn answer_times(&mut self, target: &Target, n: usize, path: &str) -> Answers {
        let mut out = Answers {
            times: Latencies::with_capacity(n),
            failed: 0,
        };
        let step = (self.conns.len() / n.max(1)).max(1);
        for conn in self.conns.iter_mut().step_by(step).take(n) {
            let started = Instant::now();
            match tokio::time::timeout(PER_CONN_TIMEOUT, conn.fetch(target.get(path))).await {
                Ok(Ok((status, _))) if status.is_success() => {
                    out.times.record(started.elapsed());
                }
                _ => out.failed += 1,
            }
        }
        out.times = out.times.finish();
        out
    }
}
