//! Named volumes: the data a deployment or a fleet release keeps across redeploys, restarts
//! and rollbacks. A volume belongs to a scope (`peer:<owner id>` for deploys, `fleet:<fleet
//! id>` for releases), an app and a name; its engine name is derived from those by the
//! runtime, never taken from a request.
//!
//! - `ledger`: the shares and last measured use of every volume, and admission (pure).
//! - `store`: the ledger's file, `<home>/state/volumes.json`.
//! - `transfer`: import and export — the spool, the checks of an imported archive.
//!
//! [`Volumes`] is the one ledger of a daemon, shared by the deploy path and the fleet.

mod ledger;
mod store;
mod transfer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use peercompute_identity::PeerId;
use peercompute_runtime::{
    DockerRuntime, VolumeBinding, VolumeError, VolumeLabels, format_memory, volume_name,
};
use peercompute_tunnel_proto::VolumeMount;
use tracing::{debug, info, warn};

pub use ledger::{
    Ask, DEFAULT_SHARE_BYTES, Entry, Grant, Ledger, MAX_VOLUMES_PER_SCOPE, Rebuilt, Refusal,
    VolumeId,
};
pub(crate) use store::LedgerFile;
pub use store::LedgerFileError;
pub use transfer::{
    ArchiveRefusal, ArchiveSummary, MAX_ENTRIES, MAX_EXTENSION_HEADER, Spool, SpoolError,
    check_archive, free_bytes, rewrite_archive, sweep_spool,
};

/// The scope of a client's deploys.
pub fn peer_scope(owner: &PeerId) -> String {
    format!("peer:{owner}")
}

/// The scope of a fleet's releases.
pub fn fleet_scope(fleet: &impl std::fmt::Display) -> String {
    format!("fleet:{fleet}")
}

/// The provider's volume limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSettings {
    /// What all named volumes together may hold (`--max-volumes-size`).
    pub max_bytes: u64,
    /// How often use is measured against the shares (`--volume-check-interval`).
    pub check_interval: Duration,
}

/// The daemon's volume ledger, its limits, and the containers the check halted.
#[derive(Debug)]
pub struct Volumes {
    file: Mutex<LedgerFile>,
    settings: VolumeSettings,
    /// This daemon's provider label (its first peer id, kept across key rotations): the
    /// `peercompute.provider` label of its volumes and the seed of their engine names.
    provider: String,
    /// Container id → why the volume check halted it (shown by status and ls; the fleet
    /// records it as the apply's failure).
    halted: Mutex<BTreeMap<String, String>>,
}

