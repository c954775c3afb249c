//! The certificate manager task: orders what is missing, renews what is due, retries with
//! backoff, swaps new certificates into the [`CertStore`], keeps `/metrics` and the operator's
//! certificate view current and publishes certificate issued / renewed / failed events.
//!
//! One task, one order at a time. Failures never end the task: they are logged, counted and
//! retried, and the certificate in service stays until a valid successor is installed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::Account;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::account::{AcmeHttp, load_or_create, load_stored};
use super::cluster::{ClusterAcme, cluster_changed};
use super::order::{OrderError, obtain};
use super::schedule::{HourlyCap, ari_pick, backoff, renew_at};
use super::solver::Solver;
use super::store::{CertFiles, Certified};
use super::{Mode, Settings};
use crate::events::EventKind;
use crate::metrics::CertLabel;
use crate::state::Shared;
use crate::tls::CertStore;
use crate::tls::status::Leaf;

/// Longest one order may take, DNS propagation included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// The manager wakes at least this often (gauges, registered names without certificates).
const TICK: Duration = Duration::from_secs(30);
/// A per-name certificate whose name is not registered is looked at again after this long.
const UNREGISTERED_RECHECK: Duration = Duration::from_secs(3600);

/// One certificate the manager looks after.
#[derive(Debug)]
pub(super) struct Managed {
    pub(super) names: Vec<String>,
    pub(super) current: Option<Certified>,
    pub(super) due: SystemTime,
    pub(super) failures: u32,
    /// Next ARI query; `None` when the server has no ARI (or nothing is served yet).
    pub(super) ari_check: Option<SystemTime>,
}

impl Managed {
    /// A certificate to order now.
    pub(super) fn missing(names: Vec<String>) -> Self {
        Self {
            names,
            current: None,
            due: SystemTime::now(),
            failures: 0,
            ari_check: None,
        }
    }

    /// A stored certificate: renewed at two thirds of its life, or now if it was issued for
    /// other names or by another ACME directory.
    pub(super) fn stored(names: Vec<String>, current: Certified, directory: &str) -> Self {
        let fits = current.covers(&names) && current.directory == directory;
        let due = if fits {
            renew_at(current.not_before, current.not_after)
        } else {
            SystemTime::now()
        };
        Self {
            names,
            current: Some(current),
            due,
            failures: 0,
            ari_check: Some(SystemTime::now()),
        }
    }
}

/// The manager and everything it owns.
pub(super) struct Manager {
    pub(super) settings: Settings,
    pub(super) store: Arc<CertStore>,
    pub(super) files: CertFiles,
    pub(super) http: AcmeHttp,
    pub(super) solver: Solver,
    pub(super) account: Option<Account>,
    pub(super) certs: BTreeMap<String, Managed>,
    pub(super) cap: HourlyCap,
    /// Registration events (per-name mode); `None` once the channel closed (wildcard mode
    /// drops the sender at once).
    pub(super) requests: Option<mpsc::Receiver<String>>,
    /// With `--cluster`: only the holder of the cluster's ACME lock orders.
    pub(super) cluster: Option<ClusterAcme>,
}

