//! Named volumes on the engine: the data an app keeps across redeploys, switches and
//! rollbacks. A volume's engine name is derived, never taken from a request
//! ([`volume_name`]: `pcv-<24 hex>-<app>-<volume>`), and its labels say whose it is
//! (`peercompute.managed=volume`, `.provider`, `.scope`, `.app`, `.volume`).
//! [`DockerRuntime::ensure_volume`] creates one or reuses it only when every label matches;
//! [`list_volumes`](DockerRuntime::list_volumes) finds a provider's volumes again after a
//! restart; [`volume_usage`](DockerRuntime::volume_usage) measures one;
//! [`volume_users`](DockerRuntime::volume_users) names the containers that mount it;
//! [`remove_volume`](DockerRuntime::remove_volume) is never forced (the engine refuses a
//! volume in use, which comes back as [`VolumeError::InUse`]). Export and import are in the
//! `archive` module.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use bollard::models::{Volume, VolumeCreateRequest};
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};
use sha2::{Digest, Sha256};

use crate::engine::{
    DockerRuntime, EngineError, all_containers_where, engine_message, engine_status,
};
use crate::spec::{LABEL_DEPLOYMENT, LABEL_MANAGED, LABEL_PROVIDER, VOLUME_PREFIX, is_volume_name};
use crate::status::ContainerState;

/// `peercompute.managed` value on every volume this runtime creates.
pub const MANAGED_VOLUME: &str = "volume";
/// Label: who the volume belongs to (`peer:<owner id>` or `fleet:<fleet id>`), in full.
pub const LABEL_SCOPE: &str = "peercompute.scope";
/// Label: the app (route) name the volume belongs to.
pub const LABEL_APP: &str = "peercompute.app";
/// Label: the volume's name as the client gave it (`data`).
pub const LABEL_VOLUME: &str = "peercompute.volume";

/// The engine name of volume `volume` of app `app` in `scope`, kept by the daemon `provider`:
/// `pcv-<first 24 hex digits of SHA-256(provider "\n" scope)>-<app>-<volume>`. The scope is
/// hashed so names stay short and carry no peer id; the provider is hashed in because several
/// daemons may share one engine and each must keep its own data. `app` and `volume` must
/// already follow the wire rules (a DNS label; `[a-z0-9][a-z0-9-]{0,31}`), so the name fits
/// the engine's rule for volume names (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`) and is at most 125 bytes
/// (4 + 24 + 1 + 63 + 1 + 32; the engine only needs it to be one path component). Since `-`
/// may occur in both parts, app `a-b` volume `c` and app `a` volume `b-c` share a name: the
/// labels, not the name, are authoritative, and [`DockerRuntime::ensure_volume`] checks them
/// all, so such a pair is refused as a collision rather than shared.
pub fn volume_name(provider: &str, scope: &str, app: &str, volume: &str) -> String {
    let digest = Sha256::digest(format!("{provider}\n{scope}").as_bytes());
    let hash: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{VOLUME_PREFIX}{hash}-{app}-{volume}")
}

/// Who a volume belongs to, as its labels say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeLabels {
    /// Peer id (or label) of the daemon that keeps it.
    pub provider: String,
    /// `peer:<owner id>` or `fleet:<fleet id>`.
    pub scope: String,
    /// The app (route) name.
    pub app: String,
    /// The volume's name in the request (`data`).
    pub volume: String,
}

impl VolumeLabels {
    /// The engine labels.
    fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), MANAGED_VOLUME.to_owned()),
            (LABEL_PROVIDER.to_owned(), self.provider.clone()),
            (LABEL_SCOPE.to_owned(), self.scope.clone()),
            (LABEL_APP.to_owned(), self.app.clone()),
            (LABEL_VOLUME.to_owned(), self.volume.clone()),
        ])
    }

    /// The labels of a volume of ours, or `None` when it is not one.
    fn from_map(labels: &HashMap<String, String>) -> Option<VolumeLabels> {
        if labels.get(LABEL_MANAGED).map(String::as_str) != Some(MANAGED_VOLUME) {
            return None;
        }
        let get = |key: &str| labels.get(key).cloned();
        Some(VolumeLabels {
            provider: get(LABEL_PROVIDER)?,
            scope: get(LABEL_SCOPE)?,
            app: get(LABEL_APP)?,
            volume: get(LABEL_VOLUME)?,
        })
    }
}

