//! Serving peer-pinned images over `/peercompute/image/1` (codec in `peercompute-fleet`'s
//! `image_wire`). A node puts the images it can serve on an [`ImageShelf`]: each image's
//! canonical manifest bytes and, for every blob, a byte range of a file (a `docker save`
//! archive on peerctl, verified blob files on a robot). [`serve_images`] answers `Want` and
//! `Blob` requests from that shelf, but only when the [`ImageAuthorizer`] lets the asking peer
//! have the image: [`fleet_authorizer`] allows members and grantees of a fleet the node holds,
//! for digests named by that fleet's recent releases, so a node is never an open mirror. At
//! most [`MAX_STREAMS_PER_PEER`] streams per peer and [`MAX_STREAMS`] in all are served at once.
//!
//! [`ImageStream`] carries the frames on either side: control frames are read with the length
//! checked before the body is buffered, and blob bytes are read and written raw right after
//! `BlobStart`, with nothing read ahead.

use std::collections::{HashMap, HashSet};
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use peercompute_fleet::{
    BlobDigest, FleetState, IMAGE_PROTOCOL, ImageMessage, ImageWireError, MemberKey,
    decode_image_body, encode_image_message, image_body_len,
};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::fleet_hub::{FleetHub, unix_now};
use crate::node::Node;

/// Streams served at once to one peer.
pub const MAX_STREAMS_PER_PEER: usize = 4;
/// Streams served at once in all.
pub const MAX_STREAMS: usize = 16;
/// Releases per group whose images are served (a robot keeps as many to roll back to).
pub const SERVED_RELEASES: usize = 3;
/// How long one read or write of a stream may stall.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Copy buffer for blob bytes.
const COPY_CHUNK: usize = 256 * 1024;

/// The image protocol id.
pub fn image_protocol() -> StreamProtocol {
    StreamProtocol::new(IMAGE_PROTOCOL)
}

/// Where a blob's bytes are: `size` bytes of `path` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSource {
    pub path: PathBuf,
    pub offset: u64,
    pub size: u64,
}

/// An image's manifest bytes and its blobs with their sizes.
type Listing = (Vec<u8>, Vec<(BlobDigest, u64)>);

#[derive(Debug, Default)]
struct Shelf {
    /// Manifest digest → (manifest bytes, blobs with sizes).
    images: HashMap<BlobDigest, Listing>,
    blobs: HashMap<BlobDigest, BlobSource>,
    /// The blobs each peer received whole.
    sent: HashMap<PeerId, HashSet<BlobDigest>>,
}

/// The images a node serves (cheap to clone; shared with the service).
#[derive(Debug, Clone, Default)]
pub struct ImageShelf {
    inner: Arc<Mutex<Shelf>>,
}

impl ImageShelf {
    /// Puts the image whose manifest hashes to `digest` on the shelf, with its blobs.
    pub fn add(&self, digest: BlobDigest, manifest: Vec<u8>, blobs: Vec<(BlobDigest, BlobSource)>) {
        let mut shelf = self.inner.lock().expect("the shelf lock is never poisoned");
        let sizes = blobs.iter().map(|(d, s)| (*d, s.size)).collect();
        shelf.blobs.extend(blobs);
        shelf.images.insert(digest, (manifest, sizes));
    }

    /// Whether the image `digest` is on the shelf.
    pub fn has(&self, digest: &BlobDigest) -> bool {
        let shelf = self.inner.lock().expect("the shelf lock is never poisoned");
        shelf.images.contains_key(digest)
    }

    /// How many blobs of the image `digest` `peer` has received whole from this node, and
    /// how many the image has (for a releaser to tell when the robots are served).
    pub fn sent_to(&self, peer: &PeerId, digest: &BlobDigest) -> (usize, usize) {
        let shelf = self.inner.lock().expect("the shelf lock is never poisoned");
        let Some((_, blobs)) = shelf.images.get(digest) else {
            return (0, 0);
        };
        let sent = shelf.sent.get(peer);
        let done = blobs
            .iter()
            .filter(|(d, _)| sent.is_some_and(|s| s.contains(d)))
            .count();
        (done, blobs.len())
    }

    fn mark_sent(&self, peer: PeerId, blob: BlobDigest) {
        let mut shelf = self.inner.lock().expect("the shelf lock is never poisoned");
        shelf.sent.entry(peer).or_default().insert(blob);
    }

