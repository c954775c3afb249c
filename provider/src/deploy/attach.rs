//! What a deploy attaches beyond the sandbox: the devices the owner granted it and its named
//! volumes. Both are decided before any container or volume exists — device authorization
//! first, then volume admission (which records the shares at once) — and the volumes are
//! created with their labels only after the image is there, right before the start. Volume
//! names never come from the request: the engine name is derived from the scope
//! (`peer:<owner id>`), the app (the deployment's name) and the volume's name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::MutexGuard;

use peercompute_identity::PeerId;
use peercompute_runtime::{Attachments, DockerRuntime, VolumeError};
use peercompute_tunnel_proto::{DeployRequest, ErrorCode, ErrorResponse};
use tracing::warn;

use super::{Deployments, error, now_secs};
use crate::devices::{AuthorizedDevices, DeviceGrants, DeviceRefusal, Holder, Requester};
use crate::volumes::{Grant, Refusal, ReserveError, peer_scope};

/// Devices authorized and volume shares reserved for one deploy.
#[derive(Debug)]
pub(super) struct Reserved {
    pub(super) devices: AuthorizedDevices,
    pub(super) grants: Vec<Grant>,
}

impl Deployments {
    /// Authorizes the devices and admits the volumes of `req` (app `name`) for `owner`.
    /// The devices are held from here until [`Deployments::settle_devices`] (the deploy
    /// recorded or failed).
    pub(super) fn reserve_attachments(
        &self,
        owner: &PeerId,
        id: &str,
        name: &str,
        req: &DeployRequest,
    ) -> Result<Reserved, ErrorResponse> {
        let devices = self
            .devices
            .authorize(&Requester::Peer(*owner), &req.devices)
            .map_err(device_error)?;
        {
            // Under one lock: what deployments and the fleet hold, what deploys in flight
            // hold, and this deploy's claim.
            let mut in_flight = self.devices_in_flight();
            let mut held: BTreeSet<String> = self.held_devices();
            held.extend(in_flight.values().flatten().cloned());
            held.extend(self.devices.held_by_others(Holder::Deploys));
            DeviceGrants::check_free(&devices, held.iter().map(String::as_str))
                .map_err(device_error)?;
            if !req.devices.is_empty() {
                in_flight.insert(id.to_owned(), req.devices.clone());
            }
        }
        self.publish_devices();
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
            })
            .inspect_err(|_| self.settle_devices(id))?;
        Ok(Reserved { devices, grants })
    }

    /// The grant names that running deployments hold (a halted one holds nothing).
    fn held_devices(&self) -> BTreeSet<String> {
        self.store()
            .all()
            .filter(|r| r.stopped_reason.is_none())
            .flat_map(|r| r.devices.iter().cloned())
            .collect()
    }

    fn devices_in_flight(&self) -> MutexGuard<'_, BTreeMap<String, Vec<String>>> {
        self.devices_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the fleet which grants deploys hold (running deployments and deploys in flight).
    pub(super) fn publish_devices(&self) {
        let mut held = self.held_devices();
        held.extend(self.devices_in_flight().values().flatten().cloned());
        self.devices
            .publish_held(Holder::Deploys, held.into_iter().collect());
    }

    /// Deploy `id` is recorded or failed: its claim in flight ends.
    pub(super) fn settle_devices(&self, id: &str) {
        self.devices_in_flight().remove(id);
        self.publish_devices();
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
            fleet_group: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceGrant, DeviceKind, Firewall};
    use crate::deploy::{DeployParts, DeploySettings};
    use crate::volumes::VolumeSettings;
    use peercompute_identity::Identity;
    use peercompute_runtime::{DeviceAccess, Limits};

    /// Deployments with no engine, and `arm` (/dev/null, unshared) granted to `peer`.
    fn deployments(dir: &std::path::Path, peer: PeerId) -> Deployments {
        let grant = DeviceGrant {
            name: "arm".into(),
            kind: DeviceKind::Char {
                path: "/dev/null".into(),
                container_path: "/dev/arm".into(),
                access: DeviceAccess::Rw,
            },
            peers: vec![peer],
            fleets: Vec::new(),
            shared: false,
        };
        let me = Identity::generate().expect("id").peer_id();
        Deployments::open_parts(DeployParts {
            state_dir: dir,
            runtime: None,
            tunnel: None,
            me,
            label: me,
            settings: &DeploySettings {
                limits: Limits::default(),
                ready_timeout: std::time::Duration::from_secs(1),
            },
            firewall: Firewall::Off,
            volumes: VolumeSettings {
                max_bytes: 1 << 30,
                check_interval: std::time::Duration::from_secs(60),
            },
            devices: DeviceGrants::new(vec![grant], false),
            telemetry: Default::default(),
        })
        .expect("open")
    }

    #[test]
    fn an_unshared_device_is_held_by_one_deploy_or_release_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let peer = Identity::generate().expect("id").peer_id();
        let d = deployments(dir.path(), peer);
        let mut req = DeployRequest::new("img:1", 8080);
        req.devices = vec!["arm".into()];

        // In flight: a second deploy asking for it is refused until the first settles.
        d.reserve_attachments(&peer, "d1", "one", &req)
            .expect("first");
        let err = d
            .reserve_attachments(&peer, "d2", "two", &req)
            .expect_err("held in flight");
        assert_eq!(err.code, ErrorCode::InUse, "{}", err.message);
        // The fleet sees the deploy's hold.
        assert_eq!(d.devices.held_by_others(Holder::Fleet), ["arm"]);
        d.settle_devices("d1");
        assert!(d.devices.held_by_others(Holder::Fleet).is_empty());

        // A fleet release holding it: deploys are refused.
        d.devices.publish_held(Holder::Fleet, vec!["arm".into()]);
        let err = d
            .reserve_attachments(&peer, "d3", "three", &req)
            .expect_err("held by the fleet");
        assert_eq!(err.code, ErrorCode::InUse, "{}", err.message);
        d.devices.publish_held(Holder::Fleet, Vec::new());
        d.reserve_attachments(&peer, "d4", "four", &req)
            .expect("free again");

        // Someone the owner did not grant it to.
        let stranger = Identity::generate().expect("id").peer_id();
        let err = d
            .reserve_attachments(&stranger, "d5", "five", &req)
            .expect_err("not granted");
        assert_eq!(err.code, ErrorCode::NotGranted, "{}", err.message);
    }
}
