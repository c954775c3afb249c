//! What a container is doing: [`DockerRuntime::status`] reports its state, image, start
//! time, restarts, exit and (while running) its CPU and memory use;
//! [`DockerRuntime::list_managed`] finds every container this runtime created, by the
//! `peercompute.managed` label, with the deployment its labels name and its current
//! 127.0.0.1 address, so a restarted daemon can reconcile.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::SystemTime;

use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum};
use bollard::query_parameters::StatsOptions;
use futures_util::StreamExt;

use crate::container::{ContainerError, engine_error, exposed_port, published_addr};
use crate::engine::{DockerRuntime, all_containers_where};
use crate::spec::{LABEL_DEPLOYMENT, LABEL_MANAGED, LABEL_NAME, LABEL_OWNER};
use crate::time::parse_rfc3339;
use crate::usage::ResourceUsage;

/// A container's life-cycle state, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Exited and about to be restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited (and not restarted).
    Exited,
    /// Dead (the engine failed to remove or stop it).
    Dead,
    /// A state this crate does not know.
    Unknown,
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        })
    }
}

impl From<ContainerStateStatusEnum> for ContainerState {
    fn from(state: ContainerStateStatusEnum) -> Self {
        match state {
            ContainerStateStatusEnum::CREATED => ContainerState::Created,
            ContainerStateStatusEnum::RUNNING => ContainerState::Running,
            ContainerStateStatusEnum::PAUSED => ContainerState::Paused,
            ContainerStateStatusEnum::RESTARTING => ContainerState::Restarting,
            ContainerStateStatusEnum::REMOVING => ContainerState::Removing,
            ContainerStateStatusEnum::EXITED => ContainerState::Exited,
            ContainerStateStatusEnum::DEAD => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }
}

impl From<ContainerSummaryStateEnum> for ContainerState {
    fn from(state: ContainerSummaryStateEnum) -> Self {
        match state {
            ContainerSummaryStateEnum::CREATED => ContainerState::Created,
            ContainerSummaryStateEnum::RUNNING => ContainerState::Running,
            ContainerSummaryStateEnum::PAUSED => ContainerState::Paused,
            ContainerSummaryStateEnum::RESTARTING => ContainerState::Restarting,
            ContainerSummaryStateEnum::REMOVING => ContainerState::Removing,
            ContainerSummaryStateEnum::EXITED => ContainerState::Exited,
            ContainerSummaryStateEnum::DEAD => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }
}

/// The deployment a managed container belongs to, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentLabels {
    /// `peercompute.deployment`.
    pub deployment_id: String,
    /// `peercompute.owner`.
    pub owner: String,
    /// `peercompute.name`.
    pub name: String,
}

impl DeploymentLabels {
    /// Reads the labels of a container this runtime created; `None` if one is missing.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Self> {
        if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true") {
            return None;
        }
        Some(DeploymentLabels {
            deployment_id: labels.get(LABEL_DEPLOYMENT)?.clone(),
            owner: labels.get(LABEL_OWNER)?.clone(),
            name: labels.get(LABEL_NAME)?.clone(),
        })
    }
}

/// What [`DockerRuntime::status`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    /// The container id.
    pub id: String,
    /// The container name.
    pub name: String,
    /// Life-cycle state.
    pub state: ContainerState,
    /// The image as asked for (`nginx:1.27`).
    pub image: String,
    /// When the container last started; `None` if never.
    pub started_at: Option<SystemTime>,
    /// When it last exited; `None` if never.
    pub finished_at: Option<SystemTime>,
    /// Exit code of the last run (0 while running).
    pub exit_code: Option<i64>,
    /// Whether the kernel's OOM killer ended the last run.
    pub oom_killed: bool,
    /// How many times the restart policy restarted it.
    pub restart_count: u64,
    /// The published 127.0.0.1 address, while running.
    pub addr: Option<SocketAddr>,
    /// The deployment it belongs to; `None` if it is not a managed container.
    pub deployment: Option<DeploymentLabels>,
    /// CPU and memory use; `None` unless running.
    pub usage: Option<ResourceUsage>,
}

