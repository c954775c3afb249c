//! Name ownership across gateways: [`ClusterStore::claim`] and [`ClusterStore::release`].
//!
//! A claim is one etcd transaction: *if `names/<name>` was never created (`create_revision ==
//! 0`), put `{owner, at, by}`, else read it*. etcd runs transactions one at a time, so of two
//! gateways racing for one name exactly one sees the compare succeed; the other reads the
//! winner. A release deletes the key only if its value is still the one it read (compare on
//! `value`), so it never deletes a claim made after the operator looked.
//!
//! A release also writes the *hold* `released/<name>/<previous owner>` on a lease of
//! [`ClusterOptions::release_hold`](crate::ClusterOptions::release_hold) (24 h): the previous
//! owner's provider, reconnecting or restarting, may not take the name back on its own
//! ([`Claim::Held`]), at any gateway. The claim transaction checks the hold in the same
//! compare, and the next owner's claim removes it; the operator can lift it
//! ([`ClusterStore::lift_hold`]).
//!
//! While etcd is away a claim is answered from the cache when the cache says the name is the
//! caller's (a provider reconnecting keeps its names); any other claim is
//! [`Claim::Unavailable`]: refusing is the only answer that cannot give one name to two
//! owners.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::cache::{Changed, HoldRecord, NameRecord, Update, decode};
use crate::error::ClusterError;
use crate::store::ClusterStore;

/// The answer to [`ClusterStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name was free and is now the caller's.
    Won,
    /// The name already was the caller's.
    Already,
    /// The name belongs to this other owner.
    Owned(String),
    /// The operator released the name from this very owner, within the hold: refused until
    /// the hold ends or is lifted (another owner may take the name meanwhile).
    Held,
    /// No decision can be made now (etcd unreachable, or the name cannot be a key): the
    /// caller should refuse with "try later" and the error's text. After a timeout the claim
    /// may still have reached etcd and run later; the owner's retry then gets `Already`.
    Unavailable(ClusterError),
}

/// The answer to [`ClusterStore::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The name was the expected owner's and is free now.
    Released,
    /// Nobody owned the name.
    Absent,
    /// The name belongs to someone other than the expected owner; nothing was changed.
    OwnedBy(String),
}

/// How often a release retries when the value changed between its read and its delete.
const RELEASE_ATTEMPTS: usize = 3;

