//! Container lifecycle on the engine: [`DockerRuntime::start`] creates and starts a
//! sandboxed container and reads back the 127.0.0.1 port the engine picked;
//! [`stop`](DockerRuntime::stop) stops and removes it (idempotently);
//! [`halt`](DockerRuntime::halt) stops it but keeps it and [`resume`](DockerRuntime::resume)
//! starts it again (a provider halts the users of a volume over its share);
//! [`kill_now`](DockerRuntime::kill_now) SIGKILLs it and keeps it, after
//! [`set_restart_policy`](DockerRuntime::set_restart_policy) made sure nothing restarts it
//! (an emergency stop);
//! [`addr`](DockerRuntime::addr) reads its current published address again — the engine
//! picks a new ephemeral port each time the restart policy restarts a container.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bollard::models::{
    ContainerInspectResponse, ContainerUpdateBody, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, RemoveContainerOptions,
    StopContainerOptions,
};

use crate::engine::{DockerRuntime, EngineError, engine_message, engine_status};
use crate::logs::format_log_lines;
use crate::ready::READY_LOG_LINES;
use crate::sandbox::{PUBLISH_IP, create_body, on_failure, port_key};
use crate::spec::{ContainerSpec, SpecError};
use crate::status::ContainerState;

/// A container operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The spec was refused before reaching the engine.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The sandbox network is missing and could not be made, or is not ours.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The image is not on this host.
    #[error("image {image} is not on this host: fetch it first (ensure_image)")]
    ImageMissing {
        /// The image reference.
        image: String,
    },
    /// A container with this name exists already.
    #[error("a container named {name} already exists: stop the deployment that owns it first")]
    NameInUse {
        /// The container name.
        name: String,
    },
    /// No such container.
    #[error("container {container} does not exist (stopped and removed, or never started)")]
    NotFound {
        /// The id or name asked for.
        container: String,
    },
    /// GPUs were asked for and the engine has no NVIDIA container runtime; the container
    /// was removed again.
    #[error(
        "container {container} asks for GPUs and this engine has no NVIDIA container runtime: install nvidia-container-toolkit, or deploy without GPUs"
    )]
    NoGpuRuntime {
        /// The container name.
        container: String,
    },
    /// The engine started the container but did not publish its port.
    #[error("container {container} runs but its port {port}/tcp is not published on 127.0.0.1")]
    NotPublished {
        /// The container id.
        container: String,
        /// The container port.
        port: u16,
    },
    /// It stopped right after starting (and was removed); its output says why.
    #[error(
        "container {container} is {state} right after starting (exit code {}{}); its last log lines:\n{}",
        .exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        if *.oom_killed { ", killed for exceeding its memory limit" } else { "" },
        format_log_lines(.logs)
    )]
    Exited {
        /// The container name.
        container: String,
        /// `exited`, `restarting` or `dead`.
        state: ContainerState,
        /// Its exit code.
        exit_code: Option<i64>,
        /// Whether the OOM killer ended it.
        oom_killed: bool,
        /// Its last log lines.
        logs: Vec<String>,
    },
    /// Any other engine failure.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What the engine does when a container exits (see
/// [`DockerRuntime::set_restart_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartAfter {
    /// Never restarted (`no`): an emergency-stopped container stays down.
    Never,
    /// Restarted after a failure, a bounded number of times (`on-failure`, the sandbox's).
    Failure,
}

/// A container that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedContainer {
    /// The engine's container id.
    pub id: String,
    /// The container name (`peercompute-<name>-<deployment id prefix>`).
    pub name: String,
    /// Where the container port is published: 127.0.0.1 and an ephemeral port.
    pub addr: SocketAddr,
}