/// A container found by [`DockerRuntime::list_managed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    /// The container id.
    pub id: String,
    /// The container name.
    pub name: String,
    /// Its deployment; `None` if a label is missing (then nothing can account for it: stop it).
    pub deployment: Option<DeploymentLabels>,
    /// All its labels.
    pub labels: HashMap<String, String>,
    /// Life-cycle state.
    pub state: ContainerState,
    /// The image as asked for.
    pub image: String,
    /// The published 127.0.0.1 address, while running.
    pub addr: Option<SocketAddr>,
    /// Whether it is on the sandbox network (containers started before it existed are not).
    pub sandboxed: bool,
}

impl DockerRuntime {
    /// The state, image, start time, restarts and (while running) CPU and memory use of
    /// `container`. Reading the use waits for one stats sample from the engine (about 1 s).
    pub async fn status(&self, container: &str) -> Result<ContainerStatus, ContainerError> {
        let inspect = self.inspect(container).await?;
        let state = inspect.state.clone().unwrap_or_default();
        let status = state
            .status
            .map(ContainerState::from)
            .unwrap_or(ContainerState::Unknown);
        let config = inspect.config.clone().unwrap_or_default();
        let labels = config.labels.clone().unwrap_or_default();
        let port = exposed_port(config.exposed_ports.as_ref());
        let usage = if status == ContainerState::Running {
            self.usage(container).await
        } else {
            None
        };
        Ok(ContainerStatus {
            id: inspect.id.clone().unwrap_or_default(),
            name: container_name(inspect.name.as_deref()),
            state: status,
            image: config.image.unwrap_or_default(),
            started_at: state.started_at.as_deref().and_then(parse_rfc3339),
            finished_at: state.finished_at.as_deref().and_then(parse_rfc3339),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            restart_count: inspect
                .restart_count
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            addr: port.and_then(|port| published_addr(&inspect, port)),
            deployment: DeploymentLabels::from_labels(&labels),
            usage,
        })
    }

    /// Every container labelled `peercompute.managed=true`, running or not.
    pub async fn list_managed(&self) -> Result<Vec<ManagedContainer>, ContainerError> {
        let options = all_containers_where("label", format!("{LABEL_MANAGED}=true"));
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| {
                engine_error(
                    "list containers",
                    "labelled peercompute.managed=true",
                    source,
                )
            })?;
        Ok(summaries
            .into_iter()
            .map(|summary| {
                let labels = summary.labels.unwrap_or_default();
                let sandboxed = summary
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref())
                    .is_some_and(|n| n.contains_key(crate::network::SANDBOX_NETWORK));
                let state = summary
                    .state
                    .map(ContainerState::from)
                    .unwrap_or(ContainerState::Unknown);
                let addr = summary.ports.unwrap_or_default().iter().find_map(|p| {
                    let ip: Ipv4Addr = p.ip.as_deref()?.parse().ok()?;
                    (ip == Ipv4Addr::LOCALHOST)
                        .then_some(SocketAddr::V4(SocketAddrV4::new(ip, p.public_port?)))
                });
                ManagedContainer {
                    id: summary.id.unwrap_or_default(),
                    name: container_name(
                        summary
                            .names
                            .as_ref()
                            .and_then(|n| n.first())
                            .map(String::as_str),
                    ),
                    deployment: DeploymentLabels::from_labels(&labels),
                    labels,
                    state,
                    image: summary.image.unwrap_or_default(),
                    addr,
                    sandboxed,
                }
            })
            .collect())
    }

    /// One stats sample; `None` if the engine gives none (the container just exited, …).
    async fn usage(&self, container: &str) -> Option<ResourceUsage> {
        let options = StatsOptions {
            stream: false,
            one_shot: false,
        };
        let mut stats = self.docker.stats(container, Some(options));
        match stats.next().await {
            Some(Ok(sample)) => Some(ResourceUsage::from_stats(&sample)),
            Some(Err(error)) => {
                tracing::debug!(%container, %error, "no stats sample");
                None
            }
            None => None,
        }
    }
}

/// The engine reports names with a leading `/`.
fn container_name(name: Option<&str>) -> String {
    name.unwrap_or_default().trim_start_matches('/').to_owned()
}
