//! What a deploy attaches beyond the sandbox: the devices the owner granted it and its named
//! volumes. Both are decided before any container or volume exists — device authorization
//! first, then volume admission (which records the shares at once) — and the volumes are
//! created with their labels only after the image is there, right before the start. Volume
//! names never come from the request: the engine name is derived from the scope
//! (`peer:<owner id>`), the app (the deployment's name) and the volume's name.

use std::collections::BTreeSet;

use peercompute_identity::PeerId;
use peercompute_runtime::{Attachments, DockerRuntime, VolumeError};
use peercompute_tunnel_proto::{DeployRequest, ErrorCode, ErrorResponse};
use tracing::warn;

use super::{Deployments, error, now_secs};
use crate::devices::{AuthorizedDevices, DeviceGrants, DeviceRefusal, Requester};
use crate::volumes::{Grant, Refusal, ReserveError, peer_scope};

/// Devices authorized and volume shares reserved for one deploy.
#[derive(Debug)]
pub(super) struct Reserved {
    pub(super) devices: AuthorizedDevices,
    pub(super) grants: Vec<Grant>,
}

impl Deployments {
    /// Authorizes the devices and admits the volumes of `req` (app `name`) for `owner`.
    pub(super) fn reserve_attachments(
        &self,
        owner: &PeerId,
        name: &str,
        req: &DeployRequest,
    ) -> Result<Reserved, ErrorResponse> {
        let devices = self
            .devices
            .authorize(&Requester::Peer(*owner), &req.devices)
            .map_err(device_error)?;
        let held: BTreeSet<String> = self
            .store()
            .all()
            .filter(|r| r.stopped_reason.is_none())
            .flat_map(|r| r.devices.iter().cloned())
            .collect();
        DeviceGrants::check_free(&devices, held.iter().map(String::as_str))
            .map_err(device_error)?;
        let asks = self.volumes.asks(&peer_scope(owner), name, &req.volumes);
        let grants = self
            .volumes
            .reserve(&asks, now_secs())
            .map_err(|e| match e {
                ReserveError::Refused(r @ (Refusal::Space { .. } | Refusal::TooMany { .. })) => {
                    error(ErrorCode::LimitExceeded, r.to_string())
                }
                ReserveError::Refused(r @ Refusal::Collision { .. }) => {
                    warn!(app = %name, "{r}");
                    error(ErrorCode::BadRequest, r.to_string())
                }
                ReserveError::Save(e) => error(ErrorCode::Internal, e.to_string()),
            })?;
        Ok(Reserved { devices, grants })
    }

    /// Creates the volumes (labels checked) and returns what the container gets.
    pub(super) async fn attach(
        &self,
        runtime: &DockerRuntime,
        reserved: &Reserved,
        req: &DeployRequest,
    ) -> Result<Attachments, ErrorResponse> {
        let volumes = self
            .volumes
            .create(runtime, &reserved.grants, &req.volumes)
            .await
            .map_err(volume_error)?;
        Ok(Attachments {
            volumes,
            devices: reserved.devices.devices.clone(),
            gpus: reserved.devices.gpus.clone(),
        })
    }
}

/// A device refusal as the client sees it.
pub(super) fn device_error(e: DeviceRefusal) -> ErrorResponse {
    let code = if e.not_granted() {
        ErrorCode::NotGranted
    } else if matches!(e, DeviceRefusal::InUse(_)) {
        ErrorCode::InUse
    } else {
        ErrorCode::Runtime
    };
    error(code, e.to_string())
}

/// A volume failure on the engine as the client sees it.
pub(crate) fn volume_error(e: VolumeError) -> ErrorResponse {
    match e {
        VolumeError::Collision { .. } => error(
            ErrorCode::BadRequest,
            format!("{e}; pick another volume name"),
        ),
        VolumeError::InUse { .. } => error(ErrorCode::InUse, e.to_string()),
        VolumeError::NotFound { .. } => error(ErrorCode::NotFound, e.to_string()),
        _ => error(ErrorCode::Runtime, e.to_string()),
    }
}

/// "attaching volume blog/data (share 2 GiB)" for the deploy's progress.
pub(super) fn volumes_message(grants: &[Grant]) -> String {
    let list: Vec<String> = grants
        .iter()
        .map(|g| {
            format!(
                "{} ({}share {})",
                g.id.label(),
                if g.new { "new, " } else { "kept data, " },
                peercompute_tunnel_proto::format_memory(g.share_bytes)
            )
        })
        .collect();
    format!("attaching volumes {}", list.join(", "))
}

/// What a client should know about how its request's volumes behave here.
pub(super) fn notes(req: &DeployRequest) -> Vec<String> {
    let mut notes = Vec::new();
    if !req.volumes.is_empty() && req.name.is_none() {
        notes.push(
            "the volumes belong to the app's name, which was generated for this deploy: deploy again with --name to keep using them"
                .to_owned(),
        );
    }
    if req.volume_exclusive {
        notes.push(
            "--volume-exclusive only matters for fleet releases: a deploy never runs two containers of one app"
                .to_owned(),
        );
    }
    notes
}
