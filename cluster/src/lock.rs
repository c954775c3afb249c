//! One holder at a time, fenced: [`ClusterStore::lock`] takes an etcd lock (the Lock API)
//! bound to the gateway lease, so it goes with the gateway; [`ClusterStore::holds`] says
//! whether its key still exists, and [`ClusterStore::put_fenced`] writes only while it does
//! (one Txn), so a holder whose lease expired while it was paused cannot overwrite what the
//! next holder wrote. The ACME orderer (`acme/lock`) uses it.

use etcd_client::{Compare, CompareOp, LockOptions, Txn, TxnOp};

use crate::error::ClusterError;
use crate::store::ClusterStore;

/// A held lock: the key etcd made for this holder (fencing token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockKey(Vec<u8>);

impl LockKey {
    /// The lock key as text (for logs).
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl ClusterStore {
    /// Waits until this gateway holds the lock `sub` (e.g. `acme/lock`), bound to its lease.
    /// No timeout: it waits for the current holder; callers select it against their stop.
    /// Errors when etcd is down or the lease is gone meanwhile.
    pub async fn lock(&self, sub: &str) -> Result<LockKey, ClusterError> {
        let shared = &self.shared;
        let Some(lease) = self.lease_id().filter(|_| shared.is_up()) else {
            return Err(shared.down_error());
        };
        let mut client = shared.client.clone();
        let answer = client
            .lock(
                self.key_path(sub),
                Some(LockOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| ClusterError::from_etcd(&shared.endpoints, &e))?;
        Ok(LockKey(answer.key().to_vec()))
    }

    /// Whether `lock` is still held (its key exists).
    pub async fn holds(&self, lock: &LockKey) -> Result<bool, ClusterError> {
        let shared = &self.shared;
        let mut client = shared.client.clone();
        let answer = shared.call("get", client.get(lock.0.clone(), None)).await?;
        Ok(!answer.kvs().is_empty())
    }

    /// Puts `value` at `sub` only while `lock` is held; `Ok(false)`: the lock was lost and
    /// nothing was written.
    pub async fn put_fenced(
        &self,
        lock: &LockKey,
        sub: &str,
        value: Vec<u8>,
    ) -> Result<bool, ClusterError> {
        let shared = &self.shared;
        let txn = Txn::new()
            .when([Compare::version(lock.0.clone(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(self.key_path(sub), value, None)]);
        let mut client = shared.client.clone();
        let answer = shared.call("fenced put", client.txn(txn)).await?;
        Ok(answer.succeeded())
    }
}
