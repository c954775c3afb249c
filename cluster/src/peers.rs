//! The cluster's allow and revoked sets: `allow/<peer>` and `revoked/<peer>`, each holding a
//! [`PeerRecord`] `{reason, by}`. Writes go to etcd and into the cache at once; every
//! gateway's watch brings them to its cache and bumps
//! [`ClusterStore::peer_changes`], which is what lets a gateway close a revoked provider's
//! tunnels wherever they are. A revocation wins over any allow (the gateway's rule: revoked
//! beats flags, file and the allow set).

use crate::cache::{PeerRecord, PeerSet, Update};
use crate::error::ClusterError;
use crate::store::ClusterStore;

impl ClusterStore {
    /// Adds `peer` to the cluster's allow set.
    pub async fn allow(&self, peer: &str, reason: &str) -> Result<(), ClusterError> {
        let key = self.shared.keys.allow(peer)?;
        self.put_peer(PeerSet::Allow, peer, key, reason).await
    }

    /// Removes `peer` from the allow set; whether it was there.
    pub async fn disallow(&self, peer: &str) -> Result<bool, ClusterError> {
        let key = self.shared.keys.allow(peer)?;
        self.delete_peer(PeerSet::Allow, peer, key).await
    }

    /// Revokes `peer` on every gateway of the cluster.
    pub async fn revoke(&self, peer: &str, reason: &str) -> Result<(), ClusterError> {
        let key = self.shared.keys.revoked(peer)?;
        self.put_peer(PeerSet::Revoked, peer, key, reason).await
    }

    /// Lifts a revocation; whether there was one.
    pub async fn unrevoke(&self, peer: &str) -> Result<bool, ClusterError> {
        let key = self.shared.keys.revoked(peer)?;
        self.delete_peer(PeerSet::Revoked, peer, key).await
    }

    async fn put_peer(
        &self,
        set: PeerSet,
        peer: &str,
        key: String,
        reason: &str,
    ) -> Result<(), ClusterError> {
        let shared = &self.shared;
        if !shared.is_up() {
            return Err(shared.down_error());
        }
        let record = PeerRecord {
            reason: reason.to_owned(),
            by: shared.options.by.clone(),
        };
        let value = serde_json::to_vec(&record).expect("a record of strings always serialises");
        let mut client = shared.client.clone();
        let answer = shared.call("put", client.put(key, value, None)).await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        let update = Update::Peer {
            set,
            peer: peer.to_owned(),
            rev: revision,
            record: Some(record),
        };
        let changed = shared.cache().apply_answer(update, revision);
        shared.changed(changed).await;
        Ok(())
    }

    async fn delete_peer(
        &self,
        set: PeerSet,
        peer: &str,
        key: String,
    ) -> Result<bool, ClusterError> {
        let shared = &self.shared;
        if !shared.is_up() {
            return Err(shared.down_error());
        }
        let mut client = shared.client.clone();
        let answer = shared.call("delete", client.delete(key, None)).await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        if answer.deleted() == 0 {
            return Ok(false);
        }
        let update = Update::Peer {
            set,
            peer: peer.to_owned(),
            rev: revision,
            record: None,
        };
        let changed = shared.cache().apply_answer(update, revision);
        shared.changed(changed).await;
        Ok(true)
    }
}
