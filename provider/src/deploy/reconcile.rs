//! At start, the daemon and Docker may disagree (the daemon crashed mid-deploy, someone
//! removed a container, Docker restarted). Reconcile by label: running containers of known
//! deployments are re-adopted and their routes re-registered; managed containers nobody
//! recorded are removed (no orphans); records whose container is gone are dropped and
//! reported. Named volumes are never touched here: removing a container (even an orphan)
//! leaves them, and the volume ledger is brought in line with the volumes' labels.

use peercompute_runtime::{ContainerState, Resources};
use tracing::{info, warn};

use super::Deployments;

/// What reconciliation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: Vec<String>,
    pub orphans_removed: Vec<String>,
    pub lost: Vec<String>,
    pub not_running: Vec<String>,
}

impl Deployments {
    pub(crate) async fn reconcile(&self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let Some(runtime) = &self.runtime else {
            return report;
        };
        let (files, bytes) = crate::volumes::sweep_spool(&self.spool_dir);
        if files > 0 {
            info!(
                files,
                bytes, "removed the spool files of imports a crash interrupted"
            );
        }
        self.volumes
            .rebuild_from_engine(runtime, super::now_secs())
            .await;
        let managed = match runtime.list_managed().await {
            Ok(m) => m,
            Err(e) => {
                warn!("cannot list containers to reconcile: {e}");
                return report;
            }
        };
        let records: Vec<_> = self.store().all().cloned().collect();
        // Several daemons may share one engine: only our own containers are ours to judge. Ours
        // carry our provider label, which a key rotation does not change (`crate::label`).
        let label = self.label.to_string();
        let managed: Vec<_> = managed
            .into_iter()
            .filter(|m| m.labels.get(peercompute_runtime::LABEL_PROVIDER) == Some(&label))
            .collect();
        for container in &managed {
            let known = container.deployment.as_ref().and_then(|d| {
                records
                    .iter()
                    .find(|r| r.id == d.deployment_id && r.container_id == container.id)
            });
            if known.is_none() {
                warn!(container = %container.name, "removing an orphan container nobody recorded");
                let _ = runtime.stop(&container.id).await;
                report.orphans_removed.push(container.name.clone());
            }
        }
        for record in records {
            let Some(container) = managed.iter().find(|m| m.id == record.container_id) else {
                warn!(deployment = %record.id, name = %record.name, "its container is gone; dropping the deployment");
                let _ = self.store().remove(&record.id);
                report.lost.push(record.id);
                continue;
            };
            self.admission().adopt(
                &record.id,
                Resources {
                    cpu_millis: record.cpu_millis,
                    memory_bytes: record.memory_bytes,
                },
            );
            if !matches!(
                container.state,
                ContainerState::Running | ContainerState::Restarting
            ) {
                warn!(deployment = %record.id, state = ?container.state, "deployment is not running; stop it or check its logs");
                report.not_running.push(record.id.clone());
                continue;
            }
            let addr = match runtime.addr(&record.container_id).await {
                Ok(Some(addr)) => addr,
                _ => {
                    report.not_running.push(record.id.clone());
                    continue;
                }
            };
            if let Some(tunnel) = &self.tunnel {
                // Registration waits for the tunnel; do not hold up the start for it. The
                // task records the URL, which a deployment made while the gateway was
                // unreachable learns only now.
                drop(self.register_and_record(tunnel, &record.id, &record.name, addr));
            }
            if !container.sandboxed {
                warn!(deployment = %record.id, name = %record.name, "this container was started before the sandbox network existed and can reach this host and its LAN: redeploy it (stop, then deploy again) to isolate it");
            }
            info!(deployment = %record.id, name = %record.name, "re-adopted running container");
            report.adopted.push(record.id);
        }
        self.publish_devices();
        report
    }
}

impl Deployments {
    /// Docker gives a container a new host port when its restart policy restarts it: keep each
    /// route pointed at the current port. Runs until the daemon stops.
    pub(crate) async fn follow_ports(&self, every: std::time::Duration) {
        let (Some(runtime), Some(tunnel)) = (&self.runtime, &self.tunnel) else {
            return;
        };
        let mut known: std::collections::HashMap<String, std::net::SocketAddr> =
            std::collections::HashMap::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let records: Vec<_> = self.store().all().cloned().collect();
            known.retain(|id, _| records.iter().any(|r| r.id == *id));
            for record in records {
                let Ok(Some(addr)) = runtime.addr(&record.container_id).await else {
                    continue;
                };
                let previous = known.insert(record.id.clone(), addr);
                if previous == Some(addr) {
                    continue;
                }
                // First sighting (the container may already have restarted since the deploy
                // registered it) or a new port: (re-)register, which is idempotent.
                if let Some(previous) = previous {
                    info!(deployment = %record.id, %previous, now = %addr, "container restarted on a new port; re-pointing its route");
                }
                drop(self.register_and_record(tunnel, &record.id, &record.name, addr));
            }
        }
    }
}
