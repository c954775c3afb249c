//! The visitor workload of the packet-loss test (`tests/tests/tunnel_loss.rs`) and of
//! `tunnel-bench --loss`: SHA-256-checked downloads and uploads, and a closed loop of GETs,
//! each request bounded by a timeout (a request past it counts as hung, never waits for ever).
//! Everything runs against the harness backend's `/download`, `/upload` and `/` through a
//! gateway URL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::backend::download_sha256;

/// An HTTP/1.1 client that trusts `ca_pem` and resolves `host` to `https` (the gateway).
pub fn client(ca_pem: &[u8], https: SocketAddr, host: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(ca_pem, b"http/1.1")?)
        .http1_only()
        .no_proxy()
        .resolve(host, https)
        .build()?)
}

/// [`client`] speaking HTTP/2 (ALPN `h2`): requests share one connection.
pub fn client_h2(ca_pem: &[u8], https: SocketAddr, host: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(ca_pem, b"h2")?)
        .no_proxy()
        .resolve(host, https)
        .build()?)
}

/// TLS trusting `ca_pem`, offering `alpn`.
pub fn tls_config(ca_pem: &[u8], alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// Opens a WebSocket to `wss://{host}:{port}/socket` through the gateway at `https`, has
/// `rounds` text messages echoed, and closes it.
pub async fn websocket_echo(
    tls: Arc<rustls::ClientConfig>,
    https: SocketAddr,
    host: &str,
    rounds: usize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let tcp = tokio::net::TcpStream::connect(https).await?;
    let sni = rustls::pki_types::ServerName::try_from(host.to_owned())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(sni, tcp)
        .await?;
    let url = format!("wss://{host}:{}/socket", https.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    for i in 0..rounds {
        let msg = format!("soak {i}");
        ws.send(Message::text(msg.clone())).await?;
        let echo = ws.next().await.context("closed before the echo")??;
        anyhow::ensure!(
            echo.into_text()?.as_str() == msg,
            "the echo differs from what was sent"
        );
    }
    ws.close(None).await?;
    Ok(())
}

/// One body transfer.
#[derive(Debug, Clone, Default)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
    /// Status 200 and the SHA-256 of the body is the expected one.
    pub intact: bool,
    /// An answer came but was wrong (status, length or hash).
    pub corrupted: bool,
    /// No complete answer within the timeout, or the connection failed.
    pub hung: bool,
    /// Why it hung: the timeout, or the client's error.
    pub error: Option<String>,
}

impl Transfer {
    /// A transfer started at `started` that got `(bytes, intact)` as its answer, or none in
    /// time (hung).
    fn judge(started: Instant, answer: Result<(u64, bool), String>) -> Self {
        let elapsed = started.elapsed();
        match answer {
            Ok((bytes, intact)) => Self {
                bytes,
                elapsed,
                intact,
                corrupted: !intact,
                hung: false,
                error: None,
            },
            Err(e) => Self {
                elapsed,
                hung: true,
                error: Some(e),
                ..Self::default()
            },
        }
    }

    /// Body bytes per second, in MB/s (10^6).
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// `GET {base}/download?bytes=N`, hashing the body as it arrives. A download that does not
/// complete within `limit` says how many bytes had arrived and when the last did, so a slow
/// transfer and a stalled one read differently.
pub async fn download(
    client: &reqwest::Client,
    base: &str,
    bytes: u64,
    limit: Duration,
) -> Transfer {
    let started = Instant::now();
    // Bytes received so far and the time of the last chunk, in ms since `started`.
    let progress = (AtomicU64::new(0), AtomicU64::new(0));
    let fetch = async {
        let resp = client
            .get(format!("{base}/download?bytes={bytes}"))
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let status = resp.status();
        let mut body = resp.bytes_stream();
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("after {n} bytes: {e:#}"))?;
            n += chunk.len() as u64;
            hasher.update(&chunk);
            progress.0.store(n, Ordering::Relaxed);
            let at = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            progress.1.store(at, Ordering::Relaxed);
        }
        Ok::<_, String>((status, n, hex::encode(hasher.finalize())))
    };
    let outcome = tokio::time::timeout(limit, fetch).await.map_err(|_| {
        let got = progress.0.load(Ordering::Relaxed);
        let last = Duration::from_millis(progress.1.load(Ordering::Relaxed));
        format!(
            "no complete answer within {limit:?}: {got} of {bytes} bytes had arrived, the last {:.1} s before the limit",
            limit.saturating_sub(last).as_secs_f64()
        )
    });
    Transfer::judge(
        started,
        outcome.and_then(|r| r).map(|(status, n, sha)| {
            let intact = status == 200 && n == bytes && sha == download_sha256(bytes);
            (n, intact)
        }),
    )
}

