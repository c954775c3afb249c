//! Stop, status, list and logs of existing deployments. Only the peer that deployed a
//! deployment sees or touches it; to everyone else it does not exist.

use peercompute_identity::PeerId;
use peercompute_runtime::{ContainerState, LogSource, LogStream as RuntimeLogs};
use peercompute_tunnel_proto::{
    DeploymentState, DeploymentSummary, ErrorCode, ErrorResponse, ListResponse, StatusResponse,
    StopResponse, VolumeUsage,
};
use tracing::info;

use super::{Deployments, Record, error, now_secs};

pub(crate) fn state_of(s: ContainerState) -> DeploymentState {
    match s {
        ContainerState::Created => DeploymentState::Created,
        ContainerState::Running => DeploymentState::Running,
        ContainerState::Paused => DeploymentState::Paused,
        ContainerState::Restarting => DeploymentState::Restarting,
        ContainerState::Removing => DeploymentState::Removing,
        ContainerState::Exited => DeploymentState::Exited,
        ContainerState::Dead => DeploymentState::Dead,
        #[allow(unreachable_patterns)]
        _ => DeploymentState::Unknown,
    }
}

impl Deployments {
    fn owned(&self, owner: &PeerId, id: &str) -> Result<Record, ErrorResponse> {
        match self.store().get(id) {
            Some(r) if r.owner == owner.to_string() => Ok(r.clone()),
            _ => Err(error(
                ErrorCode::NotFound,
                format!("no deployment {id} of yours on this provider (see `peerctl ls`)"),
            )),
        }
    }

    /// Removes the container and the route; the URL answers 404 afterwards.
    pub(crate) async fn stop(
        &self,
        owner: &PeerId,
        id: &str,
    ) -> Result<StopResponse, ErrorResponse> {
        let record = self.owned(owner, id)?;
        let runtime = self.runtime()?;
        if let Some(tunnel) = &self.tunnel {
            tunnel.unregister(&record.name).await;
        }
        runtime
            .stop(&record.container_id)
            .await
            .map_err(|e| error(ErrorCode::Runtime, e.to_string()))?;
        self.admission().release(id);
        self.volumes.clear_halted(&record.container_id);
        self.store().remove(id).map_err(|e| {
            error(
                ErrorCode::Internal,
                format!(
                    "stopped {id}, but its record could not be saved ({e}); it is dropped at the provider's next start, or free space and run stop again"
                ),
            )
        })?;
        self.publish_devices();
        info!(deployment = %id, name = %record.name, "stopped and removed");
        Ok(StopResponse {
            id: id.to_owned(),
            removed: true,
        })
    }

    pub(crate) async fn status(
        &self,
        owner: &PeerId,
        id: &str,
    ) -> Result<StatusResponse, ErrorResponse> {
        let record = self.owned(owner, id)?;
        let status = self
            .runtime()?
            .status(&record.container_id)
            .await
            .map_err(|e| {
                error(
                    ErrorCode::Runtime,
                    format!("cannot inspect the container: {e}"),
                )
            })?;
        let started_at = status
            .started_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let running = status.state == ContainerState::Running;
        let usage = status.usage.as_ref();
        Ok(StatusResponse {
            id: record.id,
            name: record.name,
            image: record.image,
            url: record.url,
            state: state_of(status.state),
            created_at: record.created_at,
            started_at,
            uptime_secs: started_at
                .filter(|_| running)
                .map(|s| now_secs().saturating_sub(s)),
            restarts: u32::try_from(status.restart_count).unwrap_or(u32::MAX),
            cpu_percent: usage.and_then(|u| u.cpu_percent),
            memory_bytes: usage.and_then(|u| u.memory_bytes),
            memory_limit: usage
                .and_then(|u| u.memory_limit_bytes)
                .or(Some(record.memory_bytes)),
            volumes: self.volume_usage(&record.volumes),
            devices: record.devices.clone(),
            stopped_reason: record
                .stopped_reason
                .clone()
                .or_else(|| self.volumes.stopped_reason(&record.container_id)),
        })
    }

    /// The use and share of the volumes a deployment mounts (engine names), as last measured.
    fn volume_usage(&self, names: &[String]) -> Vec<VolumeUsage> {
        let ledger = self.volumes.snapshot();
        names
            .iter()
            .filter_map(|n| ledger.get(n))
            .map(|e| VolumeUsage {
                volume: e.id.label(),
                used_bytes: e.used_bytes,
                share_bytes: e.share_bytes,
            })
            .collect()
    }

    pub(crate) async fn list(&self, owner: &PeerId) -> Result<ListResponse, ErrorResponse> {
        let runtime = self.runtime()?;
        let managed = runtime
            .list_managed()
            .await
            .map_err(|e| error(ErrorCode::Runtime, e.to_string()))?;
        let owner = owner.to_string();
        let records: Vec<Record> = self
            .store()
            .all()
            .filter(|r| r.owner == owner)
            .cloned()
            .collect();
        let deployments = records
            .into_iter()
            .map(|r| {
                let state = managed
                    .iter()
                    .find(|m| m.id == r.container_id)
                    .map_or(DeploymentState::Dead, |m| state_of(m.state));
                DeploymentSummary {
                    id: r.id,
                    name: r.name,
                    image: r.image,
                    url: r.url,
                    state,
                    created_at: r.created_at,
                    stopped_reason: r.stopped_reason,
                }
            })
            .collect();
        Ok(ListResponse { deployments })
    }

    pub(crate) fn logs(
        &self,
        owner: &PeerId,
        id: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<RuntimeLogs, ErrorResponse> {
        let record = self.owned(owner, id)?;
        let tail = tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX));
        Ok(self.runtime()?.logs(&record.container_id, follow, tail))
    }
}

pub(crate) fn log_stream(source: LogSource) -> peercompute_tunnel_proto::LogStream {
    match source {
        LogSource::Stderr => peercompute_tunnel_proto::LogStream::Stderr,
        _ => peercompute_tunnel_proto::LogStream::Stdout,
    }
}
