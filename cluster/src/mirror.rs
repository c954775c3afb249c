//! The cache's copy on disk (`--cluster` mode: `<state>/cluster-names.json`), so a gateway
//! restarted while etcd is away still knows whose names are whose and which keys are revoked.
//! Written atomically (temporary file, fsync, rename) after every change the cache saw; read
//! once at start. A file that cannot be read is an error at start, never silently replaced:
//! it may be the only copy of the owners the gateway has until etcd is back.

use std::io;
use std::path::{Path, PathBuf};

use crate::cache::Contents;
use crate::error::ClusterError;

/// Reads the mirror at `path`; `None` when there is none yet.
pub(crate) fn load(path: &Path) -> Result<Option<Contents>, ClusterError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(mirror_error(path, format!("cannot read it: {e}"))),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        mirror_error(
            path,
            format!("it is corrupt ({e}); fix or move it away: it is this gateway's copy of the cluster's name owners"),
        )
    })
}

/// Writes `contents` to `path` atomically, mode 0600.
pub(crate) fn save(path: &Path, contents: &Contents) -> Result<(), ClusterError> {
    let bytes = serde_json::to_vec_pretty(contents).expect("maps of strings always serialise");
    peercompute_identity::write_atomic(path, &bytes, 0o600)
        .map_err(|e| mirror_error(path, format!("cannot save it: {e}")))
}

fn mirror_error(path: &Path, detail: String) -> ClusterError {
    ClusterError::Mirror {
        path: PathBuf::from(path),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NameRecord;

    #[test]
    fn saved_contents_load_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster-names.json");
        assert_eq!(load(&path).expect("missing is fine"), None);
        let mut contents = Contents {
            revision: 9,
            ..Contents::default()
        };
        contents.names.insert(
            "blog".into(),
            NameRecord {
                owner: "a".into(),
                at: 1,
                by: "gw".into(),
            },
        );
        save(&path, &contents).expect("save");
        assert_eq!(load(&path).expect("load"), Some(contents));
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_says_what_to_do_and_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster-names.json");
        std::fs::write(&path, b"{not json").expect("write");
        let err = load(&path).expect_err("corrupt");
        assert!(err.to_string().contains("fix or move it away"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"{not json");
    }
}
