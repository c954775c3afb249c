//! The applier at start and between releases: a restarted daemon re-adopts the containers
//! `applied.json` says are serving (their routes registered again), starts again one that is
//! down (a power cut), keeps a stopped group's container down, applies again what Docker
//! lost, and removes fleet containers no release records (a crash mid-apply); as Docker
//! gives a restarted container a new host port, routes are kept on the current one; and after
//! a release, images no group keeps any longer are removed (see [`super::applied::prunable`]).
//! At start the applier also picks where the status measures free disk ([`disk_free_bytes`]).
//! A release the planner refuses (schema, this robot's limits) is recorded as failed here.

use std::path::PathBuf;
use std::sync::Mutex;

use peercompute_fleet::{AppStatus, EntryHash, FleetId, FleetState, Phase, ReleaseRecord};
use peercompute_runtime::ManagedContainer;
use tracing::{info, warn};

use super::applied::{Failure, Serving, prunable};
use super::apply::{Applier, fleet_provider_label, spawn_register};
use super::estop::stop_for;
use super::status::now_ms;
use crate::devices::Holder;
use crate::volumes::free_bytes;

impl Applier {
    /// At start, after the e-stops on disk were enforced: re-adopts serving containers (their
    /// routes registered again); starts again a serving container that is down (a power cut
    /// killed it), or forgets it when Docker lost it (so it is applied again); keeps a stopped
    /// group's container killed and marks it stopped; removes fleet containers nobody recorded
    /// (a crash mid-apply).
    pub(crate) async fn adopt(&mut self, states: &[FleetState]) {
        self.choose_disk().await;
        let managed = match self.runtime.list_managed().await {
            Ok(m) => m,
            Err(e) => {
                warn!("fleet: cannot list containers to re-adopt: {e}");
                return;
            }
        };
        let mut changed = false;
        for (fleet, groups) in &mut self.applied.fleets {
            let fleet_id = fleet.parse::<FleetId>().ok();
            let state = states.iter().find(|s| Some(s.fleet) == fleet_id);
            for (group, applied) in &mut groups.groups {
                let Some(serving) = &mut applied.serving else {
                    continue;
                };
                let found = managed.iter().find(|m| m.id == serving.container_id);
                let label = format!("{fleet}/{group}");
                let stopped = state
                    .and_then(|s| stop_for(s, group))
                    .or_else(|| self.cancel.is_stopped(&label).then_some("emergency stop"));
                if let Some(reason) = stopped {
                    // Killed by the enforcer just before; kept for the resume.
                    if serving.stopped.is_none() {
                        serving.stopped = Some(reason.to_owned());
                        changed = true;
                    }
                    continue;
                }
                if serving.stopped.is_some() {
                    // Resumed while this daemon was down: the reconciler starts it.
                    continue;
                }
                let mut addr = found.and_then(|m| m.addr);
                if addr.is_none() && found.is_some() {
                    match self.runtime.resume(&serving.container_id).await {
                        Ok(now) => {
                            info!(%fleet, %group, version = %serving.version, "fleet: the serving container was down (power cut?); started it again");
                            addr = Some(now);
                        }
                        // A stop came meanwhile and the enforcer killed it: kept, stopped.
                        Err(_) if self.cancel.is_stopped(&label) => {
                            serving.stopped = Some("emergency stop".into());
                            changed = true;
                            continue;
                        }
                        Err(e) => {
                            warn!(%fleet, %group, version = %serving.version, "fleet: the serving container does not start again ({e}); applying the release again");
                            let _ = self.runtime.stop(&serving.container_id).await;
                        }
                    }
                }
                match addr {
                    Some(addr) => {
                        if let Some(fleet_id) = fleet_id {
                            let mut status =
                                adopted_status(group, serving, applied.failed.as_ref());
                            // Shown again once the gateway confirms the route (`record_url`).
                            if !self.routes.connected() {
                                status.url = None;
                            }
                            self.board.set(fleet_id, status);
                        }
                        info!(%fleet, %group, version = %serving.version, route = %serving.route, "fleet: re-adopted the serving container");
                        if let Some(fleet_id) = fleet_id {
                            let id = &serving.container_id;
                            self.routes
                                .register(fleet_id, group, id, &serving.route, addr);
                        }
                        self.published.insert(serving.container_id.clone(), addr);
                    }
                    None => {
                        if found.is_none() {
                            warn!(%fleet, %group, version = %serving.version, "fleet: the serving container is gone; applying the release again");
                        }
                        applied.serving = None;
                        changed = true;
                    }
                }
            }
        }
        self.untidy = !self.remove_unrecorded(&managed).await;
        if changed {
            self.save();
        }
        self.devices
            .publish_held(Holder::Fleet, self.applied.devices());
    }

