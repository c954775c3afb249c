//! Deployments persisted under `<home>/state/deployments.json`, rewritten atomically after
//! every change so a crash or a kill at any instant leaves a file that parses.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use peercompute_identity::write_atomic;
use serde::{Deserialize, Serialize};

/// One deployment as the daemon remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) image: String,
    /// Peer id of the client that deployed it (the only one who may stop it).
    pub(crate) owner: String,
    pub(crate) container_id: String,
    pub(crate) port: u16,
    pub(crate) cpu_millis: u32,
    pub(crate) memory_bytes: u64,
    pub(crate) url: String,
    /// Unix seconds.
    pub(crate) created_at: u64,
    /// Engine names of the named volumes it mounts (absent in files from before volumes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) volumes: Vec<String>,
    /// Names of the granted devices it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) devices: Vec<String>,
    /// Why the provider halted it (a volume over its share); the container is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stopped_reason: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    deployments: BTreeMap<String, Record>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt ({reason}); move it away to start with no deployments")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot save deployments to {path}: {source}; free space and retry")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Volumes(#[from] crate::volumes::LedgerFileError),
}

/// The in-memory table and its file.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    records: BTreeMap<String, Record>,
}

impl Store {
    pub(crate) fn open(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join("deployments.json");
        std::fs::create_dir_all(state_dir).map_err(|source| StateError::Write {
            path: path.clone(),
            source,
        })?;
        peercompute_identity::remove_stale_tmp(state_dir, "deployments.json");
        let records = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<StateFile>(&bytes)
                    .map_err(|e| StateError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
                    .deployments
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ok(Self { path, records })
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Record> {
        self.records.get(id)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Record> {
        self.records.values().find(|r| r.name == name)
    }

    /// Inserts or replaces, then saves. On a failed save the change is undone.
    pub(crate) fn put(&mut self, record: Record) -> Result<(), StateError> {
        let previous = self.records.insert(record.id.clone(), record.clone());
        self.save().inspect_err(|_| match previous {
            Some(p) => {
                self.records.insert(p.id.clone(), p);
            }
            None => {
                self.records.remove(&record.id);
            }
        })
    }

    /// Sets the URL of deployment `id` named `name` and saves; `Ok(false)` when there is no
    /// such deployment (stopped meanwhile) or the URL was already that.
    pub(crate) fn set_url(&mut self, id: &str, name: &str, url: &str) -> Result<bool, StateError> {
        let Some(record) = self.records.get_mut(id).filter(|r| r.name == name) else {
            return Ok(false);
        };
        if record.url == url {
            return Ok(false);
        }
        let previous = std::mem::replace(&mut record.url, url.to_owned());
        self.save().map(|()| true).inspect_err(|_| {
            if let Some(r) = self.records.get_mut(id) {
                r.url = previous;
            }
        })
    }

    /// Sets (or clears) why deployment `id` was halted, and saves; `Ok(false)` when there
    /// is no such deployment or nothing changed.
    pub(crate) fn set_stopped_reason(
        &mut self,
        id: &str,
        reason: Option<String>,
    ) -> Result<bool, StateError> {
        let Some(record) = self.records.get_mut(id) else {
            return Ok(false);
        };
        if record.stopped_reason == reason {
            return Ok(false);
        }
        let previous = std::mem::replace(&mut record.stopped_reason, reason);
        self.save().map(|()| true).inspect_err(|_| {
            if let Some(r) = self.records.get_mut(id) {
                r.stopped_reason = previous;
            }
        })
    }

    /// Removes, then saves. On a failed save the record is put back, so memory and disk agree
    /// (the daemon's next start drops a record whose container is gone).
    pub(crate) fn remove(&mut self, id: &str) -> Result<Option<Record>, StateError> {
        let Some(removed) = self.records.remove(id) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.records.insert(removed.id.clone(), removed);
            return Err(e);
        }
        Ok(Some(removed))
    }

    fn save(&self) -> Result<(), StateError> {
        let file = StateFile {
            deployments: self.records.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("records always serialise");
        write_atomic(&self.path, &bytes, 0o600).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            name: format!("app-{id}"),
            image: "demo:1".into(),
            owner: "12D3KooW".into(),
            container_id: "c".into(),
            port: 8080,
            cpu_millis: 500,
            memory_bytes: 1 << 28,
            url: "https://x".into(),
            created_at: 1,
            volumes: Vec::new(),
            devices: Vec::new(),
            stopped_reason: None,
        }
    }

    #[test]
    fn survives_reopen_and_refuses_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store.put(record("a")).expect("put");
        store.put(record("b")).expect("put");
        store.remove("a").expect("remove");
        let store = Store::open(dir.path()).expect("reopen");
        assert!(store.get("a").is_none());
        assert_eq!(store.by_name("app-b").map(|r| r.id.as_str()), Some("b"));
        std::fs::write(dir.path().join("deployments.json"), b"{\"deployments\":").expect("write");
        let err = Store::open(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn a_remove_that_cannot_be_saved_keeps_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let mut store = Store::open(&state).expect("open");
        store.put(record("a")).expect("put");
        // A directory that is gone fails every save, as a full disk does.
        std::fs::remove_dir_all(&state).expect("rm");
        store.remove("a").expect_err("the save fails");
        assert!(
            store.get("a").is_some(),
            "memory still agrees with the disk"
        );
        std::fs::create_dir_all(&state).expect("mkdir");
        assert!(store.remove("a").expect("space is back").is_some());
        assert!(store.get("a").is_none());
    }

    #[test]
    fn a_url_learned_later_is_saved_for_that_deployment_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store
            .put(Record {
                url: String::new(),
                ..record("a")
            })
            .expect("put");
        assert!(store.set_url("a", "app-a", "https://a.x").expect("save"));
        assert!(!store.set_url("a", "app-a", "https://a.x").expect("same"));
        assert!(
            !store
                .set_url("a", "other", "https://o.x")
                .expect("other name")
        );
        assert!(
            !store
                .set_url("gone", "app-gone", "https://g.x")
                .expect("gone")
        );
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.get("a").map(|r| r.url.as_str()), Some("https://a.x"));
    }

    #[test]
    fn a_halt_reason_is_kept_across_reopen_and_old_files_still_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store
            .put(Record {
                volumes: vec!["pcv-x-app-a-data".into()],
                ..record("a")
            })
            .expect("put");
        let reason = "stopped by the provider: volume app-a/data uses 6 MiB, over its 4 MiB share";
        assert!(
            store
                .set_stopped_reason("a", Some(reason.into()))
                .expect("save")
        );
        assert!(
            !store
                .set_stopped_reason("a", Some(reason.into()))
                .expect("same")
        );
        assert!(!store.set_stopped_reason("gone", None).expect("gone"));
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.get("a").and_then(|r| r.stopped_reason.as_deref()),
            Some(reason)
        );
        // A file written before volumes existed.
        std::fs::write(
            dir.path().join("deployments.json"),
            br#"{"deployments":{"b":{"id":"b","name":"n","image":"i","owner":"o","container_id":"c","port":1,"cpu_millis":1,"memory_bytes":1,"url":"","created_at":1}}}"#,
        )
        .expect("write");
        let store = Store::open(dir.path()).expect("old file");
        assert!(
            store
                .get("b")
                .is_some_and(|r| r.volumes.is_empty() && r.stopped_reason.is_none())
        );
    }
}