impl Manager {
    /// Runs until `stop` changes; withdraws any published challenge before returning.
    pub(super) async fn run(mut self, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            self.adopt_published(&shared);
            self.refresh_gauges(&shared);
            self.adopt_registered(&shared);
            let may_order = self.cluster.as_ref().is_none_or(ClusterAcme::may_order);
            if let Some(key) = self.next_due(&shared).filter(|_| may_order) {
                if !self.attempt(&key, &shared, &mut stop).await {
                    break;
                }
                continue;
            }
            if let Some(key) = self.next_ari_check() {
                self.check_ari(&key).await;
                continue;
            }
            let wait = self.next_wake();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                req = recv(&mut self.requests) => match req {
                    Some(name) => self.on_registered(&name, &shared),
                    None => self.requests = None,
                },
                _ = cluster_changed(&mut self.cluster) => {}
                _ = stop.changed() => break,
            }
        }
        self.solver.cleanup().await;
    }

    /// The first certificate whose time has come and that may be ordered now.
    fn next_due(&mut self, shared: &Shared) -> Option<String> {
        let now = SystemTime::now();
        let per_name = self.settings.mode != Mode::Wildcard;
        let keys: Vec<String> = self
            .certs
            .iter()
            .filter(|(_, m)| m.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let registered = !per_name || self.registered(&key, shared);
            let m = self.certs.get_mut(&key)?;
            if !registered {
                // Never order for a name nobody serves; a registration brings it back.
                m.due = now + UNREGISTERED_RECHECK;
                continue;
            }
            if per_name
                && m.current.is_none()
                && let Err(wait) = self.cap.try_take()
            {
                info!(certificate = %key, retry_in = ?wait, "hourly certificate order cap reached; waiting");
                m.due = now + wait;
                continue;
            }
            return Some(key);
        }
        None
    }

    fn next_ari_check(&self) -> Option<String> {
        let now = SystemTime::now();
        self.certs
            .iter()
            .find(|(_, m)| m.ari_check.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
    }

    fn next_wake(&self) -> Duration {
        let now = SystemTime::now();
        self.certs
            .values()
            .flat_map(|m| [Some(m.due), m.ari_check])
            .flatten()
            .map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
            .fold(TICK, Duration::min)
            .max(Duration::from_millis(10))
    }

    /// Runs one order for `key`; false when `stop` fired meanwhile.
    async fn attempt(
        &mut self,
        key: &str,
        shared: &Shared,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let Some(names) = self.certs.get(key).map(|m| m.names.clone()) else {
            return true;
        };
        let label = CertLabel {
            certificate: key.to_owned(),
        };
        shared.metrics.acme_orders.get_or_create(&label).inc();
        info!(certificate = %key, ?names, "ordering a certificate");
        let started = tokio::time::Instant::now();
        let work = order_once(
            &mut self.account,
            &self.http,
            &self.files,
            &self.settings,
            &self.solver,
            &names,
        );
        let result = tokio::select! {
            r = tokio::time::timeout(ORDER_TIMEOUT, work) => {
                r.unwrap_or_else(|_| Err(OrderError::Unusable(format!("order took longer than {ORDER_TIMEOUT:?}"))))
            }
            _ = stop.changed() => {
                self.solver.cleanup().await;
                return false;
            }
        };
        self.solver.cleanup().await;
        let result = result.and_then(|issued| {
            let c = Certified::from_pem(&issued.chain_pem, &issued.key_pem, &self.settings.directory)
                .map_err(OrderError::Unusable)?;
            if !c.covers(&names) {
                return Err(OrderError::Unusable(format!("it covers {:?}", c.names)));
            }
            if let Err(e) = self.files.save(key, &issued.chain_pem, &issued.key_pem, &self.settings.directory) {
                warn!(certificate = %key, "certificate obtained but not stored (it is served; a restart will order again): {e}");
            }
            Ok((c, issued))
        });
        let Some(m) = self.certs.get_mut(key) else {
            return true;
        };
        match result {
            Ok((cert, issued)) => {
                if let Some(cluster) = &self.cluster {
                    let dir = &self.settings.directory;
                    cluster
                        .publish(key, &issued.chain_pem, &issued.key_pem, dir)
                        .await;
                }
                info!(
                    certificate = %key,
                    not_after = %humantime::format_rfc3339_seconds(cert.not_after),
                    took_ms = started.elapsed().as_millis(),
                    "certificate obtained and swapped in"
                );
                if self.settings.mode == Mode::Wildcard {
                    self.store.swap(cert.key.clone());
                } else {
                    self.store.swap_name(key, cert.key.clone());
                }
                m.due = renew_at(cert.not_before, cert.not_after);
                m.failures = 0;
                m.ari_check = Some(SystemTime::now());
                let not_after = humantime::format_rfc3339_seconds(cert.not_after).to_string();
                let certificate = key.to_owned();
                shared.events.publish(if m.current.is_some() {
                    EventKind::CertificateRenewed {
                        certificate,
                        not_after,
                    }
                } else {
                    EventKind::CertificateIssued {
                        certificate,
                        not_after,
                    }
                });
                if let Some(leaf) = cert.key.cert.first().and_then(Leaf::parse) {
                    shared.certs.served(key, "acme", &leaf, Some(m.due));
                }
                m.current = Some(cert);
                shared.metrics.acme_issued.get_or_create(&label).inc();
                self.refresh_gauges(shared);
            }
            Err(e) => {
                m.failures += 1;
                let delay = backoff(self.settings.retry_initial, m.failures);
                m.due = SystemTime::now() + delay;
                shared.metrics.acme_failures.get_or_create(&label).inc();
                shared.certs.failed(key, &e.to_string(), m.due);
                shared.events.publish(EventKind::CertificateFailed {
                    certificate: key.to_owned(),
                    error: e.to_string(),
                });
                if is_account_gone(&e) {
                    // The server forgot us (a reset test CA, a deactivated account): register
                    // again on the next attempt.
                    self.account = None;
                    let _ = std::fs::remove_file(self.files.account_path());
                }
                warn!(
                    certificate = %key,
                    failures = m.failures,
                    retry_in = ?delay,
                    "ACME order failed, will retry; the certificate in service (if any) stays: {e}"
                );
            }
        }
        true
    }

    /// Asks the ACME server's renewal information (RFC 9773) and moves renewal earlier if it
    /// suggests so.
    async fn check_ari(&mut self, key: &str) {
        let now = SystemTime::now();
        let Some(cert) = self.certs.get(key).and_then(|m| m.current.clone()) else {
            if let Some(m) = self.certs.get_mut(key) {
                m.ari_check = None;
            }
            return;
        };
        let account = match self.account.clone() {
            Some(a) => Some(a),
            // Only a stored account: ARI never registers one.
            None => load_stored(&self.files, &self.settings.directory, &self.http)
                .await
                .and_then(Result::ok),
        };
        let outcome = match (&account, cert.ari_id()) {
            (Some(account), Some(id)) => Some(account.renewal_info(&id).await),
            _ => None,
        };
        self.account = account.or(self.account.take());
        let Some(m) = self.certs.get_mut(key) else {
            return;
        };
        match outcome {
            Some(Ok((info, hint))) => {
                let latest = renew_at(cert.not_before, cert.not_after);
                let frac = f64::from(
                    now.duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos()),
                ) / 1e9;
                let pick = ari_pick(
                    info.suggested_window.start.into(),
                    info.suggested_window.end.into(),
                    frac,
                    latest,
                );
                if m.failures == 0 && pick < m.due {
                    info!(certificate = %key, "the ACME server suggests renewing earlier (ARI)");
                    m.due = pick;
                }
                m.ari_check =
                    Some(now + hint.clamp(Duration::from_secs(3600), Duration::from_secs(86_400)));
            }
            Some(Err(instant_acme::Error::Unsupported(_))) => m.ari_check = None,
            Some(Err(e)) => {
                debug!(certificate = %key, "ARI query failed: {e}");
                m.ari_check = Some(now + Duration::from_secs(3600));
            }
            None => m.ari_check = Some(now + Duration::from_secs(3600)),
        }
    }

    /// A provider registered `label`: in per-name mode, make sure its certificate is managed.
    fn on_registered(&mut self, label: &str, shared: &Shared) {
        if self.settings.mode == Mode::Wildcard {
            return;
        }
        let host = format!("{label}.{}", self.settings.domain);
        if !self.registered(&host, shared) {
            return;
        }
        let now = SystemTime::now();
        match self.certs.get_mut(&host) {
            Some(m) if m.failures == 0 => {
                m.due = match &m.current {
                    Some(c) => renew_at(c.not_before, c.not_after).max(now),
                    None => now,
                };
            }
            Some(_) => {} // backing off: keep the retry time
            None => {
                self.certs
                    .insert(host.clone(), Managed::missing(vec![host]));
            }
        }
    }

    /// Per-name mode: registered names the request channel missed (it is bounded).
    fn adopt_registered(&mut self, shared: &Shared) {
        if self.settings.mode == Mode::Wildcard {
            return;
        }
        for label in shared.registry.names() {
            let host = format!("{label}.{}", self.settings.domain);
            if !self.certs.contains_key(&host) {
                self.on_registered(&label, shared);
            }
        }
    }

    /// Whether `host` is served: the apex always, an app's name while a provider holds it.
    fn registered(&self, host: &str, shared: &Shared) -> bool {
        host == self.settings.domain
            || host
                .strip_suffix(&format!(".{}", self.settings.domain))
                .is_some_and(|label| {
                    !label.contains('.') && shared.registry.lookup(label).is_some()
                })
    }

    /// Whether `host`'s certificate belongs to someone: always in wildcard mode and for the
    /// apex; a per-name certificate while its name has an owner.
    fn owned(&self, host: &str, shared: &Shared) -> bool {
        self.settings.mode == Mode::Wildcard
            || host == self.settings.domain
            || host
                .strip_suffix(&format!(".{}", self.settings.domain))
                .is_some_and(|label| shared.names.owner(label).is_some())
    }

    /// The expiry gauges and the operator's view of every managed certificate.
    fn refresh_gauges(&self, shared: &Shared) {
        let now = SystemTime::now();
        for (key, m) in &self.certs {
            if !self.owned(key, shared) {
                // Released: the certificate stays on disk, but it is nobody's any more.
                shared.certs.remove(key);
                continue;
            }
            let Some(c) = &m.current else {
                shared.certs.pending(key, &m.names, m.due);
                continue;
            };
            if let Some(leaf) = c.key.cert.first().and_then(Leaf::parse) {
                shared.certs.still_served(key, "acme", &leaf, m.due);
            }
            let days = match c.not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64() / 86_400.0,
                Err(past) => -past.duration().as_secs_f64() / 86_400.0,
            };
            shared
                .metrics
                .acme_expiry_days
                .get_or_create(&CertLabel {
                    certificate: key.clone(),
                })
                .set(days);
        }
    }
}