impl DockerRuntime {
    /// Creates and starts the container of `spec`, always sandboxed (see the `sandbox`
    /// module), and returns its id and the 127.0.0.1 address its port is published on. The
    /// image must be present (see [`ensure_image`](Self::ensure_image)). If starting fails, the
    /// created container is removed again.
    pub async fn start(&self, spec: &ContainerSpec) -> Result<StartedContainer, ContainerError> {
        spec.validate()?;
        self.ensure_sandbox_network().await?;
        let name = spec.container_name();
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), create_body(spec, &self.policy))
            .await
            .map_err(|source| match engine_status(&source) {
                Some(404) => ContainerError::ImageMissing {
                    image: spec.image.clone(),
                },
                Some(409) => ContainerError::NameInUse { name: name.clone() },
                _ => engine_error("create container", &name, source),
            })?;
        for warning in &created.warnings {
            tracing::warn!(container = %name, deployment = %spec.deployment_id, %warning, "engine warning on create");
        }
        let id = created.id;
        let started = self.start_created(&id, &name, spec.port).await;
        match started {
            Ok(addr) => {
                tracing::info!(container = %name, deployment = %spec.deployment_id, %addr, "container started");
                Ok(StartedContainer { id, name, addr })
            }
            Err(err) => {
                if let Err(cleanup) = self.remove(&id).await {
                    tracing::warn!(container = %name, error = %cleanup, "could not remove a container that failed to start");
                }
                Err(err)
            }
        }
    }

    /// Starts the created (or halted) container `id` and reads back its published address;
    /// when it is not published, says why (still running without it, or exited with its
    /// last log lines).
    async fn start_created(
        &self,
        id: &str,
        name: &str,
        port: u16,
    ) -> Result<SocketAddr, ContainerError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|source| match engine_status(&source) {
                Some(404) => ContainerError::NotFound {
                    container: id.to_owned(),
                },
                _ if engine_message(&source).contains("could not select device driver") => {
                    ContainerError::NoGpuRuntime {
                        container: name.to_owned(),
                    }
                }
                _ => engine_error("start container", name, source),
            })?;
        let inspect = self.inspect(id).await?;
        if let Some(addr) = published_addr(&inspect, port) {
            return Ok(addr);
        }
        // No port: it most likely exited already (ports are unbound while it is down).
        let state = inspect.state.unwrap_or_default();
        let status = state.status.map(ContainerState::from);
        if status == Some(ContainerState::Running) {
            return Err(ContainerError::NotPublished {
                container: name.to_owned(),
                port,
            });
        }
        Err(ContainerError::Exited {
            container: name.to_owned(),
            state: status.unwrap_or(ContainerState::Unknown),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            logs: self.last_lines(id, READY_LOG_LINES).await,
        })
    }

    /// Stops `container` (SIGTERM, then SIGKILL after the policy's grace period) and removes
    /// it with its anonymous volumes. A container that is already gone is not an error.
    pub async fn stop(&self, container: &str) -> Result<(), ContainerError> {
        match self.stop_process(container).await {
            Ok(()) => {}
            Err(ContainerError::NotFound { .. }) => return Ok(()),
            Err(err) => return Err(err),
        }
        self.remove(container).await
    }

    /// Stops `container` like [`stop`](Self::stop) but keeps it, with its volumes, its
    /// labels and its writable layer, so [`resume`](Self::resume) can start it again (the
    /// restart policy does not restart a container stopped this way). Already stopped is
    /// fine; a container that does not exist is [`ContainerError::NotFound`].
    pub async fn halt(&self, container: &str) -> Result<(), ContainerError> {
        self.stop_process(container).await?;
        tracing::info!(%container, "container halted");
        Ok(())
    }

    /// SIGTERM, then SIGKILL after the policy's grace period; stopped already is fine.
    async fn stop_process(&self, container: &str) -> Result<(), ContainerError> {
        let grace = i32::try_from(self.policy.stop_grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions {
            t: Some(grace),
            ..Default::default()
        };
        match self.docker.stop_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(source) => match engine_status(&source) {
                // 304: already stopped.
                Some(304) => Ok(()),
                Some(404) => Err(ContainerError::NotFound {
                    container: container.to_owned(),
                }),
                _ => Err(engine_error("stop container", container, source)),
            },
        }
    }

    /// Starts a container [`halt`](Self::halt)ed before and returns where it is published
    /// now (the engine picks a new 127.0.0.1 port at each start). Running already is fine.
    /// If it exits right away, the error carries its last log lines; it is not removed.
    pub async fn resume(&self, container: &str) -> Result<SocketAddr, ContainerError> {
        let inspect = self.inspect(container).await?;
        let port = container_port(&inspect).ok_or_else(|| ContainerError::NotPublished {
            container: container.to_owned(),
            port: 0,
        })?;
        let name = inspect
            .name
            .as_deref()
            .map_or(container, |n| n.trim_start_matches('/'))
            .to_owned();
        let addr = self.start_created(container, &name, port).await?;
        tracing::info!(%container, %addr, "container resumed");
        Ok(addr)
    }

    /// Kills `container` at once (SIGKILL, no grace) and keeps it, with its volumes, labels
    /// and writable layer (an emergency stop). Set its restart policy to
    /// [`RestartAfter::Never`] first ([`set_restart_policy`](Self::set_restart_policy)), so
    /// nothing (not even the engine after a reboot) starts it again. Not running, or gone
    /// already, is fine.
    pub async fn kill_now(&self, container: &str) -> Result<(), ContainerError> {
        let options = KillContainerOptions {
            signal: "SIGKILL".to_owned(),
        };
        match self.docker.kill_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            // 404: gone; 409: not running.
            Err(source) if matches!(engine_status(&source), Some(404 | 409)) => Ok(()),
            Err(source) => Err(engine_error("kill container", container, source)),
        }
    }

    /// Changes what the engine does when `container` exits: [`RestartAfter::Never`] before an
    /// emergency stop kills it, [`RestartAfter::Failure`] (the sandbox's policy) before it is
    /// started again. A container that does not exist is [`ContainerError::NotFound`].
    pub async fn set_restart_policy(
        &self,
        container: &str,
        policy: RestartAfter,
    ) -> Result<(), ContainerError> {
        let restart_policy = match policy {
            RestartAfter::Never => RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            },
            RestartAfter::Failure => on_failure(&self.policy),
        };
        let body = ContainerUpdateBody {
            restart_policy: Some(restart_policy),
            ..Default::default()
        };
        self.docker
            .update_container(container, body)
            .await
            .map_err(|source| match engine_status(&source) {
                Some(404) => ContainerError::NotFound {
                    container: container.to_owned(),
                },
                _ => engine_error("update container", container, source),
            })
    }

    /// Force-removes `container` and its anonymous volumes; gone already is fine.
    pub(crate) async fn remove(&self, container: &str) -> Result<(), ContainerError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(source) if engine_status(&source) == Some(404) => Ok(()),
            Err(source)
                if engine_status(&source) == Some(409)
                    && engine_message(&source).contains("already in progress") =>
            {
                Ok(())
            }
            Err(source) => Err(engine_error("remove container", container, source)),
        }
    }

    /// Where `container` is published now: 127.0.0.1 and the port the engine picked for
    /// its (first exposed) container port at its latest start; `None` while it is not
    /// running. Read it again after a restart: the engine picks a new port each time.
    pub async fn addr(&self, container: &str) -> Result<Option<SocketAddr>, ContainerError> {
        let inspect = self.inspect(container).await?;
        Ok(container_port(&inspect).and_then(|port| published_addr(&inspect, port)))
    }

    pub(crate) async fn inspect(
        &self,
        container: &str,
    ) -> Result<ContainerInspectResponse, ContainerError> {
        self.docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(|source| match engine_status(&source) {
                Some(404) => ContainerError::NotFound {
                    container: container.to_owned(),
                },
                _ => engine_error("inspect container", container, source),
            })
    }
}

