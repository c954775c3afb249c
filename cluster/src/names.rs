//! Name ownership across gateways: [`ClusterStore::claim`] and [`ClusterStore::release`].
//!
//! A claim is one etcd transaction: *if `names/<name>` was never created (`create_revision ==
//! 0`), put `{owner, at, by}`, else read it*. etcd runs transactions one at a time, so of two
//! gateways racing for one name exactly one sees the compare succeed; the other reads the
//! winner. A release deletes the key only if its value is still the one it read (compare on
//! `value`), so it never deletes a claim made after the operator looked.
//!
//! While etcd is away a claim is answered from the cache when the cache says the name is the
//! caller's (a provider reconnecting keeps its names); any other claim is
//! [`Claim::Unavailable`]: refusing is the only answer that cannot give one name to two
//! owners.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use crate::cache::{Changed, NameRecord, Update, decode};
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
    /// No decision can be made now (etcd unreachable, or the name cannot be a key): the
    /// caller should refuse with "try later" and the error's text.
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
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            by: shared.options.by.clone(),
        };
        let value = serde_json::to_vec(&record).expect("a record of strings always serialises");
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), value, None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut client = shared.client.clone();
        let answer = match shared.call("claim", client.txn(txn)).await {
            Ok(answer) => answer,
            Err(err) => return from_cache(err),
        };
        let revision = answer.header().map_or(0, |h| h.revision());
        if answer.succeeded() {
            let update = Update::Name {
                name: name.to_owned(),
                rev: revision,
                record: Some(record),
            };
            let changed = shared.cache().apply_answer(update, revision);
            shared.changed(changed).await;
            return Claim::Won;
        }
        let current = match self.read_answer(&key, &answer.op_responses(), revision) {
            Ok(Some((current, changed))) => {
                shared.changed(changed).await;
                current
            }
            // The compare said the key exists and the same transaction found none: not
            // possible in etcd; refuse rather than guess.
            Ok(None) => {
                return Claim::Unavailable(ClusterError::BadValue {
                    key,
                    reason: "exists and is missing in one transaction".into(),
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
        for _ in 0..RELEASE_ATTEMPTS {
            let revision = read.header().map_or(0, |h| h.revision());
            let Some(kv) = read.kvs().first() else {
                return Ok(Release::Absent);
            };
            let record = parse_name(&key, kv.value())?;
            if record.owner != expected_owner {
                return Ok(Release::OwnedBy(record.owner));
            }
            let txn = Txn::new()
                .when([Compare::value(key.as_str(), CompareOp::Equal, kv.value())])
                .and_then([TxnOp::delete(key.as_str(), None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let answer = shared.call("release", client.txn(txn)).await?;
            let deleted_at = answer.header().map_or(revision, |h| h.revision());
            if answer.succeeded() {
                let update = Update::Name {
                    name: name.to_owned(),
                    rev: deleted_at,
                    record: None,
                };
                let changed = shared.cache().apply_answer(update, deleted_at);
                shared.changed(changed).await;
                return Ok(Release::Released);
            }
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

fn parse_name(key: &str, value: &[u8]) -> Result<NameRecord, ClusterError> {
    serde_json::from_slice(value).map_err(|e| ClusterError::BadValue {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
