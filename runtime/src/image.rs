//! Making sure an image is on the host before a container starts. [`DockerRuntime::ensure_image`]
//! uses the local image if there is one, otherwise pulls it and reports the pull's progress
//! (layer, bytes, status) as it goes. For fleet releases, [`DockerRuntime::resolve_digest`] asks
//! the registry (through the engine's distribution endpoint) which digest a tag names, and
//! [`DockerRuntime::ensure_pinned`] fetches a [`PinnedImage`] and then checks that what the engine
//! holds carries exactly that digest. Pull failures are sorted into what a person can act on — the
//! image does not exist, the registry cannot be reached, no variant for this host — a pull that
//! stops making progress is abandoned, and an image built for another CPU architecture or OS is
//! refused before it could fail inside a container with "exec format error".
//!
//! Images pinned by a *peer* digest (fetched from other fleet members, not a registry) are
//! looked up through the `peer` submodule's [`PeerImages`] record by
//! [`DockerRuntime::pinned_local`], which also accepts a `RepoDigests` match; that module also
//! saves and loads images as `docker save` archives.

use std::time::Duration;

use bollard::models::ImageInspect;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use crate::digest::{
    DigestError, PinnedImage, local_pin, parse_tagged, pulled_digests, registry_of, split_tag,
};
use crate::engine::{DockerRuntime, EngineError, Platform, engine_message, engine_status};
use crate::spec::is_image_reference;

mod peer;

pub use peer::{PEER_IMAGES_FILE, PeerImages, TransferError};

/// How long a pull may go without a progress event before it is abandoned.
const PULL_STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the registry may take to say which digest a tag names.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
/// One progress event of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer the event is about (`None` for whole-image events).
    pub layer: Option<String>,
    /// The engine's status text: `Pulling fs layer`, `Downloading`, `Pull complete`, …
    pub status: String,
    /// Bytes done, while downloading or extracting.
    pub current: Option<u64>,
    /// Bytes in all, while downloading or extracting.
    pub total: Option<u64>,
}

/// An image present on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The engine's image id (`sha256:…`).
    pub id: String,
    /// The platform it is built for.
    pub platform: Platform,
    /// Whether [`DockerRuntime::ensure_image`] had to pull it.
    pub pulled: bool,
}