    /// Removes this robot's fleet containers that no group records as serving (a crash, or
    /// an engine connection cut, mid-apply left them); whether every one went.
    async fn remove_unrecorded(&self, managed: &[ManagedContainer]) -> bool {
        let label = fleet_provider_label(&self.label);
        let recorded: Vec<&str> = self
            .applied
            .fleets
            .values()
            .flat_map(|f| f.groups.values())
            .filter_map(|g| g.serving.as_ref())
            .map(|s| s.container_id.as_str())
            .collect();
        let mut tidy = true;
        for m in managed {
            let ours = m.labels.get(peercompute_runtime::LABEL_PROVIDER) == Some(&label);
            if ours && !recorded.contains(&m.id.as_str()) {
                warn!(container = %m.name, "fleet: removing a container no release records");
                if let Err(e) = self.runtime.stop(&m.id).await {
                    warn!(container = %m.name, "fleet: cannot remove it yet: {e}");
                    tidy = false;
                }
            }
        }
        tidy
    }

    /// Between reconciler passes: [`remove_unrecorded`](Self::remove_unrecorded) from a fresh
    /// listing; `untidy` stays set (the reconciler looks again soon) while one is left.
    pub(crate) async fn sweep(&mut self) {
        self.untidy = match self.runtime.list_managed().await {
            Ok(managed) => !self.remove_unrecorded(&managed).await,
            Err(e) => {
                warn!("fleet: cannot list containers to remove leftovers: {e}");
                true
            }
        };
    }

    /// Records as failed the serving releases whose container the volume check halted (its
    /// volume over its share): not applied again until a newer release or a rollback, the
    /// reason shown by `fleet status`; its route is withdrawn.
    pub(crate) async fn record_volume_halts(&mut self) {
        let mut withdrawn = Vec::new();
        for (fleet, groups) in &mut self.applied.fleets {
            for (group, applied) in &mut groups.groups {
                let Some(serving) = &applied.serving else {
                    continue;
                };
                let Some(reason) = self.volumes.stopped_reason(&serving.container_id) else {
                    continue;
                };
                if applied
                    .failed
                    .as_ref()
                    .is_some_and(|f| f.release == serving.release)
                {
                    continue;
                }
                warn!(%fleet, %group, version = %serving.version, "fleet: {reason}");
                applied.failed = Some(Failure {
                    release: serving.release.clone(),
                    version: serving.version.clone(),
                    reason: reason.clone(),
                    refused: false,
                });
                if let Ok(fleet_id) = fleet.parse::<FleetId>() {
                    self.board.update(fleet_id, group, |a| {
                        a.phase = Phase::Failed;
                        a.reason = Some(reason);
                        a.changed_at_ms = now_ms();
                    });
                }
                withdrawn.push(serving.route.clone());
            }
        }
        if withdrawn.is_empty() {
            return;
        }
        self.save();
        if let Some(tunnel) = &self.tunnel {
            for route in withdrawn {
                tunnel.unregister(&route).await;
            }
        }
    }

    /// Docker gives a restarted container a new port: keep each route on the current one.
    pub(crate) async fn follow_ports(&mut self) {
        let Some(tunnel) = self.tunnel.clone() else {
            return;
        };
        let serving: Vec<Serving> = self
            .applied
            .fleets
            .values()
            .flat_map(|f| f.groups.values())
            .filter_map(|g| g.serving.clone())
            .collect();
        for s in serving {
            let Ok(Some(addr)) = self.runtime.addr(&s.container_id).await else {
                continue;
            };
            if self.published.insert(s.container_id.clone(), addr) != Some(addr) {
                info!(route = %s.route, %addr, "fleet: container published on a new port; re-pointing its route");
                spawn_register(&tunnel, &s.route, addr);
            }
        }
    }
}