/// The next registration event; pending forever once the channel is gone.
async fn recv(requests: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match requests {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Account (loaded or created, then cached) + one order.
async fn order_once(
    account: &mut Option<Account>,
    http: &AcmeHttp,
    files: &CertFiles,
    settings: &Settings,
    solver: &Solver,
    names: &[String],
) -> Result<super::order::Issued, OrderError> {
    let acct = match account {
        Some(a) => a.clone(),
        None => {
            let a =
                load_or_create(files, &settings.directory, settings.email.as_deref(), http).await?;
            *account = Some(a.clone());
            a
        }
    };
    obtain(&acct, names, solver).await
}

fn is_account_gone(e: &OrderError) -> bool {
    matches!(e, OrderError::Acme(instant_acme::Error::Api(p))
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::acme::store::tests::self_signed;

    fn cert(names: &[&str], directory: &str) -> Certified {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let (chain, key) = self_signed(names, now - 10, now + 290);
        Certified::from_pem(&chain, &key, directory).expect("certified")
    }

    #[test]
    fn stored_certificate_is_renewed_at_two_thirds_unless_it_does_not_fit() {
        let names = vec!["apps.test".to_string(), "*.apps.test".to_string()];
        let dir = "https://ca/dir";
        let fits = Managed::stored(names.clone(), cert(&["apps.test", "*.apps.test"], dir), dir);
        let c = fits.current.as_ref().expect("current");
        assert_eq!(fits.due, renew_at(c.not_before, c.not_after));
        assert!(fits.due > SystemTime::now(), "not due yet");
        let now = SystemTime::now() + Duration::from_secs(1);
        let other_names = Managed::stored(names.clone(), cert(&["apps.test"], dir), dir);
        assert!(other_names.due <= now, "names changed: order now");
        let other_ca = Managed::stored(
            names,
            cert(&["apps.test", "*.apps.test"], dir),
            "https://staging/dir",
        );
        assert!(
            other_ca.due <= now,
            "directory changed (staging → production): order now"
        );
        assert!(other_ca.current.is_some(), "but keep serving it meanwhile");
    }
}
