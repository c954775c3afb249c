//! The gateway's name table, reachable by the crash tests (`state-writer`): it claims numbered
//! names through the gateway's own `NameStore`, so a test can kill a writer mid-write and check
//! `names.json` holds the old or the new set. Compiled only with the `testsupport` feature.

use std::path::Path;

use peercompute_identity::Identity;

use crate::names::NameStore;

/// How many owners `names.json` holds before the versioned claims start (a busy gateway).
const OWNERS: u64 = 500;

/// `<state>/names.json` through the gateway's `NameStore`; the version is the number of
/// `w…` names claimed.
#[derive(Debug)]
pub struct Names {
    store: NameStore,
    key: Identity,
}

impl Names {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| e.to_string())?;
        let store = NameStore::open(state_dir).map_err(|e| e.to_string())?;
        let key = Identity::generate().map_err(|e| e.to_string())?;
        if store.owners().len() < OWNERS as usize {
            // One claim per owner would cost 500 writes: write the table once instead.
            let others: Vec<(String, String)> = (0..OWNERS)
                .map(|i| {
                    let owner = Identity::generate().map(|k| k.peer_id().to_string());
                    owner.map(|o| (format!("app-{i:03}"), o))
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            store.preload(others);
            store.save_now().map_err(|e| e.to_string())?;
        }
        Ok(Self { store, key })
    }

    pub fn version(&self) -> u64 {
        self.store
            .owners()
            .iter()
            .filter(|(name, _)| name.starts_with('w'))
            .count() as u64
    }

    /// Claims `w{version}` (a new name, so the table is rewritten).
    pub fn write(&mut self, version: u64) -> Result<(), String> {
        self.store
            .claim(&format!("w{version}"), &self.key.peer_id())
            .map_err(|e| e.to_string())
    }
}
