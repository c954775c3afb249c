//! Releasing an image no registry holds. `--image-source` picks where robots get the image:
//! `registry` pins the digest the registry reports (robots pull it, as ever); `peers` pins the
//! peer digest of the local engine's image, or of `--image-archive` (a `docker save` tar, no
//! engine needed), and robots fetch it from fleet members that have it; `auto` (the default)
//! takes the registry's digest when the registry answers and the peer digest otherwise.
//!
//! A peer-pinned release is then served from here: [`start_serving`], before the entry is
//! published, dials the group's robots through the gateways (a direct connection, hole punched
//! when needed: a relay circuit is too small for images) and answers their
//! `/peercompute/image/1` requests, for fleet members and this image only;
//! [`Serving::wait`], after it is published, returns when every robot reached has received
//! every blob, or after `--serve-for`, or on Ctrl-C. Robots that fetched it serve it to each
//! other afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use peercompute_fleet::{BlobDigest, EntryHash, FleetId, FleetState, MemberKey, Phase};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::request_statuses;
use peercompute_p2p::{BlobSource, ImageShelf, Multiaddr, Node, NodeConfig, PeerId, serve_images};
use peercompute_runtime::{DockerRuntime, ImageError, PeerManifest, SaveIndex};

use super::{pin, repository_of};
use crate::client::dial_via_gateways;
use crate::exit::{CliError, Kind};
use crate::fleet::cli::{ImageSource, ImageSourceArgs};

/// How often serving checks whether every robot has the image.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often robots not served from here are asked whether they have the image.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// How long one robot may take to answer that.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long reaching one robot may take (relay, then hole punching).
const REACH_TIMEOUT: Duration = Duration::from_secs(20);

/// A pinned image and, when robots fetch it from peers, what to serve them.
#[derive(Debug)]
pub(crate) struct PinnedRelease {
    /// `repo@sha256:…`.
    pub(crate) image: String,
    /// Set when the digest is a peer digest.
    pub(crate) served: Option<Served>,
    /// A line for the person releasing (what was resolved, where robots get it).
    pub(crate) note: Option<String>,
}

/// A peer-pinned image ready to serve.
#[derive(Debug)]
pub(crate) struct Served {
    shelf: ImageShelf,
    digest: BlobDigest,
    /// The exported archive, removed when serving ends (`None` for `--image-archive`).
    _spool: Option<tempfile::TempPath>,
}

fn image_error(message: String) -> CliError {
    CliError::new(Kind::Image, message)
}

/// Pins `image` as `source` says (see the module docs).
pub(crate) async fn pin_release_image(
    image: &str,
    source: &ImageSourceArgs,
) -> Result<PinnedRelease, CliError> {
    let repository = repository_of(image).to_owned();
    if let Some(archive) = &source.image_archive {
        let served = shelve(archive.clone(), None).await?;
        return Ok(peer_pinned(&repository, served, "served from the archive"));
    }
    if image.contains('@') || source.image_source == ImageSource::Registry {
        let pinned = pin(image).await?;
        let note = (pinned != image).then(|| format!("{image} resolved to {pinned}"));
        return Ok(PinnedRelease {
            image: pinned,
            served: None,
            note,
        });
    }
    let runtime = DockerRuntime::connect().await.map_err(|e| {
        image_error(format!(
            "reading {image} needs the local Docker engine ({e}); or pin it yourself: `docker buildx imagetools inspect {image}` prints the digest, then release {repository}@sha256:<digest>; or serve a `docker save` archive with --image-archive FILE"
        ))
    })?;
    let why = if source.image_source == ImageSource::Auto {
        match runtime.resolve_digest(image).await {
            Ok(pinned) => {
                return Ok(PinnedRelease {
                    note: Some(format!("{image} resolved to {pinned}")),
                    image: pinned.to_string(),
                    served: None,
                });
            }
            Err(
                e @ (ImageError::NotFound { .. }
                | ImageError::RegistryUnreachable { .. }
                | ImageError::Unresolvable { .. }),
            ) => Some(e.to_string()),
            Err(e) => return Err(image_error(e.to_string())),
        }
    } else {
        None
    };
    let spool = tempfile::Builder::new()
        .prefix("peerctl-image-")
        .suffix(".tar")
        .tempfile()
        .map_err(|e| image_error(format!("cannot make a spool file for the image: {e}")))?
        .into_temp_path();
    runtime
        .export_image(image, &spool)
        .await
        .map_err(|e| image_error(e.to_string()))?;
    let served = shelve(spool.to_path_buf(), Some(spool)).await?;
    let source_note = match why {
        Some(why) => format!("no registry: robots fetch it from peers ({why})"),
        None => "robots fetch it from peers".to_owned(),
    };
    Ok(peer_pinned(&repository, served, &source_note))
}

