//! [`FleetStore`]: a fleet log on disk, one file per entry (`<dir>/entries/<hash>.entry`,
//! written atomically: a crash leaves an entry whole or absent). Loading re-verifies every
//! entry from scratch — signature, links, authority — in canonical order, so a byte flipped
//! on disk is found and named, never trusted. Entries are immutable, so a file is never
//! rewritten; there is no index to get out of step.

use std::io;
use std::path::{Path, PathBuf};

use crate::codec::SignedEntry;
use crate::ids::{EntryHash, FleetId};
use crate::log::{FleetLog, InsertError, Inserted};

const ENTRY_SUFFIX: &str = ".entry";

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the fleet log in {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the fleet log entry {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Insert(#[from] InsertError),
}

/// An entry file that did not load, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    pub file: String,
    pub reason: String,
}

/// What loading found beyond the good entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries that are damaged, forged, or refused by the authority check, in canonical
    /// order where they have one (the first is the first bad entry).
    pub bad: Vec<BadEntry>,
}

/// A fleet log kept in a directory.
#[derive(Debug)]
pub struct FleetStore {
    dir: PathBuf,
    log: FleetLog,
}

impl FleetStore {
    /// Opens (or creates) the log of `fleet` in `dir`, verifying every entry. `now` is this
    /// machine's clock in Unix seconds.
    pub fn open(dir: &Path, fleet: FleetId, now: u64) -> Result<(Self, LoadReport), StoreError> {
        let entries_dir = dir.join("entries");
        std::fs::create_dir_all(&entries_dir).map_err(|source| StoreError::Write {
            path: entries_dir.clone(),
            source,
        })?;
        let read_err = |source| StoreError::Read {
            path: entries_dir.clone(),
            source,
        };
        let mut report = LoadReport::default();
        let mut decoded: Vec<SignedEntry> = Vec::new();
        for item in std::fs::read_dir(&entries_dir).map_err(read_err)? {
            let item = item.map_err(read_err)?;
            let file = item.file_name().to_string_lossy().into_owned();
            let Some(stem) = file.strip_suffix(ENTRY_SUFFIX) else {
                continue;
            };
            let bytes = std::fs::read(item.path()).map_err(read_err)?;
            match SignedEntry::decode(&bytes) {
                Ok(e) if e.hash().to_string() == stem => decoded.push(e),
                Ok(e) => report.bad.push(BadEntry {
                    file,
                    reason: format!("its contents hash to {}, not its name", e.hash()),
                }),
                Err(e) => report.bad.push(BadEntry {
                    file,
                    reason: e.to_string(),
                }),
            }
        }
        decoded.sort_by_key(|e| (e.entry().clock, e.hash()));
        let mut log = FleetLog::new(fleet);
        for entry in decoded {
            let hash = entry.hash();
            if let Err(e) = log.insert(entry, now) {
                report.bad.push(BadEntry {
                    file: format!("{hash}{ENTRY_SUFFIX}"),
                    reason: e.to_string(),
                });
            }
        }
        Ok((
            FleetStore {
                dir: dir.to_owned(),
                log,
            },
            report,
        ))
    }

    pub fn log(&self) -> &FleetLog {
        &self.log
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an entry is kept in.
    pub fn path_of(&self, hash: &EntryHash) -> PathBuf {
        self.dir
            .join("entries")
            .join(format!("{hash}{ENTRY_SUFFIX}"))
    }

    /// Verifies `entry` against the log and, when new, writes it to disk.
    pub fn insert(&mut self, entry: SignedEntry, now: u64) -> Result<Inserted, StoreError> {
        let prepared = self.log.prepare(entry, now)?;
        if let Some(signed) = prepared.entry() {
            let path = self.path_of(&prepared.hash());
            peercompute_identity::write_atomic(&path, signed.bytes(), 0o644)
                .map_err(|source| StoreError::Write { path, source })?;
        }
        let inserted = prepared.inserted();
        self.log.commit(prepared);
        Ok(inserted)
    }
}
