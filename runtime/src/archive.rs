//! Moving a volume's files in and out as a tar stream, through a helper container that is
//! created and never started: the engine's archive endpoints read and write a created
//! container's mounts, so no process ever runs against the data. The helper's image
//! ([`HELPER_IMAGE`]) is made offline here — imported from a tar holding only `data/` — so no
//! registry is needed; the helper has no network, mounts the volume at `/data`, and carries
//! `peercompute.helper=<provider>` so [`DockerRuntime::remove_stale_helpers`] finds the ones a
//! crash left behind.
//!
//! [`export_volume`](DockerRuntime::export_volume) streams entries `data/…` (uid, gid and
//! modes as stored); [`import_volume`](DockerRuntime::import_volume) takes the same shape.
//! Import keeps the archive's uid and gid (pinned by an engine test with files of 1000:1000).
//! `copyUIDGID` is left off: set, the engine chowns to the container's configured user when it
//! has one (the helper has none, so here it would change nothing: checked on Docker 20.10). The
//! caller filters an import archive first (paths, file types, setuid bits, size): this module
//! only moves bytes.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::engine::{DockerRuntime, all_containers_where, engine_status};
use crate::spec::{LABEL_PROVIDER, is_volume_name};
use crate::volume::{VolumeError, volume_engine_error};

/// The helper image, made locally from an empty `data/` directory.
pub const HELPER_IMAGE: &str = "peercompute/volume-helper:1";
/// Label on every helper container; its value is the provider the volume belongs to.
pub const LABEL_HELPER: &str = "peercompute.helper";
/// Where the helper mounts the volume.
const HELPER_MOUNT: &str = "/data";

/// A volume's files as a tar stream (entries `data/…`). The helper container behind it is
/// removed when the stream is dropped (read to the end or not).
pub struct VolumeExport {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, bollard::errors::Error>> + Send>>,
    volume: String,
    helper: Option<Helper>,
}

impl std::fmt::Debug for VolumeExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeExport")
            .field("volume", &self.volume)
            .finish_non_exhaustive()
    }
}

impl Stream for VolumeExport {
    type Item = Result<Bytes, VolumeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.inner.as_mut().poll_next(cx).map(|item| {
            item.map(|chunk| {
                chunk.map_err(|source| volume_engine_error("export volume", &this.volume, source))
            })
        })
    }
}

impl VolumeExport {
    /// Ends the export (read to the end or not) and removes its helper container before
    /// returning, where dropping it would remove the helper in the background.
    async fn close(mut self) {
        // The engine holds the container while the download is open: end it first.
        self.inner = Box::pin(futures_util::stream::empty());
        if let Some(helper) = self.helper.take() {
            helper.remove().await;
        }
    }
}

impl Drop for VolumeExport {
    fn drop(&mut self) {
        if let Some(helper) = self.helper.take() {
            helper.remove_in_background();
        }
    }
}

/// A created, never started helper container.
struct Helper {
    docker: Docker,
    id: String,
}

impl Helper {
    async fn remove(&self) {
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            ..Default::default()
        };
        match self.docker.remove_container(&self.id, Some(options)).await {
            Ok(()) => {}
            Err(source) if engine_status(&source) == Some(404) => {}
            Err(error) => {
                tracing::warn!(helper = %self.id, %error, "could not remove a volume helper container; it is removed at the next start")
            }
        }
    }

    fn remove_in_background(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { self.remove().await });
            }
            Err(_) => {
                tracing::warn!(helper = %self.id, "no async runtime to remove a volume helper container; it is removed at the next start")
            }
        }
    }
}

impl DockerRuntime {
    /// Streams the files of volume `name` as a tar (entries `data/…`, ownership and modes
    /// kept). The volume must exist. Reading it while an app writes gives whatever the files
    /// hold at that moment: halt the app first for a consistent copy.
    pub async fn export_volume(&self, name: &str) -> Result<VolumeExport, VolumeError> {
        let helper = self.create_helper(name).await?;
        let options = DownloadFromContainerOptions {
            path: HELPER_MOUNT.to_owned(),
        };
        let inner = Box::pin(
            self.docker
                .download_from_container(&helper.id, Some(options)),
        );
        Ok(VolumeExport {
            inner,
            volume: name.to_owned(),
            helper: Some(helper),
        })
    }

    /// Writes the files of `tar` (entries `data/…`, as [`export_volume`](Self::export_volume)
    /// makes them) into volume `name`, keeping their uid, gid and modes. Existing files of the
    /// same path are replaced; nothing else is removed. The caller checks the archive first.
    pub async fn import_volume(
        &self,
        name: &str,
        tar: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), VolumeError> {
        let helper = self.create_helper(name).await?;
        let options = UploadToContainerOptions {
            path: "/".to_owned(),
            no_overwrite_dir_non_dir: Some("true".to_owned()),
            // Off: the archive's own uid and gid are kept (see the module docs).
            copy_uidgid: None,
        };
        let uploaded = self
            .docker
            .upload_to_container(&helper.id, Some(options), bollard::body_try_stream(tar))
            .await;
        helper.remove().await;
        uploaded.map_err(|source| match engine_status(&source) {
            Some(400) => VolumeError::Archive(crate::engine::engine_message(&source)),
            _ => volume_engine_error("import into volume", name, source),
        })?;
        tracing::info!(volume = %name, "volume imported");
        Ok(())
    }

