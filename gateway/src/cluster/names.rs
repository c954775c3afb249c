//! [`Names`]: who owns which route name, from `names.json` alone (one gateway) or from the
//! cluster store (several gateways behind `--cluster`). Claims, releases and transfers are
//! async because a clustered gateway decides them in etcd; [`Names::owner`] and
//! [`Names::owners`] read the local table or the cluster's cache and never wait.
//!
//! The cluster's answers map onto the errors the single gateway already gives
//! ([`claim_result`], table-tested): another key's name is `Owned`, a released name's
//! previous key is `Held`, and etcd out of reach is `Unavailable` (the tunnel answers
//! `TryLater`, the admin API 503) with the crate's sentence saying what still works.

use peercompute_cluster::{Claim, ClusterError, ClusterStore, Release};
use peercompute_identity::PeerId;
use peercompute_tunnel_proto::RefuseCode;

use crate::names::{NameStore, NameStoreError};
use crate::tunnel::OPERATOR_RELEASE;

/// Releases retried when a claim comes in between reading the owner and releasing.
const RELEASE_ATTEMPTS: usize = 3;

/// The name → owner table of this gateway.
#[derive(Debug)]
pub(crate) enum Names {
    /// `<state>/names.json`: this gateway alone.
    Local(NameStore),
    /// etcd, shared by the gateways of one domain; `max_owned` caps the names of one key.
    Cluster {
        store: ClusterStore,
        max_owned: usize,
    },
}

impl Names {
    /// The cluster store, when clustered.
    pub(crate) fn cluster(&self) -> Option<&ClusterStore> {
        match self {
            Self::Local(_) => None,
            Self::Cluster { store, .. } => Some(store),
        }
    }

    /// Claims `name` for `peer`: Ok if it was free (now recorded) or already `peer`'s.
    pub(crate) async fn claim(&self, name: &str, peer: &PeerId) -> Result<(), NameStoreError> {
        self.claim_for(name, &peer.to_string()).await
    }

    /// Claims `name` for `owner`, a peer id or a fleet id (a fleet's group names; the cluster
    /// store keeps owners as text, so they work there alike).
    pub(crate) async fn claim_for(&self, name: &str, owner: &str) -> Result<(), NameStoreError> {
        let (store, max_owned) = match self {
            Self::Local(local) => return local.claim_for(name, owner),
            Self::Cluster { store, max_owned } => (store, *max_owned),
        };
        let peer = owner.to_owned();
        if store.owner(name).as_deref() != Some(peer.as_str()) {
            // From the cache: two gateways may each let one claim past the cap at once.
            let owned = store.owners().iter().filter(|(_, o)| *o == peer).count();
            if owned >= max_owned {
                return Err(NameStoreError::TooManyOwned { owned });
            }
        }
        claim_result(store.claim(name, &peer).await)
    }

    /// Releases `name`: its previous owner, or `None` when nobody owned it. Clustered, the
    /// release (and the hold on the previous owner) is written to etcd, so every gateway
    /// drops the route; while etcd is away it fails with `Unavailable`.
    pub(crate) async fn release(&self, name: &str) -> Result<Option<String>, NameStoreError> {
        let store = match self {
            Self::Local(local) => return local.release(name),
            Self::Cluster { store, .. } => store,
        };
        if !*store.up().borrow() {
            return Err(cluster_error(down(store)));
        }
        let Some(mut owner) = store.owner(name) else {
            return Ok(None);
        };
        for _ in 0..RELEASE_ATTEMPTS {
            match store.release(name, &owner).await.map_err(cluster_error)? {
                Release::Released => return Ok(Some(owner)),
                Release::Absent => return Ok(None),
                // A claim came in between: the operator releases the name whoever owns it.
                Release::OwnedBy(other) => owner = other,
            }
        }
        Err(NameStoreError::Unavailable(format!(
            "{name} changed owner {RELEASE_ATTEMPTS} times while releasing it; try again"
        )))
    }

    /// Moves every name `old` owns to `new` (a key rotation); the names moved, sorted.
    pub(crate) async fn transfer(
        &self,
        old: &PeerId,
        new: &PeerId,
    ) -> Result<Vec<String>, NameStoreError> {
        match self {
            Self::Local(local) => local.transfer(old, new),
            Self::Cluster { store, .. } => store
                .transfer(&old.to_string(), &new.to_string())
                .await
                .map_err(cluster_error),
        }
    }

    /// The owner of `name`, if any.
    pub(crate) fn owner(&self, name: &str) -> Option<String> {
        match self {
            Self::Local(local) => local.owner(name),
            Self::Cluster { store, .. } => store.owner(name),
        }
    }

    /// Every owned name and its owner's peer id, sorted by name.
    pub(crate) fn owners(&self) -> Vec<(String, String)> {
        match self {
            Self::Local(local) => local.owners(),
            Self::Cluster { store, .. } => store.owners(),
        }
    }
}

