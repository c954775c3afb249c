//! [`ClusterStore`], the cloneable handle a gateway keeps, and [`Shared`], what the handle
//! and the background driver ([`crate::driver`]) both use: the etcd client, the cache, the
//! `up` flag and the change counters. Reads (`owner`, `owners`, the peer sets) never touch
//! etcd; writes go to etcd and put their answer into the cache at once.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cache::{Cache, Changed, PeerRecord};
use crate::error::ClusterError;
use crate::keys::Keys;
use crate::options::{ClusterOptions, endpoint_url};
use crate::{driver, mirror};

/// The cluster store of one gateway: cheap to clone; the background task (lease, watch)
/// stops when the last clone is dropped, or at [`ClusterStore::shutdown`].
#[derive(Debug, Clone)]
pub struct ClusterStore {
    pub(crate) shared: Arc<Shared>,
    driver: Arc<Driver>,
}

/// Aborts the background task when the last handle goes.
#[derive(Debug)]
struct Driver(Mutex<Option<JoinHandle<()>>>);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(task) = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// What the handle and the driver share.
pub(crate) struct Shared {
    pub(crate) client: etcd_client::Client,
    pub(crate) keys: Keys,
    /// The endpoints as given, for error texts.
    pub(crate) endpoints: String,
    pub(crate) options: ClusterOptions,
    cache: Mutex<Cache>,
    up: watch::Sender<bool>,
    last_error: Mutex<Option<ClusterError>>,
    names_changed: watch::Sender<u64>,
    peers_changed: watch::Sender<u64>,
    /// The gateway lease (0: none granted yet).
    pub(crate) lease: AtomicI64,
    /// Serialises mirror writes, so the last one written is the newest contents.
    mirror_lock: tokio::sync::Mutex<()>,
    mirror_failing: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("endpoints", &self.endpoints)
            .field("keys", &self.keys)
            .field("up", &*self.up.borrow())
            .finish_non_exhaustive()
    }
}

