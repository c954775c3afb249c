//! Deployments: the provider's business logic between a verified request and the Docker
//! engine and the tunnel. Deploy is admission → image (local or pulled, with progress) →
//! sandboxed start → readiness → persisted record → route registration; each failure undoes
//! what was done before it, so nothing is left half-deployed. A deployment that cannot be
//! published (no gateway, tunnel down) still runs: its answer says why it has no URL.
//!
//! - `state`: the persisted records; `ops`: stop, status, list, logs; `publish`: the route
//!   at the gateway and the URL it gives; `reconcile`: what the daemon does at start with the
//!   containers Docker still has; `attach`: granted devices and named volumes, decided before
//!   any container exists; `enforce`: the periodic check that halts the users of a volume
//!   over its share; `estop`: a fleet's `estop --all` halts them all (kept) and refuses new
//!   deploys until resume.

mod attach;
mod enforce;
mod estop;
mod ops;
mod publish;
mod reconcile;
mod state;
mod volume_ops;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Firewall;
use peercompute_identity::PeerId;
use peercompute_runtime::{Admission, ContainerSpec, DockerRuntime, ImageError, Limits, Resources};
use peercompute_tunnel_proto::{
    DeployProgress, DeployRequest, DeployResponse, DeployStage, DeploymentState, ErrorCode,
    ErrorResponse,
};
use tokio::sync::mpsc;
use tracing::info;

use crate::admin::Telemetry;
use crate::devices::DeviceGrants;
use crate::tunnel::TunnelHandle;
use crate::volumes::{VolumeSettings, Volumes};
pub(crate) use attach::volume_error;
pub(crate) use estop::DeployHalt;
pub(crate) use ops::log_stream;
pub use reconcile::ReconcileReport;
pub use state::StateError;
use state::{Record, Store};
#[cfg(feature = "testsupport")]
pub(crate) use state::{Record as StateRecord, Store as StateStore};

/// Default CPU of a deployment that asks for none, in millicores.
pub const DEFAULT_CPU_MILLIS: u32 = 500;
/// Default memory of a deployment that asks for none.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;

/// Knobs of the deployment manager.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub limits: Limits,
    /// How long a container may take to accept connections.
    pub ready_timeout: Duration,
}

/// The deployment manager shared by every control stream.
#[derive(Debug)]
pub(crate) struct Deployments {
    runtime: Option<DockerRuntime>,
    tunnel: Option<TunnelHandle>,
    admission: Mutex<Admission>,
    /// Shared with the registration tasks, which record URLs as gateways confirm them.
    store: Arc<Mutex<Store>>,
    me: PeerId,
    /// The provider label of the containers (`crate::label`): stable across key rotations.
    label: PeerId,
    ready_timeout: Duration,
    firewall: Firewall,
    /// The daemon's one volume ledger (the fleet shares it).
    volumes: Arc<Volumes>,
    /// What the machine's owner grants.
    devices: DeviceGrants,
    /// Where imports are spooled and checked (`<home>/state/spool`).
    spool_dir: std::path::PathBuf,
    /// Deploy id → the devices it asked for, from admission until it is recorded or fails.
    devices_in_flight: Mutex<std::collections::BTreeMap<String, Vec<String>>>,
    /// Deploy outcomes, durations and pulled bytes, for the admin metrics.
    telemetry: Arc<Telemetry>,
    /// A fleet's `estop --all` in force here (its reason): new deploys are refused.
    estop: estop::InForce,
}

