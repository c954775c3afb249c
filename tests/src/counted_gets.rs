//! A bounded GET loop that says who answered: [`counted_gets`] sends a fixed number of GETs a
//! few at a time and counts each distinct (trimmed) body of a 200, listing every failure, for
//! the tests where several providers serve one name and each answers with its own body.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::within;

/// Runs `total` GETs of `url`, `concurrency` at a time; calls `at_half` once half have
/// completed. Returns each 200's body (trimmed) with its count, the failures (transport
/// errors, other statuses with their body), and the elapsed time. Each GET is bounded (30 s).
pub async fn counted_gets(
    client: &reqwest::Client,
    url: &str,
    total: usize,
    concurrency: usize,
    mut at_half: impl FnMut(),
) -> (BTreeMap<String, usize>, Vec<String>, Duration) {
    let started = Instant::now();
    let mut results = futures_util::stream::iter(0..total)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            async move {
                let resp = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let status = resp.status();
                let body = resp.text().await.map_err(|e| format!("{e:#}"))?;
                if status == 200 {
                    Ok(body.trim().to_owned())
                } else {
                    Err(format!("{status}: {body}"))
                }
            }
        })
        .buffer_unordered(concurrency);
    let (mut served, mut failed, mut done) = (BTreeMap::new(), Vec::new(), 0);
    while let Some(r) = within(30, "a GET", results.next()).await {
        match r {
            Ok(body) => *served.entry(body).or_insert(0) += 1,
            Err(e) => failed.push(e),
        }
        done += 1;
        if done == total / 2 {
            at_half();
        }
    }
    (served, failed, started.elapsed())
}