    fn image(&self, digest: &BlobDigest) -> Option<Listing> {
        let shelf = self.inner.lock().expect("the shelf lock is never poisoned");
        shelf.images.get(digest).cloned()
    }

    /// The blob's source and the images (manifest digests) that name it.
    fn blob(&self, digest: &BlobDigest) -> Option<(BlobSource, Vec<BlobDigest>)> {
        let shelf = self.inner.lock().expect("the shelf lock is never poisoned");
        let source = shelf.blobs.get(digest)?.clone();
        let owners = shelf
            .images
            .iter()
            .filter(|(_, (_, blobs))| blobs.iter().any(|(d, _)| d == digest))
            .map(|(image, _)| *image)
            .collect();
        Some((source, owners))
    }
}

/// Whether `peer` may have the image `digest`: `Err` is the reason it may not.
pub type ImageAuthorizer = Arc<dyn Fn(&PeerId, &BlobDigest) -> Result<(), String> + Send + Sync>;

/// Whether `who` may fetch the image `digest` under `state`: a member or an unexpired
/// grantee, not revoked, and the digest pinned by one of the last [`SERVED_RELEASES`]
/// releases of some group.
pub fn may_fetch_image(state: &FleetState, who: &MemberKey, digest: &BlobDigest, at: u64) -> bool {
    if state.revoked.contains_key(who) {
        return false;
    }
    if !state.members.contains_key(who) && state.role_at(who, at).is_err() {
        return false;
    }
    state.groups.values().any(|group| {
        group
            .releases
            .iter()
            .rev()
            .take(SERVED_RELEASES)
            .any(|record| pinned_digest(&record.release.spec.image) == Some(*digest))
    })
}

/// The digest of `repo@sha256:<hex>`.
fn pinned_digest(image: &str) -> Option<BlobDigest> {
    image.rsplit_once('@')?.1.parse().ok()
}

/// An authorizer over the fleets `hub` holds ([`may_fetch_image`] in any of them).
pub fn fleet_authorizer(hub: FleetHub) -> ImageAuthorizer {
    Arc::new(move |peer, digest| {
        let who = MemberKey::from_peer_id(peer)
            .ok_or_else(|| format!("{peer} is not an Ed25519 peer id, so it is no fleet member"))?;
        let now = unix_now();
        let allowed = hub.fleet_ids().iter().any(|fleet| {
            hub.with_log(fleet, |log| {
                log.state()
                    .is_some_and(|state| may_fetch_image(state, &who, digest, now))
            })
            .unwrap_or(false)
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "refused: {peer} is not a member of a fleet here whose recent releases pin {digest}"
            ))
        }
    })
}

/// Why an image stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageStreamError {
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] ImageWireError),
    #[error("the other side stalled for over {STALL_TIMEOUT:?}")]
    Stalled,
}

/// A libp2p stream carrying image frames and raw blob bytes.
#[derive(Debug)]
pub struct ImageStream {
    stream: libp2p::Stream,
}

impl ImageStream {
    pub fn new(stream: libp2p::Stream) -> Self {
        Self { stream }
    }

    /// The next control message; `Ok(None)` when the other side closed between messages.
    pub async fn read(&mut self) -> Result<Option<ImageMessage>, ImageStreamError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = stalled(self.stream.read(&mut header[got..])).await??;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            got += n;
        }
        let mut body = vec![0u8; image_body_len(header)?];
        stalled(self.stream.read_exact(&mut body)).await??;
        Ok(Some(decode_image_body(&body)?))
    }

    /// Writes and flushes one control message.
    pub async fn write(&mut self, message: &ImageMessage) -> Result<(), ImageStreamError> {
        let frame = encode_image_message(message)?;
        stalled(self.stream.write_all(&frame)).await??;
        stalled(self.stream.flush()).await??;
        Ok(())
    }

    /// Reads raw blob bytes into `buf`; 0 at the end of the stream.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize, ImageStreamError> {
        Ok(stalled(self.stream.read(buf)).await??)
    }

    /// Writes raw blob bytes.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ImageStreamError> {
        Ok(stalled(self.stream.write_all(bytes)).await??)
    }

    /// Closes our side of the stream.
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(STALL_TIMEOUT, self.stream.close()).await;
    }
}

async fn stalled<T>(f: impl Future<Output = T>) -> Result<T, ImageStreamError> {
    tokio::time::timeout(STALL_TIMEOUT, f)
        .await
        .map_err(|_| ImageStreamError::Stalled)
}

