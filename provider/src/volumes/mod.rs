//! Named volumes: the data a deployment or a fleet release keeps across redeploys, restarts
//! and rollbacks. A volume belongs to a scope (`peer:<owner id>` for deploys, `fleet:<fleet
//! id>` for releases), an app and a name; its engine name is derived from those by the
//! runtime, never taken from a request.
//!
//! - `ledger`: the shares and last measured use of every volume, and admission (pure).
//! - `store`: the ledger's file, `<home>/state/volumes.json`.
//!
//! [`Volumes`] is the one ledger of a daemon, shared by the deploy path and the fleet.

mod ledger;
mod store;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use ledger::{Ask, DEFAULT_SHARE_BYTES, Entry, Grant, Ledger, Rebuilt, Refusal, VolumeId};
use store::LedgerFile;
pub use store::LedgerFileError;

/// The scope of a client's deploys.
pub fn peer_scope(owner: &peercompute_identity::PeerId) -> String {
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

/// The daemon's volume ledger and its limits.
#[derive(Debug)]
pub struct Volumes {
    file: Mutex<LedgerFile>,
    settings: VolumeSettings,
}

impl Volumes {
    /// Opens `<state_dir>/volumes.json` (empty when absent).
    pub fn open(state_dir: &Path, settings: VolumeSettings) -> Result<Self, LedgerFileError> {
        Ok(Self {
            file: Mutex::new(LedgerFile::open(state_dir)?),
            settings,
        })
    }

    pub fn settings(&self) -> VolumeSettings {
        self.settings
    }

    fn file(&self) -> MutexGuard<'_, LedgerFile> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the ledger as it is now.
    pub fn snapshot(&self) -> Ledger {
        self.file().ledger.clone()
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
    pub fn cancel(&self, grants: &[Grant]) -> Result<(), LedgerFileError> {
        self.file().change(|l| l.ungrant_new(grants))
    }

    /// Records what the engine measured (`None`: it could not say).
    pub fn measured(&self, usage: &[(String, Option<u64>)]) -> Result<(), LedgerFileError> {
        self.file().change(|l| {
            for (name, used) in usage {
                l.measured(name, *used);
            }
        })
    }

    /// Drops a removed volume.
    pub fn forget(&self, name: &str) -> Result<Option<Entry>, LedgerFileError> {
        self.file().change(|l| l.forget(name))
    }

    /// Raises a volume's share (an import with `--share`).
    pub fn raise_share(&self, name: &str, share_bytes: u64) -> Result<(), LedgerFileError> {
        self.file().change(|l| l.raise_share(name, share_bytes))
    }

    /// Brings the ledger in line with the volumes the engine has (at start).
    pub fn rebuild(
        &self,
        found: Vec<(String, VolumeId, Option<u64>)>,
        now: u64,
    ) -> Result<Rebuilt, LedgerFileError> {
        self.file().change(|l| l.rebuild(found, now))
    }
}

/// Why [`Volumes::reserve`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Save(#[from] LedgerFileError),
}
