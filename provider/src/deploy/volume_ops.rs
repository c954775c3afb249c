//! A client's volumes: list, remove, export, import. A client sees and touches only the
//! volumes of its own scope (`peer:<client id>`); another client's `blog/data` is another
//! volume, and to this one it does not exist. Removal is never forced: a volume any
//! container mounts (running or halted) is refused, naming the deployment.

use std::sync::Arc;

use futures::StreamExt;
use peercompute_identity::PeerId;
use peercompute_runtime::{ContainerState, DockerRuntime, VolumeExport, VolumeUser};
use peercompute_tunnel_proto::{
    ErrorCode, ErrorResponse, VolumeImportRequest, VolumeInfo, VolumeRemoved, VolumesResponse,
    format_memory,
};
use tracing::{info, warn};

use super::{Deployments, error, now_secs, volume_error};
use crate::volumes::{
    Ask, Entry, Grant, Spool, VolumeId, Volumes, check_archive, free_bytes, peer_scope,
    rewrite_archive,
};

/// An import admitted before any of its data is read. Until it is finished, dropping it
/// (the client went away, stalled, sent too much) gives a new volume's share back and
/// removes the spool.
#[derive(Debug)]
pub(crate) struct Import {
    spool: Option<Spool>,
    /// `app/name`.
    label: String,
    grant: Grant,
    request: VolumeImportRequest,
    /// The volume exists on the engine and is replaced (unused, `--replace`).
    replace_existing: bool,
    volumes: Arc<Volumes>,
    done: bool,
}

impl Import {
    /// Bytes the client has to send.
    pub(crate) fn declared(&self) -> u64 {
        self.request.size_bytes
    }

    /// Appends a chunk of the archive to the spool.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), ErrorResponse> {
        let spool = self
            .spool
            .as_mut()
            .ok_or_else(|| error(ErrorCode::Internal, "the import's spool is closed"))?;
        spool
            .write(chunk)
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        if !self.done {
            self.volumes.cancel(std::slice::from_ref(&self.grant));
        }
    }
}

impl Deployments {
    /// `app/name` of this client → its ledger entry, or NotFound.
    fn own_volume(&self, owner: &PeerId, volume: &str) -> Result<(String, Entry), ErrorResponse> {
        let (app, name) = volume.split_once('/').unwrap_or((volume, ""));
        let ledger = self.volumes.snapshot();
        ledger
            .find(&peer_scope(owner), app, name)
            .and_then(|n| ledger.get(n).map(|e| (n.clone(), e.clone())))
            .ok_or_else(|| {
                error(
                    ErrorCode::NotFound,
                    format!(
                        "no volume {volume} of yours on this provider (see `peerctl volumes ls`)"
                    ),
                )
            })
    }

    /// Who mounts a volume: `deployment a1b2 (running)` in messages, `blog (running)` in
    /// listings; a container that is not a deployment here (a fleet's) by its container name.
    fn describe_user(&self, user: &VolumeUser, by_name: bool) -> String {
        let state = match user.state {
            ContainerState::Running | ContainerState::Restarting => "running",
            ContainerState::Exited | ContainerState::Created => {
                if self.volumes.stopped_reason(&user.container_id).is_some() {
                    "halted"
                } else {
                    "stopped"
                }
            }
            _ => "not running",
        };
        let record = self
            .store()
            .all()
            .find(|r| r.container_id == user.container_id)
            .map(|r| {
                if by_name {
                    r.name.clone()
                } else {
                    format!("deployment {}", r.id)
                }
            });
        let who = record.unwrap_or_else(|| format!("container {}", user.container_name));
        format!("{who} ({state})")
    }

    async fn users(
        &self,
        runtime: &DockerRuntime,
        name: &str,
    ) -> Result<Vec<VolumeUser>, ErrorResponse> {
        runtime.volume_users(name).await.map_err(volume_error)
    }

