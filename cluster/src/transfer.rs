//! [`ClusterStore::transfer`]: a key rotation moves every name the old key owns to the new
//! key, as the gateway's local names store does for a fleet robot that rotated its key.
//! Each batch is one transaction that compares every value read (so a release or claim in
//! between makes it read again) and writes the new owner; the claim time is kept.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::cache::{NameRecord, Update, decode};
use crate::error::ClusterError;
use crate::store::ClusterStore;

/// Names moved per transaction: two operations each, under etcd's default `--max-txn-ops`
/// of 128. A key owning more names moves in several transactions.
const BATCH: usize = 60;

/// How often a batch is read again when a value changed under it.
const ATTEMPTS: usize = 3;

impl ClusterStore {
    /// Moves every name `old` owns to `new`; returns the names moved, sorted (none when `old`
    /// owns none, or `old == new`).
    pub async fn transfer(&self, old: &str, new: &str) -> Result<Vec<String>, ClusterError> {
        let shared = &self.shared;
        if old == new {
            return Ok(Vec::new());
        }
        if !shared.is_up() {
            return Err(shared.down_error());
        }
        let mut moved = Vec::new();
        for _ in 0..ATTEMPTS {
            let owned = self.read_owned(old).await?;
            if owned.is_empty() {
                moved.sort();
                return Ok(moved);
            }
            for batch in owned.chunks(BATCH) {
                if self.move_batch(batch, new).await? {
                    moved.extend(batch.iter().map(|(name, _, _)| name.clone()));
                }
            }
        }
        Err(ClusterError::Unreachable {
            endpoints: shared.endpoints.clone(),
            detail: format!("the names of {old} kept changing while moving them to {new}"),
        })
    }

    /// (name, value bytes, record) of every name `owner` holds in etcd.
    async fn read_owned(
        &self,
        owner: &str,
    ) -> Result<Vec<(String, Vec<u8>, NameRecord)>, ClusterError> {
        let shared = &self.shared;
        let mut client = shared.client.clone();
        let options = GetOptions::new().with_prefix();
        let answer = shared
            .call(
                "transfer",
                client.get(shared.keys.names_prefix(), Some(options)),
            )
            .await?;
        let mut owned = Vec::new();
        for kv in answer.kvs() {
            if let Ok(Some(Update::Name {
                name,
                record: Some(record),
                ..
            })) = decode(&shared.keys, kv.key(), kv.value(), kv.mod_revision(), false)
                && record.owner == owner
            {
                owned.push((name, kv.value().to_vec(), record));
            }
        }
        Ok(owned)
    }

    /// Moves one batch if none of its values changed since read; whether it did.
    async fn move_batch(
        &self,
        batch: &[(String, Vec<u8>, NameRecord)],
        new: &str,
    ) -> Result<bool, ClusterError> {
        let shared = &self.shared;
        let mut compares = Vec::with_capacity(batch.len());
        let mut puts = Vec::with_capacity(batch.len());
        let mut updates = Vec::with_capacity(batch.len());
        for (name, value, record) in batch {
            let key = shared.keys.name(name)?;
            let record = NameRecord {
                owner: new.to_owned(),
                at: record.at,
                by: shared.options.by.clone(),
            };
            let bytes = serde_json::to_vec(&record).expect("a record of strings always serialises");
            compares.push(Compare::value(
                key.as_str(),
                CompareOp::Equal,
                value.clone(),
            ));
            puts.push(TxnOp::put(key, bytes, None));
            updates.push((name.clone(), record));
        }
        let mut client = shared.client.clone();
        let txn = Txn::new().when(compares).and_then(puts);
        let answer = shared.call("transfer", client.txn(txn)).await?;
        if !answer.succeeded() {
            return Ok(false);
        }
        let revision = answer.header().map_or(0, |h| h.revision());
        let updates = updates
            .into_iter()
            .map(|(name, record)| Update::Name {
                name,
                rev: revision,
                record: Some(record),
            })
            .collect();
        self.apply_answers(updates, revision).await;
        Ok(true)
    }
}
