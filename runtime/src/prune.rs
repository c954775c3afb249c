//! Removing images a provider no longer keeps (a fleet robot keeps the last few releases'
//! images for a rollback and removes older ones). [`DockerRuntime::images_in_use`] says which
//! images any container on the engine uses — running or stopped, this daemon's or not — by
//! reference and by image id, so a caller can leave those alone;
//! [`DockerRuntime::remove_image`] removes one reference and is never forced: the engine
//! itself refuses an image a container still uses, which comes back as
//! [`RemoveImageError::InUse`]. Removing a reference an image shares with other tags only
//! untags it; the layers go with the last reference.

use std::collections::HashSet;

use bollard::query_parameters::{ListContainersOptions, RemoveImageOptions};

use crate::engine::{DockerRuntime, EngineError, engine_message, engine_status};

/// Images that containers use, by the reference they were created from and by image id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesInUse {
    /// References as given at creation (`nginx:1.27`, `host:5000/app@sha256:…`).
    pub references: HashSet<String>,
    /// Image ids (`sha256:…`).
    pub ids: HashSet<String>,
}

impl ImagesInUse {
    /// Whether the image known as `reference` (with image id `id`, if known) is used.
    pub fn uses(&self, reference: &str, id: Option<&str>) -> bool {
        self.references.contains(reference) || id.is_some_and(|id| self.ids.contains(id))
    }
}

/// What [`DockerRuntime::remove_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The reference was removed (its layers too when it was the last one).
    Removed,
    /// The engine holds no image under that reference.
    Absent,
}

/// An image could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveImageError {
    /// A container (running or stopped) uses it: the engine refuses, and we never force.
    #[error("image {image} is used by a container, so it stays ({detail})")]
    InUse {
        /// The reference asked.
        image: String,
        /// The engine's message.
        detail: String,
    },
    /// Any other engine failure.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl DockerRuntime {
    /// Every image a container on this engine uses, running or stopped.
    pub async fn images_in_use(&self) -> Result<ImagesInUse, EngineError> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| EngineError {
                operation: "list containers",
                target: "of every image".to_owned(),
                source,
            })?;
        let mut used = ImagesInUse::default();
        for summary in summaries {
            used.references.extend(summary.image);
            used.ids.extend(summary.image_id);
        }
        Ok(used)
    }

    /// The image id (`sha256:…`) of the local image `reference`; `None` if there is none.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(inspect) => Ok(inspect.id),
            Err(source) if engine_status(&source) == Some(404) => Ok(None),
            Err(source) => Err(EngineError {
                operation: "inspect image",
                target: reference.to_owned(),
                source,
            }),
        }
    }

    /// Removes the local image `reference`, never by force: an image a container uses is
    /// [`RemoveImageError::InUse`], an absent one is [`Removed::Absent`].
    pub async fn remove_image(&self, reference: &str) -> Result<Removed, RemoveImageError> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(Removed::Removed),
            Err(source) => match engine_status(&source) {
                Some(404) => Ok(Removed::Absent),
                Some(409) => Err(RemoveImageError::InUse {
                    image: reference.to_owned(),
                    detail: engine_message(&source),
                }),
                _ => Err(RemoveImageError::Engine(EngineError {
                    operation: "remove image",
                    target: reference.to_owned(),
                    source,
                })),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_use_matches_by_reference_or_id() {
        let used = ImagesInUse {
            references: HashSet::from(["nginx:1.27".to_owned()]),
            ids: HashSet::from(["sha256:aa".to_owned()]),
        };
        assert!(used.uses("nginx:1.27", None));
        assert!(used.uses("r/app@sha256:bb", Some("sha256:aa")));
        assert!(!used.uses("r/app@sha256:bb", Some("sha256:cc")));
        assert!(!used.uses("r/app@sha256:bb", None));
    }
}