/// Streams served per peer, released when a stream ends.
#[derive(Debug, Default, Clone)]
struct PerPeer(Arc<Mutex<HashMap<PeerId, usize>>>);

#[derive(Debug)]
struct PeerSlot(PerPeer, PeerId);

impl PerPeer {
    fn take(&self, peer: PeerId) -> Option<PeerSlot> {
        let mut counts = self.0.lock().expect("the slot lock is never poisoned");
        let count = counts.entry(peer).or_default();
        if *count >= MAX_STREAMS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerSlot(self.clone(), peer))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = (self.0).0.lock().expect("the slot lock is never poisoned");
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// Accepts image streams until the node stops.
pub async fn serve_images(node: Node, shelf: ImageShelf, authorize: ImageAuthorizer) {
    let mut incoming = match node.control().accept(image_protocol()) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::warn!("cannot accept image streams: {e}");
            return;
        }
    };
    let all = Arc::new(Semaphore::new(MAX_STREAMS));
    let per_peer = PerPeer::default();
    while let Some((peer, stream)) = incoming.next().await {
        let Some(peer_slot) = per_peer.take(peer) else {
            debug!(%peer, "too many image streams from one peer; dropping one");
            continue;
        };
        let Ok(permit) = all.clone().try_acquire_owned() else {
            debug!(%peer, "too many image streams at once; dropping one");
            continue;
        };
        let (shelf, authorize) = (shelf.clone(), authorize.clone());
        tokio::spawn(async move {
            let mut stream = ImageStream::new(stream);
            if let Err(e) = answer(&shelf, &authorize, peer, &mut stream).await {
                debug!(%peer, "image stream ended: {e}");
            }
            stream.close().await;
            drop((permit, peer_slot));
        });
    }
}

/// Answers requests on one stream until the asker closes it.
async fn answer(
    shelf: &ImageShelf,
    authorize: &ImageAuthorizer,
    peer: PeerId,
    stream: &mut ImageStream,
) -> Result<(), ImageStreamError> {
    while let Some(request) = stream.read().await? {
        match request {
            ImageMessage::Want { digest } => {
                let reply = match (authorize(&peer, &digest), shelf.image(&digest)) {
                    (Err(message), _) => ImageMessage::Error { message },
                    (Ok(()), None) => ImageMessage::NotHere,
                    (Ok(()), Some((manifest, blobs))) => ImageMessage::Have { manifest, blobs },
                };
                stream.write(&reply).await?;
            }
            ImageMessage::Blob { digest, offset } => {
                let found = shelf.blob(&digest).filter(|(_, owners)| {
                    owners.iter().any(|image| authorize(&peer, image).is_ok())
                });
                let Some((source, _)) = found else {
                    stream.write(&ImageMessage::NotHere).await?;
                    continue;
                };
                if offset > source.size {
                    let message =
                        format!("offset {offset} is past the blob's {} bytes", source.size);
                    stream.write(&ImageMessage::Error { message }).await?;
                    continue;
                }
                send_blob(stream, &source, offset).await?;
                shelf.mark_sent(peer, digest);
            }
            other => {
                let message = format!("cannot start an exchange with {}", other.name());
                return stream.write(&ImageMessage::Error { message }).await;
            }
        }
    }
    Ok(())
}

