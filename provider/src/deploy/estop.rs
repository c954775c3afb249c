//! A fleet's `peerctl fleet estop --all` also halts this machine's deployments outside the
//! fleet: each one's restart policy is turned off and its container SIGKILLed (kept, as the
//! fleet's are), its route withdrawn, and its record says `halted: emergency stop: <reason>`
//! (`status`, `ls`). A new deploy is refused while that stop is in force, with an error that
//! says so. When the stop is lifted (resume), the halted deployments start again (restart
//! policy back to on-failure) and their routes are registered again. The fleet's enforcer
//! drives it through [`DeployHalt`], a handle it gets at start.

use std::sync::{Arc, Mutex};

use futures::future::join_all;
use peercompute_runtime::{DockerRuntime, RestartAfter};
use peercompute_tunnel_proto::{ErrorCode, ErrorResponse};
use tracing::{info, warn};

use super::publish::record_url;
use super::state::Store;
use super::{Deployments, error};
use crate::tunnel::TunnelHandle;

/// How the record of a deployment an e-stop halted begins.
pub(crate) const ESTOP_REASON: &str = "emergency stop";

/// The fleet's e-stop `--all` as the deployments see it: its reason while in force.
pub(crate) type InForce = Arc<Mutex<Option<String>>>;

/// What the fleet's enforcer needs to halt and restart the deployments.
#[derive(Debug, Clone)]
pub(crate) struct DeployHalt {
    runtime: Option<DockerRuntime>,
    tunnel: Option<TunnelHandle>,
    store: Arc<Mutex<Store>>,
    in_force: InForce,
}

impl Deployments {
    /// The handle the fleet's e-stop enforcer halts these deployments through.
    pub(crate) fn estop_handle(&self) -> DeployHalt {
        DeployHalt {
            runtime: self.runtime.clone(),
            tunnel: self.tunnel.clone(),
            store: self.store.clone(),
            in_force: self.estop.clone(),
        }
    }

    /// Refuses a deploy while a fleet's `estop --all` is in force.
    pub(super) fn refuse_while_stopped(&self) -> Result<(), ErrorResponse> {
        match self
            .estop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
        {
            Some(reason) => Err(error(
                ErrorCode::Runtime,
                format!(
                    "this machine is under a fleet emergency stop (estop --all: {reason}); new deployments are refused until an operator runs `peerctl fleet resume`"
                ),
            )),
            None => Ok(()),
        }
    }
}

impl DeployHalt {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Halts (in parallel) every deployment not halted yet, for the stop `reason`; how many.
    pub(crate) async fn halt_all_for_estop(&self, reason: &str) -> usize {
        *self.in_force.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
        let Some(runtime) = &self.runtime else {
            return 0;
        };
        let running: Vec<_> = self
            .store()
            .all()
            .filter(|r| r.stopped_reason.is_none())
            .cloned()
            .collect();
        let why = format!("{ESTOP_REASON}: {reason}");
        let halted = join_all(running.iter().map(|record| async {
            let withdraw = async {
                if let Some(tunnel) = &self.tunnel {
                    tunnel.unregister(&record.name).await;
                }
            };
            let kill = async {
                if let Err(e) = runtime
                    .set_restart_policy(&record.container_id, RestartAfter::Never)
                    .await
                {
                    warn!(deployment = %record.id, "emergency stop: cannot turn its restart policy off: {e}");
                }
                runtime.kill_now(&record.container_id).await
            };
            let (killed, ()) = tokio::join!(kill, withdraw);
            if let Err(e) = killed {
                warn!(deployment = %record.id, "emergency stop: cannot kill: {e}");
            }
            if let Err(e) = self.store().set_stopped_reason(&record.id, Some(why.clone())) {
                warn!(deployment = %record.id, "emergency stop: cannot record it: {e}");
            }
            info!(deployment = %record.id, name = %record.name, "halted: {why}");
        }))
        .await;
        halted.len()
    }

    /// No `--all` stop in force: deployments an e-stop halted start again; how many.
    pub(crate) async fn lift_estop(&self) -> usize {
        *self.in_force.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let Some(runtime) = &self.runtime else {
            return 0;
        };
        let halted: Vec<_> = self
            .store()
            .all()
            .filter(|r| {
                r.stopped_reason
                    .as_deref()
                    .is_some_and(|w| w.starts_with(ESTOP_REASON))
            })
            .cloned()
            .collect();
        for record in &halted {
            let id = &record.container_id;
            let started = match runtime.set_restart_policy(id, RestartAfter::Failure).await {
                Ok(()) => runtime.resume(id).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let addr = match started {
                Ok(addr) => addr,
                Err(e) => {
                    warn!(deployment = %record.id, "resumed, but its container does not start: {e}; stop it and deploy again");
                    continue;
                }
            };
            if let Err(e) = self.store().set_stopped_reason(&record.id, None) {
                warn!(deployment = %record.id, "cannot record the resume: {e}");
            }
            info!(deployment = %record.id, name = %record.name, %addr, "resumed after the emergency stop");
            if let Some(tunnel) = self.tunnel.clone() {
                let (store, id, name) =
                    (self.store.clone(), record.id.clone(), record.name.clone());
                tokio::spawn(async move {
                    match tunnel
                        .register(&name, &addr.ip().to_string(), addr.port())
                        .await
                    {
                        Ok(url) => record_url(&store, &id, &name, &url),
                        Err(e) => warn!(deployment = %id, route = %name, "no public URL: {e}"),
                    }
                });
            }
        }
        halted.len()
    }
}
