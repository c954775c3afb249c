//! Name ownership: a route name belongs to the first provider key that registered it until the
//! gateway operator releases it. A fleet's group name belongs to the fleet: its owner is the
//! fleet id (`pcf…`, see `fleet_names`), which no provider key can present. The table lives in `<state-dir>/names.json`, written atomically
//! on every new claim and release, so neither a gateway restart nor a provider reconnect lets
//! another key take a name; after a release, the next key that registers the name gets it.
//!
//! A key may own at most [`MAX_OWNED_NAMES`] names (`max_owned_names_per_provider`): names stay
//! owned after the provider withdraws them, so without a cap a provider looping on
//! Register/Unregister of fresh names would squat names without end and grow this file.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use peercompute_identity::{PeerId, write_atomic};
use serde::{Deserialize, Serialize};

/// Errors loading or claiming names.
#[derive(Debug, thiserror::Error)]
pub enum NameStoreError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is corrupt ({reason}); fix or move it away — it records which provider owns which name"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot save {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("name owned by another provider")]
    Owned { owner: String },
    #[error(
        "this provider key owns {owned} names, the gateway's limit; the gateway operator can \
         release some (DELETE /api/v1/names/{{name}})"
    )]
    TooManyOwned { owned: usize },
    /// A clustered gateway: the operator released the name from this key (the hold is
    /// shared by every gateway).
    #[error("released by the gateway operator; this key may not take it back")]
    Held,
    /// A clustered gateway cannot reach etcd: the text says so and what still works.
    #[error("{0}")]
    Unavailable(String),
    /// The cluster store refused the operation for a reason no retry fixes.
    #[error("cluster store: {0}")]
    Cluster(String),
}

/// Most names one provider key may own (default of `max_owned_names_per_provider`).
pub(crate) const MAX_OWNED_NAMES: usize = 256;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesFile {
    /// route name → owner peer id
    owners: BTreeMap<String, String>,
}

/// The persistent name → owner table.
#[derive(Debug)]
pub(crate) struct NameStore {
    path: PathBuf,
    owners: Mutex<BTreeMap<String, String>>,
    /// Most names one key may own; new claims past it are refused.
    max_owned: usize,
}

impl NameStore {
    /// Opens (or starts) the table in `state_dir`.
    pub(crate) fn open(state_dir: &Path) -> Result<Self, NameStoreError> {
        let path = state_dir.join("names.json");
        peercompute_identity::remove_stale_tmp(state_dir, "names.json");
        let owners = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<NamesFile>(&bytes)
                    .map_err(|e| NameStoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
                    .owners
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(NameStoreError::Read { path, source }),
        };
        Ok(Self {
            path,
            owners: Mutex::new(owners),
            max_owned: MAX_OWNED_NAMES,
        })
    }

    /// Caps the names one key may own at `max` (names owned beyond it before, say by an
    /// earlier configuration, stay owned; only new claims are refused).
    pub(crate) fn with_owned_limit(mut self, max: usize) -> Self {
        self.max_owned = max;
        self
    }

    /// Claims `name` for `peer`: Ok if it was free (now recorded) or already `peer`'s.
    #[cfg(any(test, feature = "testsupport"))]
    pub(crate) fn claim(&self, name: &str, peer: &PeerId) -> Result<(), NameStoreError> {
        self.claim_for(name, &peer.to_string())
    }

    /// Claims `name` for `owner`, a peer id or a fleet id (`pcf…`, a fleet's group names): Ok
    /// if it was free (now recorded) or already `owner`'s.
    pub(crate) fn claim_for(&self, name: &str, owner: &str) -> Result<(), NameStoreError> {
        let peer = owner.to_owned();
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        match owners.get(name) {
            Some(owner) if *owner == peer => return Ok(()),
            Some(owner) => {
                return Err(NameStoreError::Owned {
                    owner: owner.clone(),
                });
            }
            None => {}
        }
        let owned = owners.values().filter(|o| **o == peer).count();
        if owned >= self.max_owned {
            return Err(NameStoreError::TooManyOwned { owned });
        }
        owners.insert(name.to_owned(), peer);
        if let Err(e) = self.save(&owners) {
            owners.remove(name);
            return Err(e);
        }
        Ok(())
    }

