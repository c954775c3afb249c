//! Which providers may open tunnels: `--open`, `--allow-provider` ids, and an optional file
//! (`--allow-providers-file`, one peer id per line, `#` comments) re-read whenever its
//! modification time changes, so operators admit or drop providers without a restart.
//!
//! A new connection checks the file itself ([`Allowlist::allows`]). Live tunnels and relay
//! slots do not each poll it: one timer calls [`Allowlist::refresh`], and whoever holds a
//! [`Allowlist::changes`] receiver re-checks its peer with [`Allowlist::allows_cached`] when the
//! list changed (revocation).
//!
//! On top of the list, a deny set ([`Allowlist::deny`], kept by the fleet follower from the
//! fleets' revocations) refuses a key whatever the flags and the file say, `--open` included.
//! Aliases ([`Allowlist::alias`], from the fleets' key rotations) admit a key wherever the key
//! it replaced is admitted, so a robot that rotated its key needs no allowlist edit.
//!
//! With `--cluster` ([`Allowlist::with_cluster`]) the cluster's revoked set wins over the
//! flags and the file like the deny set, its allow set adds to them, and a change of either
//! at any gateway reaches [`Allowlist::changes`] through [`Allowlist::cluster_changed`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use peercompute_cluster::ClusterStore;
use tokio::sync::watch;

use peercompute_identity::{PeerId, parse_peer_id};

/// Most rotations an alias is followed back through.
const MAX_ALIAS_CHAIN: usize = 16;

