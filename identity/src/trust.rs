//! The trusted peers of a participant: `<home>/trusted_peers.json`.
//!
//! A provider serves only peers in its file; peerctl talks only to providers in its file.
//! [`TrustStore`] is the editor (`peerctl peers add|list|remove`): every change re-reads the
//! file, validates its input (Ed25519 peer ids, multiaddrs, unique aliases) and writes the file
//! atomically with mode 0600. A corrupt file is reported with the way to fix it and never
//! replaced. [`TrustWatcher`] is the daemon's view: [`TrustWatcher::is_trusted`] costs one
//! `stat` and re-reads the file only when it changed, so edits apply without a restart.
//!
//! ```json
//! {"version":1,"peers":[{"peer_id":"12D3KooW…","alias":"laptop",
//!   "addrs":["/ip4/192.0.2.7/tcp/9000"],"added_at":"2026-11-21T15:00:00Z"}]}
//! ```

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::parse_peer_id;

/// File name of the trust store inside a home directory.
pub const TRUST_FILE: &str = "trusted_peers.json";

const FILE_VERSION: u32 = 1;
const MAX_ALIAS: usize = 64;

/// One trusted peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PeerEntry", into = "PeerEntry")]
pub struct TrustedPeer {
    pub peer_id: PeerId,
    pub alias: Option<String>,
    /// Where to dial it (may be empty: mDNS or the gateway may know).
    pub addrs: Vec<Multiaddr>,
    pub added_at: SystemTime,
}

/// Why the trust store could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} is corrupt ({reason}); fix it by hand, or move it aside with `mv {path} {path}.bad` \
         and add the peers again with `peers add`"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    BadPeerId(String),
    #[error("{0} is not an Ed25519 peer id; only 12D3KooW… ids (Ed25519 keys) can be trusted")]
    NotEd25519(String),
    #[error("`{addr}` is not a multiaddr ({reason}); addresses look like /ip4/192.0.2.7/tcp/9000")]
    BadAddr { addr: String, reason: String },
    #[error("address `{addr}` ends in /p2p/ of another peer than {peer}")]
    AddrOfOtherPeer { addr: String, peer: String },
    #[error("`{alias}` is not a usable alias: {reason}")]
    BadAlias { alias: String, reason: &'static str },
    #[error("alias `{alias}` already names peer {peer}; pick another or remove that peer first")]
    AliasTaken { alias: String, peer: String },
    #[error("no trusted peer has the id or alias `{0}`; see `peers list`")]
    Unknown(String),
}

/// What [`TrustStore::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// The peer was already trusted: its addresses were merged and its alias set if given.
    Updated,
}

/// The trusted peers file, loaded.
#[derive(Debug, Clone)]
pub struct TrustStore {
    path: PathBuf,
    peers: Vec<TrustedPeer>,
}