    /// Whether volume `name` holds no file at all (reads only the archive's first entries).
    pub async fn volume_is_empty(&self, name: &str) -> Result<bool, VolumeError> {
        let mut export = self.export_volume(name).await?;
        let mut head = Vec::new();
        // The tar holds `data/` (one 512-byte header, no body) and then the first file's
        // header: 1 KiB is enough to see whether a second entry exists.
        while head.len() < 1024 {
            match export.next().await {
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => break,
            }
        }
        // Awaited: a peek leaves no helper behind (one being removed still lists).
        export.close().await;
        let mut archive = tar::Archive::new(std::io::Cursor::new(head));
        let entries = archive
            .entries()
            .map_err(|e| VolumeError::Archive(e.to_string()))?;
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.path_bytes().into_owned()),
                // A truncated header: there is a second entry, cut by our 1 KiB read.
                Err(_) => return Ok(false),
            }
            if names.len() > 1 {
                return Ok(false);
            }
        }
        Ok(names.iter().all(|n| n == b"data/" || n == b"data"))
    }

    /// Removes the helper containers of `provider` left by a crash in the middle of an export
    /// or import; returns how many. Call once at start.
    pub async fn remove_stale_helpers(&self, provider: &str) -> Result<usize, VolumeError> {
        let options = all_containers_where("label", format!("{LABEL_HELPER}={provider}"));
        let stale = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| volume_engine_error("list volume helpers of", provider, source))?;
        for summary in &stale {
            if let Some(id) = &summary.id {
                Helper {
                    docker: self.docker.clone(),
                    id: id.clone(),
                }
                .remove()
                .await;
            }
        }
        Ok(stale.len())
    }

    /// Creates (never starts) a helper mounting volume `name` at `/data`.
    async fn create_helper(&self, name: &str) -> Result<Helper, VolumeError> {
        if !is_volume_name(name) {
            return Err(VolumeError::InvalidName(name.to_owned()));
        }
        // The volume must exist: creating the helper would otherwise make an unlabelled one.
        let volume = self
            .docker
            .inspect_volume(name)
            .await
            .map_err(|source| volume_engine_error("inspect volume", name, source))?;
        let provider = volume
            .labels
            .get(LABEL_PROVIDER)
            .cloned()
            .unwrap_or_default();
        self.ensure_helper_image().await?;
        let body = ContainerCreateBody {
            image: Some(HELPER_IMAGE.to_owned()),
            cmd: Some(vec!["/never-started".to_owned()]),
            labels: Some(HashMap::from([(LABEL_HELPER.to_owned(), provider)])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                mounts: Some(vec![Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(name.to_owned()),
                    target: Some(HELPER_MOUNT.to_owned()),
                    read_only: Some(false),
                    ..Default::default()
                }]),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|source| volume_engine_error("create a helper for volume", name, source))?;
        Ok(Helper {
            docker: self.docker.clone(),
            id: created.id,
        })
    }

    /// Makes [`HELPER_IMAGE`] from a tar holding only `data/`, unless it is present.
    async fn ensure_helper_image(&self) -> Result<(), VolumeError> {
        match self.docker.inspect_image(HELPER_IMAGE).await {
            Ok(_) => return Ok(()),
            Err(source) if engine_status(&source) == Some(404) => {}
            Err(source) => {
                return Err(volume_engine_error("inspect image", HELPER_IMAGE, source));
            }
        }
        let (repo, tag) = HELPER_IMAGE
            .split_once(':')
            .expect("HELPER_IMAGE has a tag");
        let options = CreateImageOptions {
            from_src: Some("-".to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let root = Bytes::from(helper_root_tar());
        self.docker
            .create_image(Some(options), Some(bollard::body_full(root)), None)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| volume_engine_error("import image", HELPER_IMAGE, source))?;
        tracing::info!(image = HELPER_IMAGE, "volume helper image made");
        Ok(())
    }
}

/// A tar holding one directory, `data/` (root's, mode 0755).
fn helper_root_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_mtime(0);
    header
        .set_path("data/")
        .expect("a short relative path fits a ustar header");
    header.set_cksum();
    builder
        .append(&header, std::io::empty())
        .expect("writing to a Vec cannot fail");
    builder.into_inner().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_root_holds_only_data() {
        let bytes = helper_root_tar();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, tar::EntryType)> = archive
            .entries()
            .expect("a tar")
            .map(|e| {
                let e = e.expect("an entry");
                (
                    e.path().expect("a path").display().to_string(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert_eq!(entries, [("data/".to_owned(), tar::EntryType::Directory)]);
    }
}
