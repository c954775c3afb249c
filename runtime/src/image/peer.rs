//! Peer-pinned images on this host. A release may pin `repo@sha256:<peer digest>`, the digest
//! of the image's canonical peer manifest (`oci` module) rather than of a registry manifest.
//! The engine does not know that digest, so a robot that fetched and loaded such an image
//! records `peer digest → image id` in [`PeerImages`] (`<home>/fleet/peer-images.json`,
//! written atomically) and starts the container by image id. Also here: `docker save` of an
//! image into a file ([`DockerRuntime::export_image`]) and `docker load` of one, checked
//! against the image id it must produce ([`DockerRuntime::load_image`]).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ImageError;
use crate::digest::PinnedImage;
use crate::engine::{DockerRuntime, engine_message};
use crate::image::ImageInfo;
use crate::oci::{Descriptor, PeerManifest, write_save_archive};

/// The record's file name inside the fleet directory.
pub const PEER_IMAGES_FILE: &str = "peer-images.json";
/// How long the engine may go without sending a byte of an export, or answering a load.
const TRANSFER_STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Read size when streaming an archive to the engine.
const LOAD_CHUNK: usize = 1 << 20;

/// An image could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("exporting image {image} from the engine failed: {detail}")]
    Export { image: String, detail: String },
    #[error("loading {archive} into the engine failed: {detail}")]
    Load { archive: String, detail: String },
    #[error(
        "the engine loaded {archive} but holds no image {expected}: the archive is not the image it claims to be"
    )]
    WrongImage { archive: String, expected: String },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Which peer digests this host loaded, and as which image id.
#[derive(Debug, Clone, Default)]
pub struct PeerImages {
    path: PathBuf,
    ids: BTreeMap<String, String>,
}

