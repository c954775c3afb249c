//! ACME with several gateways (`--cluster` + `--tls acme`): exactly one orderer. A task takes
//! the etcd lock `acme/lock` on the gateway lease and says whether this gateway holds it;
//! only the holder's manager orders and renews. It publishes each certificate to
//! `acme/certs/<name>` with a write fenced on its lock key (an orderer whose lease expired
//! cannot overwrite), the private key sealed ([`crate::cluster::seal`]). Every gateway
//! follows `acme/certs/` and adopts a newer certificate: swapped into its resolver and saved
//! in its own state dir, so a restart while etcd is down still serves it. The ACME account
//! stays per gateway (only the holder uses its own).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use peercompute_cluster::{ClusterStore, Followed, LockKey};
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Mode;
use super::renew::Manager;
use super::schedule::renew_at;
use super::store::Certified;
use crate::cluster::seal;
use crate::state::Shared;
use crate::tls::status::Leaf;

/// The lock's name under the cluster prefix.
const LOCK: &str = "acme/lock";
/// Where certificates are published.
const CERTS: &str = "acme/certs/";
/// How often the holder checks that its lock key still exists.
const HOLD_CHECK: Duration = Duration::from_secs(1);

/// The value of `acme/certs/<name>`.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    chain_pem: String,
    /// base64 of the sealed key PEM (nonce ‖ ciphertext ‖ tag).
    sealed_key: String,
    directory: String,
    /// Seconds since the Unix epoch.
    not_after: u64,
    by: String,
}

/// A published certificate, opened.
struct Opened {
    cert: Certified,
    key_pem: String,
    published: Published,
}

/// This gateway's part in the cluster's ACME.
pub(super) struct ClusterAcme {
    store: ClusterStore,
    secret: [u8; 32],
    by: String,
    /// `Some` while this gateway holds the lock.
    pub(super) lock: watch::Receiver<Option<LockKey>>,
    /// The published certificates (`None` until first read).
    pub(super) published: watch::Receiver<Followed>,
    /// The published map last adopted from.
    seen: Option<Arc<BTreeMap<String, Vec<u8>>>>,
}

impl ClusterAcme {
    /// Starts following `acme/certs/` and the lock task (which ends with `stop`).
    pub(super) fn start(
        store: ClusterStore,
        secret: [u8; 32],
        by: String,
        held: Gauge,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let published = store.follow(CERTS);
        let (tx, lock) = watch::channel(None);
        tokio::spawn(hold_lock(store.clone(), tx, held, stop));
        Self {
            store,
            secret,
            by,
            lock,
            published,
            seen: None,
        }
    }

    /// Waits until the lock or the published set changes (forever once they are gone).
    pub(super) async fn changed(&mut self) {
        tokio::select! {
            r = self.lock.changed() => if r.is_err() { std::future::pending::<()>().await },
            r = self.published.changed() => if r.is_err() { std::future::pending::<()>().await },
        }
    }

    /// Whether this gateway may order now: it holds the lock and has read what is published
    /// (so it never orders what another holder already published).
    pub(super) fn may_order(&self) -> bool {
        self.lock.borrow().is_some() && self.published.borrow().is_some()
    }

    /// Publishes a certificate this gateway ordered; logs (only) when it could not.
    pub(super) async fn publish(&self, name: &str, chain_pem: &str, key_pem: &str, dir: &str) {
        let Some(lock) = self.lock.borrow().clone() else {
            warn!(certificate = %name, "lost the ACME lock while ordering; the certificate is served here but not published");
            return;
        };
        let sub = format!("{CERTS}{name}");
        let sealed = match seal::seal(&self.secret, &self.store.key_path(&sub), key_pem.as_bytes())
        {
            Ok(s) => s,
            Err(e) => {
                warn!(certificate = %name, "certificate not published: {e}");
                return;
            }
        };
        let not_after = Certified::from_pem(chain_pem, key_pem, dir)
            .ok()
            .and_then(|c| c.not_after.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let record = Published {
            chain_pem: chain_pem.to_owned(),
            sealed_key: STANDARD.encode(sealed),
            directory: dir.to_owned(),
            not_after,
            by: self.by.clone(),
        };
        let value = serde_json::to_vec(&record).expect("a record of strings serializes");
        match self.store.put_fenced(&lock, &sub, value).await {
            Ok(true) => info!(certificate = %name, "certificate published to the cluster"),
            Ok(false) => warn!(
                certificate = %name,
                "the ACME lock went while ordering (lease expired?): not published, the next holder decides"
            ),
            Err(e) => warn!(certificate = %name, "certificate not published: {e}"),
        }
    }

    /// The published certificates' names when they changed since the last call.
    fn fresh(&mut self) -> Option<Vec<String>> {
        let now = self.published.borrow_and_update().clone()?;
        if self
            .seen
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, &now))
        {
            return None;
        }
        self.seen = Some(now.clone());
        Some(now.keys().cloned().collect())
    }

    /// The published certificate for `name`, opened; `None` if there is none or it is
    /// unusable (logged).
    fn published(&self, name: &str) -> Option<Opened> {
        let bytes = self.published.borrow().as_ref()?.get(name)?.clone();
        let aad = self.store.key_path(&format!("{CERTS}{name}"));
        let opened = serde_json::from_slice::<Published>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                let sealed = STANDARD.decode(&p.sealed_key).map_err(|e| e.to_string())?;
                let key = seal::open(&self.secret, &aad, &sealed).map_err(|e| e.to_string())?;
                let key = String::from_utf8(key).map_err(|e| e.to_string())?;
                let cert = Certified::from_pem(&p.chain_pem, &key, &p.directory)?;
                Ok(Opened {
                    cert,
                    key_pem: key,
                    published: p,
                })
            });
        match opened {
            Ok(o) => Some(o),
            Err(e) => {
                warn!(certificate = %name, "published certificate unusable: {e}");
                None
            }
        }
    }
}