fn peer_pinned(repository: &str, served: (Served, PeerManifest), how: &str) -> PinnedRelease {
    let (served, manifest) = served;
    let image = format!("{repository}@{}", manifest.digest);
    let size: u64 = manifest.blobs().iter().map(|b| b.size).sum();
    PinnedRelease {
        note: Some(format!(
            "{image}: {} MB in {} layer(s), {how}",
            size / 1_000_000,
            manifest.layers.len()
        )),
        image,
        served: Some(served),
    }
}

/// Indexes the archive and puts its image on a shelf.
async fn shelve(
    archive: PathBuf,
    spool: Option<tempfile::TempPath>,
) -> Result<(Served, PeerManifest), CliError> {
    let path = archive.clone();
    let index = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        SaveIndex::read(std::io::BufReader::new(file)).map_err(std::io::Error::other)
    })
    .await
    .map_err(|e| image_error(e.to_string()))?
    .map_err(|e| image_error(format!("{}: {e}", archive.display())))?;
    let manifest = index.manifest.clone();
    let digest: BlobDigest = manifest
        .digest
        .parse()
        .map_err(|e: peercompute_fleet::BadDigest| image_error(e.to_string()))?;
    let blobs = blob_sources(&archive, &index)?;
    let shelf = ImageShelf::default();
    shelf.add(digest, manifest.bytes.clone(), blobs);
    Ok((
        Served {
            shelf,
            digest,
            _spool: spool,
        },
        manifest,
    ))
}

fn blob_sources(
    archive: &Path,
    index: &SaveIndex,
) -> Result<Vec<(BlobDigest, BlobSource)>, CliError> {
    index
        .manifest
        .blobs()
        .iter()
        .map(|blob| {
            let range = index
                .ranges
                .get(&blob.digest)
                .ok_or_else(|| image_error(format!("the archive lacks blob {}", blob.digest)))?;
            let digest = blob
                .digest
                .parse()
                .map_err(|e: peercompute_fleet::BadDigest| image_error(e.to_string()))?;
            Ok((
                digest,
                BlobSource {
                    path: archive.to_owned(),
                    offset: range.offset,
                    size: range.size,
                },
            ))
        })
        .collect()
}

/// The robots of `group` in `state`.
fn robots_of(state: &FleetState, group: &str) -> Vec<(String, PeerId)> {
    state
        .members
        .values()
        .filter(|m| m.groups.iter().any(|g| g == group))
        .filter_map(|m| Some((m.name.clone(), m.key.peer_id()?)))
        .collect()
}

/// A peer-pinned image being served to the robots reached.
#[derive(Debug)]
pub(crate) struct Serving {
    node: Option<Node>,
    service: Option<tokio::task::JoinHandle<()>>,
    served: Served,
    reached: Vec<(String, PeerId)>,
}