pub(crate) fn engine_error(
    operation: &'static str,
    target: &str,
    source: bollard::errors::Error,
) -> ContainerError {
    ContainerError::Engine(EngineError {
        operation,
        target: target.to_owned(),
        source,
    })
}

/// The container port of an inspected container of ours.
fn container_port(inspect: &ContainerInspectResponse) -> Option<u16> {
    exposed_port(
        inspect
            .config
            .as_ref()
            .and_then(|c| c.exposed_ports.as_ref()),
    )
}

/// The container port a container of ours exposes (it exposes exactly one, `PORT/tcp`).
pub(crate) fn exposed_port(ports: Option<&Vec<String>>) -> Option<u16> {
    ports?.first()?.strip_suffix("/tcp")?.parse().ok()
}

/// The 127.0.0.1 host address the engine bound `port` to, if it is running and bound.
pub(crate) fn published_addr(inspect: &ContainerInspectResponse, port: u16) -> Option<SocketAddr> {
    let bindings = inspect
        .network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&port_key(port))?
        .as_ref()?;
    bindings.iter().find_map(|binding| {
        let ip: Ipv4Addr = binding.host_ip.as_deref()?.parse().ok()?;
        let host_port: u16 = binding.host_port.as_deref()?.parse().ok()?;
        (ip.to_string() == PUBLISH_IP && host_port != 0)
            .then_some(SocketAddr::V4(SocketAddrV4::new(ip, host_port)))
    })
}
