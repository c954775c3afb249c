//! The local copy of the cluster's state, pure: no etcd, no clock. The store feeds it a
//! snapshot, then watch events, and also the answers of its own writes (so that the gateway
//! which won a claim knows it at once, before its watch says so). It answers `owner()` and the
//! peer sets from memory, which is what keeps routes working while etcd is away.
//!
//! The subtle part is ordering: a write's answer and the watch race each other, and the
//! watch may deliver an event older than what a write's answer already showed. Every entry
//! keeps the etcd revision it was written at, and a delete leaves a tombstone with its
//! revision, so that an older put or delete never undoes a newer one ([`Table`]). A write's
//! answer is applied only when it is newer than everything the watch has covered
//! ([`Cache::apply_answer`]); the watch then brings the rest in order.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::keys::{Key, Keys};

/// The value of `names/<name>`: who owns the name, since when, and which gateway wrote it.
/// Records ignore fields they do not know, so a later gateway may add some within schema 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    /// The owner's peer id.
    pub owner: String,
    /// When the claim was made, in seconds since the Unix epoch.
    pub at: u64,
    /// The peer id of the gateway that wrote it.
    pub by: String,
}

/// The value of `allow/<peer>` and `revoked/<peer>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Why (free text from the operator; may be empty for `allow`).
    pub reason: String,
    /// The peer id of the gateway (or operator tool) that wrote it.
    pub by: String,
}

/// The value of `released/<name>/<owner>`: the operator released `name` from `owner`, who
/// may not take it back on its own until the key's lease (24 h) ends or the hold is lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// When the release was made, in seconds since the Unix epoch.
    pub at: u64,
    /// The peer id of the gateway that released it.
    pub by: String,
}

/// Which peer set an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerSet {
    Allow,
    Revoked,
}

/// One change read from etcd: a put (`Some` record) or a delete (`None`) at revision `rev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Update {
    Name {
        name: String,
        rev: i64,
        record: Option<NameRecord>,
    },
    Peer {
        set: PeerSet,
        peer: String,
        rev: i64,
        record: Option<PeerRecord>,
    },
    Hold {
        name: String,
        owner: String,
        rev: i64,
        record: Option<HoldRecord>,
    },
}

/// What an update changed, so the store tells only the listeners concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changed {
    pub(crate) names: bool,
    pub(crate) peers: bool,
}

impl std::ops::BitOrAssign for Changed {
    fn bitor_assign(&mut self, other: Self) {
        self.names |= other.names;
        self.peers |= other.peers;
    }
}

/// Turns one key/value from etcd into an [`Update`]. `Ok(None)`: not a key the cache keeps
/// (the schema key, another schema's keys). `Err`: our key with a value we cannot read.
pub(crate) fn decode(
    keys: &Keys,
    key: &[u8],
    value: &[u8],
    rev: i64,
    deleted: bool,
) -> Result<Option<Update>, String> {
    fn parse<T: for<'de> Deserialize<'de>>(
        value: &[u8],
        deleted: bool,
    ) -> Result<Option<T>, String> {
        if deleted {
            return Ok(None);
        }
        serde_json::from_slice(value)
            .map(Some)
            .map_err(|e| e.to_string())
    }
    let peer = |set, peer: &str| -> Result<Option<Update>, String> {
        Ok(Some(Update::Peer {
            set,
            peer: peer.to_owned(),
            rev,
            record: parse(value, deleted)?,
        }))
    };
    match keys.parse(key) {
        Some(Key::Name(name)) => Ok(Some(Update::Name {
            name: name.to_owned(),
            rev,
            record: parse(value, deleted)?,
        })),
        Some(Key::Allow(p)) => peer(PeerSet::Allow, p),
        Some(Key::Revoked(p)) => peer(PeerSet::Revoked, p),
        Some(Key::Released(name, owner)) => Ok(Some(Update::Hold {
            name: name.to_owned(),
            owner: owner.to_owned(),
            rev,
            record: parse(value, deleted)?,
        })),
        Some(Key::Schema | Key::Other) | None => Ok(None),
    }
}

/// Entries with the revision each was written at, and tombstones for deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table<V> {
    entries: BTreeMap<String, (i64, V)>,
    tombstones: BTreeMap<String, i64>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            tombstones: BTreeMap::new(),
        }
    }
}

impl<V: Clone + PartialEq> Table<V> {
    /// The newest revision seen for `key`, put or delete.
    fn newest(&self, key: &str) -> i64 {
        let put = self.entries.get(key).map_or(0, |(rev, _)| *rev);
        put.max(self.tombstones.get(key).copied().unwrap_or(0))
    }

    /// Applies a put or delete unless something newer for `key` is known; whether the value
    /// seen by readers changed.
    fn apply(&mut self, key: &str, rev: i64, value: Option<V>) -> bool {
        if rev <= self.newest(key) {
            return false;
        }
        match value {
            Some(value) => {
                self.tombstones.remove(key);
                let old = self.entries.insert(key.to_owned(), (rev, value.clone()));
                old.is_none_or(|(_, old)| old != value)
            }
            None => {
                self.tombstones.insert(key.to_owned(), rev);
                self.entries.remove(key).is_some()
            }
        }
    }