/// What [`Deployments::open_parts`] needs.
#[derive(Debug)]
pub(crate) struct DeployParts<'a> {
    pub(crate) state_dir: &'a Path,
    pub(crate) runtime: Option<DockerRuntime>,
    pub(crate) tunnel: Option<TunnelHandle>,
    pub(crate) me: PeerId,
    /// The daemon's provider label (`crate::label`): on its containers and volumes.
    pub(crate) label: PeerId,
    pub(crate) settings: &'a DeploySettings,
    pub(crate) firewall: Firewall,
    /// `--max-volumes-size`, `--volume-check-interval`.
    pub(crate) volumes: VolumeSettings,
    /// The owner's device grants.
    pub(crate) devices: DeviceGrants,
    pub(crate) telemetry: Arc<Telemetry>,
}

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse {
        code,
        message: message.into(),
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Deployments {
    /// Opens the deployments and the volume ledger of `state_dir`.
    pub(crate) fn open_parts(parts: DeployParts<'_>) -> Result<Self, StateError> {
        let volumes = Volumes::open(parts.state_dir, &parts.label, parts.volumes)?;
        Ok(Self {
            runtime: parts.runtime,
            tunnel: parts.tunnel,
            admission: Mutex::new(Admission::new(parts.settings.limits)),
            store: Arc::new(Mutex::new(Store::open(parts.state_dir)?)),
            me: parts.me,
            label: parts.label,
            ready_timeout: parts.settings.ready_timeout,
            firewall: parts.firewall,
            volumes: Arc::new(volumes),
            devices: parts.devices,
            spool_dir: parts.state_dir.join("spool"),
            devices_in_flight: Mutex::default(),
            telemetry: parts.telemetry,
            estop: estop::InForce::default(),
        })
    }

    /// Deployments by state: `halted` when the provider stopped it (a volume over its share),
    /// else its container's state as the engine last listed it (`running`, `exited`,
    /// `restarting`, …), `missing` when the engine has no such container, `unknown` while the
    /// engine has not been listed.
    pub(crate) fn state_counts(
        &self,
        engine: Option<&std::collections::HashMap<String, String>>,
    ) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::from([("running".to_owned(), 0)]);
        for record in self.store().all() {
            let state = if record.stopped_reason.is_some() {
                "halted"
            } else {
                match engine {
                    Some(states) => states
                        .get(&record.container_id)
                        .map_or("missing", String::as_str),
                    None => "unknown",
                }
            };
            *counts.entry(state.to_owned()).or_default() += 1;
        }
        counts
    }

    /// The volume ledger, shared with the fleet.
    pub(crate) fn volumes(&self) -> Arc<Volumes> {
        self.volumes.clone()
    }

    fn runtime(&self) -> Result<&DockerRuntime, ErrorResponse> {
        self.runtime.as_ref().ok_or_else(|| {
            error(
                ErrorCode::Runtime,
                "this provider has no Docker engine available; its operator must start Docker and restart peercomputed",
            )
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a deploy for `owner`, reporting progress on `progress`; its outcome and duration
    /// are counted.
    pub(crate) async fn deploy(
        &self,
        owner: PeerId,
        req: DeployRequest,
        progress: mpsc::Sender<DeployProgress>,
    ) -> Result<DeployResponse, ErrorResponse> {
        let started = std::time::Instant::now();
        let result = self.deploy_counted(owner, req, progress).await;
        self.telemetry.deploy_done(
            result.as_ref().map(|_| ()).map_err(|e| e.code),
            started.elapsed(),
        );
        result
    }

    async fn deploy_counted(
        &self,
        owner: PeerId,
        req: DeployRequest,
        progress: mpsc::Sender<DeployProgress>,
    ) -> Result<DeployResponse, ErrorResponse> {
        let runtime = self.runtime()?;
        self.refuse_while_stopped()?;
        if self.firewall == Firewall::Install {
            // Before every start: cheap, and it puts back rules a `nft flush ruleset` removed.
            peercompute_runtime::install_egress_firewall()
                .await
                .map_err(|e| {
                    error(
                        ErrorCode::Runtime,
                        format!(
                            "this provider cannot keep containers off its own network, so it starts none: {e}. Its operator can also run peercomputed with --firewall off to accept that"
                        ),
                    )
                })?;
        }
        let id = new_id();
        let name = match &req.name {
            Some(n) => n.clone(),
            None => default_name(&req.image, &id),
        };
        if let Some(existing) = self.store().by_name(&name) {
            return Err(error(
                ErrorCode::BadRequest,
                format!(
                    "the name `{name}` is used by deployment {} on this provider: stop it or pick another --name",
                    existing.id
                ),
            ));
        }
        let resources = Resources {
            cpu_millis: req.cpu_millis.unwrap_or(DEFAULT_CPU_MILLIS),
            memory_bytes: req.memory_bytes.unwrap_or(DEFAULT_MEMORY_BYTES),
        };
        self.admission()
            .admit(&id, resources)
            .map_err(|e| error(ErrorCode::LimitExceeded, e.to_string()))?;
        let result = match self.reserve_attachments(&owner, &id, &name, &req) {
            Ok(reserved) => {
                let admitted = Admitted {
                    id: &id,
                    name: &name,
                    resources,
                    reserved: &reserved,
                };
                self.deploy_admitted(runtime, owner, admitted, &req, &progress)
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.admission().release(&id);
        }
        self.settle_devices(&id);
        result
    }

    async fn deploy_admitted(
        &self,
        runtime: &DockerRuntime,
        owner: PeerId,
        admitted: Admitted<'_>,
        req: &DeployRequest,
        progress: &mpsc::Sender<DeployProgress>,
    ) -> Result<DeployResponse, ErrorResponse> {
        let Admitted {
            id,
            name,
            resources,
            reserved,
        } = admitted;
        let say = |stage, message: String| {
            let _ = progress.try_send(DeployProgress {
                stage,
                message,
                layer: None,
                current: None,
                total: None,
            });
        };
        say(
            DeployStage::Pulling,
            format!("looking for image {}", req.image),
        );
        let pull_progress = progress.clone();
        let telemetry = self.telemetry.clone();
        // Each layer's size, counted once when the engine says it is downloaded.
        let mut sizes = std::collections::HashMap::<String, u64>::new();
        runtime
            .ensure_image(&req.image, move |p| {
                if let (Some(layer), Some(total)) = (&p.layer, p.total) {
                    sizes.insert(layer.clone(), total);
                }
                if p.status == "Download complete"
                    && let Some(total) = p.layer.as_ref().and_then(|l| sizes.remove(l))
                {
                    telemetry.pulled(total);
                }
                // Dropped when the client reads slowly: progress is advisory.
                let _ = pull_progress.try_send(DeployProgress {
                    stage: DeployStage::Pulling,
                    message: p.status,
                    layer: p.layer,
                    current: p.current,
                    total: p.total,
                });
            })
            .await
            .map_err(image_error)
            .inspect_err(|_| self.volumes.cancel(&reserved.grants))?;

        for note in attach::notes(req) {
            say(DeployStage::Starting, note);
        }
        if !req.volumes.is_empty() {
            say(
                DeployStage::Starting,
                attach::volumes_message(&reserved.grants),
            );
        }
        let attach = self
            .attach(runtime, reserved, req)
            .await
            .inspect_err(|_| self.volumes.cancel(&reserved.grants))?;
        say(
            DeployStage::Starting,
            "starting a sandboxed container".into(),
        );
        let spec = ContainerSpec {
            deployment_id: id.to_owned(),
            provider: self.label.to_string(),
            owner: owner.to_string(),
            name: name.to_owned(),
            image: req.image.clone(),
            port: req.port,
            env: deployment_env(req, &self.me, id, name),
            cpu_millis: resources.cpu_millis,
            memory_bytes: resources.memory_bytes,
            attach,
        };
        let started = runtime
            .start(&spec)
            .await
            .map_err(|e| error(ErrorCode::Runtime, e.to_string()))?;
        let record = Record {
            id: id.to_owned(),
            name: name.to_owned(),
            image: req.image.clone(),
            owner: owner.to_string(),
            container_id: started.id.clone(),
            port: req.port,
            cpu_millis: resources.cpu_millis,
            memory_bytes: resources.memory_bytes,
            url: String::new(),
            created_at: now_secs(),
            volumes: reserved.grants.iter().map(|g| g.name.clone()).collect(),
            devices: req.devices.clone(),
            stopped_reason: None,
        };
        // Recorded before anything can fail, so a crash from here on leaves no orphan.
        let saved = self.store().put(record.clone());
        if let Err(e) = saved {
            let _ = runtime.stop(&started.id).await;
            return Err(error(ErrorCode::Internal, e.to_string()));
        }
        let container_id = started.id.clone();
        let undo = |e: ErrorResponse| async move {
            let _ = runtime.stop(&container_id).await;
            let _ = self.store().remove(id);
            e
        };

        say(
            DeployStage::Waiting,
            format!("waiting for port {} to accept connections", req.port),
        );
        if let Err(e) = runtime
            .wait_ready(&started.id, started.addr, self.ready_timeout)
            .await
        {
            let lines = e.logs().join("\n");
            let msg = if lines.is_empty() {
                format!("{e}")
            } else {
                format!("{e}\nlast log lines:\n{lines}")
            };
            return Err(undo(error(ErrorCode::Runtime, msg)).await);
        }

        if self.tunnel.is_some() {
            say(
                DeployStage::Registering,
                "publishing the route at the gateway".into(),
            );
        }
        let published = match self.publish(id, name, started.addr).await {
            Ok(published) => published,
            Err(e) => return Err(undo(e).await),
        };
        match &published {
            Ok(url) => info!(deployment = %id, %name, image = %req.image, %owner, %url, "deployed"),
            Err(no_url) => {
                info!(deployment = %id, %name, image = %req.image, %owner, addr = %started.addr, "deployed; {no_url}")
            }
        }
        let (url, no_url) = match published {
            Ok(url) => (Some(url), None),
            Err(reason) => (None, Some(reason)),
        };
        Ok(DeployResponse {
            id: id.to_owned(),
            name: name.to_owned(),
            url,
            peer: self.me.to_string(),
            image: req.image.clone(),
            status: DeploymentState::Running,
            no_url,
        })
    }
}

/// A deploy past admission: its id, name, resources, devices and volume shares.
struct Admitted<'a> {
    id: &'a str,
    name: &'a str,
    resources: Resources,
    reserved: &'a attach::Reserved,
}

/// The request's environment plus what the app may want to show about where it runs
/// (`PEERCOMPUTE_PROVIDER`, `PEERCOMPUTE_DEPLOYMENT`, `PEERCOMPUTE_NAME`); a request cannot
/// set these itself.
pub(crate) fn deployment_env(
    req: &DeployRequest,
    me: &PeerId,
    id: &str,
    name: &str,
) -> Vec<(String, String)> {
    let ours = [
        ("PEERCOMPUTE_PROVIDER", me.to_string()),
        ("PEERCOMPUTE_DEPLOYMENT", id.to_owned()),
        ("PEERCOMPUTE_NAME", name.to_owned()),
    ];
    let mut env: Vec<(String, String)> = req
        .env
        .iter()
        .filter(|e| !ours.iter().any(|(k, _)| *k == e.key))
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    env.extend(ours.into_iter().map(|(k, v)| (k.to_owned(), v)));
    env
}

fn image_error(e: ImageError) -> ErrorResponse {
    let code = match &e {
        ImageError::NotFound { .. } | ImageError::InvalidReference(_) => ErrorCode::ImageNotFound,
        ImageError::NoVariantForHost { .. } | ImageError::WrongPlatform { .. } => {
            ErrorCode::ImagePlatform
        }
        _ => ErrorCode::Runtime,
    };
    error(code, e.to_string())
}

/// 12 random hex characters.
fn new_id() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `registry/ns/nginx:1.27` → `nginx-<4 hex of id>`, always a valid route name.
fn default_name(image: &str, id: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let base: String = last
        .split([':', '@'])
        .next()
        .unwrap_or("app")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "app" } else { base };
    format!("{base}-{}", &id[..4.min(id.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_labels() {
        for image in [
            "nginx:1.27",
            "ghcr.io/a/B_c:latest",
            "x@sha256:abcd",
            "---",
            "localhost:5000/demo",
        ] {
            let name = default_name(image, "a1b2c3d4e5f6");
            assert!(
                peercompute_tunnel_proto::validate_name(&name).is_ok(),
                "{image} → {name}"
            );
        }
        assert_eq!(default_name("nginx:1.27", "a1b2c3"), "nginx-a1b2");
        assert_eq!(default_name("localhost:5000/demo", "ffff00"), "demo-ffff");
    }
}