/// A volume of a provider, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedVolume {
    /// The engine name.
    pub name: String,
    /// Its labels.
    pub labels: VolumeLabels,
    /// When the engine created it, in seconds since the Unix epoch (if it says).
    pub created_at: Option<u64>,
}

/// A container that mounts a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUser {
    /// The engine's container id.
    pub container_id: String,
    /// The container name, without the leading `/`.
    pub container_name: String,
    /// Its `peercompute.deployment` label, when it is a deployment's container.
    pub deployment: Option<String>,
    /// Running, exited (halted), created, …
    pub state: ContainerState,
}

/// A volume operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Not a name this runtime makes (see [`volume_name`]).
    #[error("{0:?} is not a provider volume name: expected pcv-<24 hex>-<app>-<volume>")]
    InvalidName(String),
    /// A container (running or stopped) mounts it; the engine refuses, and we never force.
    #[error("volume {volume} is mounted by a container: stop the deployment that uses it first")]
    InUse {
        /// The engine name.
        volume: String,
    },
    /// No such volume.
    #[error("volume {volume} does not exist on this engine")]
    NotFound {
        /// The engine name.
        volume: String,
    },
    /// A volume of that name exists with other labels: it is not reused.
    #[error(
        "volume {volume} exists but belongs to someone else (scope {found:?}, app {found_app:?}): it is not reused; this is a name collision, report it"
    )]
    Collision {
        /// The engine name.
        volume: String,
        /// The scope label found on it (empty when missing).
        found: String,
        /// The app label found on it (empty when missing).
        found_app: String,
    },
    /// The import archive could not be read, or held something a volume may not.
    #[error("the archive is not a volume archive: {0}")]
    Archive(String),
    /// Any other engine failure.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub(crate) fn volume_engine_error(
    operation: &'static str,
    volume: &str,
    source: bollard::errors::Error,
) -> VolumeError {
    match engine_status(&source) {
        Some(404) => VolumeError::NotFound {
            volume: volume.to_owned(),
        },
        _ => VolumeError::Engine(EngineError {
            operation,
            target: volume.to_owned(),
            source,
        }),
    }
}