    /// Releases `name`: returns its previous owner, or None when nobody owned it. The table on
    /// disk is rewritten first; if that fails the name stays owned.
    pub(crate) fn release(&self, name: &str) -> Result<Option<String>, NameStoreError> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let Some(owner) = owners.remove(name) else {
            return Ok(None);
        };
        if let Err(e) = self.save(&owners) {
            owners.insert(name.to_owned(), owner);
            return Err(e);
        }
        Ok(Some(owner))
    }

    /// Moves every name `old` owns to `new` in one write (a key rotation: the robot keeps its
    /// names under its new key). Returns the names moved, sorted; none when `old` owns none.
    /// If the table cannot be saved nothing moves.
    pub(crate) fn transfer(
        &self,
        old: &PeerId,
        new: &PeerId,
    ) -> Result<Vec<String>, NameStoreError> {
        let (old, new) = (old.to_string(), new.to_string());
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let moved: Vec<String> = owners
            .iter()
            .filter(|(_, owner)| **owner == old)
            .map(|(name, _)| name.clone())
            .collect();
        if moved.is_empty() || old == new {
            return Ok(Vec::new());
        }
        let mut next = owners.clone();
        for name in &moved {
            next.insert(name.clone(), new.clone());
        }
        self.save(&next)?;
        *owners = next;
        Ok(moved)
    }

    /// Adds owners in memory only, for a test's big table (`testsupport`); `save_now` writes it.
    #[cfg(feature = "testsupport")]
    pub(crate) fn preload(&self, owners: Vec<(String, String)>) {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(owners);
    }

    #[cfg(feature = "testsupport")]
    pub(crate) fn save_now(&self) -> Result<(), NameStoreError> {
        self.save(&self.owners.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every owned name and its owner's peer id, sorted by name.
    pub(crate) fn owners(&self) -> Vec<(String, String)> {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.iter().map(|(n, o)| (n.clone(), o.clone())).collect()
    }

    /// The owner of `name`, if any.
    pub(crate) fn owner(&self, name: &str) -> Option<String> {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.get(name).cloned()
    }

    fn save(&self, owners: &BTreeMap<String, String>) -> Result<(), NameStoreError> {
        let file = NamesFile {
            owners: owners.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("a map of strings always serialises");
        write_atomic(&self.path, &bytes, 0o600).map_err(|source| NameStoreError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercompute_identity::Identity;

    fn peer() -> PeerId {
        Identity::generate().expect("generate").peer_id()
    }

    #[test]
    fn first_claim_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (alice, mallory) = (peer(), peer());
        let store = NameStore::open(dir.path()).expect("open");
        store.claim("blog", &alice).expect("alice claims");
        store.claim("blog", &alice).expect("alice again");
        assert!(matches!(
            store.claim("blog", &mallory),
            Err(NameStoreError::Owned { .. })
        ));
        drop(store);
        let reopened = NameStore::open(dir.path()).expect("reopen");
        assert!(reopened.claim("blog", &mallory).is_err());
        reopened.claim("blog", &alice).expect("owner keeps it");
    }

    #[test]
    fn a_key_owns_at_most_the_limit_and_a_release_makes_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mallory, alice) = (peer(), peer());
        let store = NameStore::open(dir.path())
            .expect("open")
            .with_owned_limit(3);
        for name in ["a", "b", "c"] {
            store.claim(name, &mallory).expect("under the limit");
        }
        let err = store.claim("d", &mallory).expect_err("over the limit");
        assert!(
            matches!(err, NameStoreError::TooManyOwned { owned: 3 }),
            "{err}"
        );
        assert!(err.to_string().contains("owns 3 names"), "{err}");
        assert!(
            err.to_string().contains("DELETE /api/v1/names/{name}"),
            "{err}"
        );
        store
            .claim("a", &mallory)
            .expect("a name it owns is still its own");
        store
            .claim("d", &alice)
            .expect("another key is not limited by it");
        assert_eq!(store.owner("d"), Some(alice.to_string()));
        store.release("b").expect("release");
        store.claim("e", &mallory).expect("a release makes room");
        drop(store);
        let reopened = NameStore::open(dir.path())
            .expect("reopen")
            .with_owned_limit(3);
        let owned = reopened
            .owners()
            .into_iter()
            .filter(|(_, o)| *o == mallory.to_string());
        assert_eq!(owned.count(), 3);
        assert!(
            reopened.claim("f", &mallory).is_err(),
            "the limit holds after a restart"
        );
    }

    #[test]
    fn release_frees_the_name_for_the_next_key_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (alice, bob) = (peer(), peer());
        let store = NameStore::open(dir.path()).expect("open");
        store.claim("blog", &alice).expect("alice claims");
        store.claim("shop", &alice).expect("alice claims");
        assert_eq!(
            store.release("blog").expect("release"),
            Some(alice.to_string())
        );
        assert_eq!(store.release("blog").expect("again"), None);
        assert_eq!(store.release("never-owned").expect("unknown"), None);
        drop(store);
        let reopened = NameStore::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.owners(),
            vec![("shop".to_owned(), alice.to_string())]
        );
        assert_eq!(reopened.owner("blog"), None);
        reopened
            .claim("blog", &bob)
            .expect("bob takes the released name");
        assert_eq!(reopened.owner("blog"), Some(bob.to_string()));
        assert!(reopened.claim("blog", &alice).is_err());
    }

    #[test]
    fn a_release_that_cannot_be_saved_keeps_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        let alice = peer();
        let store = NameStore::open(&state).expect("open");
        store.claim("blog", &alice).expect("claim");
        // With the state directory gone the atomic write cannot create its temporary file.
        std::fs::remove_dir_all(&state).expect("remove state dir");
        let err = store.release("blog").expect_err("cannot save");
        assert!(matches!(err, NameStoreError::Write { .. }), "{err}");
        assert_eq!(store.owner("blog"), Some(alice.to_string()));
    }

    #[test]
    fn a_transfer_moves_every_name_of_the_old_key_at_once_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new, other) = (peer(), peer(), peer());
        let store = NameStore::open(dir.path()).expect("open");
        store.claim("web-r1", &old).expect("claim");
        store.claim("api-r1", &old).expect("claim");
        store.claim("shop", &other).expect("claim");
        assert_eq!(
            store.transfer(&old, &new).expect("transfer"),
            ["api-r1", "web-r1"]
        );
        assert_eq!(
            store.transfer(&old, &new).expect("again"),
            Vec::<String>::new()
        );
        assert!(store.claim("web-r1", &old).is_err(), "the old key lost it");
        store.claim("web-r1", &new).expect("the new key owns it");
        drop(store);
        let reopened = NameStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.owner("api-r1"), Some(new.to_string()));
        assert_eq!(reopened.owner("shop"), Some(other.to_string()));
    }

    #[test]
    fn a_transfer_that_cannot_be_saved_moves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        let (old, new) = (peer(), peer());
        let store = NameStore::open(&state).expect("open");
        store.claim("web-r1", &old).expect("claim");
        std::fs::remove_dir_all(&state).expect("remove state dir");
        let err = store.transfer(&old, &new).expect_err("cannot save");
        assert!(matches!(err, NameStoreError::Write { .. }), "{err}");
        assert_eq!(store.owner("web-r1"), Some(old.to_string()));
    }

    #[test]
    fn corrupt_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("names.json"), b"{not json").expect("write");
        let err = NameStore::open(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"));
        assert_eq!(
            std::fs::read(dir.path().join("names.json")).expect("read"),
            b"{not json"
        );
    }
}
