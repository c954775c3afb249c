//! A client's volumes: list, remove, export, import. A client sees and touches only the
//! volumes of its own scope (`peer:<client id>`); another client's `blog/data` is another
//! volume, and to this one it does not exist. Removal is never forced: a volume any
//! container mounts (running or halted) is refused, naming the deployment.

use futures::StreamExt;
use peercompute_identity::PeerId;
use peercompute_runtime::{ContainerState, DockerRuntime, VolumeExport, VolumeUser};
use peercompute_tunnel_proto::{
    ErrorCode, ErrorResponse, VolumeImportRequest, VolumeInfo, VolumeRemoved, VolumesResponse,
    format_memory,
};
use tracing::{info, warn};

use super::{Deployments, error, now_secs, volume_error};
use crate::volumes::{Ask, Entry, Grant, Spool, VolumeId, check_archive, free_bytes, peer_scope};

/// An import admitted before any of its data is read.
#[derive(Debug)]
pub(crate) struct Import {
    pub(crate) spool: Spool,
    /// `app/name`.
    label: String,
    grant: Grant,
    request: VolumeImportRequest,
    /// The volume exists on the engine and is replaced (unused, `--replace`).
    replace_existing: bool,
}

impl Import {
    /// Bytes the client still has to send.
    pub(crate) fn declared(&self) -> u64 {
        self.request.size_bytes
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
        let checked = self.import_checks(runtime, &grant, &request).await;
        match checked {
            Ok(replace_existing) => match Spool::create(&self.spool_dir, request.size_bytes) {
                Ok(spool) => Ok(Import {
                    spool,
                    label,
                    grant,
                    request,
                    replace_existing,
                }),
                Err(e) => {
                    self.volumes.cancel(std::slice::from_ref(&grant));
                    Err(error(ErrorCode::Internal, e.to_string()))
                }
            },
            Err(e) => {
                self.volumes.cancel(std::slice::from_ref(&grant));
                Err(e)
            }
        }
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
        if let Some(free) = free.filter(|f| request.size_bytes.saturating_mul(2) > *f) {
            return Err(error(
                ErrorCode::LimitExceeded,
                format!(
                    "the archive is {} and this provider has {} of disk free (it keeps a copy while checking it): free some space or import a smaller archive",
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
    /// volume. The volume is untouched until everything checked out; the spool is removed
    /// whatever happens (when `import` drops).
    pub(crate) async fn import_finish(
        &self,
        mut import: Import,
    ) -> Result<(u64, String), ErrorResponse> {
        let result = self.import_checked(&mut import).await;
        if result.is_err() {
            self.volumes.cancel(std::slice::from_ref(&import.grant));
        }
        result
    }

    async fn import_checked(&self, import: &mut Import) -> Result<(u64, String), ErrorResponse> {
        let runtime = self.runtime()?;
        let bad = |e: String| error(ErrorCode::BadRequest, e);
        import
            .spool
            .finish(&import.request.sha256)
            .map_err(|e| bad(e.to_string()))?;
        let file = import.spool.open().map_err(|e| bad(e.to_string()))?;
        let share = import.grant.share_bytes;
        let summary = tokio::task::spawn_blocking(move || check_archive(file, share))
            .await
            .map_err(|e| {
                error(
                    ErrorCode::Internal,
                    format!("the archive check stopped: {e}"),
                )
            })?
            .map_err(|e| {
                bad(format!(
                    "import refused, volume {} untouched: {e}",
                    import.label
                ))
            })?;
        let name = import.grant.name.clone();
        if import.replace_existing {
            // Verified: only now is the old data cleared (the volume is unused, checked).
            runtime.remove_volume(&name).await.map_err(volume_error)?;
        }
        let mounts = [peercompute_tunnel_proto::VolumeMount {
            name: import.grant.id.volume.clone(),
            path: "/data".into(),
            size_bytes: None,
        }];
        self.volumes
            .create(runtime, std::slice::from_ref(&import.grant), &mounts)
            .await
            .map_err(volume_error)?;
        let file = tokio::fs::File::open(import.spool.path())
            .await
            .map_err(|e| {
                error(
                    ErrorCode::Internal,
                    format!("cannot read the spooled import: {e}"),
                )
            })?;
        runtime
            .import_volume(&name, file_chunks(file))
            .await
            .map_err(|e| {
                warn!(volume = %name, "import failed after its checks: {e}");
                volume_error(e)
            })?;
        info!(volume = %import.label, entries = summary.entries, bytes = import.request.size_bytes, "volume imported");
        Ok((
            import.request.size_bytes,
            import.request.sha256.to_ascii_lowercase(),
        ))
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
