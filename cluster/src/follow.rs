//! Keys the name cache does not keep, read raw: [`ClusterStore::follow`] keeps a map of one
//! sub-prefix current (its own get + watch, re-read after any error), and
//! [`ClusterStore::put_on_lease`] / [`ClusterStore::delete`] write under the prefix. The ACME
//! certificates (`acme/certs/`) and the per-gateway tunnel records (`tunnels/`) use them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::store::{ClusterStore, Shared};

/// A followed sub-prefix: each key's rest (after the sub-prefix) and its value; `None` until
/// etcd answered once.
pub type Followed = Option<Arc<BTreeMap<String, Vec<u8>>>>;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl ClusterStore {
    /// The full etcd key of `sub` (`/peercompute/v1/<domain>/<sub>`).
    pub fn key_path(&self, sub: &str) -> String {
        format!("{}{sub}", self.shared.keys.root())
    }

    /// Follows every key under `sub` (e.g. `acme/certs/`): a task reads them, then follows a
    /// watch, and reads again after any error. It ends when the last receiver is dropped.
    pub fn follow(&self, sub: &str) -> watch::Receiver<Followed> {
        let (tx, rx) = watch::channel(None);
        let shared = self.shared.clone();
        let prefix = self.key_path(sub);
        tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                tokio::select! {
                    err = follow_once(&shared, &prefix, &tx, &mut backoff) => {
                        tracing::debug!(%prefix, "cluster follow restarts: {err}");
                    }
                    _ = tx.closed() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
        rx
    }

    /// Puts `value` at `sub` on this gateway's lease: it goes when the gateway stops
    /// renewing (within the lease TTL of its death).
    pub async fn put_on_lease(&self, sub: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        let shared = &self.shared;
        let Some(lease) = self.lease_id().filter(|_| shared.is_up()) else {
            return Err(shared.down_error());
        };
        let mut client = shared.client.clone();
        let options = PutOptions::new().with_lease(lease);
        shared
            .call("put", client.put(self.key_path(sub), value, Some(options)))
            .await
            .map(drop)
    }

    /// Deletes the key `sub`.
    pub async fn delete(&self, sub: &str) -> Result<(), ClusterError> {
        let shared = &self.shared;
        let mut client = shared.client.clone();
        shared
            .call("delete", client.delete(self.key_path(sub), None))
            .await
            .map(drop)
    }
}

/// One get + watch of `prefix`; returns why it stopped.
async fn follow_once(
    shared: &Shared,
    prefix: &str,
    tx: &watch::Sender<Followed>,
    backoff: &mut Duration,
) -> ClusterError {
    let mut client = shared.client.clone();
    let answer = match shared
        .call(
            "get",
            client.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await
    {
        Ok(answer) => answer,
        Err(err) => return err,
    };
    let revision = answer.header().map_or(0, |h| h.revision());
    let mut map = BTreeMap::new();
    for kv in answer.kvs() {
        if let Some(rest) = rest(kv.key(), prefix) {
            map.insert(rest, kv.value().to_vec());
        }
    }
    tx.send_replace(Some(Arc::new(map.clone())));
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = match shared
        .call("watch", client.watch(prefix, Some(options)))
        .await
    {
        Ok(stream) => stream,
        Err(err) => return err,
    };
    *backoff = BACKOFF_MIN;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                return ClusterError::Unreachable {
                    endpoints: shared.endpoints.clone(),
                    detail: "the watch stream ended".into(),
                };
            }
            Err(e) => return ClusterError::from_etcd(&shared.endpoints, &e),
        };
        if response.canceled() || response.compact_revision() > 0 {
            return ClusterError::Unreachable {
                endpoints: shared.endpoints.clone(),
                detail: "the watch was cancelled".into(),
            };
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(rest) = rest(kv.key(), prefix) else {
                continue;
            };
            if event.event_type() == EventType::Delete {
                map.remove(&rest);
            } else {
                map.insert(rest, kv.value().to_vec());
            }
        }
        tx.send_replace(Some(Arc::new(map.clone())));
    }
}

fn rest(key: &[u8], prefix: &str) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(prefix).map(str::to_owned)
}
