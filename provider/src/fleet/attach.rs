//! A release's attachments and the exclusive switch (see `apply`'s docs).
//!
//! [`Applier::attachments`] turns a release's volumes and devices into the runtime's
//! [`Attachments`] before anything starts: devices are authorized for the fleet again (a
//! `/dev/serial/by-id/…` link is resolved now), volumes are admitted under
//! `--max-volumes-size` in the scope `fleet:<fleet id>` and created. A refusal starts nothing.
//! [`Applier::exclusive_switch`] runs the switch, halting the old container first when the
//! release asks for `volume_exclusive` or holds an unshared device.

use std::time::{Duration, Instant};

use peercompute_fleet::{FleetId, Phase, ReleaseRecord};
use peercompute_runtime::Attachments;
use tracing::{info, warn};

use super::applied::Serving;
use super::apply::{Applier, Failed, Switched, spawn_register};
use super::status::now_ms;
use crate::devices::{DeviceGrants, Holder, Requester};
use crate::volumes::{ReserveError, fleet_scope};

/// What a release attaches, and whether its switch must be exclusive.
pub(super) struct Prepared {
    attach: Attachments,
    exclusive: bool,
}

impl Applier {
    /// The attachments of `record`'s spec for `group`, and whether its switch must be
    /// exclusive. Its unshared devices must not be held by another group's app or a
    /// deployment; from here on they count as the fleet's (published), so a deploy cannot take
    /// them while this release starts.
    pub(super) async fn attachments(
        &self,
        requester: &Requester,
        group: &str,
        record: &ReleaseRecord,
    ) -> Result<Prepared, Failed> {
        let spec = &record.release.spec;
        let refused = |reason: String| Failed {
            phase: Phase::Failed,
            reason: format!("refused by this robot: {reason}; nothing was started"),
            refused: true,
        };
        let devices = self
            .devices
            .authorize(requester, &spec.devices)
            .map_err(|e| refused(e.to_string()))?;
        let exclusive = spec.volume_exclusive || !devices.exclusive.is_empty();
        let Requester::Fleet { id, .. } = requester else {
            return Err(refused("a fleet release without its fleet".into()));
        };
        let mut held = self.applied.devices_except(&id.to_string(), group);
        held.extend(self.devices.held_by_others(Holder::Fleet));
        DeviceGrants::check_free(&devices, held.iter().map(String::as_str))
            .map_err(|e| refused(e.to_string()))?;
        if !spec.devices.is_empty() {
            let mut holds = self.applied.devices();
            holds.extend(spec.devices.iter().cloned());
            self.devices.publish_held(Holder::Fleet, holds);
        }
        let volumes = if spec.volumes.is_empty() {
            Vec::new()
        } else {
            let asks = self
                .volumes
                .asks(&fleet_scope(id), record.release.app(), &spec.volumes);
            let now = now_ms() / 1000;
            let grants = self.volumes.reserve(&asks, now).map_err(|e| match e {
                ReserveError::Refused(r) => refused(r.to_string()),
                ReserveError::Save(e) => Failed {
                    phase: Phase::Failed,
                    reason: format!("cannot record the volumes' shares: {e}"),
                    refused: false,
                },
            })?;
            match self
                .volumes
                .create(&self.runtime, &grants, &spec.volumes)
                .await
            {
                Ok(bindings) => bindings,
                Err(e) => {
                    self.volumes.cancel(&grants);
                    return Err(Failed {
                        phase: Phase::Failed,
                        reason: format!("cannot create the release's volumes: {e}"),
                        refused: false,
                    });
                }
            }
        };
        Ok(Prepared {
            attach: Attachments {
                volumes,
                devices: devices.devices,
                gpus: devices.gpus,
                fleet_group: Some(format!("{id}/{group}")),
            },
            exclusive,
        })
    }

    /// Starts `record` and switches the route to it. Exclusive (`exclusive` set and an old
    /// container serving): halt the old one first; on failure stop the new one, resume the old
    /// one and point the route back at it. The gap is logged and returned (on failure, it is
    /// in the reason).
    pub(super) async fn exclusive_switch(
        &mut self,
        fleet: FleetId,
        group: &str,
        record: &ReleaseRecord,
        route: &str,
        Prepared { attach, exclusive }: Prepared,
        old: Option<&Serving>,
    ) -> Result<Switched, Failed> {
        let halted = match old {
            Some(old) if exclusive => {
                info!(%fleet, %group, container = %old.container_id, "fleet: exclusive switch: halting the serving container before the new one starts");
                if let Err(e) = self.runtime.halt(&old.container_id).await {
                    return Err(Failed {
                        phase: Phase::Failed,
                        reason: format!(
                            "cannot halt the serving container for an exclusive switch: {e}; nothing was started"
                        ),
                        refused: false,
                    });
                }
                Some((old, Instant::now()))
            }
            _ => None,
        };
        let started = self
            .start_healthy(fleet, group, record, route, attach)
            .await;
        let switched = match started {
            Ok((container, addr)) => {
                self.switch((fleet, group), route, &container, addr, old)
                    .await
            }
            Err(e) => Err(e),
        };
        match (switched, halted) {
            (Ok((container, addr, url)), halted) => {
                let gap = halted.map(|(_, since)| since.elapsed());
                if let Some(gap) = gap {
                    info!(%fleet, %group, %route, gap_ms = gap.as_millis(), "fleet: exclusive switch done; the app was down this long");
                }
                Ok(Switched {
                    container,
                    addr,
                    url,
                    gap,
                })
            }
            (Err(failed), None) => Err(failed),
            (Err(mut failed), Some((old, since))) => {
                let resumed = self.runtime.resume(&old.container_id).await;
                let gap = since.elapsed();
                match resumed {
                    Ok(addr) => {
                        self.published.insert(old.container_id.clone(), addr);
                        if let Some(tunnel) = &self.tunnel {
                            spawn_register(tunnel, &old.route, addr);
                        }
                        warn!(%fleet, %group, gap_ms = gap.as_millis(), "fleet: exclusive switch failed; the old container resumed");
                        failed.reason = format!(
                            "{}; the serving release was halted for the switch and resumed after {}",
                            failed.reason,
                            millis(gap)
                        );
                    }
                    Err(e) => {
                        warn!(%fleet, %group, "fleet: exclusive switch failed and the old container does not resume: {e}");
                        failed.reason = format!(
                            "{}; the serving release was halted for the switch and does not resume: {e}",
                            failed.reason
                        );
                    }
                }
                Err(failed)
            }
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