impl DockerRuntime {
    /// Creates volume `name` (driver `local`) with `labels`, or reuses it when it exists
    /// with exactly these labels; returns whether it was created now. A volume of that name
    /// with any other label is refused ([`VolumeError::Collision`]) and logged.
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: &VolumeLabels,
    ) -> Result<bool, VolumeError> {
        if !is_volume_name(name) {
            return Err(VolumeError::InvalidName(name.to_owned()));
        }
        let existed = match self.docker.inspect_volume(name).await {
            Ok(volume) => Some(volume),
            Err(source) if engine_status(&source) == Some(404) => None,
            Err(source) => return Err(volume_engine_error("inspect volume", name, source)),
        };
        let created = existed.is_none();
        let volume = match existed {
            Some(volume) => volume,
            // Creating is idempotent on the engine: a racing creator gets the same volume
            // back, with whatever labels it was made with, so the check below covers it.
            None => self
                .docker
                .create_volume(VolumeCreateRequest {
                    name: Some(name.to_owned()),
                    driver: Some("local".to_owned()),
                    labels: Some(labels.to_map()),
                    ..Default::default()
                })
                .await
                .map_err(|source| volume_engine_error("create volume", name, source))?,
        };
        if VolumeLabels::from_map(&volume.labels).as_ref() != Some(labels) {
            let found = |key: &str| volume.labels.get(key).cloned().unwrap_or_default();
            tracing::warn!(volume = %name, scope = %labels.scope, found_scope = %found(LABEL_SCOPE), found_provider = %found(LABEL_PROVIDER), "volume name collision: the existing volume carries other labels; refusing to reuse it");
            return Err(VolumeError::Collision {
                volume: name.to_owned(),
                found: found(LABEL_SCOPE),
                found_app: found(LABEL_APP),
            });
        }
        if created {
            tracing::info!(volume = %name, scope = %labels.scope, app = %labels.app, "volume created");
        }
        Ok(created)
    }

    /// Every volume of daemon `provider` (labels `peercompute.managed=volume` and
    /// `peercompute.provider=<provider>`), sorted by name.
    pub async fn list_volumes(&self, provider: &str) -> Result<Vec<ManagedVolume>, VolumeError> {
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![
                    format!("{LABEL_MANAGED}={MANAGED_VOLUME}"),
                    format!("{LABEL_PROVIDER}={provider}"),
                ],
            )])),
        };
        let listed = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|source| volume_engine_error("list volumes", provider, source))?;
        let mut volumes: Vec<ManagedVolume> = listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|volume| {
                let labels = VolumeLabels::from_map(&volume.labels)?;
                // The engine filtered already; a label spelled differently is not ours.
                (labels.provider == provider).then(|| ManagedVolume {
                    created_at: created_secs(&volume),
                    name: volume.name,
                    labels,
                })
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// The bytes volume `name` takes on disk: measured by walking its directory on this host
    /// (allocated blocks, hard links counted once) when this process may read it, else as the
    /// engine measures it ([`engine_volume_usage`](Self::engine_volume_usage): a remote
    /// engine, or a daemon that is not root). `None`: unknown.
    pub async fn volume_usage(&self, name: &str) -> Result<Option<u64>, VolumeError> {
        let volume = self
            .docker
            .inspect_volume(name)
            .await
            .map_err(|source| volume_engine_error("inspect volume", name, source))?;
        if volume.driver == "local" && volume.mountpoint.starts_with('/') {
            let root = PathBuf::from(volume.mountpoint);
            let walked = tokio::task::spawn_blocking(move || disk_usage(&root)).await;
            match walked {
                Ok(Ok(bytes)) => return Ok(Some(bytes)),
                Ok(Err(error)) => {
                    tracing::debug!(volume = %name, %error, "volume directory not readable here; asking the engine")
                }
                Err(error) => tracing::warn!(volume = %name, %error, "measuring a volume failed"),
            }
        }
        self.engine_volume_usage(name).await
    }

    /// The size of volume `name` as the engine measures it (`system df`: the files' apparent
    /// sizes), from an answer at most `DF_MAX_AGE` (10 s) old, so one round of checks asks
    /// once. `None` when the engine does not say (-1, not listed, or the call failed, which is
    /// logged). On API 1.41 the engine sizes every container for this call too.
    pub async fn engine_volume_usage(&self, name: &str) -> Result<Option<u64>, VolumeError> {
        let mut cache = self.df_cache.lock().await;
        let now = Instant::now();
        if cache.fresh(now).is_none() {
            match crate::df::volume_sizes(self.endpoint()).await {
                Ok(sizes) => cache.store(now, sizes),
                Err(error) => {
                    tracing::warn!(volume = %name, %error, "the engine's system df failed: volume use unknown");
                    return Ok(None);
                }
            }
        }
        Ok(cache
            .fresh(now)
            .and_then(|sizes| sizes.get(name).copied().flatten()))
    }

    /// The containers (running or not, ours or not) that mount volume `name`.
    pub async fn volume_users(&self, name: &str) -> Result<Vec<VolumeUser>, VolumeError> {
        let options = all_containers_where("volume", name.to_owned());
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| volume_engine_error("list the containers of volume", name, source))?;
        Ok(summaries
            .into_iter()
            .map(|summary| VolumeUser {
                container_id: summary.id.unwrap_or_default(),
                container_name: summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                deployment: summary
                    .labels
                    .and_then(|labels| labels.get(LABEL_DEPLOYMENT).cloned()),
                state: summary
                    .state
                    .map(ContainerState::from)
                    .unwrap_or(ContainerState::Unknown),
            })
            .collect())
    }

    /// Removes volume `name` and its data. Never forced: a volume any container mounts
    /// (running or stopped) is refused with [`VolumeError::InUse`]; an absent one gives
    /// [`VolumeError::NotFound`].
    pub async fn remove_volume(&self, name: &str) -> Result<(), VolumeError> {
        if !is_volume_name(name) {
            return Err(VolumeError::InvalidName(name.to_owned()));
        }
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => {
                tracing::info!(volume = %name, "volume removed");
                Ok(())
            }
            Err(source) if engine_status(&source) == Some(409) => {
                tracing::debug!(volume = %name, detail = %engine_message(&source), "volume in use, not removed");
                Err(VolumeError::InUse {
                    volume: name.to_owned(),
                })
            }
            Err(source) => Err(volume_engine_error("remove volume", name, source)),
        }
    }
}