    pub(crate) async fn list_volumes(
        &self,
        owner: &PeerId,
    ) -> Result<VolumesResponse, ErrorResponse> {
        let runtime = self.runtime()?;
        let scope = peer_scope(owner);
        let mine: Vec<(String, Entry)> = self
            .volumes
            .snapshot()
            .of_scope(&scope)
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        let mut volumes = Vec::with_capacity(mine.len());
        for (name, entry) in mine {
            let in_use_by = self
                .users(runtime, &name)
                .await?
                .iter()
                .map(|u| self.describe_user(u, true))
                .collect();
            volumes.push(VolumeInfo {
                volume: entry.id.label(),
                used_bytes: entry.used_bytes,
                share_bytes: entry.share_bytes,
                in_use_by,
                created_at: Some(entry.created_at),
            });
        }
        Ok(VolumesResponse { volumes })
    }

    /// Removes a volume and its data; refused while any container mounts it.
    pub(crate) async fn remove_volume(
        &self,
        owner: &PeerId,
        volume: &str,
    ) -> Result<VolumeRemoved, ErrorResponse> {
        let runtime = self.runtime()?;
        let (name, _) = self.own_volume(owner, volume)?;
        let users = self.users(runtime, &name).await?;
        if let Some(user) = users.first() {
            return Err(error(
                ErrorCode::InUse,
                format!(
                    "volume {volume} is mounted by {}: stop it first",
                    self.describe_user(user, false)
                ),
            ));
        }
        match runtime.remove_volume(&name).await {
            Ok(()) | Err(peercompute_runtime::VolumeError::NotFound { .. }) => {}
            Err(e) => return Err(volume_error(e)),
        }
        self.volumes
            .forget(&name)
            .map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
        info!(%volume, %owner, "volume removed at its owner's request");
        Ok(VolumeRemoved {
            volume: volume.to_owned(),
        })
    }

    /// The volume's files as a tar stream (`data/…`).
    pub(crate) async fn export_volume(
        &self,
        owner: &PeerId,
        volume: &str,
    ) -> Result<VolumeExport, ErrorResponse> {
        let runtime = self.runtime()?;
        let (name, _) = self.own_volume(owner, volume)?;
        runtime.export_volume(&name).await.map_err(volume_error)
    }

    /// Everything an import checks before reading any of its data: the share (admitted like
    /// a deploy's), the declared size against the share and the free disk, and that it
    /// overwrites nothing (the volume absent or empty, or `replace` and unused).
    pub(crate) async fn import_begin(
        &self,
        owner: &PeerId,
        request: VolumeImportRequest,
    ) -> Result<Import, ErrorResponse> {
        let runtime = self.runtime()?;
        let label = request.volume.clone();
        let (app, vol) = label.split_once('/').unwrap_or((&label, ""));
        let scope = peer_scope(owner);
        let ask = Ask {
            name: self.volumes.engine_name(&scope, app, vol),
            id: VolumeId {
                scope: scope.clone(),
                app: app.to_owned(),
                volume: vol.to_owned(),
            },
            size_bytes: request.share_bytes,
        };
        let grant = self
            .volumes
            .reserve(std::slice::from_ref(&ask), now_secs())
            .map_err(|e| error(ErrorCode::LimitExceeded, e.to_string()))?
            .remove(0);
        // From here on, dropping `import` gives the share back.
        let mut import = Import {
            spool: None,
            label,
            grant,
            request,
            replace_existing: false,
            volumes: self.volumes.clone(),
            done: false,
        };
        import.replace_existing = self
            .import_checks(runtime, &import.grant, &import.request)
            .await?;
        let spool = Spool::create(&self.spool_dir, import.request.size_bytes)
            .map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
        import.spool = Some(spool);
        Ok(import)
    }