/// `BlobStart` then the blob's bytes from `offset` to its end, read from its file.
async fn send_blob(
    stream: &mut ImageStream,
    source: &BlobSource,
    offset: u64,
) -> Result<(), ImageStreamError> {
    let mut file = tokio::fs::File::open(&source.path).await?;
    file.seek(SeekFrom::Start(source.offset + offset)).await?;
    let mut left = source.size - offset;
    stream
        .write(&ImageMessage::BlobStart { size: left })
        .await?;
    let mut buf = vec![0u8; COPY_CHUNK];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            // The file shrank under us: end the stream, the fetcher sees a short blob.
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        stream.write_raw(&buf[..n]).await?;
        left -= n as u64;
    }
    stalled(stream.stream.flush()).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use peercompute_fleet::{FleetId, FleetLog, Grant, HealthCheck, Op, Release, Role};
    use peercompute_identity::Identity;
    use peercompute_tunnel_proto::DeployRequest;

    use super::*;

    fn identity() -> Identity {
        Identity::generate().expect("an identity")
    }

    fn image(n: u8) -> String {
        format!("app@sha256:{}", hex_of(n))
    }

    fn hex_of(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn release(seq: u64) -> Op {
        let mut spec = DeployRequest::new(image(seq as u8), 8080);
        spec.name = Some("app".into());
        Op::Release(Release {
            group: "production".into(),
            seq,
            version: format!("v{seq}"),
            spec,
            health: HealthCheck {
                path: None,
                timeout_secs: 30,
            },
        })
    }

    #[test]
    fn members_and_grantees_may_fetch_only_recent_releases_of_the_fleet() {
        let (fleet_key, robot, viewer, stranger) = (identity(), identity(), identity(), identity());
        let fleet = FleetId(fleet_key.public_key_bytes());
        let mut log = FleetLog::new(fleet);
        let now = unix_now();
        let key = |i: &Identity| MemberKey(i.public_key_bytes());
        let mut ops = vec![
            Op::Genesis {
                name: "lekiwi".into(),
            },
            Op::Enroll {
                member: key(&robot),
                name: "r1".into(),
                groups: vec!["production".into()],
            },
            Op::Grant(Grant {
                member: key(&viewer),
                role: Role::Viewer,
                groups: vec!["production".into()],
                expires_at: None,
            }),
        ];
        ops.extend((1..=5).map(release));
        for op in ops {
            let entry = log.author(fleet_key.signing_key(), op, now).expect("entry");
            log.insert(entry, now).expect("valid");
        }
        let state = log.state().expect("a state");
        let digest = |n: u8| BlobDigest([n; 32]);
        for (who, n, allowed) in [
            (key(&robot), 5, true),
            (key(&robot), 3, true),
            (key(&robot), 2, false), // older than the last SERVED_RELEASES
            (key(&viewer), 4, true),
            (key(&stranger), 5, false),
            (key(&robot), 9, false), // never released
        ] {
            assert_eq!(
                may_fetch_image(state, &who, &digest(n), now),
                allowed,
                "{who:?} image {n}"
            );
        }
        let revoke = log
            .author(
                fleet_key.signing_key(),
                Op::Revoke {
                    member: key(&robot),
                    reason: "stolen".into(),
                },
                now,
            )
            .expect("entry");
        log.insert(revoke, now).expect("valid");
        let state = log.state().expect("a state");
        assert!(
            !may_fetch_image(state, &key(&robot), &digest(5), now),
            "revoked"
        );
        assert_eq!(pinned_digest(&image(7)), Some(digest(7)));
        assert_eq!(pinned_digest("app:v1"), None);
    }

    #[test]
    fn the_shelf_names_the_images_that_hold_a_blob() {
        let shelf = ImageShelf::default();
        let (manifest, layer, config) = (
            BlobDigest([1; 32]),
            BlobDigest([2; 32]),
            BlobDigest([3; 32]),
        );
        let source = |size| BlobSource {
            path: "/tmp/archive.tar".into(),
            offset: 512,
            size,
        };
        shelf.add(
            manifest,
            b"{}".to_vec(),
            vec![(config, source(10)), (layer, source(2048))],
        );
        assert!(shelf.has(&manifest));
        assert_eq!(shelf.image(&manifest).expect("on the shelf").1.len(), 2);
        let (found, owners) = shelf.blob(&layer).expect("a blob");
        assert_eq!((found.size, owners), (2048, vec![manifest]));
        assert!(shelf.blob(&manifest).is_none(), "a manifest is not a blob");
        let peer = PeerId::random();
        assert_eq!(shelf.sent_to(&peer, &manifest), (0, 2));
        shelf.mark_sent(peer, layer);
        assert_eq!(shelf.sent_to(&peer, &manifest), (1, 2));
        assert_eq!(shelf.sent_to(&PeerId::random(), &manifest), (0, 2));
    }

    #[test]
    fn per_peer_slots_are_bounded_and_given_back() {
        let slots = PerPeer::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let held: Vec<_> = (0..MAX_STREAMS_PER_PEER)
            .map(|_| slots.take(a).expect("a slot"))
            .collect();
        assert!(slots.take(a).is_none(), "a fifth stream of one peer");
        assert!(slots.take(b).is_some(), "another peer is not held back");
        drop(held);
        let again = slots.take(a).expect("slots given back");
        assert_eq!(slots.0.lock().expect("lock").get(&a), Some(&1));
        drop(again);
        assert!(
            slots.0.lock().expect("lock").is_empty(),
            "no count left behind"
        );
    }
}