impl Applier {
    /// Removes the images of `dropped` (no longer kept by their group) that no other group
    /// keeps and no container uses. Failures are warnings: an image left behind costs disk,
    /// not service.
    pub(crate) async fn prune_images(&self, dropped: Vec<String>) {
        if dropped.is_empty() {
            return;
        }
        let in_use = match self.runtime.images_in_use().await {
            Ok(used) => used,
            Err(e) => {
                warn!(
                    ?dropped,
                    "fleet: images no longer kept stay, as the containers using images cannot be listed: {e}"
                );
                return;
            }
        };
        let mut with_ids = Vec::with_capacity(dropped.len());
        for image in dropped {
            let id = self.runtime.image_id(&image).await.unwrap_or_default();
            with_ids.push((image, id));
        }
        for image in prunable(&with_ids, &self.applied.retained_images(), &in_use) {
            match self.runtime.remove_image(&image).await {
                Ok(removed) => info!(%image, ?removed, "fleet: removed an image no release keeps"),
                Err(e) => warn!(%image, "fleet: cannot remove an image no release keeps: {e}"),
            }
        }
    }
}

impl Applier {
    /// Records a release the planner refused: phase failed with `reason`, nothing started,
    /// the serving release untouched; not tried again until a newer release or a rollback.
    pub(crate) fn refuse(
        &mut self,
        fleet: FleetId,
        group: &str,
        record: &ReleaseRecord,
        reason: String,
    ) {
        let version = record.release.version.clone();
        warn!(%fleet, %group, %version, "fleet: release refused: {reason}");
        let applied = self.applied.group_mut(&fleet.to_string(), group);
        let serving = applied.serving.clone();
        applied.failed = Some(Failure {
            release: record.hash.to_string(),
            version: version.clone(),
            reason: reason.clone(),
            refused: true,
        });
        self.save();
        self.board.set(
            fleet,
            AppStatus {
                group: group.to_owned(),
                release: record.hash,
                version,
                phase: Phase::Failed,
                serving: serving.as_ref().map(|s| s.version.clone()),
                url: serving.and_then(|s| s.url),
                apply_ms: Some(0),
                reason: Some(reason),
                changed_at_ms: now_ms(),
            },
        );
    }
}

/// Where the status measures free disk, chosen by the applier at start. Process-wide because
/// the status publisher is built apart from the applier; daemons sharing a process share the
/// engine, and so its data root.
static DISK_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

impl Applier {
    /// The filesystem whose free bytes the status reports: the engine's data root (images and
    /// containers fill it) if this process can read it, else the provider's home.
    async fn choose_disk(&self) {
        let root = match self.runtime.data_root().await {
            Ok(root) => root.filter(|r| free_bytes(r).is_some()),
            Err(e) => {
                warn!("fleet: cannot ask the engine for its data root: {e}");
                None
            }
        };
        let home = self.dir.parent().unwrap_or(&self.dir).to_path_buf();
        let path = root.unwrap_or(home);
        info!(path = %path.display(), "fleet: the status reports the free disk of this filesystem");
        *DISK_PATH.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }
}

/// Free bytes (for unprivileged users) of the filesystem the status measures; 0 until the
/// applier chose it (no Docker engine) or when it cannot be measured.
pub(crate) fn disk_free_bytes() -> u64 {
    let path = DISK_PATH.lock().unwrap_or_else(|p| p.into_inner()).clone();
    path.and_then(|p| free_bytes(&p)).unwrap_or(0)
}

/// The status of a group re-adopted at start.
fn adopted_status(group: &str, serving: &Serving, failed: Option<&Failure>) -> AppStatus {
    let release = serving.release.parse().unwrap_or(EntryHash([0; 32]));
    AppStatus {
        group: group.to_owned(),
        release,
        version: serving.version.clone(),
        phase: Phase::Healthy,
        serving: Some(serving.version.clone()),
        url: serving.url.clone(),
        apply_ms: None,
        reason: failed.map(|f| format!("release {} was rolled back: {}", f.version, f.reason)),
        changed_at_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_disk_is_measured_on_this_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = free_bytes(dir.path()).expect("statvfs");
        assert!(free > 0, "{free}");
        assert_eq!(free_bytes(&dir.path().join("absent")), None);
        assert!(free_bytes(std::path::Path::new("/")).is_some_and(|f| f > 0));
    }
}
