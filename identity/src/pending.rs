//! A key rotation in progress, on disk: the next key waits in `<dir>/identity.key.next` until
//! the fleet has accepted it, then [`finish_rotation`] makes it the identity. The old key is
//! kept as `identity.key.retired-<unix secs>` (never deleted: a person may still need to read
//! what it signed).
//!
//! The switch is two renames. A crash between them leaves the next key without
//! `identity.key`; the next call finishes the job, so the directory always ends with exactly
//! one identity: the old one, or the new one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::key::{Identity, IdentityError, KEY_FILE};

/// File name of the pending next key.
pub const NEXT_KEY_FILE: &str = "identity.key.next";

/// Path of the pending next key inside `dir`.
pub fn next_key_path(dir: &Path) -> PathBuf {
    dir.join(NEXT_KEY_FILE)
}

/// The pending next key of `dir`, made now if there is none (so asking twice gives the same
/// key, and the same rotation token). Returns it and whether it was made now.
pub fn load_or_create_next(dir: &Path) -> Result<(Identity, bool), IdentityError> {
    let path = next_key_path(dir);
    if path.exists() {
        return Ok((Identity::load_file(&path)?, false));
    }
    let next = Identity::generate()?;
    next.save_file(&path)?;
    Ok((next, true))
}

/// The pending next key of `dir`, if there is one.
pub fn pending_next(dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = next_key_path(dir);
    match fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        _ => Identity::load_file(&path).map(Some),
    }
}

/// What [`finish_rotation`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// No pending key, or the fleet has not accepted it (`accepted` said no): nothing moved.
    Nothing,
    /// The next key is the identity now; the old one was kept at this path (none when a
    /// crash had already moved it).
    Switched { retired: Option<PathBuf> },
}

/// Makes the pending next key of `dir` the identity when `accepted(next public key)` says
/// the fleet took the rotation; `now` names the retired file. Finishes a switch a crash
/// interrupted (next key present, no identity) whatever `accepted` says.
pub fn finish_rotation(
    dir: &Path,
    now: u64,
    accepted: impl Fn(&[u8; 32]) -> bool,
) -> Result<Finished, IdentityError> {
    let Some(next) = pending_next(dir)? else {
        return Ok(Finished::Nothing);
    };
    let current = Identity::path_in(dir);
    let next_path = next_key_path(dir);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Write { path, source }
    };
    if !current.exists() {
        fs::rename(&next_path, &current).map_err(write_err(&current))?;
        sync_dir(dir).map_err(write_err(dir))?;
        return Ok(Finished::Switched { retired: None });
    }
    if !accepted(&next.public_key_bytes()) {
        return Ok(Finished::Nothing);
    }
    let retired = dir.join(format!("{KEY_FILE}.retired-{now}"));
    fs::rename(&current, &retired).map_err(write_err(&retired))?;
    fs::rename(&next_path, &current).map_err(write_err(&current))?;
    sync_dir(dir).map_err(write_err(dir))?;
    Ok(Finished::Switched {
        retired: Some(retired),
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_identity() -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (id, _) = Identity::load_or_create(dir.path()).expect("identity");
        (dir, id)
    }

    #[test]
    fn asking_twice_gives_the_same_next_key() {
        let (dir, id) = dir_with_identity();
        let (a, made) = load_or_create_next(dir.path()).expect("next");
        assert!(made);
        let (b, made) = load_or_create_next(dir.path()).expect("next");
        assert!(!made);
        assert_eq!(a.public_key_bytes(), b.public_key_bytes());
        assert_ne!(a.public_key_bytes(), id.public_key_bytes());
    }

    #[test]
    fn nothing_moves_without_a_pending_key_or_before_the_fleet_accepts_it() {
        let (dir, id) = dir_with_identity();
        assert_eq!(
            finish_rotation(dir.path(), 1, |_| true).expect("ok"),
            Finished::Nothing
        );
        let (next, _) = load_or_create_next(dir.path()).expect("next");
        let other = Identity::generate().expect("key").public_key_bytes();
        let r = finish_rotation(dir.path(), 1, |k| *k == other).expect("ok");
        assert_eq!(r, Finished::Nothing);
        let still = Identity::load(dir.path()).expect("identity");
        assert_eq!(still.public_key_bytes(), id.public_key_bytes());
        assert!(next_key_path(dir.path()).exists());
        let _ = next;
    }

    #[test]
    fn an_accepted_key_becomes_the_identity_and_the_old_one_is_kept() {
        let (dir, id) = dir_with_identity();
        let (next, _) = load_or_create_next(dir.path()).expect("next");
        let want = next.public_key_bytes();
        let r = finish_rotation(dir.path(), 1_800_000_000, |k| *k == want).expect("ok");
        let retired = dir.path().join("identity.key.retired-1800000000");
        assert_eq!(
            r,
            Finished::Switched {
                retired: Some(retired.clone())
            }
        );
        let now = Identity::load(dir.path()).expect("identity");
        assert_eq!(now.public_key_bytes(), want);
        let old = Identity::load_file(&retired).expect("old key kept");
        assert_eq!(old.public_key_bytes(), id.public_key_bytes());
        assert!(!next_key_path(dir.path()).exists());
    }

    #[test]
    fn a_switch_a_crash_interrupted_is_finished() {
        let (dir, _) = dir_with_identity();
        let (next, _) = load_or_create_next(dir.path()).expect("next");
        // The crash: the first rename done, the second not.
        fs::rename(
            Identity::path_in(dir.path()),
            dir.path().join("identity.key.retired-5"),
        )
        .expect("rename");
        let r = finish_rotation(dir.path(), 6, |_| false).expect("ok");
        assert_eq!(r, Finished::Switched { retired: None });
        let now = Identity::load(dir.path()).expect("identity");
        assert_eq!(now.public_key_bytes(), next.public_key_bytes());
    }
}