impl ClusterStore {
    /// Connects to etcd at `endpoints` (`etcd://H:P`, `etcds://H:P`, or `http(s)://H:P`),
    /// loads the mirror file if there is one, and starts the background task that grants and
    /// renews the gateway lease, reads the snapshot and follows the watch.
    ///
    /// It waits for the first attempt only. etcd unreachable is not an error here: the store
    /// starts down (see [`ClusterStore::up`]), answers from the mirror, and keeps trying.
    /// Errors are what no retry fixes: a bad endpoint or key, a corrupt mirror file, etcd
    /// refusing the credentials, or a schema newer than this gateway.
    pub async fn connect(
        endpoints: &[String],
        options: ClusterOptions,
    ) -> Result<ClusterStore, ClusterError> {
        let keys = Keys::new(&options.domain)?;
        if endpoints.is_empty() {
            return Err(ClusterError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        let urls = endpoints
            .iter()
            .map(|e| endpoint_url(e, options.tls.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        let joined = endpoints.join(",");
        let cache = match &options.mirror {
            Some(path) => mirror::load(path)?.map(Cache::from_contents),
            None => None,
        }
        .unwrap_or_default();
        let client = tokio::time::timeout(
            options.connect_timeout + options.request_timeout,
            etcd_client::Client::connect(&urls, Some(options.connect_options())),
        )
        .await
        .map_err(|_| ClusterError::timed_out(&joined, "connect", options.connect_timeout))?
        .map_err(|e| ClusterError::from_etcd(&joined, &e))?;
        let shared = Arc::new(Shared {
            client,
            keys,
            endpoints: joined,
            options,
            cache: Mutex::new(cache),
            up: watch::Sender::new(false),
            last_error: Mutex::new(None),
            names_changed: watch::Sender::new(0),
            peers_changed: watch::Sender::new(0),
            lease: AtomicI64::new(0),
            mirror_lock: tokio::sync::Mutex::new(()),
            mirror_failing: AtomicBool::new(false),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(driver::run(shared.clone(), first_tx));
        let store = ClusterStore {
            shared,
            driver: Arc::new(Driver(Mutex::new(Some(task)))),
        };
        match first_rx.await {
            Ok(Err(err)) if !err.is_transient() => Err(err),
            Ok(Err(err)) => {
                tracing::warn!("{err}; serving names from the local cache meanwhile");
                Ok(store)
            }
            Ok(Ok(())) => Ok(store),
            Err(_) => Err(ClusterError::Closed),
        }
    }

    /// Whether etcd answers: `true` while the lease is renewed and the watch runs. Claims of
    /// new names need it; reads from the cache do not.
    pub fn up(&self) -> watch::Receiver<bool> {
        self.shared.up.subscribe()
    }

    /// Why the store is down, when it is (the last error of the background task).
    pub fn last_error(&self) -> Option<ClusterError> {
        if *self.shared.up.borrow() {
            return None;
        }
        lock(&self.shared.last_error).clone()
    }

    /// The gateway lease's id, once granted (what per-gateway keys will be written on).
    pub fn lease_id(&self) -> Option<i64> {
        Some(self.shared.lease.load(Ordering::Relaxed)).filter(|id| *id != 0)
    }

    /// The owner of `name`, from the cache.
    pub fn owner(&self, name: &str) -> Option<String> {
        self.shared.cache().names.get(name).map(|r| r.owner.clone())
    }

    /// Every owned name and its owner, sorted by name, from the cache.
    pub fn owners(&self) -> Vec<(String, String)> {
        let cache = self.shared.cache();
        cache
            .names
            .iter()
            .map(|(name, r)| (name.clone(), r.owner.clone()))
            .collect()
    }

    /// Bumped whenever the cache's names changed (a claim or release at any gateway).
    pub fn name_changes(&self) -> watch::Receiver<u64> {
        self.shared.names_changed.subscribe()
    }

    /// Bumped whenever the allow or revoked set changed: holders re-check their peers with
    /// [`ClusterStore::revoked`] (closing a revoked provider's tunnels on every gateway).
    pub fn peer_changes(&self) -> watch::Receiver<u64> {
        self.shared.peers_changed.subscribe()
    }

    /// Whether `peer` is in the cluster's allow set.
    pub fn is_allowed(&self, peer: &str) -> bool {
        self.shared.cache().allow.get(peer).is_some()
    }

    /// Why `peer` was revoked, when it is in the cluster's revoked set.
    pub fn revoked(&self, peer: &str) -> Option<PeerRecord> {
        self.shared.cache().revoked.get(peer).cloned()
    }

    /// The allow set, sorted by peer id.
    pub fn allowed_peers(&self) -> Vec<(String, PeerRecord)> {
        let cache = self.shared.cache();
        cache
            .allow
            .iter()
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect()
    }

    /// The revoked set, sorted by peer id.
    pub fn revoked_peers(&self) -> Vec<(String, PeerRecord)> {
        let cache = self.shared.cache();
        cache
            .revoked
            .iter()
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect()
    }

    /// Stops the background task, writes the mirror a last time, and revokes the gateway
    /// lease (bounded by the request timeout) so what was written on it goes at once.
    pub async fn shutdown(self) {
        let task = lock(&self.driver.0).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.shared.up.send_replace(false);
        self.shared.save_mirror().await;
        if let Some(id) = self.lease_id() {
            let mut client = self.shared.client.clone();
            let _ = self
                .shared
                .call("lease revoke", client.lease_revoke(id))
                .await;
        }
    }
}

impl Shared {
    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Runs one etcd call, bounded by the request timeout (etcd-client's own timeout does not
    /// cover waiting for a connection), and classifies its error.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        let timeout: Duration = self.options.request_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(ClusterError::from_etcd(&self.endpoints, &e)),
            Err(_) => Err(ClusterError::timed_out(&self.endpoints, what, timeout)),
        }
    }

    /// The error to give a caller while the store is down.
    pub(crate) fn down_error(&self) -> ClusterError {
        lock(&self.last_error)
            .clone()
            .unwrap_or_else(|| ClusterError::Unreachable {
                endpoints: self.endpoints.clone(),
                detail: "not connected yet".into(),
            })
    }

    pub(crate) fn set_up(&self) {
        if !self.up.send_replace(true) {
            tracing::info!(endpoints = %self.endpoints, "cluster store (etcd) reachable again");
        }
    }

    pub(crate) fn set_down(&self, err: ClusterError) {
        // The error first: whoever sees `up` turn false finds why.
        *lock(&self.last_error) = Some(err.clone());
        if self.up.send_replace(false) {
            tracing::warn!("{err}");
        }
    }

    /// Tells the listeners what changed and writes the mirror.
    pub(crate) async fn changed(&self, changed: Changed) {
        if changed.names {
            self.names_changed.send_modify(|n| *n += 1);
        }
        if changed.peers {
            self.peers_changed.send_modify(|n| *n += 1);
        }
        if changed.names || changed.peers {
            self.save_mirror().await;
        }
    }

    /// Writes the cache to the mirror file, if there is one; a failure is logged once until
    /// a write succeeds again (the cache in memory still answers).
    pub(crate) async fn save_mirror(&self) {
        let Some(path) = self.options.mirror.clone() else {
            return;
        };
        let _serial = self.mirror_lock.lock().await;
        let contents = self.cache().contents();
        let result = tokio::task::spawn_blocking(move || mirror::save(&path, &contents)).await;
        match result {
            Ok(Ok(())) => {
                if self.mirror_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("cluster cache file written again");
                }
            }
            Ok(Err(err)) => {
                if !self.mirror_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!("{err}");
                }
            }
            Err(join) => tracing::warn!("cluster cache file writer failed: {join}"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