impl TrustStore {
    /// Loads `<home>/trusted_peers.json`; a missing file is an empty store.
    pub fn open(home: &Path) -> Result<Self, TrustError> {
        let path = home.join(TRUST_FILE);
        crate::fsutil::remove_stale_tmp(home, TRUST_FILE);
        let peers = read_peers(&path)?;
        Ok(Self { path, peers })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn list(&self) -> &[TrustedPeer] {
        &self.peers
    }

    pub fn get(&self, peer: &PeerId) -> Option<&TrustedPeer> {
        self.peers.iter().find(|p| p.peer_id == *peer)
    }

    pub fn is_trusted(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }

    /// The peer named by a peer id or an alias.
    pub fn resolve(&self, id_or_alias: &str) -> Result<&TrustedPeer, TrustError> {
        let wanted = id_or_alias.trim();
        let found = match wanted.parse::<PeerId>() {
            Ok(id) => self.get(&id),
            Err(_) => self
                .peers
                .iter()
                .find(|p| p.alias.as_deref() == Some(wanted)),
        };
        found.ok_or_else(|| TrustError::Unknown(wanted.to_owned()))
    }

    /// Trusts `peer` (text as a person typed it), reachable at `addrs`, optionally named
    /// `alias`. Re-adding a trusted peer merges the addresses and sets the alias if given.
    /// The file is re-read first, so concurrent edits are not lost, and written atomically.
    pub fn add(
        &mut self,
        peer: &str,
        alias: Option<&str>,
        addrs: &[impl AsRef<str>],
    ) -> Result<AddOutcome, TrustError> {
        let peer_id = parse_trusted_id(peer)?;
        if let Some(alias) = alias {
            validate_alias(alias)?;
        }
        let addrs = addrs
            .iter()
            .map(|a| parse_addr(a.as_ref(), &peer_id))
            .collect::<Result<Vec<_>, _>>()?;
        self.peers = read_peers(&self.path)?;
        if let Some(alias) = alias
            && let Some(owner) = self
                .peers
                .iter()
                .find(|p| p.alias.as_deref() == Some(alias) && p.peer_id != peer_id)
        {
            return Err(TrustError::AliasTaken {
                alias: alias.to_owned(),
                peer: owner.peer_id.to_string(),
            });
        }
        let outcome = match self.peers.iter_mut().find(|p| p.peer_id == peer_id) {
            Some(entry) => {
                for addr in addrs {
                    if !entry.addrs.contains(&addr) {
                        entry.addrs.push(addr);
                    }
                }
                if let Some(alias) = alias {
                    entry.alias = Some(alias.to_owned());
                }
                AddOutcome::Updated
            }
            None => {
                let mut unique = Vec::new();
                for addr in addrs {
                    if !unique.contains(&addr) {
                        unique.push(addr);
                    }
                }
                self.peers.push(TrustedPeer {
                    peer_id,
                    alias: alias.map(str::to_owned),
                    addrs: unique,
                    added_at: now_in_seconds(),
                });
                AddOutcome::Added
            }
        };
        self.save()?;
        Ok(outcome)
    }

    /// Stops trusting the peer named by `id_or_alias`, returning its entry.
    pub fn remove(&mut self, id_or_alias: &str) -> Result<TrustedPeer, TrustError> {
        self.peers = read_peers(&self.path)?;
        let peer_id = self.resolve(id_or_alias)?.peer_id;
        let index = self
            .peers
            .iter()
            .position(|p| p.peer_id == peer_id)
            .expect("resolve found this peer in the list");
        let removed = self.peers.remove(index);
        self.save()?;
        Ok(removed)
    }

    fn save(&self) -> Result<(), TrustError> {
        let file = TrustFile {
            version: FILE_VERSION,
            peers: self.peers.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&file).expect("the trust file serialises");
        json.push(b'\n');
        write_atomic(&self.path, &json, 0o600).map_err(|source| TrustError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// The daemon's live view of the trust file: re-read when it changes, without a restart.
/// A file that turns corrupt while the daemon runs trusts nobody until it is fixed (and is
/// logged once per change), since the edit that broke it may have been a removal.
#[derive(Debug)]
pub struct TrustWatcher {
    path: PathBuf,
    state: Mutex<Watched>,
}

#[derive(Debug)]
struct Watched {
    stamp: Option<Stamp>,
    peers: Result<Vec<TrustedPeer>, String>,
    reads: usize,
}

/// What identifies one version of the file (write_atomic gives every version a new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl TrustWatcher {
    /// Watches `<home>/trusted_peers.json`, failing now if it is unreadable or corrupt.
    pub fn open(home: &Path) -> Result<Self, TrustError> {
        let path = home.join(TRUST_FILE);
        let stamp = stamp(&path)?;
        let peers = read_peers(&path)?;
        Ok(Self {
            path,
            state: Mutex::new(Watched {
                stamp,
                peers: Ok(peers),
                reads: 1,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `peer` is in the file as it is now; `false` while the file is corrupt.
    pub fn is_trusted(&self, peer: &PeerId) -> bool {
        self.check(peer).unwrap_or(false)
    }

    /// Like [`TrustWatcher::is_trusted`], with the reason when the file cannot be used.
    pub fn check(&self, peer: &PeerId) -> Result<bool, TrustError> {
        self.with_peers(|peers| peers.iter().any(|p| p.peer_id == *peer))
    }

    /// The current entries (e.g. for their addresses).
    pub fn peers(&self) -> Result<Vec<TrustedPeer>, TrustError> {
        self.with_peers(<[TrustedPeer]>::to_vec)
    }

    fn with_peers<T>(&self, f: impl FnOnce(&[TrustedPeer]) -> T) -> Result<T, TrustError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamp(&self.path)?;
        if now != state.stamp {
            // The stamp is taken before reading: a change during the read is seen next time.
            state.stamp = now;
            state.reads += 1;
            state.peers = read_peers(&self.path).map_err(|e| e.to_string());
            if let Err(reason) = &state.peers {
                tracing::warn!(path = %self.path.display(), "trusting nobody: {reason}");
            }
        }
        match &state.peers {
            Ok(peers) => Ok(f(peers)),
            Err(reason) => Err(TrustError::Corrupt {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

/// The file keeps whole seconds; so does the entry in memory, so both compare equal.
fn now_in_seconds() -> SystemTime {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs())
}

fn stamp(path: &Path) -> Result<Option<Stamp>, TrustError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TrustError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_peers(path: &Path) -> Result<Vec<TrustedPeer>, TrustError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TrustError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| TrustError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file: TrustFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FILE_VERSION {
        return Err(corrupt(format!("unsupported version {}", file.version)));
    }
    let mut ids = HashSet::new();
    let mut aliases = HashSet::new();
    for peer in &file.peers {
        if !ids.insert(peer.peer_id) {
            return Err(corrupt(format!("peer {} is listed twice", peer.peer_id)));
        }
        if let Some(alias) = &peer.alias
            && !aliases.insert(alias.as_str())
        {
            return Err(corrupt(format!("alias `{alias}` is used twice")));
        }
    }
    Ok(file.peers)
}

fn parse_trusted_id(text: &str) -> Result<PeerId, TrustError> {
    let id = parse_peer_id(text).map_err(TrustError::BadPeerId)?;
    let key = libp2p_identity::PublicKey::try_decode_protobuf(id.as_ref().digest());
    match key.map(|k| k.try_into_ed25519()) {
        Ok(Ok(_)) if id.as_ref().code() == 0 => Ok(id),
        _ => Err(TrustError::NotEd25519(id.to_string())),
    }
}

fn parse_addr(text: &str, peer: &PeerId) -> Result<Multiaddr, TrustError> {
    let bad = |reason: String| TrustError::BadAddr {
        addr: text.to_owned(),
        reason,
    };
    let addr = text
        .trim()
        .parse::<Multiaddr>()
        .map_err(|e| bad(e.to_string()))?;
    if addr.is_empty() {
        return Err(bad("it is empty".to_owned()));
    }
    if addr
        .iter()
        .any(|p| matches!(p, Protocol::P2p(id) if id != *peer))
    {
        return Err(TrustError::AddrOfOtherPeer {
            addr: text.to_owned(),
            peer: peer.to_string(),
        });
    }
    Ok(addr)
}

/// Aliases: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or digit, not a peer id.
fn validate_alias(alias: &str) -> Result<(), TrustError> {
    let reason = if alias.is_empty() || alias.len() > MAX_ALIAS {
        Some("aliases are 1 to 64 characters long")
    } else if !alias
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("only letters, digits, `.`, `_` and `-` are allowed")
    } else if !alias.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or a digit")
    } else if alias.parse::<PeerId>().is_ok() {
        Some("it is a peer id")
    } else {
        None
    };
    reason.map_or(Ok(()), |reason| {
        Err(TrustError::BadAlias {
            alias: alias.to_owned(),
            reason,
        })
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    version: u32,
    peers: Vec<TrustedPeer>,
}

/// A [`TrustedPeer`] as written in the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerEntry {
    peer_id: String,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    addrs: Vec<String>,
    added_at: String,
}

impl From<TrustedPeer> for PeerEntry {
    fn from(p: TrustedPeer) -> Self {
        Self {
            peer_id: p.peer_id.to_string(),
            alias: p.alias,
            addrs: p.addrs.iter().map(Multiaddr::to_string).collect(),
            added_at: humantime::format_rfc3339_seconds(p.added_at).to_string(),
        }
    }
}

impl TryFrom<PeerEntry> for TrustedPeer {
    type Error = String;

    fn try_from(e: PeerEntry) -> Result<Self, String> {
        let peer_id = parse_trusted_id(&e.peer_id).map_err(|e| e.to_string())?;
        if let Some(alias) = &e.alias {
            validate_alias(alias).map_err(|e| e.to_string())?;
        }
        let addrs = e
            .addrs
            .iter()
            .map(|a| parse_addr(a, &peer_id).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let added_at = humantime::parse_rfc3339(&e.added_at)
            .map_err(|err| format!("added_at `{}` is not an RFC 3339 time: {err}", e.added_at))?;
        Ok(Self {
            peer_id,
            alias: e.alias,
            addrs,
            added_at,
        })
    }
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
