//! The provider label: the value of the `peercompute.provider` label on this daemon's
//! containers (`<label>` for deployments, `<label>/fleet` for fleet releases) and volumes, and
//! the seed of its volumes' engine names. Docker cannot relabel a container or a volume, so
//! the label must outlive the key: it is the daemon's first peer id, kept in
//! `<home>/provider-label` and never changed by a key rotation (`rotate-key`). An install from
//! before this file gets its current peer id, which is what its containers already carry.
//!
//! The peer id itself (`me`) stays the daemon's identity everywhere else: member key, statuses,
//! the `PEERCOMPUTE_*` environment of containers, the peer id shown to people.

use std::io;
use std::path::{Path, PathBuf};

use peercompute_identity::{PeerId, write_atomic};

/// The file under the daemon's home that holds the provider label (one peer id and a newline).
pub const LABEL_FILE: &str = "provider-label";

/// Why the provider label could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error(
        "cannot read {path}: {source}; it names this daemon's containers and volumes: fix its permissions (or restore it from a backup) and restart peercomputed"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} does not hold a peer id ({reason}); it names this daemon's containers and volumes: put back the peer id their `peercompute.provider` label carries (`docker ps -a --format '{{{{.Labels}}}}'`), or remove the file to label them with the current peer id {current}, then restart peercomputed"
    )]
    Garbage {
        path: PathBuf,
        reason: String,
        /// The daemon's peer id now, as text.
        current: String,
    },
    #[error("cannot save {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The provider label of the daemon in `home`: the one saved there, else `current` (the
/// daemon's peer id now), saved at once (atomically, `0644`) so a later key rotation keeps it.
pub(crate) fn load_or_create(home: &Path, current: &PeerId) -> Result<PeerId, LabelError> {
    let path = home.join(LABEL_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => parse(&bytes).map_err(|reason| LabelError::Garbage {
            path,
            reason,
            current: current.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(&path, format!("{current}\n").as_bytes(), 0o644)
                .map_err(|source| LabelError::Write { path, source })?;
            Ok(*current)
        }
        Err(source) => Err(LabelError::Read { path, source }),
    }
}

/// A peer id and blanks around it; else why not.
fn parse(bytes: &[u8]) -> Result<PeerId, String> {
    if bytes.len() > 256 {
        return Err(format!("{} bytes, far more than a peer id", bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_owned())?;
    match text.trim() {
        "" => Err("empty".to_owned()),
        text => text.parse().map_err(|e| format!("`{text}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercompute_identity::Identity;

    fn peer() -> PeerId {
        Identity::generate().expect("identity").peer_id()
    }

    #[test]
    fn absent_it_is_created_from_the_current_peer_id() {
        let home = tempfile::tempdir().expect("tempdir");
        let me = peer();
        assert_eq!(load_or_create(home.path(), &me).expect("label"), me);
        let saved = std::fs::read_to_string(home.path().join(LABEL_FILE)).expect("saved");
        assert_eq!(saved, format!("{me}\n"));
        let leftovers = std::fs::read_dir(home.path()).expect("ls").count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[test]
    fn present_it_is_kept_whatever_the_current_peer_id() {
        let home = tempfile::tempdir().expect("tempdir");
        let (first, rotated) = (peer(), peer());
        load_or_create(home.path(), &first).expect("created");
        // After a key rotation the daemon starts with another peer id: the label stays.
        assert_eq!(load_or_create(home.path(), &rotated).expect("kept"), first);
        let saved = std::fs::read_to_string(home.path().join(LABEL_FILE)).expect("saved");
        assert_eq!(saved.trim(), first.to_string());
    }

    #[test]
    fn garbage_is_refused_with_what_to_do() {
        let home = tempfile::tempdir().expect("tempdir");
        let me = peer();
        let path = home.path().join(LABEL_FILE);
        let long = [b'1'; 300];
        let texts: [&[u8]; 4] = [b"", b"not a peer id\n", &[0xff, 0xfe, 0x00], &long];
        for text in texts {
            std::fs::write(&path, text).expect("write");
            let e = load_or_create(home.path(), &me).expect_err("garbage refused");
            assert!(matches!(e, LabelError::Garbage { .. }), "{e:?}");
            let said = e.to_string();
            assert!(
                said.contains("provider-label does not hold a peer id"),
                "{said}"
            );
            assert!(
                said.contains(&format!("the current peer id {me}")),
                "{said}"
            );
            assert!(
                said.contains("docker ps -a --format '{{.Labels}}'"),
                "{said}"
            );
            // Nothing is overwritten: the operator decides.
            assert_eq!(std::fs::read(&path).expect("read"), text);
        }
    }

    #[test]
    fn unreadable_is_refused_with_what_to_do() {
        let home = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: reading it fails whoever runs the test.
        std::fs::create_dir(home.path().join(LABEL_FILE)).expect("mkdir");
        let e = load_or_create(home.path(), &peer()).expect_err("unreadable refused");
        assert!(matches!(e, LabelError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("fix its permissions"), "{e}");
    }
}
