//! Which gateway holds a tunnel for which name, shared through etcd (plan §5). Each gateway
//! keeps `tunnels/<name>/<gateway id>` = `{provider}` on its lease for every route it
//! serves ([`publish`], a reconcile every [`TICK`]); the records go within the lease TTL of
//! a gateway's death. Every gateway follows `tunnels/`, so a visitor asking for a name that
//! has no tunnel here but one at another gateway gets, at once, a 502 naming that gateway
//! ([`Shared::served_elsewhere`]) instead of waiting or a 404.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use peercompute_cluster::{ClusterStore, Followed};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::debug;

use crate::state::Shared;

/// How often the records are brought in line with the local routes.
const TICK: Duration = Duration::from_millis(500);
const PREFIX: &str = "tunnels/";

/// The value of `tunnels/<name>/<gateway id>`.
#[derive(Debug, Serialize, Deserialize)]
struct TunnelRecord {
    provider: String,
}

/// Follows every gateway's tunnel records.
pub(crate) fn follow(store: &ClusterStore) -> watch::Receiver<Followed> {
    store.follow(PREFIX)
}

/// Keeps this gateway's records equal to its routes until `stop` fires; after the lease
/// changed (etcd was away long enough to lose it) every record is written again.
pub(crate) async fn publish(
    shared: Arc<Shared>,
    store: ClusterStore,
    mut stop: watch::Receiver<bool>,
) {
    let me = shared.peer_id.to_string();
    let mut written = BTreeSet::<String>::new();
    let mut lease = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if store.lease_id() != lease {
            lease = store.lease_id();
            written.clear();
        }
        let want: BTreeSet<String> = shared.registry.names().into_iter().collect();
        for name in want.difference(&written.clone()) {
            let Some(route) = shared.registry.lookup(name) else {
                continue;
            };
            let record = TunnelRecord {
                provider: route.peer.to_string(),
            };
            let value = serde_json::to_vec(&record).expect("a record of strings serializes");
            match store
                .put_on_lease(&format!("{PREFIX}{name}/{me}"), value)
                .await
            {
                Ok(()) => {
                    written.insert(name.clone());
                }
                Err(e) => debug!(route = %name, "tunnel record not written yet: {e}"),
            }
        }
        for name in written.clone().difference(&want) {
            if store.delete(&format!("{PREFIX}{name}/{me}")).await.is_ok() {
                written.remove(name);
            }
        }
    }
}

impl Shared {
    /// The id of another gateway holding a tunnel for `name`, when this one has none and
    /// the name is owned in the cluster.
    pub(crate) fn served_elsewhere(&self, name: &str) -> Option<String> {
        let store = self.names.cluster()?;
        let followed = self.elsewhere.get()?.borrow().clone()?;
        store.owner(name)?;
        let prefix = format!("{name}/");
        let me = self.peer_id.to_string();
        followed
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| &k[prefix.len()..])
            .find(|gateway| *gateway != me)
            .map(str::to_owned)
    }
}
