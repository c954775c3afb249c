//! Which providers may open tunnels: `--open`, `--allow-provider` ids, and an optional file
//! (`--allow-providers-file`, one peer id per line, `#` comments) re-read whenever its
//! modification time changes, so operators admit or drop providers without a restart.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use peercompute_identity::{PeerId, parse_peer_id};

/// The provider allowlist.
#[derive(Debug)]
pub(crate) struct Allowlist {
    open: bool,
    fixed: HashSet<PeerId>,
    file: Option<AllowFile>,
}

#[derive(Debug)]
struct AllowFile {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, HashSet<PeerId>)>,
}

/// A malformed allowlist entry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AllowlistError(String);

impl Allowlist {
    /// Builds the allowlist; a bad id in the flags or the file is an error at start.
    pub(crate) fn new(
        open: bool,
        ids: &[String],
        file: Option<PathBuf>,
    ) -> Result<Self, AllowlistError> {
        let fixed = ids
            .iter()
            .map(|s| parse_peer_id(s).map_err(AllowlistError))
            .collect::<Result<_, _>>()?;
        let file = match file {
            Some(path) => {
                let (mtime, set) = read_file(&path)?;
                Some(AllowFile {
                    path,
                    cache: Mutex::new((mtime, set)),
                })
            }
            None => None,
        };
        Ok(Self { open, fixed, file })
    }

    /// Whether `peer` may open a tunnel now.
    pub(crate) fn allows(&self, peer: &PeerId) -> bool {
        if self.open || self.fixed.contains(peer) {
            return true;
        }
        let Some(file) = &self.file else {
            return false;
        };
        let mut cache = file.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mtime = std::fs::metadata(&file.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime != cache.0 {
            match read_file(&file.path) {
                Ok(fresh) => *cache = fresh,
                Err(e) => {
                    // Keep the last good list rather than locking everyone out.
                    tracing::warn!(path = %file.path.display(), "allowlist file unreadable, keeping the previous list: {e}");
                }
            }
        }
        cache.1.contains(peer)
    }
}

fn read_file(path: &PathBuf) -> Result<(Option<SystemTime>, HashSet<PeerId>), AllowlistError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AllowlistError(format!("cannot read {}: {e}", path.display())))?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut set = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let id = parse_peer_id(entry)
            .map_err(|e| AllowlistError(format!("{}:{}: {e}", path.display(), n + 1)))?;
        set.insert(id);
    }
    Ok((mtime, set))
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercompute_identity::Identity;

    #[test]
    fn fixed_open_and_file() {
        let a = Identity::generate().expect("id").peer_id();
        let b = Identity::generate().expect("id").peer_id();
        let list = Allowlist::new(false, &[a.to_string()], None).expect("list");
        assert!(list.allows(&a));
        assert!(!list.allows(&b));
        assert!(Allowlist::new(true, &[], None).expect("open").allows(&b));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("allow.txt");
        std::fs::write(&path, format!("# providers\n{a}  # home\n")).expect("write");
        let list = Allowlist::new(false, &[], Some(path.clone())).expect("file list");
        assert!(list.allows(&a));
        assert!(!list.allows(&b));
        // Rewrite with a different mtime: b admitted, a dropped.
        std::fs::write(&path, format!("{b}\n")).expect("rewrite");
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .expect("touch");
        assert!(list.allows(&b));
        assert!(!list.allows(&a));
    }

    #[test]
    fn bad_id_is_an_error_with_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("allow.txt");
        std::fs::write(&path, "\nnot-a-peer\n").expect("write");
        let err = Allowlist::new(false, &[], Some(path)).expect_err("bad");
        assert!(err.to_string().contains(":2:"), "{err}");
    }
}
