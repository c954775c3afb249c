//! Several gateways sharing state through etcd (`--cluster`, issue 14). [`connect`] opens
//! the `peercompute-cluster` store at start; [`follow`] then keeps this gateway in step with
//! it: the `cluster_up` gauge and the ClusterLost/ClusterBack events, a name released at
//! another gateway dropped here (its provider told with the operator-release refusal, as for
//! a local release), and a change of the cluster's allow or revoked sets passed to the
//! [`Allowlist`](crate::allow::Allowlist), whose live tunnels then re-check their peer.
//!
//! - `names.rs`: [`Names`], the name table (local file or cluster), and the mapping of the
//!   cluster's answers onto the refusals providers already know.
//! - `tunnels.rs`: which gateway holds a tunnel for which name (`tunnels/` on the lease),
//!   behind the fast 502 "served by another gateway".
//! - `seal.rs`: AES-256-GCM sealing of secrets kept in etcd (the ACME private key).

mod names;
pub(crate) mod seal;
pub(crate) mod tunnels;

use std::sync::Arc;

use peercompute_cluster::ClusterStore;
use peercompute_identity::PeerId;
use tokio::sync::watch;
use tracing::info;

use crate::config::GatewayConfig;
use crate::events::EventKind;
use crate::state::Shared;

pub(crate) use names::{Names, cluster_error, down, refusal};

/// Connects to the cluster store when `--cluster` is given (etcd unreachable is not an
/// error: the store starts down, answers from its mirror file, and keeps trying).
pub(crate) async fn connect(
    config: &GatewayConfig,
    peer: &PeerId,
) -> Result<Option<ClusterStore>, crate::GatewayError> {
    let Some(mut options) = config.cluster_options(&peer.to_string())? else {
        return Ok(None);
    };
    // A bad sealing key is a start error, before anything is ordered or published.
    config.cluster_secret()?;
    options.mirror = Some(config.cluster_mirror());
    let store = ClusterStore::connect(&config.cluster, options).await?;
    info!(
        endpoints = %config.cluster.join(","),
        up = *store.up().borrow(),
        "cluster store (etcd) connected; names and the allow/revoked sets are shared"
    );
    Ok(Some(store))
}

/// Follows `store` until `stop` fires or the store goes away.
pub(crate) async fn follow(
    shared: Arc<Shared>,
    store: ClusterStore,
    mut stop: watch::Receiver<bool>,
) {
    let mut up = store.up();
    let mut names = store.name_changes();
    let mut peers = store.peer_changes();
    let mut was_up = *up.borrow_and_update();
    shared.metrics.cluster_up.set(i64::from(was_up));
    if !was_up {
        lost(&shared, &store);
    }
    // Names released while this gateway was starting.
    drop_released(&shared, &store);
    loop {
        tokio::select! {
            changed = up.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *up.borrow_and_update();
                if now != was_up {
                    was_up = now;
                    shared.metrics.cluster_up.set(i64::from(now));
                    if now {
                        shared.events.publish(EventKind::ClusterBack {
                            endpoints: shared.config.cluster.join(","),
                        });
                    } else {
                        lost(&shared, &store);
                    }
                }
            }
            changed = names.changed() => {
                if changed.is_err() {
                    break;
                }
                names.borrow_and_update();
                drop_released(&shared, &store);
            }
            changed = peers.changed() => {
                if changed.is_err() {
                    break;
                }
                peers.borrow_and_update();
                shared.allow.cluster_changed();
            }
            _ = stop.changed() => break,
        }
    }
}

fn lost(shared: &Shared, store: &ClusterStore) {
    shared.events.publish(EventKind::ClusterLost {
        error: down(store).to_string(),
    });
}

/// Drops every route this gateway serves whose name the cluster says was released from its
/// provider's key (no owner any more, or a hold on that key): a release made at another
/// gateway, seen through the watch.
fn drop_released(shared: &Shared, store: &ClusterStore) {
    for tunnel in shared.tunnels.list() {
        let peer = tunnel.peer.to_string();
        for name in tunnel.routes() {
            let released = match store.owner(&name) {
                None => true,
                Some(owner) if owner != peer => store.hold(&name).as_deref() == Some(&*peer),
                Some(_) => false,
            };
            if released {
                shared.drop_name(&name, &peer);
            }
        }
    }
}
