//! Getting a release's image onto this robot when it is pinned by a peer digest (plan §5).
//! [`ImageFetcher::ensure`] first looks on the host (`RepoDigests` or the peer-image record).
//! Otherwise it asks the fleet's connected peers and the release's author in parallel for the
//! image (`Want`): LAN peers first, then the author, then the rest. The first answer whose
//! manifest hashes to the pinned digest and is canonical wins, and every peer that has it is a
//! source. Each blob is downloaded into `<fleet dir>/images/blobs/sha256/<hex>.partial`
//! (resumed from its length), hashed while it streams and renamed only when its sha256 is
//! the one the manifest names; a peer that sends a wrong blob is dropped and the next source
//! asked. Then a `docker load` archive is written from the blobs and loaded, the engine must
//! report the manifest's config digest as the image id, and `peer-images.json` records
//! `digest → id`. The container is started by that id. When no peer has the image the
//! registry is tried (today's pull): the registry is the last resort for a peer digest, and
//! the first path for a registry digest, which no peer can prove.
//!
//! The verified blobs and manifests stay on disk, and [`ImageFetcher::shelf`] serves them to
//! other members (robots on a LAN fetch from each other).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use peercompute_fleet::{BlobDigest, FleetId, ImageMessage, MemberKey};
use peercompute_p2p::fleet_hub::FleetHub;
use peercompute_p2p::{
    BlobSource, ImageShelf, ImageStream, ImageStreamError, Node, PathKind, PeerId, image_protocol,
};
use peercompute_runtime::{
    DockerRuntime, ImageInfo, PEER_IMAGES_FILE, PeerImages, PeerManifest, PinnedImage,
};
use tracing::{info, warn};

mod download;

use download::{BlobFailure, Meter, download};