/// The image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not an image reference.
    #[error("{0:?} is not an image reference: expected something like nginx:1.27")]
    InvalidReference(String),
    /// The registry answered that there is no such image (or that it needs a login).
    #[error(
        "image {image} was not found at {registry} (or it needs a login): check its name and tag or digest ({detail})"
    )]
    NotFound {
        /// The image reference.
        image: String,
        /// The registry asked.
        registry: String,
        /// The engine's message.
        detail: String,
    },
    /// The registry could not be reached.
    #[error(
        "cannot reach registry {registry} to pull {image}: check this host's network, or use an image already on it ({detail})"
    )]
    RegistryUnreachable {
        /// The image reference.
        image: String,
        /// The registry asked.
        registry: String,
        /// The engine's message.
        detail: String,
    },
    /// The image exists but has no variant for this host's platform.
    #[error("image {image} has no variant for this host ({}/{}): use an image built for it ({detail})", .host.os, .host.architecture)]
    NoVariantForHost {
        /// The image reference.
        image: String,
        /// This host's platform.
        host: Platform,
        /// The engine's message.
        detail: String,
    },
    /// The image is built for another platform.
    #[error("image {image} is built for {}/{} but this host runs {}/{}: use an image built for {}/{}", .image_platform.os, .image_platform.architecture, .host.os, .host.architecture, .host.os, .host.architecture)]
    WrongPlatform {
        /// The image reference.
        image: String,
        /// What the image is built for.
        image_platform: Platform,
        /// This host's platform.
        host: Platform,
    },
    /// The pull failed for another reason.
    #[error("pulling image {image} failed: {detail}")]
    PullFailed {
        /// The image reference.
        image: String,
        /// The engine's message.
        detail: String,
    },
    /// A pinned reference that is not `repository@sha256:<64 lowercase hex>`.
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
    /// After the pull, the engine holds something else than the pinned digest.
    #[error(
        "image {image} was fetched but the engine holds {} for it, not the pinned {expected}: refusing to use it. Check what the registry serves for this repository (resolve the tag again) and pin the digest it reports",
        if .found.is_empty() { "no digest".to_owned() } else { .found.join(", ") }
    )]
    DigestMismatch {
        /// The pinned reference.
        image: String,
        /// The digest pinned.
        expected: String,
        /// The digests the engine reports for the repository instead.
        found: Vec<String>,
    },
    /// The registry could not be reached to resolve a tag, and no local copy of the image
    /// carries a digest from it.
    #[error(
        "cannot resolve {image} to a digest: registry {registry} cannot be reached and no local copy carries a digest from it: check this host's network, or push the image there first ({detail})"
    )]
    Unresolvable {
        /// The tagged reference.
        image: String,
        /// The registry asked.
        registry: String,
        /// The engine's message and what the local copy lacks.
        detail: String,
    },
    /// The registry's answer to a digest lookup could not be used.
    #[error("asking the registry for the digest of {image} failed: {detail}")]
    ResolveFailed {
        /// The tagged reference.
        image: String,
        /// The engine's message.
        detail: String,
    },
    /// Any other engine failure.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl DockerRuntime {
    /// Makes sure `image` is on the host and built for it. A local image is used as is;
    /// otherwise it is pulled and `progress` is called with each progress event.
    pub async fn ensure_image(
        &self,
        image: &str,
        progress: impl FnMut(PullProgress) + Send,
    ) -> Result<ImageInfo, ImageError> {
        if !is_image_reference(image) {
            return Err(ImageError::InvalidReference(image.to_owned()));
        }
        if let Some(inspect) = self.inspect_local(image).await? {
            return self.image_info(image, inspect, false);
        }
        let (from_image, tag) = split_reference(image);
        self.pull(image, from_image, tag, progress).await?;
        match self.inspect_local(image).await? {
            Some(inspect) => self.image_info(image, inspect, true),
            None => Err(ImageError::PullFailed {
                image: image.to_owned(),
                detail: "the engine reported no error, yet the image is not on the host".to_owned(),
            }),
        }
    }

    /// The digest the registry holds for `reference` (`127.0.0.1:5000/app:v1`; `latest` when
    /// no tag is given), for a release to pin. A reference that is already pinned
    /// (`repo@sha256:…`) is parsed and returned as it is.
    ///
    /// When the registry cannot be reached, a local copy of the image that was pushed to or
    /// pulled from that repository (it has a `RepoDigests` entry for it) answers instead.
    /// A tag the registry does not have is [`ImageError::NotFound`]: a stale local copy does
    /// not stand in for it, since robots could not pull it.
    pub async fn resolve_digest(&self, reference: &str) -> Result<PinnedImage, ImageError> {
        if reference.contains('@') {
            return Ok(PinnedImage::parse(reference)?);
        }
        let (repository, tag) = parse_tagged(reference)
            .ok_or_else(|| ImageError::InvalidReference(reference.to_owned()))?;
        let tagged = format!("{repository}:{tag}");
        let registry = registry_of(&tagged).to_owned();
        let asked = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            self.docker.inspect_registry_image(&tagged, None),
        )
        .await;
        let detail = match asked {
            Ok(Ok(answer)) => {
                let digest = answer.descriptor.digest.unwrap_or_default();
                return PinnedImage::new(&repository, &digest).map_err(|error| {
                    ImageError::ResolveFailed {
                        image: tagged,
                        detail: format!("the registry answered an unusable digest: {error}"),
                    }
                });
            }
            Ok(Err(source)) => {
                let detail = engine_message(&source);
                match (engine_status(&source), classify_pull_failure(&detail)) {
                    (_, PullFailure::Unreachable) => detail,
                    (Some(401 | 403 | 404), _) | (_, PullFailure::NotFound) => {
                        return Err(ImageError::NotFound {
                            image: tagged,
                            registry,
                            detail,
                        });
                    }
                    _ => {
                        return Err(ImageError::ResolveFailed {
                            image: tagged,
                            detail,
                        });
                    }
                }
            }
            Err(_elapsed) => format!("no answer within {RESOLVE_TIMEOUT:?}"),
        };
        self.local_digest(&tagged, &repository, &registry, detail)
            .await
    }

    /// Makes sure the image `pinned` names is on the host: a local image is used only if its
    /// `RepoDigests` hold exactly `repository@digest`; otherwise `repository@digest` is pulled
    /// (`progress` is called with each event) and the result checked the same way. Anything
    /// else on the host fails with [`ImageError::DigestMismatch`], and a digest the registry
    /// does not have with [`ImageError::NotFound`].
    pub async fn ensure_pinned(
        &self,
        pinned: &PinnedImage,
        progress: impl FnMut(PullProgress) + Send,
    ) -> Result<ImageInfo, ImageError> {
        let image = pinned.to_string();
        if let Some(inspect) = self.inspect_local(&image).await? {
            if pinned.is_in(inspect.repo_digests.as_deref().unwrap_or_default()) {
                return self.image_info(&image, inspect, false);
            }
            // Found under that name but without the digest in RepoDigests: not the content
            // the release pinned. Fetch the real one.
            tracing::warn!(%image, id = ?inspect.id, "a local image answers to the pinned name without carrying its digest; pulling");
        }
        let reported = self
            .pull(&image, pinned.repository(), Some(pinned.digest()), progress)
            .await?;
        let inspect = self.inspect_local(&image).await?;
        let held = inspect
            .as_ref()
            .and_then(|i| i.repo_digests.clone())
            .unwrap_or_default();
        match (inspect, pulled_digests(pinned, &held, reported)) {
            (Some(inspect), Ok(())) => self.image_info(&image, inspect, true),
            (_, result) => {
                let found = result.err().unwrap_or_default();
                tracing::error!(%image, ?found, "pulled image does not carry the pinned digest");
                Err(ImageError::DigestMismatch {
                    image,
                    expected: pinned.digest().to_owned(),
                    found,
                })
            }
        }
    }

    /// The digest a local copy of `tagged` holds for `repository`, when the registry could
    /// not be asked.
    async fn local_digest(
        &self,
        tagged: &str,
        repository: &str,
        registry: &str,
        detail: String,
    ) -> Result<PinnedImage, ImageError> {
        let unresolvable = |what: &str| ImageError::Unresolvable {
            image: tagged.to_owned(),
            registry: registry.to_owned(),
            detail: format!("{detail}; {what}"),
        };
        let Some(inspect) = self.inspect_local(tagged).await? else {
            return Err(unresolvable("the image is not on this host"));
        };
        let held = inspect.repo_digests.unwrap_or_default();
        let pinned = local_pin(&held, repository).map_err(|what| unresolvable(&what))?;
        tracing::warn!(image = %tagged, %pinned, "registry unreachable: pinning the digest of the local copy");
        Ok(pinned)
    }

    /// Pulls `from_image` at `tag` (a tag or a digest), reporting progress; returns the digest
    /// the engine says it pulled. `image` names it in errors.
    async fn pull(
        &self,
        image: &str,
        from_image: &str,
        tag: Option<&str>,
        mut progress: impl FnMut(PullProgress) + Send,
    ) -> Result<Option<String>, ImageError> {
        tracing::info!(%image, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(from_image.to_owned()),
            tag: tag.map(str::to_owned),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        let mut digest = None;
        loop {
            let event = match tokio::time::timeout(PULL_STALL_TIMEOUT, pull.next()).await {
                Ok(Some(event)) => event.map_err(|source| self.pull_error(image, source))?,
                Ok(None) => return Ok(digest),
                Err(_elapsed) => {
                    return Err(ImageError::PullFailed {
                        image: image.to_owned(),
                        detail: format!(
                            "the engine reported no progress for {PULL_STALL_TIMEOUT:?}: the registry stopped answering"
                        ),
                    });
                }
            };
            let status = event.status.unwrap_or_default();
            if let Some(reported) = status.strip_prefix("Digest: ") {
                digest = Some(reported.trim().to_owned());
            }
            let detail = event.progress_detail.unwrap_or_default();
            progress(PullProgress {
                layer: event.id,
                status,
                current: detail.current.and_then(|n| u64::try_from(n).ok()),
                total: detail.total.and_then(|n| u64::try_from(n).ok()),
            });
        }
    }

    /// The engine's view of a local image; `None` if absent.
    async fn inspect_local(&self, image: &str) -> Result<Option<ImageInspect>, ImageError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect)),
            Err(source) if engine_status(&source) == Some(404) => Ok(None),
            Err(source) => Err(ImageError::Engine(EngineError {
                operation: "inspect image",
                target: image.to_owned(),
                source,
            })),
        }
    }

    /// A local image, checked against the host platform.
    fn image_info(
        &self,
        image: &str,
        inspect: ImageInspect,
        pulled: bool,
    ) -> Result<ImageInfo, ImageError> {
        let host = self.platform();
        let image_platform = Platform {
            os: inspect.os.unwrap_or_default(),
            architecture: inspect.architecture.unwrap_or_default(),
        };
        let differs = |ours: &str, theirs: &str| !theirs.is_empty() && ours != theirs;
        if differs(&host.os, &image_platform.os)
            || differs(&host.architecture, &image_platform.architecture)
        {
            return Err(ImageError::WrongPlatform {
                image: image.to_owned(),
                image_platform,
                host: host.clone(),
            });
        }
        Ok(ImageInfo {
            id: inspect.id.unwrap_or_default(),
            platform: image_platform,
            pulled,
        })
    }

    fn pull_error(&self, image: &str, source: bollard::errors::Error) -> ImageError {
        let detail = engine_message(&source);
        let registry = registry_of(image).to_owned();
        let image = image.to_owned();
        match classify_pull_failure(&detail) {
            PullFailure::NotFound => ImageError::NotFound {
                image,
                registry,
                detail,
            },
            PullFailure::Unreachable => ImageError::RegistryUnreachable {
                image,
                registry,
                detail,
            },
            PullFailure::NoVariant => ImageError::NoVariantForHost {
                image,
                host: self.platform().clone(),
                detail,
            },
            PullFailure::Other => ImageError::PullFailed { image, detail },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PullFailure {
    NotFound,
    Unreachable,
    NoVariant,
    Other,
}

/// Sorts the engine's pull error text (it gives no codes) into what a person can act on.
fn classify_pull_failure(message: &str) -> PullFailure {
    let message = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
    if any(&["no matching manifest"]) {
        PullFailure::NoVariant
    } else if any(&[
        "dial tcp",
        "no such host",
        "connection refused",
        "i/o timeout",
        "network is unreachable",
        "tls handshake",
        "server misbehaving",
        "client.timeout exceeded",
        "connection reset",
        "server gave http response to https client",
    ]) {
        PullFailure::Unreachable
    } else if any(&[
        "not found",
        "manifest unknown",
        "does not exist",
        "pull access denied",
        "unauthorized",
        "name unknown",
    ]) {
        PullFailure::NotFound
    } else {
        PullFailure::Other
    }
}

/// `(image without tag, tag)` for the engine's create-image call, which pulls *every* tag
/// of a repository when given none. Digests are passed whole.
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let (repository, tag) = split_tag(image);
    (repository, Some(tag.unwrap_or("latest")))
}

#[cfg(test)]
mod tests;