    /// Forgets tombstones at or below `rev`: the watch has delivered everything up to there,
    /// and answers that old are no longer applied.
    fn prune(&mut self, rev: i64) {
        self.tombstones.retain(|_, r| *r > rev);
    }

    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// Every entry, sorted by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(k, (_, v))| (k, v))
    }

    /// The first entry whose key starts with `prefix`.
    pub(crate) fn first_with_prefix(&self, prefix: &str) -> Option<(&String, &V)> {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .next()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, v))| (k, v))
    }

    fn values(&self) -> BTreeMap<&String, &V> {
        self.iter().collect()
    }

    /// Rebuilds from plain values (the mirror file): revision 0, so anything from etcd wins.
    fn from_values(values: BTreeMap<String, V>) -> Self {
        Self {
            entries: values.into_iter().map(|(k, v)| (k, (0, v))).collect(),
            tombstones: BTreeMap::new(),
        }
    }

    fn to_values(&self) -> BTreeMap<String, V> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The cache: names, the two peer sets, and how far the watch has brought it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cache {
    pub(crate) names: Table<NameRecord>,
    pub(crate) allow: Table<PeerRecord>,
    pub(crate) revoked: Table<PeerRecord>,
    /// Release holds, keyed `<name>/<previous owner>`.
    pub(crate) holds: Table<HoldRecord>,
    /// Every event up to this revision has been applied (0: nothing from etcd yet).
    revision: i64,
}

/// The cache as plain values: what the mirror file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Contents {
    pub(crate) revision: i64,
    pub(crate) names: BTreeMap<String, NameRecord>,
    pub(crate) allow: BTreeMap<String, PeerRecord>,
    pub(crate) revoked: BTreeMap<String, PeerRecord>,
    #[serde(default)]
    pub(crate) holds: BTreeMap<String, HoldRecord>,
}

impl Cache {
    /// The revision the watch has brought the cache to.
    #[cfg(test)]
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// Replaces everything with a snapshot read at `revision`.
    pub(crate) fn replace(&mut self, updates: Vec<Update>, revision: i64) -> Changed {
        let mut fresh = Cache {
            revision,
            ..Cache::default()
        };
        for update in updates {
            fresh.apply_one(update);
        }
        let changed = Changed {
            names: fresh.names.values() != self.names.values()
                || fresh.holds.values() != self.holds.values(),
            peers: fresh.allow.values() != self.allow.values()
                || fresh.revoked.values() != self.revoked.values(),
        };
        *self = fresh;
        changed
    }

    /// Applies one watch response's events, then marks everything up to `revision` covered.
    pub(crate) fn apply_watch(&mut self, updates: Vec<Update>, revision: i64) -> Changed {
        let mut changed = Changed::default();
        for update in updates {
            changed |= self.apply_one(update);
        }
        if revision > self.revision {
            self.revision = revision;
            self.names.prune(revision);
            self.allow.prune(revision);
            self.revoked.prune(revision);
            self.holds.prune(revision);
        }
        changed
    }

    /// Applies what one of our own writes read or wrote, answered at store revision
    /// `header_rev`; ignored when the watch has already gone past it.
    pub(crate) fn apply_answer(&mut self, update: Update, header_rev: i64) -> Changed {
        if header_rev <= self.revision {
            return Changed::default();
        }
        self.apply_one(update)
    }

    fn apply_one(&mut self, update: Update) -> Changed {
        match update {
            Update::Name { name, rev, record } => Changed {
                names: self.names.apply(&name, rev, record),
                peers: false,
            },
            Update::Peer {
                set,
                peer,
                rev,
                record,
            } => {
                let table = match set {
                    PeerSet::Allow => &mut self.allow,
                    PeerSet::Revoked => &mut self.revoked,
                };
                Changed {
                    names: false,
                    peers: table.apply(&peer, rev, record),
                }
            }
            Update::Hold {
                name,
                owner,
                rev,
                record,
            } => Changed {
                names: self.holds.apply(&format!("{name}/{owner}"), rev, record),
                peers: false,
            },
        }
    }

    pub(crate) fn contents(&self) -> Contents {
        Contents {
            revision: self.revision,
            names: self.names.to_values(),
            allow: self.allow.to_values(),
            revoked: self.revoked.to_values(),
            holds: self.holds.to_values(),
        }
    }

    /// A cache loaded from the mirror file: it answers until etcd's snapshot replaces it.
    pub(crate) fn from_contents(contents: Contents) -> Self {
        Self {
            names: Table::from_values(contents.names),
            allow: Table::from_values(contents.allow),
            revoked: Table::from_values(contents.revoked),
            holds: Table::from_values(contents.holds),
            revision: 0,
        }
    }
}

#[cfg(test)]
mod tests;
