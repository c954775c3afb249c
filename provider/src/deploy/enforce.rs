//! The volume check: every `--volume-check-interval`, each volume is measured, and the
//! running containers of a volume over its share are halted — stopped, not removed, so
//! nothing is lost — with a reason that `status` and `ls` show. A deployment's route is
//! unregistered; its record keeps the reason across restarts. The quota is soft: an app can
//! write past its share between two checks.

use std::time::Duration;

use peercompute_runtime::{ContainerState, DockerRuntime};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use super::Deployments;

impl Deployments {
    /// Runs the check every `--volume-check-interval` until the daemon stops.
    pub(crate) async fn check_volumes(&self) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let every = self
            .volumes
            .settings()
            .check_interval
            .max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.enforce_volume_shares(runtime).await;
        }
    }

    /// One check: measures, then halts the running users of every volume over its share.
    /// Returns the containers halted.
    pub(crate) async fn enforce_volume_shares(&self, runtime: &DockerRuntime) -> Vec<String> {
        let mut halted = Vec::new();
        for (volume, reason) in self.volumes.measure(runtime).await {
            let users = match runtime.volume_users(&volume).await {
                Ok(users) => users,
                Err(e) => {
                    warn!(%volume, "over its share, but its containers cannot be listed: {e}");
                    continue;
                }
            };
            for user in users.into_iter().filter(|u| {
                matches!(
                    u.state,
                    ContainerState::Running | ContainerState::Restarting
                )
            }) {
                if let Err(e) = runtime.halt(&user.container_id).await {
                    warn!(%volume, container = %user.container_name, "cannot halt a container of a volume over its share: {e}");
                    continue;
                }
                self.volumes.mark_halted(&user.container_id, &reason);
                let record = self
                    .store()
                    .all()
                    .find(|r| r.container_id == user.container_id)
                    .cloned();
                if let Some(record) = record {
                    if let Some(tunnel) = &self.tunnel {
                        tunnel.unregister(&record.name).await;
                    }
                    if let Err(e) = self
                        .store()
                        .set_stopped_reason(&record.id, Some(reason.clone()))
                    {
                        warn!(deployment = %record.id, "cannot save why it was halted: {e}");
                    }
                    info!(deployment = %record.id, name = %record.name, %volume, "halted: {reason}");
                } else {
                    info!(container = %user.container_name, %volume, "halted: {reason}");
                }
                halted.push(user.container_id);
            }
        }
        if !halted.is_empty() {
            self.publish_devices();
        }
        halted
    }
}