/// Starts serving `served` to the robots of `group` before the release is published, so a
/// robot that gets the entry finds its source connected: on `session` (the node the write
/// syncs and pushes with, already connected to the gateways and to the robots it found on the
/// LAN), else on a node of its own; the robots not connected yet are reached through the
/// gateways. Only members and grantees of the fleet may fetch, and only this image.
pub(crate) async fn start_serving(
    identity: &Identity,
    session: Option<Node>,
    gateways: &[(PeerId, Vec<Multiaddr>)],
    state: &FleetState,
    group: &str,
    served: Served,
    note: impl Fn(&str),
) -> Result<Serving, CliError> {
    let robots = robots_of(state, group);
    if robots.is_empty() {
        note(&format!(
            "no robot is in group {group} yet: nothing to serve"
        ));
        return Ok(Serving {
            node: None,
            service: None,
            served,
            reached: Vec::new(),
        });
    }
    let node = match session {
        Some(node) => node,
        None => own_node(identity, robots.len() + gateways.len()).await?,
    };
    let state = state.clone();
    let digest = served.digest;
    let authorize = std::sync::Arc::new(move |peer: &PeerId, asked: &BlobDigest| {
        let who = MemberKey::from_peer_id(peer)
            .ok_or_else(|| format!("{peer} is not an Ed25519 peer id"))?;
        let now = peercompute_p2p::fleet_hub::unix_now();
        let member = !state.revoked.contains_key(&who)
            && (state.members.contains_key(&who) || state.role_at(&who, now).is_ok());
        if member && *asked == digest {
            Ok(())
        } else {
            Err(format!(
                "refused: this releaser serves {digest} to fleet members only"
            ))
        }
    });
    let service = tokio::spawn(serve_images(node.clone(), served.shelf.clone(), authorize));
    // Robots connected already (found on the LAN) are reached; the others are dialled through
    // the gateways reached, all at once.
    let mut reached = Vec::new();
    let mut dials = Vec::new();
    let by = tokio::time::Instant::now() + REACH_TIMEOUT;
    for (name, peer) in robots {
        if node.path(peer).await.is_some() {
            reached.push((name, peer));
        } else if gateways.is_empty() {
            note(&format!(
                "{name}: not reached (not on this LAN, and no gateway reached); it fetches from another robot, or from here if it connects"
            ));
        } else {
            let (node, gateways) = (node.clone(), gateways.to_vec());
            dials.push(tokio::spawn(async move {
                let dialled = dial_via_gateways(&node, peer, &gateways, by).await;
                (name, peer, dialled)
            }));
        }
    }
    for dial in dials {
        match dial.await {
            Ok((name, peer, Ok(()))) => reached.push((name, peer)),
            Ok((name, _, Err(why))) => note(&format!(
                "{name}: not reached ({}); it fetches from another robot, or from here if it connects",
                why.join("; ")
            )),
            Err(_) => {}
        }
    }
    Ok(Serving {
        node: Some(node),
        service: Some(service),
        served,
        reached,
    })
}

/// A node of its own for serving, when the write has none (no gateway, no robot in reach).
async fn own_node(identity: &Identity, peers: usize) -> Result<Node, CliError> {
    Node::start(
        identity,
        NodeConfig {
            listen: vec![
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("a valid multiaddr"),
                "/ip4/0.0.0.0/tcp/0".parse().expect("a valid multiaddr"),
            ],
            mdns: false,
            max_connections: u32::try_from(peers + 8).unwrap_or(u32::MAX),
            hole_punch_wait: Duration::from_secs(5),
            ..NodeConfig::default()
        },
    )
    .await
    .map_err(|e| CliError::new(Kind::Other, format!("cannot start the libp2p node: {e}")))
}

impl Serving {
    /// Serves until every robot reached has the image (every blob sent from here, or its own
    /// status shows it past fetching release `release` of `fleet`: it got it from another
    /// robot), `serve_for` elapsed, or Ctrl-C.
    pub(crate) async fn wait(
        self,
        serve_for: Duration,
        fleet: FleetId,
        release: EntryHash,
        note: impl Fn(&str),
    ) -> Result<(), CliError> {
        let Some(node) = self.node else {
            return Ok(());
        };
        note(&format!(
            "serving the image to {} robot(s) reached for up to {} (Ctrl-C stops; robots that have it serve each other)",
            self.reached.len(),
            humantime::format_duration(serve_for)
        ));
        let deadline = tokio::time::Instant::now() + serve_for;
        let asked = Asked {
            node: &node,
            fleet,
            release,
        };
        let result = wait_served(&self.served, &self.reached, &asked, deadline, &note).await;
        if let Some(service) = self.service {
            service.abort();
        }
        node.shutdown().await;
        result
    }
}