impl Volumes {
    /// Opens `<state_dir>/volumes.json` (empty when absent); `provider` is the daemon's
    /// provider label, which must not change with its key (the volumes' names derive from it).
    pub fn open(
        state_dir: &Path,
        provider: &PeerId,
        settings: VolumeSettings,
    ) -> Result<Self, LedgerFileError> {
        Ok(Self {
            file: Mutex::new(LedgerFile::open(state_dir)?),
            settings,
            provider: provider.to_string(),
            halted: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn settings(&self) -> VolumeSettings {
        self.settings
    }

    fn file(&self) -> MutexGuard<'_, LedgerFile> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn halted(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.halted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the ledger as it is now.
    pub fn snapshot(&self) -> Ledger {
        self.file().ledger.clone()
    }

    /// The engine name of `app/volume` in `scope` on this daemon.
    pub fn engine_name(&self, scope: &str, app: &str, volume: &str) -> String {
        volume_name(&self.provider, scope, app, volume)
    }

    /// What a request's mounts ask for, in `scope`, for `app`.
    pub fn asks(&self, scope: &str, app: &str, mounts: &[VolumeMount]) -> Vec<Ask> {
        mounts
            .iter()
            .map(|m| Ask {
                name: self.engine_name(scope, app, &m.name),
                id: VolumeId {
                    scope: scope.to_owned(),
                    app: app.to_owned(),
                    volume: m.name.clone(),
                },
                size_bytes: m.size_bytes,
            })
            .collect()
    }

    /// Admits `asks` under `--max-volumes-size` and records their shares at once (so two
    /// requests admitted together cannot overbook). [`Volumes::cancel`] gives back the new
    /// ones when the request fails before its volumes exist.
    pub fn reserve(&self, asks: &[Ask], now: u64) -> Result<Vec<Grant>, ReserveError> {
        let mut file = self.file();
        let grants = file.ledger.admit(asks, self.settings.max_bytes)?;
        file.change(|l| l.grant(&grants, now))?;
        Ok(grants)
    }

    /// Gives back the shares of grants whose volumes were never created.
    pub fn cancel(&self, grants: &[Grant]) {
        if let Err(e) = self.file().change(|l| l.ungrant_new(grants)) {
            warn!("{e}");
        }
    }

    /// Creates (or reuses, labels matching) the engine volumes of `grants` and returns the
    /// mounts for the container, in the order of `mounts` (the same order `asks` had). A
    /// volume of that name with other labels is refused and logged as a collision.
    pub async fn create(
        &self,
        runtime: &DockerRuntime,
        grants: &[Grant],
        mounts: &[VolumeMount],
    ) -> Result<Vec<VolumeBinding>, VolumeError> {
        let mut bindings = Vec::with_capacity(grants.len());
        for (grant, mount) in grants.iter().zip(mounts) {
            let labels = VolumeLabels {
                provider: self.provider.clone(),
                scope: grant.id.scope.clone(),
                app: grant.id.app.clone(),
                volume: grant.id.volume.clone(),
            };
            runtime.ensure_volume(&grant.name, &labels).await?;
            bindings.push(VolumeBinding {
                volume: grant.name.clone(),
                target: mount.path.clone(),
            });
        }
        Ok(bindings)
    }

    /// At start: finds this daemon's volumes by their labels, measures them, and brings the
    /// ledger in line (a lost `volumes.json` is rebuilt; shares of known volumes are kept).
    /// Also removes helper containers a crash left, and warns when the maximum is more than
    /// the engine's disk has free.
    pub async fn rebuild_from_engine(&self, runtime: &DockerRuntime, now: u64) {
        match runtime.remove_stale_helpers(&self.provider).await {
            Ok(0) => {}
            Ok(n) => info!("removed {n} volume helper container(s) left by a crash"),
            Err(e) => warn!("cannot remove stale volume helpers: {e}"),
        }
        let listed = match runtime.list_volumes(&self.provider).await {
            Ok(listed) => listed,
            Err(e) => {
                warn!("cannot list this provider's volumes; their shares stay as saved: {e}");
                return;
            }
        };
        let mut found = Vec::with_capacity(listed.len());
        for v in listed {
            let used = runtime.volume_usage(&v.name).await.ok().flatten();
            let id = VolumeId {
                scope: v.labels.scope,
                app: v.labels.app,
                volume: v.labels.volume,
            };
            found.push((v.name, id, used));
        }
        match self.file().change(|l| l.rebuild(found, now)) {
            Ok(r) => {
                for name in &r.added {
                    info!(volume = %name, "volume found by its labels, not in volumes.json: its share is 1 GiB (or what it uses)");
                }
                for name in &r.dropped {
                    warn!(volume = %name, "volume in volumes.json is gone from the engine (removed by hand?): forgotten");
                }
            }
            Err(e) => warn!("{e}"),
        }
        self.warn_if_disk_smaller(runtime).await;
    }

    /// The quota is soft: say so when the disk could not hold the maximum.
    async fn warn_if_disk_smaller(&self, runtime: &DockerRuntime) {
        let Ok(Some(root)) = runtime.data_root().await else {
            return;
        };
        let Some(free) = free_bytes(&root) else {
            return;
        };
        let max = self.settings.max_bytes;
        if max > free {
            warn!(
                "--max-volumes-size is {} but the engine's disk ({}) has {} free: volumes may fill it before their shares are reached",
                format_memory(max),
                root.display(),
                format_memory(free)
            );
        }
    }

    /// Measures every volume in the ledger and records it; returns the volumes over their
    /// share, with the message their users are halted with.
    pub async fn measure(&self, runtime: &DockerRuntime) -> Vec<(String, String)> {
        let names: Vec<String> = self.snapshot().iter().map(|(n, _)| n.clone()).collect();
        let mut usage = Vec::with_capacity(names.len());
        for name in names {
            match runtime.volume_usage(&name).await {
                Ok(used) => usage.push((name, used)),
                Err(e) => debug!(volume = %name, "cannot measure: {e}"),
            }
        }
        self.record_usage(&usage)
    }

    /// Records measurements and returns the volumes over their share, with the message their
    /// users are halted with. The figures are kept in memory even when `volumes.json` cannot
    /// be saved (a full disk is exactly when the check must still halt).
    pub fn record_usage(&self, usage: &[(String, Option<u64>)]) -> Vec<(String, String)> {
        let mut file = self.file();
        for (name, used) in usage {
            file.ledger.measured(name, *used);
        }
        if let Err(e) = file.save() {
            warn!("{e}; the measurements are kept in memory");
        }
        file.ledger
            .over_share()
            .into_iter()
            .map(|(name, e)| (name.clone(), over_share_reason(e)))
            .collect()
    }

    /// Remembers that the check halted `container` and why.
    pub fn mark_halted(&self, container: &str, reason: &str) {
        self.halted()
            .insert(container.to_owned(), reason.to_owned());
    }

    /// Why the volume check halted `container`, if it did.
    pub fn stopped_reason(&self, container: &str) -> Option<String> {
        self.halted().get(container).cloned()
    }

    /// Forgets a halted container (removed, or resumed by a redeploy).
    pub fn clear_halted(&self, container: &str) {
        self.halted().remove(container);
    }

    /// Drops a removed volume.
    pub fn forget(&self, name: &str) -> Result<Option<Entry>, LedgerFileError> {
        self.file().change(|l| l.forget(name))
    }
}

/// "stopped by the provider: volume blog/data uses 2.3 GiB, over its 2 GiB share; export it
/// or redeploy with a larger :SIZE".
pub fn over_share_reason(e: &Entry) -> String {
    format!(
        "stopped by the provider: volume {} uses {}, over its {} share; export it or redeploy with a larger :SIZE",
        e.id.label(),
        format_memory(e.used_bytes.unwrap_or(0)),
        format_memory(e.share_bytes)
    )
}

/// Why [`Volumes::reserve`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Save(#[from] LedgerFileError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_does_not_stop_the_check_from_finding_volumes_over_their_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let me = peercompute_identity::Identity::generate()
            .expect("id")
            .peer_id();
        let volumes = Volumes::open(
            &state,
            &me,
            VolumeSettings {
                max_bytes: 1 << 30,
                check_interval: Duration::from_secs(1),
            },
        )
        .expect("open");
        let mount = VolumeMount {
            name: "data".into(),
            path: "/data".into(),
            size_bytes: Some(4 << 20),
        };
        let asks = volumes.asks("peer:A", "blog", &[mount]);
        volumes.reserve(&asks, 1).expect("fits");
        // Nothing can be saved any more: a file where the state directory was.
        std::fs::remove_dir_all(&state).expect("remove");
        std::fs::write(&state, b"full").expect("block");
        let over = volumes.record_usage(&[(asks[0].name.clone(), Some(6 << 20))]);
        assert_eq!(over.len(), 1, "{over:?}");
        assert_eq!(
            over[0].1,
            "stopped by the provider: volume blog/data uses 6 MiB, over its 4 MiB share; export it or redeploy with a larger :SIZE"
        );
    }
}