/// Why the store is down, as an error to hand on.
pub(crate) fn down(store: &ClusterStore) -> ClusterError {
    store
        .last_error()
        .unwrap_or_else(|| ClusterError::Unreachable {
            endpoints: "the cluster store".into(),
            detail: "not connected yet".into(),
        })
}

/// What a provider is told when its `Register` fails with `err`: the refusal code, its
/// text, and the `reason` label of `cluster_refusals_total` when the cluster refused it.
pub(crate) fn refusal(err: NameStoreError) -> (RefuseCode, String, Option<&'static str>) {
    match err {
        NameStoreError::Owned { .. } => (
            RefuseCode::NameOwned,
            "name owned by another provider".into(),
            Some("owned"),
        ),
        e @ NameStoreError::Held => (OPERATOR_RELEASE, e.to_string(), Some("held")),
        // Disk full or read-only state dir: the provider keeps the name and tries again.
        NameStoreError::Write { source, .. } => (
            RefuseCode::TryLater,
            format!("gateway cannot record the name right now: {source}; retrying"),
            None,
        ),
        // etcd away: the provider keeps the name and tries again (1 s doubling to 30 s).
        NameStoreError::Unavailable(text) => (RefuseCode::TryLater, text, Some("unavailable")),
        e @ NameStoreError::TooManyOwned { .. } => (RefuseCode::TooManyNames, e.to_string(), None),
        e @ NameStoreError::Cluster(_) => (
            RefuseCode::Other(0),
            format!("gateway cannot record the name: {e}"),
            Some("error"),
        ),
        other => (
            RefuseCode::Other(0),
            format!("gateway cannot record the name: {other}"),
            None,
        ),
    }
}

/// The gateway's answer to a cluster claim.
fn claim_result(claim: Claim) -> Result<(), NameStoreError> {
    match claim {
        Claim::Won | Claim::Already => Ok(()),
        Claim::Owned(owner) => Err(NameStoreError::Owned { owner }),
        Claim::Held => Err(NameStoreError::Held),
        Claim::Unavailable(err) => Err(cluster_error(err)),
    }
}

/// A cluster error as the names' error: transient ones (etcd away) are `Unavailable`.
pub(crate) fn cluster_error(err: ClusterError) -> NameStoreError {
    if err.is_transient() {
        NameStoreError::Unavailable(err.to_string())
    } else {
        NameStoreError::Cluster(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_map_onto_the_single_gateway_answers() {
        let unreachable = ClusterError::Unreachable {
            endpoints: "etcd://127.0.0.1:2379".into(),
            detail: "connection refused".into(),
        };
        let bad_key = ClusterError::InvalidKey {
            what: "name",
            value: "a/b".into(),
            reason: "contains /",
        };
        let table: Vec<(Claim, Result<(), &str>)> = vec![
            (Claim::Won, Ok(())),
            (Claim::Already, Ok(())),
            (
                Claim::Owned("12D3KooWother".into()),
                Err("owned by another provider"),
            ),
            (Claim::Held, Err("may not take it back")),
            (
                Claim::Unavailable(unreachable),
                Err(
                    "new names are refused until it is back; names already registered keep working",
                ),
            ),
            (Claim::Unavailable(bad_key), Err("cluster store: name")),
        ];
        for (claim, want) in table {
            let shown = format!("{claim:?}");
            match (claim_result(claim), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{shown}: {e}"),
                (got, want) => panic!("{shown}: got {got:?}, want {want:?}"),
            }
        }
        assert!(matches!(
            claim_result(Claim::Owned("x".into())),
            Err(NameStoreError::Owned { owner }) if owner == "x"
        ));
        let codes = [
            (
                NameStoreError::Owned { owner: "o".into() },
                RefuseCode::NameOwned,
                Some("owned"),
            ),
            (NameStoreError::Held, OPERATOR_RELEASE, Some("held")),
            (
                NameStoreError::Unavailable("etcd unreachable".into()),
                RefuseCode::TryLater,
                Some("unavailable"),
            ),
            (
                NameStoreError::TooManyOwned { owned: 3 },
                RefuseCode::TooManyNames,
                None,
            ),
            (
                NameStoreError::Cluster("bad".into()),
                RefuseCode::Other(0),
                Some("error"),
            ),
        ];
        for (err, code, label) in codes {
            let shown = err.to_string();
            let (got, text, got_label) = refusal(err);
            assert_eq!((got, got_label), (code, label), "{shown}");
            assert!(
                text.contains(&shown) || code == RefuseCode::NameOwned,
                "{text}"
            );
        }
        assert!(matches!(
            cluster_error(ClusterError::Closed),
            NameStoreError::Cluster(_)
        ));
    }
}