/// The provider allowlist.
#[derive(Debug)]
pub(crate) struct Allowlist {
    open: bool,
    fixed: HashSet<PeerId>,
    file: Option<AllowFile>,
    /// Keys refused whatever else says (revoked in a fleet), with why.
    denied: Mutex<HashMap<PeerId, String>>,
    /// A rotated key → the key it replaced: admitted wherever that one is listed.
    aliases: Mutex<HashMap<PeerId, PeerId>>,
    /// Bumped whenever a refresh changed the file's set, or the deny set changed.
    changes: watch::Sender<u64>,
    /// `--cluster`: the allow and revoked sets every gateway shares.
    cluster: Option<ClusterStore>,
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
        Ok(Self {
            open,
            fixed,
            file,
            denied: Mutex::new(HashMap::new()),
            aliases: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
            cluster: None,
        })
    }

    /// Adds the cluster's sets: its revoked set refuses, its allow set admits.
    pub(crate) fn with_cluster(mut self, store: Option<ClusterStore>) -> Self {
        self.cluster = store;
        self
    }

    /// The cluster's allow or revoked set changed: every holder of [`Allowlist::changes`]
    /// re-checks its peer.
    pub(crate) fn cluster_changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Why `peer` is in the cluster's revoked set, when it is.
    pub(crate) fn cluster_revoked(&self, peer: &PeerId) -> Option<String> {
        let store = self.cluster.as_ref()?;
        store.revoked(&peer.to_string()).map(|record| record.reason)
    }

    /// Refuses `peer` from now on, whatever the flags and the file say; live tunnels and relay
    /// slots of it are told through [`Allowlist::changes`]. Returns whether it was new.
    pub(crate) fn deny(&self, peer: PeerId, reason: &str) -> bool {
        let fresh = self
            .denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, reason.to_owned())
            .is_none();
        if fresh {
            self.changes.send_modify(|n| *n += 1);
        }
        fresh
    }

    /// Lifts a [`Allowlist::deny`]; the flags and the file decide again. Returns whether it was
    /// denied.
    pub(crate) fn undeny(&self, peer: &PeerId) -> bool {
        let was = self
            .denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer)
            .is_some();
        if was {
            self.changes.send_modify(|n| *n += 1);
        }
        was
    }

    /// Admits `new` wherever `old` is listed (the flags, the file, or an alias of its own: a
    /// key rotated twice). The deny set still wins: denying `old` does not deny `new`.
    /// Returns whether the alias was new.
    pub(crate) fn alias(&self, new: PeerId, old: PeerId) -> bool {
        if new == old {
            return false;
        }
        let fresh = self
            .aliases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(new, old)
            != Some(old);
        if fresh {
            self.changes.send_modify(|n| *n += 1);
        }
        fresh
    }

    /// Why `peer` is denied, when it is.
    pub(crate) fn denied(&self, peer: &PeerId) -> Option<String> {
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .cloned()
    }

    /// Tells when the list changed (a counter); check peers again with
    /// [`Allowlist::allows_cached`] then.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether `peer` may open a tunnel now (re-reads the file if it changed).
    pub(crate) fn allows(&self, peer: &PeerId) -> bool {
        self.refresh();
        self.allows_cached(peer)
    }

    /// Whether `peer` was allowed at the last [`Allowlist::refresh`].
    pub(crate) fn allows_cached(&self, peer: &PeerId) -> bool {
        if self.denied(peer).is_some() || self.cluster_revoked(peer).is_some() {
            return false;
        }
        if self.open {
            return true;
        }
        // Follows aliases back through at most this many rotations (a loop ends there too).
        let mut key = *peer;
        for _ in 0..MAX_ALIAS_CHAIN {
            if self.listed(&key) {
                return true;
            }
            match self
                .aliases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
            {
                Some(old) => key = *old,
                None => return false,
            }
        }
        false
    }

    /// Whether the flags or the file (as last read) name `peer`.
    fn listed(&self, peer: &PeerId) -> bool {
        self.fixed.contains(peer)
            || self
                .cluster
                .as_ref()
                .is_some_and(|store| store.is_allowed(&peer.to_string()))
            || self.file.as_ref().is_some_and(|file| {
                file.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .1
                    .contains(peer)
            })
    }

    /// Re-reads the file if its modification time changed; tells [`Allowlist::changes`]
    /// receivers when its set of ids did.
    pub(crate) fn refresh(&self) {
        let Some(file) = &self.file else {
            return;
        };
        let mut cache = file.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mtime = std::fs::metadata(&file.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime == cache.0 {
            return;
        }
        match read_file(&file.path) {
            Ok(fresh) => {
                let changed = fresh.1 != cache.1;
                *cache = fresh;
                drop(cache);
                if changed {
                    self.changes.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                // Keep the last good list rather than locking everyone out; say so once per
                // change of the file.
                cache.0 = mtime;
                tracing::warn!(path = %file.path.display(), "allowlist file unreadable, keeping the previous list: {e}");
            }
        }
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

    /// Sets the file's modification time `secs` seconds ahead, so a rewrite within the same
    /// clock tick still counts as a change.
    fn touch_ahead(path: &std::path::Path, secs: u64) {
        let later = SystemTime::now() + std::time::Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(later))
            .expect("touch");
    }

    #[test]
    fn refresh_tells_subscribers_only_when_the_ids_change() {
        let a = Identity::generate().expect("id").peer_id();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("allow.txt");
        std::fs::write(&path, format!("{a}\n")).expect("write");
        let list = Allowlist::new(false, &[], Some(path.clone())).expect("file list");
        let mut changes = list.changes();
        assert!(list.allows_cached(&a));

        // Same ids, new mtime (a comment added): no news.
        std::fs::write(&path, format!("# home\n{a}\n")).expect("rewrite");
        touch_ahead(&path, 5);
        list.refresh();
        assert!(!changes.has_changed().expect("sender alive"));

        // `a` removed: subscribers hear of it, the cached answer follows.
        std::fs::write(&path, "# nobody\n").expect("rewrite");
        touch_ahead(&path, 10);
        assert!(list.allows_cached(&a), "nothing re-read before a refresh");
        list.refresh();
        assert!(changes.has_changed().expect("sender alive"));
        changes.mark_unchanged();
        assert!(!list.allows_cached(&a));

        // An unreadable file keeps the last good list and tells nobody.
        std::fs::write(&path, "not-a-peer-id\n").expect("rewrite");
        touch_ahead(&path, 15);
        list.refresh();
        assert!(!changes.has_changed().expect("sender alive"));
        assert!(!list.allows_cached(&a));
    }

    #[test]
    fn a_denied_key_is_refused_even_when_open_and_subscribers_hear_of_it() {
        let a = Identity::generate().expect("id").peer_id();
        let b = Identity::generate().expect("id").peer_id();
        let list = Allowlist::new(true, &[a.to_string()], None).expect("open list");
        let mut changes = list.changes();
        assert!(list.allows(&a) && list.allows(&b));
        assert!(list.deny(a, "revoked in fleet lab: stolen"));
        assert!(changes.has_changed().expect("sender alive"));
        changes.mark_unchanged();
        assert!(!list.allows(&a) && !list.allows_cached(&a));
        assert!(list.allows(&b), "only the denied key");
        assert_eq!(
            list.denied(&a).as_deref(),
            Some("revoked in fleet lab: stolen")
        );
        assert!(!list.deny(a, "again"), "not new");
        assert!(!changes.has_changed().expect("sender alive"));
        assert!(list.undeny(&a));
        assert!(changes.has_changed().expect("sender alive"));
        assert!(list.allows(&a));
        assert!(!list.undeny(&a));
    }

    #[test]
    fn a_rotated_key_is_admitted_wherever_the_old_one_is_listed_and_not_denied_with_it() {
        let [old, mid, new, stranger] =
            [(); 4].map(|()| Identity::generate().expect("id").peer_id());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("allow.txt");
        std::fs::write(&path, format!("{old}\n")).expect("write");
        let list = Allowlist::new(false, &[], Some(path.clone())).expect("file list");
        let mut changes = list.changes();
        assert!(!list.allows(&mid));
        assert!(list.alias(mid, old));
        assert!(changes.has_changed().expect("sender alive"));
        changes.mark_unchanged();
        assert!(!list.alias(mid, old), "not new");
        assert!(!changes.has_changed().expect("sender alive"));
        // Rotated twice: followed back to the listed key.
        list.alias(new, mid);
        assert!(list.allows(&mid) && list.allows(&new));
        assert!(!list.allows(&stranger));
        // The old key denied (the new one connected): the new ones stay admitted.
        list.deny(old, "rotated");
        assert!(!list.allows(&old));
        assert!(list.allows(&new));
        // The old key dropped from the file: its successors go with it.
        std::fs::write(&path, "# nobody\n").expect("rewrite");
        touch_ahead(&path, 5);
        assert!(!list.allows(&new));
        // A loop of aliases ends.
        list.alias(old, new);
        assert!(!list.allows(&stranger) && !list.allows(&new));
        // Fixed ids count as listed too.
        let fixed = Allowlist::new(false, &[old.to_string()], None).expect("list");
        fixed.alias(new, old);
        assert!(fixed.allows(&new));
        assert!(!fixed.alias(old, old), "a key is no alias of itself");
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