/// Seconds since the epoch of the volume's creation time.
fn created_secs(volume: &Volume) -> Option<u64> {
    let created = crate::time::parse_rfc3339(volume.created_at.as_deref()?)?;
    created.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Bytes allocated under `root` (st_blocks × 512), each inode once; symlinks not followed.
fn disk_usage(root: &Path) -> std::io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            }
            if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_are_derived_stable_and_valid() {
        let name = volume_name("12D3KooWProvider", "peer:12D3KooWOwner", "blog", "data");
        assert!(name.starts_with("pcv-"), "{name}");
        assert!(name.ends_with("-blog-data"), "{name}");
        assert_eq!(name.len(), "pcv-".len() + 24 + "-blog-data".len());
        assert!(is_volume_name(&name), "{name}");
        assert_eq!(
            name,
            volume_name("12D3KooWProvider", "peer:12D3KooWOwner", "blog", "data")
        );
        // Another owner, fleet or provider gets another volume.
        for other in [
            volume_name("12D3KooWProvider", "peer:12D3KooWOther", "blog", "data"),
            volume_name("12D3KooWProvider", "fleet:12D3KooWOwner", "blog", "data"),
            volume_name("12D3KooWSecond", "peer:12D3KooWOwner", "blog", "data"),
        ] {
            assert_ne!(other, name);
        }
        // The longest app (63) and volume (32) names still give a valid engine name.
        let longest = volume_name("p", "s", &"a".repeat(63), &"v".repeat(32));
        assert!(is_volume_name(&longest), "{longest}");
    }

    #[test]
    fn labels_round_trip_and_foreign_volumes_are_not_ours() {
        let labels = VolumeLabels {
            provider: "12D3KooWProvider".into(),
            scope: "peer:12D3KooWOwner".into(),
            app: "blog".into(),
            volume: "data".into(),
        };
        let map = labels.to_map();
        assert_eq!(map.get(LABEL_MANAGED).map(String::as_str), Some("volume"));
        assert_eq!(VolumeLabels::from_map(&map), Some(labels));
        let mut container_label = map.clone();
        container_label.insert(LABEL_MANAGED.into(), "true".into());
        assert_eq!(VolumeLabels::from_map(&container_label), None);
        let mut no_scope = map;
        no_scope.remove(LABEL_SCOPE);
        assert_eq!(VolumeLabels::from_map(&no_scope), None);
    }

    #[test]
    fn disk_usage_counts_blocks_and_hard_links_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 64 << 10]).expect("write");
        std::fs::hard_link(dir.path().join("sub/a"), dir.path().join("b")).expect("link");
        std::os::unix::fs::symlink("/usr", dir.path().join("outside")).expect("symlink");
        let used = disk_usage(dir.path()).expect("walk");
        // 64 KiB once, plus the directory and the symlink (a few blocks at most).
        assert!(
            (64 << 10..(64 << 10) + (32 << 10)).contains(&used),
            "{used}"
        );
    }
}