/// How long a peer may take to answer `Want` (or to be dialled, for the author).
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer-pinned image could not be fetched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("no fleet peer has the image {digest} (asked {asked}: {reasons})")]
    NoPeerHasIt {
        digest: String,
        asked: usize,
        reasons: String,
    },
    #[error("every peer that had the image {digest} failed: {reasons}")]
    AllSourcesFailed { digest: String, reasons: String },
    #[error("{0}")]
    Local(String),
    /// This robot's disk is full: the fetch resumes (`.partial` files kept) once it is not.
    #[error(
        "no space left on this robot to store the image in {}: {error}; free space on it and the release is applied by itself",
        .path.display()
    )]
    NoSpace {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl FetchError {
    /// A write on this robot failed: [`FetchError::NoSpace`] when its disk (or quota) is
    /// full, else [`FetchError::Local`].
    fn on_disk(path: &Path, error: std::io::Error) -> Self {
        use std::io::ErrorKind;
        if matches!(
            error.kind(),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded
        ) {
            Self::NoSpace {
                path: path.to_owned(),
                error,
            }
        } else {
            Self::Local(format!("{}: {error}", path.display()))
        }
    }
}

/// Why [`ImageFetcher::ensure`] gave no image.
#[derive(Debug)]
pub(crate) struct EnsureError {
    /// What failed, for the release's status.
    pub(crate) reason: String,
    /// This robot's disk was full: worth trying again once it is not.
    pub(crate) no_space: bool,
}

/// One try's failure: the reason, whether asking again may help (no source had it yet), and
/// whether this robot's disk was full.
struct Failure {
    why: String,
    again: bool,
    no_space: bool,
}

impl Failure {
    /// A failure asking again would not mend.
    fn last(why: String) -> Self {
        Self {
            why,
            again: false,
            no_space: false,
        }
    }
}

/// How long a robot keeps asking for an image no source could give yet: the releaser may
/// still be reaching the robots, or a robot that has it may be on its way back.
const FETCH_PATIENCE: Duration = Duration::from_secs(60);
/// The first wait before asking again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Fetches peer-pinned images and keeps the verified blobs to serve them.
pub(crate) struct ImageFetcher {
    node: Node,
    hub: FleetHub,
    dir: PathBuf,
    record: Mutex<PeerImages>,
    shelf: ImageShelf,
}

impl ImageFetcher {
    /// A fetcher keeping its files under `fleet_dir` (`images/`, `peer-images.json`); the
    /// images verified earlier go back on the shelf.
    pub(crate) fn new(node: Node, hub: FleetHub, fleet_dir: &Path) -> Self {
        let fetcher = ImageFetcher {
            node,
            hub,
            dir: fleet_dir.join("images"),
            record: Mutex::new(PeerImages::open(&fleet_dir.join(PEER_IMAGES_FILE))),
            shelf: ImageShelf::default(),
        };
        fetcher.restock();
        fetcher
    }

    /// The images this robot serves to other members.
    pub(crate) fn shelf(&self) -> ImageShelf {
        self.shelf.clone()
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn manifest_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("manifests")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Puts every stored image whose blobs are all present on the shelf.
    fn restock(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("manifests")) else {
            return;
        };
        for entry in entries.flatten() {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            match std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| PeerManifest::parse(&bytes, &digest).map_err(|e| e.to_string()))
            {
                Ok(manifest) => self.shelve(&manifest),
                Err(error) => warn!(%digest, %error, "a stored image manifest is unusable"),
            }
        }
    }

    fn shelve(&self, manifest: &PeerManifest) {
        let mut blobs = Vec::new();
        for blob in manifest.blobs() {
            let path = self.blob_path(&blob.digest);
            let (Ok(digest), true) = (blob.digest.parse::<BlobDigest>(), path.is_file()) else {
                return;
            };
            blobs.push((
                digest,
                BlobSource {
                    path,
                    offset: 0,
                    size: blob.size,
                },
            ));
        }
        if let Ok(digest) = manifest.digest.parse() {
            self.shelf.add(digest, manifest.bytes.clone(), blobs);
        }
    }

    /// Makes sure the image `pinned` names is on the host and returns it (start the
    /// container from `info.id`): local, else from fleet peers, else from the registry.
    /// `progress` gets "from 12D3…xyz: 412/900 MB" at most once a second.
    pub(crate) async fn ensure(
        &self,
        runtime: &DockerRuntime,
        fleet: FleetId,
        pinned: &PinnedImage,
        author: MemberKey,
        mut progress: impl FnMut(String) + Send,
    ) -> Result<ImageInfo, EnsureError> {
        let started = tokio::time::Instant::now();
        let mut wait = RETRY_FIRST;
        loop {
            match self
                .ensure_once(runtime, fleet, pinned, author, &mut progress)
                .await
            {
                Ok(info) => return Ok(info),
                Err(Failure {
                    why, again: true, ..
                }) if started.elapsed() + wait < FETCH_PATIENCE => {
                    info!(image = %pinned, reason = %why, retry_in = ?wait, "no source gave the image yet");
                    progress(format!(
                        "waiting for a source of the image (asking again in {} s): {why}",
                        wait.as_secs()
                    ));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err(Failure { why, no_space, .. }) => {
                    return Err(EnsureError {
                        reason: why,
                        no_space,
                    });
                }
            }
        }
    }

    /// One try of [`ImageFetcher::ensure`]; an error says whether trying again may help (no
    /// peer had it or could give it, and no registry did).
    async fn ensure_once(
        &self,
        runtime: &DockerRuntime,
        fleet: FleetId,
        pinned: &PinnedImage,
        author: MemberKey,
        progress: &mut (impl FnMut(String) + Send),
    ) -> Result<ImageInfo, Failure> {
        let record = self.record_snapshot();
        if let Some(info) = runtime
            .pinned_local(pinned, Some(&record))
            .await
            .map_err(|e| Failure::last(e.to_string()))?
        {
            return Ok(info);
        }
        let mut again = false;
        let mut no_space = false;
        let from_peers = match self.fetch(runtime, fleet, pinned, author, progress).await {
            Ok(()) => {
                let record = self.record_snapshot();
                match runtime.pinned_local(pinned, Some(&record)).await {
                    Ok(Some(info)) => return Ok(info),
                    Ok(None) => "the loaded image is gone from the engine".to_owned(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => {
                again = !matches!(e, FetchError::Local(_) | FetchError::NoSpace { .. });
                no_space = matches!(e, FetchError::NoSpace { .. });
                e.to_string()
            }
        };
        info!(image = %pinned, reason = %from_peers, "not from peers; trying the registry");
        runtime
            .ensure_pinned(pinned, |_| {})
            .await
            .map_err(|e| Failure {
                why: format!("{from_peers}; registry: {e}"),
                again,
                no_space,
            })
    }

    /// What a container of `pinned` starts from: the image id for a peer-pinned image (the
    /// engine knows no peer digest), else the pinned reference as ever.
    pub(crate) fn start_reference(&self, pinned: &PinnedImage, info: &ImageInfo) -> String {
        let record = self
            .record
            .lock()
            .expect("the record lock is never poisoned");
        if record.image_id(pinned.digest()).is_some() {
            info.id.clone()
        } else {
            pinned.to_string()
        }
    }

    fn record_snapshot(&self) -> PeerImages {
        self.record
            .lock()
            .expect("the record lock is never poisoned")
            .clone()
    }

    /// Fetches, verifies and loads the image from peers.
    async fn fetch(
        &self,
        runtime: &DockerRuntime,
        fleet: FleetId,
        pinned: &PinnedImage,
        author: MemberKey,
        progress: &mut (impl FnMut(String) + Send),
    ) -> Result<(), FetchError> {
        let digest = pinned.digest().to_owned();
        let wanted: BlobDigest = digest
            .parse()
            .map_err(|e: peercompute_fleet::BadDigest| FetchError::Local(e.to_string()))?;
        let candidates = self.candidates(fleet, author).await;
        let (manifest, mut sources, refusals) = self.ask_all(&candidates, wanted, &digest).await;
        let Some(manifest) = manifest else {
            return Err(FetchError::NoPeerHasIt {
                digest,
                asked: candidates.len(),
                reasons: if refusals.is_empty() {
                    "no fleet peer is connected".to_owned()
                } else {
                    refusals.join("; ")
                },
            });
        };
        let total: u64 = manifest.blobs().iter().map(|b| b.size).sum();
        let mut meter = Meter::new(total);
        let mut failures = Vec::new();
        for blob in manifest.blobs() {
            let path = self.blob_path(&blob.digest);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && m.len() == blob.size => {
                    meter.done += blob.size;
                    continue;
                }
                // A stored blob of the wrong size (an older build could keep one its disk
                // cut short) is fetched again.
                Ok(_) => {
                    warn!(path = %path.display(), blob = %blob.digest, "a stored blob has the wrong size; fetching it again");
                    let _ = std::fs::remove_file(&path);
                }
                Err(_) => {}
            }
            loop {
                let before = meter.done;
                let Some(&peer) = sources.first() else {
                    return Err(FetchError::AllSourcesFailed {
                        digest,
                        reasons: failures.join("; "),
                    });
                };
                let stream = match self.open(peer).await {
                    Ok(stream) => stream,
                    Err(why) => {
                        failures.push(format!("{peer}: {why}"));
                        sources.rotate_left(1);
                        if failures.len() > 4 * candidates.len().max(1) {
                            return Err(FetchError::AllSourcesFailed {
                                digest,
                                reasons: failures.join("; "),
                            });
                        }
                        continue;
                    }
                };
                match download(stream, peer, &blob, &path, &mut meter, progress).await {
                    Ok(()) => break,
                    Err(BlobFailure::Bad(why)) => {
                        meter.done = before;
                        warn!(%peer, blob = %blob.digest, %why, "a peer sent a bad blob; dropping it as a source");
                        failures.push(format!("{peer}: {why}"));
                        sources.remove(0);
                    }
                    Err(BlobFailure::Local(e)) => return Err(FetchError::on_disk(&path, e)),
                    Err(BlobFailure::Unfinished(why)) => {
                        meter.done = before;
                        failures.push(format!("{peer}: {why}"));
                        sources.rotate_left(1);
                        if failures.len() > 4 * candidates.len().max(1) {
                            return Err(FetchError::AllSourcesFailed {
                                digest,
                                reasons: failures.join("; "),
                            });
                        }
                    }
                }
            }
        }
        self.load(runtime, pinned, &manifest).await
    }

    /// Fleet peers to ask, best first: connected LAN peers, the author, the others connected.
    async fn candidates(&self, fleet: FleetId, author: MemberKey) -> Vec<PeerId> {
        let me = self.node.peer_id();
        let keys: Vec<MemberKey> = self
            .hub
            .with_log(&fleet, |log| {
                log.state()
                    .map(|s| s.members.keys().chain(s.grants.keys()).copied().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let author = author.peer_id();
        let mut lan = Vec::new();
        let mut other = Vec::new();
        for peer in keys.iter().filter_map(MemberKey::peer_id) {
            if peer == me || Some(peer) == author || lan.contains(&peer) || other.contains(&peer) {
                continue;
            }
            match self.node.path(peer).await.map(|p| p.kind) {
                Some(PathKind::DirectLan) => lan.push(peer),
                Some(_) => other.push(peer),
                None => {}
            }
        }
        lan.extend(author.filter(|a| *a != me));
        lan.extend(other);
        lan
    }

    /// Asks every candidate for the image at once: the first valid manifest, the peers that
    /// have it (in candidate order) and the refusals.
    async fn ask_all(
        &self,
        candidates: &[PeerId],
        wanted: BlobDigest,
        digest: &str,
    ) -> (Option<PeerManifest>, Vec<PeerId>, Vec<String>) {
        let asks = candidates.iter().map(|&peer| async move {
            let answer = tokio::time::timeout(ASK_TIMEOUT, self.want(peer, wanted)).await;
            (
                peer,
                answer.unwrap_or_else(|_| Err("no answer in time".to_owned())),
            )
        });
        let answers = futures::future::join_all(asks).await;
        let (mut manifest, mut sources, mut refusals) = (None, Vec::new(), Vec::new());
        for (peer, answer) in answers {
            match answer.and_then(|bytes| {
                PeerManifest::parse(&bytes, digest).map_err(|e| format!("a bad manifest: {e}"))
            }) {
                Ok(m) => {
                    manifest.get_or_insert(m);
                    sources.push(peer);
                }
                Err(why) => refusals.push(format!("{peer}: {why}")),
            }
        }
        (manifest, sources, refusals)
    }

    async fn open(&self, peer: PeerId) -> Result<ImageStream, String> {
        let stream = self
            .node
            .control()
            .open_stream(peer, image_protocol())
            .await
            .map_err(|e| format!("no image stream: {e}"))?;
        Ok(ImageStream::new(stream))
    }

    /// The manifest bytes `peer` has for `digest`.
    async fn want(&self, peer: PeerId, digest: BlobDigest) -> Result<Vec<u8>, String> {
        let mut stream = self.open(peer).await?;
        let wire = |e: ImageStreamError| e.to_string();
        stream
            .write(&ImageMessage::Want { digest })
            .await
            .map_err(wire)?;
        let answer = stream.read().await.map_err(wire)?;
        stream.close().await;
        match answer {
            Some(ImageMessage::Have { manifest, .. }) => Ok(manifest),
            Some(ImageMessage::NotHere) => Err("does not have it".to_owned()),
            Some(ImageMessage::Error { message }) => Err(message),
            Some(other) => Err(format!("answered {}", other.name())),
            None => Err("closed the stream".to_owned()),
        }
    }

    /// Loads the image from the verified blobs (the archive streamed to the engine), records
    /// and shelves it.
    async fn load(
        &self,
        runtime: &DockerRuntime,
        pinned: &PinnedImage,
        manifest: &PeerManifest,
    ) -> Result<(), FetchError> {
        let local = |e: String| FetchError::Local(e);
        let tag = format!(
            "{}:peer-{}",
            pinned.repository(),
            &manifest.digest.trim_start_matches("sha256:")[..12]
        );
        runtime
            .load_blobs(manifest, &self.dir.join("blobs/sha256"), &[tag])
            .await
            .map_err(|e| local(e.to_string()))?;
        let manifests = self.dir.join("manifests");
        tokio::fs::create_dir_all(&manifests)
            .await
            .map_err(|e| FetchError::on_disk(&manifests, e))?;
        let path = self.manifest_path(&manifest.digest);
        tokio::fs::write(&path, &manifest.bytes)
            .await
            .map_err(|e| FetchError::on_disk(&path, e))?;
        self.record
            .lock()
            .expect("the record lock is never poisoned")
            .record(&manifest.digest, &manifest.config.digest)
            .map_err(|e| local(e.to_string()))?;
        self.shelve(manifest);
        info!(image = %pinned, id = %manifest.config.digest, "image fetched from peers, verified and loaded");
        Ok(())
    }
}
