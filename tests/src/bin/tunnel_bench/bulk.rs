//! Bulk download: one request for `/download?bytes=N` on a fresh connection, the body hashed
//! as it arrives (SHA-256) and counted; timed from the request to the last byte.

use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use super::target::Target;

/// What was measured.
#[derive(Debug)]
pub(crate) struct BulkResult {
    pub(crate) expected_bytes: u64,
    pub(crate) bytes: u64,
    pub(crate) sha_ok: bool,
    pub(crate) status: u16,
    pub(crate) elapsed: Duration,
}

impl BulkResult {
    pub(crate) fn ok(&self) -> bool {
        self.status == 200 && self.sha_ok && self.bytes == self.expected_bytes
    }

    pub(crate) fn gbit_per_sec(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// Downloads `bytes` and compares with `expected_sha256` (hex).
pub(crate) async fn run(
    target: &Target,
    bytes: u64,
    expected_sha256: &str,
) -> anyhow::Result<BulkResult> {
    let mut conn = target.connect().await?;
    // Generous: 1 GiB at 100 Mbit/s takes 86 s.
    let limit = Duration::from_secs(60) + Duration::from_secs_f64(bytes as f64 / 12.5e6);
    let started = Instant::now();
    let (status, got, digest) = tokio::time::timeout(limit, async {
        let resp = conn
            .send(target.get(&format!("/download?bytes={bytes}")))
            .await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.context("download body")?.data_ref() {
                hasher.update(data);
                got += data.len() as u64;
            }
        }
        anyhow::Ok((status, got, hex::encode(hasher.finalize())))
    })
    .await
    .with_context(|| format!("download from {} took longer than {limit:?}", target.label))??;
    let elapsed = started.elapsed();
    Ok(BulkResult {
        expected_bytes: bytes,
        bytes: got,
        sha_ok: digest == expected_sha256,
        status,
        elapsed,
    })
}