    /// Returns whether an existing volume is to be replaced.
    async fn import_checks(
        &self,
        runtime: &DockerRuntime,
        grant: &Grant,
        request: &VolumeImportRequest,
    ) -> Result<bool, ErrorResponse> {
        let label = &request.volume;
        if request.size_bytes > grant.share_bytes {
            return Err(error(
                ErrorCode::LimitExceeded,
                format!(
                    "the archive is {}, over the {} share of volume {label}: import with a larger --share",
                    format_memory(request.size_bytes),
                    format_memory(grant.share_bytes)
                ),
            ));
        }
        let free = free_bytes(self.spool_dir.parent().unwrap_or(&self.spool_dir));
        if let Some(free) = free.filter(|f| request.size_bytes.saturating_mul(3) > *f) {
            return Err(error(
                ErrorCode::LimitExceeded,
                format!(
                    "the archive is {} and this provider has {} of disk free (it keeps two copies while checking it): free some space or import a smaller archive",
                    format_memory(request.size_bytes),
                    format_memory(free)
                ),
            ));
        }
        let root = runtime.data_root().await.ok().flatten();
        let engine_free = root.as_deref().and_then(free_bytes);
        if let Some(free) = engine_free.filter(|f| request.size_bytes > *f) {
            return Err(error(
                ErrorCode::LimitExceeded,
                format!(
                    "the archive is {} and the engine's disk has {} free: the provider's owner must free some space first",
                    format_memory(request.size_bytes),
                    format_memory(free)
                ),
            ));
        }
        if grant.new {
            return Ok(false);
        }
        let users = self.users(runtime, &grant.name).await?;
        let empty = match runtime.volume_is_empty(&grant.name).await {
            Ok(empty) => empty,
            Err(peercompute_runtime::VolumeError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(volume_error(e)),
        };
        if !request.replace {
            if empty {
                return Ok(false);
            }
            return Err(error(
                ErrorCode::BadRequest,
                format!(
                    "volume {label} already holds data: an import never overwrites it. Import into an empty volume, or pass --replace (the volume must not be in use; `peerctl volumes export` first keeps a copy)"
                ),
            ));
        }
        if let Some(user) = users.first() {
            return Err(error(
                ErrorCode::InUse,
                format!(
                    "volume {label} is mounted by {}: stop it first to replace its data",
                    self.describe_user(user, false)
                ),
            ));
        }
        Ok(!empty)
    }

    /// After the data: size and SHA-256 as signed, the archive's entries, then into the
    /// volume. The volume is untouched until everything checked out (a replaced volume's
    /// old data is kept in the spool until the new data is in, and put back if it fails);
    /// the spool is removed whatever happens.
    pub(crate) async fn import_finish(
        &self,
        mut import: Import,
    ) -> Result<(u64, String), ErrorResponse> {
        let result = self.import_checked(&mut import).await;
        import.done = result.is_ok();
        result
    }

    async fn import_checked(&self, import: &mut Import) -> Result<(u64, String), ErrorResponse> {
        let runtime = self.runtime()?;
        let spool = import
            .spool
            .take()
            .ok_or_else(|| error(ErrorCode::Internal, "the import's spool is closed"))?;
        let (sha256, share) = (import.request.sha256.clone(), import.grant.share_bytes);
        // Hashing is done; fsync, the entry walk and the rewrite are blocking work. The engine
        // gets the archive as rewritten here, never the client's bytes.
        let clean = Spool::create(&self.spool_dir, u64::MAX)
            .map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
        let (spool, clean, checked) = tokio::task::spawn_blocking(move || {
            let (mut spool, mut clean) = (spool, clean);
            let checked = spool
                .finish(&sha256)
                .map_err(|e| e.to_string())
                .and_then(|()| spool.open().map_err(|e| e.to_string()))
                .and_then(|file| check_archive(file, share).map_err(|e| e.to_string()))
                .and_then(|summary| {
                    let file = spool.open().map_err(|e| e.to_string())?;
                    rewrite_archive(file, &mut clean)
                        .map(|_| summary)
                        .map_err(|e| format!("cannot rewrite the checked archive: {e}"))
                });
            (spool, clean, checked)
        })
        .await
        .map_err(|e| {
            error(
                ErrorCode::Internal,
                format!("the archive check stopped: {e}"),
            )
        })?;
        drop(spool);
        let summary = checked.map_err(|e| {
            error(
                ErrorCode::BadRequest,
                format!("import refused, volume {} untouched: {e}", import.label),
            )
        })?;
        let name = import.grant.name.clone();
        let backup = if import.replace_existing {
            Some(self.keep_old_data(runtime, &name).await?)
        } else {
            None
        };
        let written = self.fill_volume(runtime, &import.grant, clean.path()).await;
        if let (Err(e), Some(backup)) = (&written, backup) {
            warn!(volume = %name, "the replacing import failed ({}); putting the old data back", e.message);
            if let Err(again) = self
                .fill_volume(runtime, &import.grant, backup.path())
                .await
            {
                let kept = format!("{name}.replaced-{}.tar", now_secs());
                let place = backup
                    .keep_as(&kept)
                    .map_or_else(|k| format!("lost: {k}"), |p| p.display().to_string());
                warn!(volume = %name, %place, "the old data could not be put back: {}", again.message);
                return Err(error(
                    ErrorCode::Runtime,
                    format!(
                        "the import failed ({}) and the old data could not be put back ({}); the provider's owner finds it at {place}",
                        e.message, again.message
                    ),
                ));
            }
        }
        written?;
        info!(volume = %import.label, entries = summary.entries, bytes = import.request.size_bytes, "volume imported");
        Ok((
            import.request.size_bytes,
            import.request.sha256.to_ascii_lowercase(),
        ))
    }

    /// Copies an unused volume's data into the spool directory before it is replaced.
    async fn keep_old_data(
        &self,
        runtime: &DockerRuntime,
        name: &str,
    ) -> Result<Spool, ErrorResponse> {
        let internal = |e: String| error(ErrorCode::Internal, e);
        let mut backup =
            Spool::create(&self.spool_dir, u64::MAX).map_err(|e| internal(e.to_string()))?;
        let mut old = runtime.export_volume(name).await.map_err(volume_error)?;
        while let Some(chunk) = old.next().await {
            let chunk = chunk.map_err(volume_error)?;
            backup.write(&chunk).map_err(|e| {
                internal(format!(
                    "cannot keep a copy of the data being replaced, so nothing was replaced: {e}"
                ))
            })?;
        }
        Ok(backup)
    }

    /// Empties volume `grant` (when it exists) and writes the archive at `tar` into it.
    async fn fill_volume(
        &self,
        runtime: &DockerRuntime,
        grant: &Grant,
        tar: &std::path::Path,
    ) -> Result<(), ErrorResponse> {
        match runtime.remove_volume(&grant.name).await {
            Ok(()) | Err(peercompute_runtime::VolumeError::NotFound { .. }) => {}
            Err(e) => return Err(volume_error(e)),
        }
        let mounts = [peercompute_tunnel_proto::VolumeMount {
            name: grant.id.volume.clone(),
            path: "/data".into(),
            size_bytes: None,
        }];
        self.volumes
            .create(runtime, std::slice::from_ref(grant), &mounts)
            .await
            .map_err(volume_error)?;
        let file = tokio::fs::File::open(tar).await.map_err(|e| {
            error(
                ErrorCode::Internal,
                format!("cannot read the spooled import: {e}"),
            )
        })?;
        runtime
            .import_volume(&grant.name, file_chunks(file))
            .await
            .map_err(|e| {
                warn!(volume = %grant.name, "import failed after its checks: {e}");
                volume_error(e)
            })
    }
}

/// A file as a stream of 64 KiB chunks.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), file)))
    })
    .boxed()
}