/// `POST {base}/upload` of `bytes` bytes; the backend answers the SHA-256 and length it got.
pub async fn upload(client: &reqwest::Client, base: &str, bytes: u64, limit: Duration) -> Transfer {
    let body: Vec<u8> = (0..bytes).map(|i| (i % 253) as u8).collect();
    let expected = format!("{} {bytes}", hex::encode(Sha256::digest(&body)));
    let started = Instant::now();
    let send = async {
        let resp = client
            .post(format!("{base}/upload"))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{e:#}"))?;
        Ok::<_, String>((status, text))
    };
    let outcome = tokio::time::timeout(limit, send).await;
    Transfer::judge(
        started,
        flatten(outcome, limit)
            .map(|(status, text)| (bytes, status == 200 && text.trim() == expected)),
    )
}

/// A timed-out or failed answer as the reason.
fn flatten<T>(
    outcome: Result<Result<T, String>, tokio::time::error::Elapsed>,
    limit: Duration,
) -> Result<T, String> {
    outcome.map_err(|_| format!("no complete answer within {limit:?}"))?
}

/// A closed loop of GETs: `concurrency` workers, each sending the next request when the last
/// one answered, until `max_requests` were sent or `duration` passed.
#[derive(Debug, Clone, Copy)]
pub struct GetPlan {
    pub concurrency: usize,
    pub max_requests: usize,
    pub duration: Duration,
    /// Per request; past it the request counts as hung.
    pub timeout: Duration,
}

/// What a [`GetPlan`] got.
#[derive(Debug, Clone, Default)]
pub struct GetLoop {
    pub ok: usize,
    pub non_200: usize,
    /// Transport errors before the timeout (reset, refused).
    pub failed: usize,
    pub hung: usize,
    pub elapsed: Duration,
    /// Latency of each answered request, sorted.
    pub latencies: Vec<Duration>,
}

impl GetLoop {
    pub fn sent(&self) -> usize {
        self.ok + self.non_200 + self.failed + self.hung
    }

    pub fn req_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile (0..=100) of answered latencies; zero without any.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

/// Runs `plan` against `url`.
pub async fn get_loop(client: &reqwest::Client, url: &str, plan: GetPlan) -> GetLoop {
    let started = Instant::now();
    let deadline = started + plan.duration;
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (client, url, issued) = (client.clone(), url.to_owned(), issued.clone());
        workers.spawn(async move {
            let mut mine = GetLoop::default();
            while Instant::now() < deadline
                && issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < plan.max_requests
            {
                let sent = Instant::now();
                let answer = tokio::time::timeout(plan.timeout, async {
                    let resp = client.get(&url).send().await?;
                    let status = resp.status();
                    resp.bytes().await.map(|_| status)
                })
                .await;
                match answer {
                    Ok(Ok(status)) if status == 200 => {
                        mine.ok += 1;
                        mine.latencies.push(sent.elapsed());
                    }
                    Ok(Ok(_)) => mine.non_200 += 1,
                    Ok(Err(_)) => mine.failed += 1,
                    Err(_) => mine.hung += 1,
                }
            }
            mine
        });
    }
    let mut all = GetLoop::default();
    while let Some(done) = workers.join_next().await {
        let Ok(mine) = done else {
            all.failed += 1;
            continue;
        };
        all.ok += mine.ok;
        all.non_200 += mine.non_200;
        all.failed += mine.failed;
        all.hung += mine.hung;
        all.latencies.extend(mine.latencies);
    }
    all.elapsed = started.elapsed();
    all.latencies.sort_unstable();
    all
}

/// Milliseconds with one decimal, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}