/// What to ask robots about: the release whose image is served.
struct Asked<'a> {
    node: &'a Node,
    fleet: FleetId,
    release: EntryHash,
}

impl Asked<'_> {
    /// Whether `peer`'s own status shows the release past fetching (it has the image).
    async fn has_it(&self, peer: PeerId) -> bool {
        let asked = request_statuses(self.node, peer, self.fleet);
        let Ok(Ok(statuses)) = tokio::time::timeout(STATUS_TIMEOUT, asked).await else {
            return false;
        };
        let Some(key) = MemberKey::from_peer_id(&peer) else {
            return false;
        };
        statuses
            .iter()
            .filter(|s| s.report.robot == key)
            .flat_map(|s| &s.report.apps)
            .any(|a| a.release == self.release && a.phase != Phase::Fetching)
    }
}

/// Until every robot in `reached` has the image, the deadline, or Ctrl-C.
async fn wait_served(
    served: &Served,
    reached: &[(String, PeerId)],
    asked: &Asked<'_>,
    deadline: tokio::time::Instant,
    note: &impl Fn(&str),
) -> Result<(), CliError> {
    let mut done: Vec<bool> = vec![false; reached.len()];
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    let mut last_asked = tokio::time::Instant::now();
    loop {
        let ask = last_asked.elapsed() >= ASK_EVERY;
        if ask {
            last_asked = tokio::time::Instant::now();
        }
        for (i, (name, peer)) in reached.iter().enumerate() {
            if done[i] {
                continue;
            }
            let (sent, all) = served.shelf.sent_to(peer, &served.digest);
            if all > 0 && sent == all {
                done[i] = true;
                note(&format!("{name}: fetched the image ({all} blobs)"));
            } else if ask && asked.has_it(*peer).await {
                done[i] = true;
                note(&format!("{name}: has the image (from another robot)"));
            }
        }
        if done.iter().all(|d| *d) {
            return Ok(());
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(deadline) => {
                note("stopped serving (--serve-for elapsed): robots still fetching go on from each other");
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                note("stopped serving (Ctrl-C)");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use peercompute_runtime::{Descriptor, peer_manifest, sha256_digest, write_save_archive};

    use super::*;

    /// A `docker save` archive of a one-layer image, and its peer manifest.
    fn archive_file() -> (tempfile::NamedTempFile, PeerManifest) {
        let layer = b"a layer tar stands here".repeat(100);
        let layer = Descriptor {
            digest: sha256_digest(&layer),
            size: layer.len() as u64,
        };
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            layer.digest
        )
        .into_bytes();
        let manifest = peer_manifest(&config, std::slice::from_ref(&layer)).expect("manifest");
        let bytes = b"a layer tar stands here".repeat(100);
        let tar = write_save_archive(Vec::new(), &manifest, &config, &[], |_| {
            Ok(Cursor::new(bytes.clone()))
        })
        .expect("archive");
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), tar).expect("write");
        (file, manifest)
    }

    #[tokio::test]
    async fn an_archive_is_pinned_by_its_peer_digest_and_shelved_without_an_engine() {
        let (file, manifest) = archive_file();
        let source = ImageSourceArgs {
            image_archive: Some(file.path().to_owned()),
            ..ImageSourceArgs::default()
        };
        let pinned = pin_release_image("registry.example/lab/app:dev", &source)
            .await
            .expect("pinned");
        assert_eq!(
            pinned.image,
            format!("registry.example/lab/app@{}", manifest.digest)
        );
        assert!(
            pinned
                .note
                .as_deref()
                .is_some_and(|n| n.contains("served from the archive")),
            "{:?}",
            pinned.note
        );
        let served = pinned.served.expect("served from here");
        assert_eq!(served.digest.to_string(), manifest.digest);
        assert!(served.shelf.has(&served.digest));

        let missing = ImageSourceArgs {
            image_archive: Some(file.path().with_extension("gone")),
            ..ImageSourceArgs::default()
        };
        let err = pin_release_image("lab/app", &missing)
            .await
            .expect_err("no file");
        assert_eq!(err.kind, Kind::Image);
    }
}
