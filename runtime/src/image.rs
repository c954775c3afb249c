//! Making sure an image is on the host before a container starts:
//! [`DockerRuntime::ensure_image`] uses the local image if there is one, otherwise pulls it
//! and reports the pull's progress (layer, bytes, status) as it goes. Pull failures are
//! sorted into what a person can act on — the image does not exist, the registry cannot be
//! reached, no variant for this host — and an image built for another CPU architecture or OS
//! is refused before it could fail inside a container with "exec format error".

use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use crate::engine::{DockerRuntime, EngineError, Platform, engine_message, engine_status};
use crate::spec::is_image_reference;

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
        "image {image} was not found at {registry} (or it needs a login): check its name and tag ({detail})"
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
        mut progress: impl FnMut(PullProgress) + Send,
    ) -> Result<ImageInfo, ImageError> {
        if !is_image_reference(image) {
            return Err(ImageError::InvalidReference(image.to_owned()));
        }
        if let Some(info) = self.local_image(image).await? {
            return Ok(info);
        }
        tracing::info!(%image, "pulling image");
        let (from_image, tag) = split_reference(image);
        let options = CreateImageOptions {
            from_image: Some(from_image.to_owned()),
            tag: tag.map(str::to_owned),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(event) = pull.next().await {
            let event = event.map_err(|source| self.pull_error(image, source))?;
            let detail = event.progress_detail.unwrap_or_default();
            progress(PullProgress {
                layer: event.id,
                status: event.status.unwrap_or_default(),
                current: detail.current.and_then(|n| u64::try_from(n).ok()),
                total: detail.total.and_then(|n| u64::try_from(n).ok()),
            });
        }
        match self.local_image(image).await? {
            Some(info) => Ok(ImageInfo {
                pulled: true,
                ..info
            }),
            None => Err(ImageError::PullFailed {
                image: image.to_owned(),
                detail: "the engine reported no error, yet the image is not on the host".to_owned(),
            }),
        }
    }

    /// The local image, checked against the host platform; `None` if absent.
    async fn local_image(&self, image: &str) -> Result<Option<ImageInfo>, ImageError> {
        let inspect = match self.docker.inspect_image(image).await {
            Ok(inspect) => inspect,
            Err(source) if engine_status(&source) == Some(404) => return Ok(None),
            Err(source) => {
                return Err(ImageError::Engine(EngineError {
                    operation: "inspect image",
                    target: image.to_owned(),
                    source,
                }));
            }
        };
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
        Ok(Some(ImageInfo {
            id: inspect.id.unwrap_or_default(),
            platform: image_platform,
            pulled: false,
        }))
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
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => {
            let at = name_start + colon;
            (&image[..at], Some(&image[at + 1..]))
        }
        None => (image, Some("latest")),
    }
}

/// The registry an image reference points at (`docker.io` when none is named).
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag() {
        let cases = [
            ("nginx", ("nginx", Some("latest"))),
            ("nginx:1.27", ("nginx", Some("1.27"))),
            ("library/nginx:1.27", ("library/nginx", Some("1.27"))),
            ("localhost:5000/app", ("localhost:5000/app", Some("latest"))),
            ("localhost:5000/app:v2", ("localhost:5000/app", Some("v2"))),
            ("app@sha256:abc", ("app@sha256:abc", None)),
            (
                "ghcr.io/o/app:1@sha256:abc",
                ("ghcr.io/o/app:1@sha256:abc", None),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(split_reference(input), expected, "{input}");
        }
    }

    #[test]
    fn registries_are_named() {
        assert_eq!(registry_of("nginx"), "docker.io");
        assert_eq!(registry_of("library/nginx:1"), "docker.io");
        assert_eq!(registry_of("ghcr.io/o/app"), "ghcr.io");
        assert_eq!(registry_of("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn pull_failures_table() {
        let cases = [
            (
                r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.0.0.53:53: no such host"#,
                PullFailure::Unreachable,
            ),
            (
                r#"Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused"#,
                PullFailure::Unreachable,
            ),
            (
                "pull access denied for nosuch, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
                PullFailure::NotFound,
            ),
            (
                "manifest for nginx:nosuch not found: manifest unknown: manifest unknown",
                PullFailure::NotFound,
            ),
            (
                "no matching manifest for linux/amd64 in the manifest list entries",
                PullFailure::NoVariant,
            ),
            (
                "write /var/lib/docker/tmp: no space left on device",
                PullFailure::Other,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(classify_pull_failure(message), expected, "{message}");
        }
    }
}
