//! The ledger's file, `<home>/state/volumes.json`, rewritten atomically (0600) after every
//! change, so a crash at any instant leaves a file that parses. A missing file is an empty
//! ledger, and so is a damaged one (set aside as `volumes.json.corrupt-<time>`): the start
//! rebuilds it from the engine's volume labels anyway.

use std::io;
use std::path::{Path, PathBuf};

use peercompute_identity::write_atomic;

use super::ledger::Ledger;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot save volume shares to {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The ledger and where it is saved.
#[derive(Debug)]
pub(crate) struct LedgerFile {
    path: PathBuf,
    pub(crate) ledger: Ledger,
}

impl LedgerFile {
    pub(crate) fn open(state_dir: &Path) -> Result<Self, LedgerFileError> {
        let path = state_dir.join("volumes.json");
        let ledger = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(ledger) => ledger,
                // The volumes' labels rebuild it at start: a damaged file must not keep the
                // daemon (deploys, the fleet, an e-stop) down. Kept aside for the owner.
                Err(e) => {
                    let aside = path.with_extension(format!("json.corrupt-{}", now()));
                    let moved = std::fs::rename(&path, &aside);
                    tracing::warn!(
                        "{path} is corrupt ({e}); moved to {aside} ({moved:?}): the volumes are found again from their labels, their shares reset to 1 GiB (or what they use)",
                        path = path.display(),
                        aside = aside.display()
                    );
                    Ledger::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ledger::default(),
            Err(source) => return Err(LedgerFileError::Read { path, source }),
        };
        Ok(Self { path, ledger })
    }

    /// Writes the ledger as it is now.
    pub(crate) fn save(&self) -> Result<(), LedgerFileError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LedgerFileError::Write {
                path: self.path.clone(),
                source,
            })?;
        }
        let bytes = serde_json::to_vec_pretty(&self.ledger).expect("a ledger always serialises");
        write_atomic(&self.path, &bytes, 0o600).map_err(|source| LedgerFileError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Applies `change`, saves, and undoes the change when the save fails.
    pub(crate) fn change<T>(
        &mut self,
        change: impl FnOnce(&mut Ledger) -> T,
    ) -> Result<T, LedgerFileError> {
        let before = self.ledger.clone();
        let out = change(&mut self.ledger);
        if self.ledger == before {
            return Ok(out);
        }
        match self.save() {
            Ok(()) => Ok(out),
            Err(e) => {
                self.ledger = before;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger::{Ask, VolumeId};
    use super::*;

    #[test]
    fn survives_reopen_and_sets_a_damaged_file_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = LedgerFile::open(dir.path()).expect("open empty");
        let ask = Ask {
            name: "pcv-x-blog-data".into(),
            id: VolumeId {
                scope: "peer:A".into(),
                app: "blog".into(),
                volume: "data".into(),
            },
            size_bytes: Some(5 << 20),
        };
        let grants = file.ledger.admit(&[ask], 1 << 30).expect("fits");
        file.change(|l| l.grant(&grants, 1)).expect("save");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("volumes.json"))
                .expect("saved")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = LedgerFile::open(dir.path()).expect("reopen");
        assert_eq!(again.ledger, file.ledger);
        assert_eq!(
            again.ledger.get("pcv-x-blog-data").map(|e| e.share_bytes),
            Some(5 << 20)
        );
        std::fs::write(dir.path().join("volumes.json"), b"{\"volumes\":").expect("write");
        let again = LedgerFile::open(dir.path()).expect("a damaged file does not stop the start");
        assert_eq!(again.ledger, Ledger::default());
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("volumes.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "kept aside for the owner");
    }

    #[test]
    fn a_failed_save_undoes_the_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let mut file = LedgerFile::open(&state).expect("open");
        // A file where the state directory should be: nothing can be saved.
        std::fs::write(&state, b"not a directory").expect("block");
        let ask = Ask {
            name: "n".into(),
            id: VolumeId {
                scope: "peer:A".into(),
                app: "a".into(),
                volume: "v".into(),
            },
            size_bytes: None,
        };
        let grants = file.ledger.admit(&[ask], 1 << 40).expect("fits");
        assert!(file.change(|l| l.grant(&grants, 1)).is_err());
        assert!(file.ledger.get("n").is_none(), "undone");
    }
}
