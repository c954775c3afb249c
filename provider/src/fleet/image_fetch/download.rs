//! Downloading one blob from one peer: `Blob{digest, offset}` on an image stream, the bytes
//! appended to `<blob>.partial` and hashed as they arrive (the partial's bytes first, when a
//! download resumes), the file renamed to the blob's name only when its sha256 is the digest
//! the manifest names. Also the progress meter ("from 12D3…xyz: 412/900 MB", at most once a
//! second).

use std::path::Path;
use std::time::{Duration, Instant};

use peercompute_fleet::{BlobDigest, ImageMessage};
use peercompute_p2p::{ImageStream, ImageStreamError, PeerId};
use peercompute_runtime::Descriptor;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

/// Progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Read size while a blob streams.
const CHUNK: usize = 256 * 1024;

/// What a source did wrong, or why it could not finish.
pub(super) enum BlobFailure {
    /// It sent bytes that are not the blob (dropped as a source).
    Bad(String),
    /// It could not finish (kept: the `.partial` file resumes with the next source).
    Unfinished(String),
    /// Writing it on this robot failed (a full disk, …): not the peer's fault, and no other
    /// source would do better, so the fetch stops.
    Local(std::io::Error),
}

/// Downloads `blob` from `peer` over `stream` into `path` (through `<path>.partial`,
/// resumed from its length).
pub(super) async fn download(
    mut stream: ImageStream,
    peer: PeerId,
    blob: &Descriptor,
    path: &Path,
    meter: &mut Meter,
    progress: &mut (impl FnMut(String) + Send),
) -> Result<(), BlobFailure> {
    let unfinished = |e: String| BlobFailure::Unfinished(e);
    let local = BlobFailure::Local;
    let partial = path.with_extension("partial");
    if let Some(dir) = partial.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(local)?;
    }
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    if let Ok(bytes) = tokio::fs::read(&partial).await
        && (bytes.len() as u64) <= blob.size
    {
        hasher.update(&bytes);
        offset = bytes.len() as u64;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .await
        .map_err(local)?;
    file.set_len(offset).await.map_err(local)?;
    let digest: BlobDigest = blob
        .digest
        .parse()
        .map_err(|e: peercompute_fleet::BadDigest| BlobFailure::Bad(e.to_string()))?;
    let wire = |e: ImageStreamError| BlobFailure::Unfinished(e.to_string());
    stream
        .write(&ImageMessage::Blob { digest, offset })
        .await
        .map_err(wire)?;
    match stream.read().await.map_err(wire)? {
        Some(ImageMessage::BlobStart { size }) if size == blob.size - offset => {}
        Some(ImageMessage::BlobStart { size }) => {
            return Err(BlobFailure::Bad(format!(
                "announced {size} bytes from offset {offset} of a {}-byte blob",
                blob.size
            )));
        }
        other => {
            let what = other.map_or("nothing", |m| m.name());
            return Err(unfinished(format!(
                "answered {what} for blob {}",
                blob.digest
            )));
        }
    }
    meter.done += offset;
    let mut left = blob.size - offset;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = stream.read_raw(&mut buf[..want]).await.map_err(wire)?;
        if n == 0 {
            return Err(unfinished(format!("the stream ended {left} bytes short")));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await.map_err(local)?;
        left -= n as u64;
        meter.done += n as u64;
        meter.tick(peer, progress);
    }
    stream.close().await;
    // `flush` returns the error of a write tokio ran in the background (ENOSPC on the last
    // chunk); `sync_all` alone does not, and a blob the disk refused would be renamed into
    // place as verified — the hash is of the bytes received, not of the file.
    file.flush().await.map_err(local)?;
    file.sync_all().await.map_err(local)?;
    let stored = file.metadata().await.map_err(local)?.len();
    if stored != blob.size {
        return Err(BlobFailure::Local(std::io::Error::other(format!(
            "{} holds {stored} bytes of the {}-byte blob {}",
            partial.display(),
            blob.size,
            blob.digest
        ))));
    }
    let found = format!("sha256:{}", hex::encode(hasher.finalize()));
    if found != blob.digest {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(BlobFailure::Bad(format!(
            "blob {} hashed to {found}",
            blob.digest
        )));
    }
    tokio::fs::rename(&partial, path).await.map_err(local)?;
    Ok(())
}

/// Bytes done of the whole image, and when progress was last reported.
pub(super) struct Meter {
    pub(super) done: u64,
    total: u64,
    last: Option<Instant>,
}

impl Meter {
    pub(super) fn new(total: u64) -> Self {
        Meter {
            done: 0,
            total,
            last: None,
        }
    }

    pub(super) fn tick(&mut self, peer: PeerId, progress: &mut impl FnMut(String)) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < PROGRESS_EVERY) && self.done < self.total {
            return;
        }
        self.last = Some(now);
        progress(progress_line(&peer.to_string(), self.done, self.total));
    }
}

/// "from 12D3…xyz: 412/900 MB".
fn progress_line(peer: &str, done: u64, total: u64) -> String {
    let short = match (peer.get(..4), peer.get(peer.len().saturating_sub(3)..)) {
        (Some(head), Some(tail)) if peer.len() > 8 => format!("{head}…{tail}"),
        _ => peer.to_owned(),
    };
    let mb = |b: u64| b / 1_000_000;
    format!("from {short}: {}/{} MB", mb(done), mb(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_names_the_peer_briefly_and_counts_megabytes() {
        let peer = "12D3KooWGzBsgmrnAYwPJ4pBaEacvYeWrPWR9d2rSdnh6NPEtbTL";
        assert_eq!(
            progress_line(peer, 412_000_000, 900_500_000),
            "from 12D3…bTL: 412/900 MB"
        );
        assert_eq!(progress_line("short", 0, 0), "from short: 0/0 MB");
    }

    #[test]
    fn progress_is_reported_at_most_once_a_second_but_always_at_the_end() {
        let mut lines = Vec::new();
        let mut meter = Meter::new(100);
        let peer = PeerId::random();
        for done in [10, 20, 30] {
            meter.done = done;
            meter.tick(peer, &mut |l| lines.push(l));
        }
        assert_eq!(lines.len(), 1, "{lines:?}");
        meter.done = 100;
        meter.tick(peer, &mut |l| lines.push(l));
        assert_eq!(lines.len(), 2, "the last tick reports");
    }
}