impl ClusterStore {
    /// Claims `name` for `owner` (a peer id) in one etcd transaction.
    pub async fn claim(&self, name: &str, owner: &str) -> Claim {
        let shared = &self.shared;
        let key = match shared.keys.name(name) {
            Ok(key) => key,
            Err(err) => return Claim::Unavailable(err),
        };
        let from_cache = |err: ClusterError| {
            if self.owner(name).as_deref() == Some(owner) {
                Claim::Already
            } else {
                Claim::Unavailable(err)
            }
        };
        if !shared.is_up() {
            return from_cache(shared.down_error());
        }
        let record = NameRecord {
            owner: owner.to_owned(),
            at: unix_now(),
            by: shared.options.by.clone(),
        };
        let value = serde_json::to_vec(&record).expect("a record of strings always serialises");
        let (hold, holds) = match (
            shared.keys.released(name, owner),
            shared.keys.released_prefix(name),
        ) {
            (Ok(hold), Ok(holds)) => (hold, format!("{holds}/")),
            (Err(err), _) | (_, Err(err)) => return Claim::Unavailable(err),
        };
        // Free, and not held from this owner → take it and end any hold on the name; else
        // read both to tell owned from held.
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(hold.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(key.as_str(), value, None),
                TxnOp::delete(
                    holds,
                    Some(DeleteOptions::new().with_prefix().with_prev_key()),
                ),
            ])
            .or_else([
                TxnOp::get(key.as_str(), None),
                TxnOp::get(hold.as_str(), None),
            ]);
        let mut client = shared.client.clone();
        let answer = match shared.call("claim", client.txn(txn)).await {
            Ok(answer) => answer,
            Err(err) => return from_cache(err),
        };
        let revision = answer.header().map_or(0, |h| h.revision());
        let ops = answer.op_responses();
        if answer.succeeded() {
            let mut updates = vec![Update::Name {
                name: name.to_owned(),
                rev: revision,
                record: Some(record),
            }];
            if let Some(TxnOpResponse::Delete(deleted)) = ops.get(1) {
                updates.extend(self.deleted_updates(deleted.prev_kvs(), revision));
            }
            self.apply_answers(updates, revision).await;
            return Claim::Won;
        }
        let current = match self.read_answer(&key, &ops, revision) {
            Ok(Some((current, changed))) => {
                shared.changed(changed).await;
                current
            }
            // Free, so the other compare failed: the name is held from this owner.
            Ok(None) if held(&ops) => return Claim::Held,
            // Both compares held and the transaction still failed: not possible in etcd;
            // refuse rather than guess.
            Ok(None) => {
                return Claim::Unavailable(ClusterError::BadValue {
                    key,
                    reason: "a failed claim read neither an owner nor a hold".into(),
                });
            }
            Err(err) => return Claim::Unavailable(err),
        };
        if current.owner == owner {
            Claim::Already
        } else {
            Claim::Owned(current.owner)
        }
    }

    /// Releases `name` if `expected_owner` owns it (the operator's release): compares the
    /// value read with the value deleted, so a claim that happened in between is kept.
    pub async fn release(&self, name: &str, expected_owner: &str) -> Result<Release, ClusterError> {
        let shared = &self.shared;
        let key = shared.keys.name(name)?;
        if !shared.is_up() {
            return Err(shared.down_error());
        }
        let mut client = shared.client.clone();
        let mut read = shared
            .call("release", client.get(key.as_str(), None))
            .await?;
        let hold_secs =
            i64::try_from(shared.options.release_hold.as_secs().max(1)).unwrap_or(86_400);
        for _ in 0..RELEASE_ATTEMPTS {
            let revision = read.header().map_or(0, |h| h.revision());
            let Some(kv) = read.kvs().first() else {
                return Ok(Release::Absent);
            };
            let record = parse_name(&key, kv.value())?;
            if record.owner != expected_owner {
                return Ok(Release::OwnedBy(record.owner));
            }
            let hold_key = shared.keys.released(name, &record.owner)?;
            let hold = HoldRecord {
                at: unix_now(),
                by: shared.options.by.clone(),
            };
            let hold_value =
                serde_json::to_vec(&hold).expect("a record of strings always serialises");
            let lease = shared
                .call("release hold lease", client.lease_grant(hold_secs, None))
                .await?
                .id();
            let txn = Txn::new()
                .when([Compare::value(key.as_str(), CompareOp::Equal, kv.value())])
                .and_then([
                    TxnOp::delete(key.as_str(), None),
                    TxnOp::put(
                        hold_key,
                        hold_value,
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                ])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let answer = shared.call("release", client.txn(txn)).await?;
            let deleted_at = answer.header().map_or(revision, |h| h.revision());
            if answer.succeeded() {
                let updates = vec![
                    Update::Name {
                        name: name.to_owned(),
                        rev: deleted_at,
                        record: None,
                    },
                    Update::Hold {
                        name: name.to_owned(),
                        owner: record.owner,
                        rev: deleted_at,
                        record: Some(hold),
                    },
                ];
                self.apply_answers(updates, deleted_at).await;
                return Ok(Release::Released);
            }
            // Someone else's write came in between; this hold lease is not needed.
            let _ = shared
                .call("lease revoke", client.lease_revoke(lease))
                .await;
            match answer.op_responses().into_iter().next() {
                Some(TxnOpResponse::Get(get)) => read = get,
                _ => return Ok(Release::Absent),
            }
        }
        Err(ClusterError::Unreachable {
            endpoints: shared.endpoints.clone(),
            detail: format!("{key} changed {RELEASE_ATTEMPTS} times while releasing it"),
        })
    }

    /// Lifts the hold on `name` (a release by mistake): its previous owner may claim it
    /// again. Returns that previous owner; `None` when nothing was held.
    pub async fn lift_hold(&self, name: &str) -> Result<Option<String>, ClusterError> {
        let shared = &self.shared;
        let holds = format!("{}/", shared.keys.released_prefix(name)?);
        if !shared.is_up() {
            return Err(shared.down_error());
        }
        let mut client = shared.client.clone();
        let options = DeleteOptions::new().with_prefix().with_prev_key();
        let answer = shared
            .call("lift hold", client.delete(holds, Some(options)))
            .await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        let updates = self.deleted_updates(answer.prev_kvs(), revision);
        let previous = updates.iter().find_map(|update| match update {
            Update::Hold { owner, .. } => Some(owner.clone()),
            _ => None,
        });
        self.apply_answers(updates, revision).await;
        Ok(previous)
    }

    /// The previous owner `name` is held from after a release, from the cache.
    pub fn hold(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}/");
        let cache = self.shared.cache();
        let (key, _) = cache.holds.first_with_prefix(&prefix)?;
        key.strip_prefix(&prefix).map(str::to_owned)
    }

    /// Deletes read back from etcd (`prev_kv`), as cache updates at `revision`.
    fn deleted_updates(&self, deleted: &[KeyValue], revision: i64) -> Vec<Update> {
        deleted
            .iter()
            .filter_map(|kv| decode(&self.shared.keys, kv.key(), b"", revision, true).ok())
            .flatten()
            .collect()
    }

    pub(crate) async fn apply_answers(&self, updates: Vec<Update>, revision: i64) {
        let mut changed = Changed::default();
        {
            let mut cache = self.shared.cache();
            for update in updates {
                changed |= cache.apply_answer(update, revision);
            }
        }
        self.shared.changed(changed).await;
    }

    /// The record the `or_else` get of a claim read, put into the cache.
    fn read_answer(
        &self,
        key: &str,
        ops: &[TxnOpResponse],
        revision: i64,
    ) -> Result<Option<(NameRecord, Changed)>, ClusterError> {
        let Some(TxnOpResponse::Get(get)) = ops.first() else {
            return Ok(None);
        };
        let Some(kv) = get.kvs().first() else {
            return Ok(None);
        };
        let record = parse_name(key, kv.value())?;
        let update = decode(
            &self.shared.keys,
            kv.key(),
            kv.value(),
            kv.mod_revision(),
            false,
        )
        .ok()
        .flatten();
        let changed = match update {
            Some(update) => self.shared.cache().apply_answer(update, revision),
            None => Changed::default(),
        };
        Ok(Some((record, changed)))
    }
}

/// Whether a failed claim's second read (the hold on the claimer) found one.
fn held(ops: &[TxnOpResponse]) -> bool {
    matches!(ops.get(1), Some(TxnOpResponse::Get(get)) if !get.kvs().is_empty())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_name(key: &str, value: &[u8]) -> Result<NameRecord, ClusterError> {
    serde_json::from_slice(value).map_err(|e| ClusterError::BadValue {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
