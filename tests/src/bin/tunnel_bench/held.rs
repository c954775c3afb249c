//! Many concurrent connections: open `count` connections (at most `parallel` handshakes at a
//! time), complete one request on each, and keep them all open so the caller can measure the
//! gateway while they are. Dropping [`Held`] closes them.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

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