impl Manager {
    /// Adopts certificates another gateway published that are newer than this one's: swapped
    /// in, saved in the state dir, renewal rescheduled (only the lock holder renews).
    pub(super) fn adopt_published(&mut self, shared: &Shared) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let Some(names) = cluster.fresh() else {
            return;
        };
        for name in names {
            let Some(m) = self.certs.get_mut(&name) else {
                continue;
            };
            let Some(o) = cluster.published(&name) else {
                continue;
            };
            let newer = m
                .current
                .as_ref()
                .is_none_or(|c| o.cert.not_after > c.not_after || !c.covers(&m.names));
            if !newer || !o.cert.covers(&m.names) {
                continue;
            }
            if self.settings.mode == Mode::Wildcard {
                self.store.swap(o.cert.key.clone());
            } else {
                self.store.swap_name(&name, o.cert.key.clone());
            }
            let p = &o.published;
            if let Err(e) = self
                .files
                .save(&name, &p.chain_pem, &o.key_pem, &p.directory)
            {
                warn!(certificate = %name, "published certificate served but not stored: {e}");
            }
            m.due = renew_at(o.cert.not_before, o.cert.not_after);
            m.failures = 0;
            if let Some(leaf) = o.cert.key.cert.first().and_then(Leaf::parse) {
                shared.certs.served(&name, "acme", &leaf, Some(m.due));
            }
            info!(
                certificate = %name,
                by = %p.by,
                not_after = %humantime::format_rfc3339_seconds(o.cert.not_after),
                "serving the certificate another gateway of the cluster published"
            );
            m.current = Some(o.cert);
        }
    }
}

/// The cluster's lock or published certificates changed; pending forever without a cluster.
pub(super) async fn cluster_changed(cluster: &mut Option<ClusterAcme>) {
    match cluster {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// Takes the lock whenever etcd is up, says so through `tx`, and checks every second that
/// its key still exists (a new lease after an outage loses it).
async fn hold_lock(
    store: ClusterStore,
    tx: watch::Sender<Option<LockKey>>,
    held: Gauge,
    mut stop: watch::Receiver<bool>,
) {
    let _clear = ClearOnDrop(held.clone());
    let mut up = store.up();
    loop {
        if *stop.borrow() {
            return;
        }
        if !*up.borrow_and_update() {
            tokio::select! {
                _ = up.changed() => continue,
                _ = stop.changed() => return,
            }
        }
        let started = tokio::time::Instant::now();
        // A wait for the lock never outlives the session it started in.
        let key = tokio::select! {
            r = store.lock(LOCK) => r,
            _ = up.wait_for(|up| !*up) => continue,
            _ = stop.changed() => return,
        };
        let key = match key {
            Ok(key) => key,
            Err(e) => {
                info!("ACME lock not taken, retrying: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(HOLD_CHECK) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        info!(
            lock = %key.display(),
            waited_ms = started.elapsed().as_millis(),
            "this gateway holds the ACME lock: it orders and renews for the cluster"
        );
        tx.send_replace(Some(key.clone()));
        held.set(1);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HOLD_CHECK) => {}
                _ = stop.changed() => return,
            }
            if let Ok(false) = store.holds(&key).await {
                break;
            }
        }
        warn!("this gateway lost the ACME lock (lease expired); another gateway orders now");
        tx.send_replace(None);
        held.set(0);
    }
}

/// Sets the lock gauge to 0 when the lock task ends.
struct ClearOnDrop(Gauge);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.set(0);
    }
}