impl PeerImages {
    /// The record at `path` (`<fleet dir>/peer-images.json`); a missing file is an empty
    /// record, a damaged one is logged and started afresh (the images can be fetched again).
    pub fn open(path: &Path) -> PeerImages {
        let ids = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "peer image record is damaged; starting afresh");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "peer image record is unreadable; starting afresh");
                BTreeMap::new()
            }
        };
        PeerImages {
            path: path.to_owned(),
            ids,
        }
    }

    /// The image id recorded for `digest` (`sha256:…`).
    pub fn image_id(&self, digest: &str) -> Option<&str> {
        self.ids.get(digest).map(String::as_str)
    }

    /// Records `digest → image_id` and writes the file atomically (temp file, fsync, rename,
    /// fsync of the directory).
    pub fn record(&mut self, digest: &str, image_id: &str) -> Result<(), TransferError> {
        self.ids.insert(digest.to_owned(), image_id.to_owned());
        let bytes = serde_json::to_vec_pretty(&self.ids).expect("a map of strings serializes");
        write_atomic(&self.path, &bytes).map_err(|source| TransferError::File {
            what: "writing",
            path: self.path.clone(),
            source,
        })
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl DockerRuntime {
    /// The local image `pinned` names, if there is one: an image whose `RepoDigests` hold
    /// `repository@digest`, or the image [`PeerImages`] maps the digest to. The returned id
    /// is what a container must start from (the engine does not know a peer digest).
    pub async fn pinned_local(
        &self,
        pinned: &PinnedImage,
        peer_images: Option<&PeerImages>,
    ) -> Result<Option<ImageInfo>, ImageError> {
        let image = pinned.to_string();
        if let Some(id) = peer_images.and_then(|p| p.image_id(pinned.digest()))
            && let Some(inspect) = self.inspect_local(id).await?
            && inspect.id.as_deref() == Some(id)
        {
            return self.image_info(&image, inspect, false).map(Some);
        }
        match self.inspect_local(&image).await? {
            Some(inspect) if pinned.is_in(inspect.repo_digests.as_deref().unwrap_or_default()) => {
                self.image_info(&image, inspect, false).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Writes `docker save` of `image` (a name or an id) to `to`; returns the bytes written.
    pub async fn export_image(&self, image: &str, to: &Path) -> Result<u64, TransferError> {
        let file_error = |what, source| TransferError::File {
            what,
            path: to.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| file_error("creating", e))?;
        let mut export = self.docker.export_image(image);
        let mut written = 0u64;
        loop {
            let chunk = match tokio::time::timeout(TRANSFER_STALL_TIMEOUT, export.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(source))) => {
                    return Err(TransferError::Export {
                        image: image.to_owned(),
                        detail: engine_message(&source),
                    });
                }
                Err(_) => {
                    return Err(TransferError::Export {
                        image: image.to_owned(),
                        detail: format!("no data for {TRANSFER_STALL_TIMEOUT:?}"),
                    });
                }
            };
            file.write_all(&chunk)
                .await
                .map_err(|e| file_error("writing", e))?;
            written += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .map_err(|e| file_error("writing", e))?;
        Ok(written)
    }

    /// Streams the `docker load` archive at `archive` into the engine, then checks it now
    /// holds `expected_id` (the config digest the archive was built from).
    pub async fn load_image(&self, archive: &Path, expected_id: &str) -> Result<(), TransferError> {
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|source| TransferError::File {
                what: "opening",
                path: archive.to_owned(),
                source,
            })?;
        let body = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; LOAD_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        self.load_stream(body, &archive.display().to_string(), expected_id)
            .await
    }

    /// Loads the image `manifest` names from its verified blob files (`<blobs>/<hex>`, the
    /// config's among them), tagged `tags`: the `docker load` archive is built as the engine
    /// reads it, so nothing but the blobs is written to disk. Then the engine must hold the
    /// config digest as image id.
    pub async fn load_blobs(
        &self,
        manifest: &PeerManifest,
        blobs: &Path,
        tags: &[String],
    ) -> Result<(), TransferError> {
        let what = format!("the blobs of {}", manifest.digest);
        let path_of = |digest: &str| blobs.join(digest.trim_start_matches("sha256:"));
        let config_path = path_of(&manifest.config.digest);
        let config = tokio::fs::read(&config_path)
            .await
            .map_err(|source| TransferError::File {
                what: "reading",
                path: config_path,
                source,
            })?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let (manifest_copy, tags, blobs) = (manifest.clone(), tags.to_vec(), blobs.to_owned());
        let writer = tokio::task::spawn_blocking(move || {
            let open = |d: &Descriptor| {
                std::fs::File::open(blobs.join(d.digest.trim_start_matches("sha256:")))
            };
            let sink = ChannelWriter::new(tx.clone());
            let written = write_save_archive(sink, &manifest_copy, &config, &tags, open)
                .map_err(io::Error::other)
                .and_then(|mut sink| io::Write::flush(&mut sink));
            if let Err(e) = written {
                // The engine sees the stream fail and refuses the archive.
                let _ = tx.blocking_send(Err(e));
            }
        });
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let loaded = self.load_stream(body, &what, &manifest.config.digest).await;
        writer.await.map_err(|e| TransferError::Load {
            archive: what.clone(),
            detail: format!("building the archive: {e}"),
        })?;
        loaded
    }

    /// Streams a `docker load` archive into the engine and checks the image id it yields.
    async fn load_stream(
        &self,
        body: impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
        what: &str,
        expected_id: &str,
    ) -> Result<(), TransferError> {
        let load_error = |detail: String| TransferError::Load {
            archive: what.to_owned(),
            detail,
        };
        let options = ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut events = self
            .docker
            .import_image(options, bollard::body_try_stream(body), None);
        loop {
            match tokio::time::timeout(TRANSFER_STALL_TIMEOUT, events.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(event))) => {
                    if let Some(detail) = event.error_detail.and_then(|d| d.message) {
                        return Err(load_error(detail));
                    }
                }
                Ok(Some(Err(source))) => return Err(load_error(engine_message(&source))),
                Err(_) => {
                    return Err(load_error(format!(
                        "no answer for {TRANSFER_STALL_TIMEOUT:?}"
                    )));
                }
            }
        }
        match self.inspect_local(expected_id).await {
            Ok(Some(inspect)) if inspect.id.as_deref() == Some(expected_id) => Ok(()),
            Ok(_) => Err(TransferError::WrongImage {
                archive: what.to_owned(),
                expected: expected_id.to_owned(),
            }),
            Err(e) => Err(load_error(e.to_string())),
        }
    }
}

/// A `Write` (for the blocking archive builder) that sends [`LOAD_CHUNK`]-sized chunks down
/// a bounded channel to the engine's request body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(LOAD_CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(LOAD_CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = LOAD_CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == LOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_survives_a_reopen_and_a_damaged_file_starts_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet").join(PEER_IMAGES_FILE);
        let digest = format!("sha256:{}", "a".repeat(64));
        let id = format!("sha256:{}", "b".repeat(64));
        let mut record = PeerImages::open(&path);
        assert_eq!(record.image_id(&digest), None);
        record.record(&digest, &id).expect("written");
        assert_eq!(PeerImages::open(&path).image_id(&digest), Some(id.as_str()));
        std::fs::write(&path, b"{not json").expect("damage");
        assert_eq!(PeerImages::open(&path).image_id(&digest), None);
    }
}
