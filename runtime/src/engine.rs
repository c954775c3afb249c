//! The connection to the Docker engine: [`DockerRuntime::connect`] finds the engine the way
//! the `docker` CLI does (`DOCKER_HOST`, else the local socket), pings it, refuses an engine
//! that reports it cannot enforce the sandbox (no seccomp, no pids/memory/swap/CPU limits),
//! and records the host's platform, against which image architectures are checked. The other modules add
//! their operations to [`DockerRuntime`] in their own `impl` blocks; this one also holds
//! the error helpers they share.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::SystemInfo;

use crate::df::DfCache;
use crate::sandbox::SandboxPolicy;

/// The engine's local socket when `DOCKER_HOST` is not set.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// How long connecting and the first ping may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answers at the endpoint, or it is not a Docker engine.
    #[error("no Docker engine answers at {endpoint}: start it or set DOCKER_HOST ({source})")]
    Unreachable {
        /// `DOCKER_HOST` or the default socket.
        endpoint: String,
        /// What the client saw.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine cannot enforce part of the sandbox.
    #[error("the Docker engine at {endpoint} cannot enforce {}: containers would run without their sandbox; enable it (cgroup controllers, seccomp) or use another engine", .missing.join(", "))]
    Unsandboxable {
        /// `DOCKER_HOST` or the default socket.
        endpoint: String,
        /// What it lacks: `seccomp`, `pids limit`, `memory limit`, `swap limit`, `CPU quota`.
        missing: Vec<&'static str>,
    },
    /// The engine did not answer in time.
    #[error(
        "no Docker engine answers at {endpoint} within {timeout:?}: start it or set DOCKER_HOST"
    )]
    Timeout {
        /// `DOCKER_HOST` or the default socket.
        endpoint: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A call to the engine that failed for a reason not classified further.
#[derive(Debug, thiserror::Error)]
#[error("the Docker engine failed to {operation} {target}: {source}")]
pub struct EngineError {
    /// What we asked, e.g. `"create container"`.
    pub operation: &'static str,
    /// What it was about (container, image).
    pub target: String,
    /// The engine's or the client's error.
    #[source]
    pub source: bollard::errors::Error,
}

/// The operating system and CPU architecture of the engine's host, in the image-config
/// vocabulary (`linux`, `amd64`/`arm64`/…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`, …
    pub architecture: String,
}

/// A handle on the Docker engine through which every container is started sandboxed.
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    pub(crate) docker: Docker,
    pub(crate) policy: SandboxPolicy,
    platform: Platform,
    endpoint: String,
    /// The engine's last `system df` answer, shared by clones (see the `df` module).
    pub(crate) df_cache: Arc<tokio::sync::Mutex<DfCache>>,
}

impl DockerRuntime {
    /// Connects with the default [`SandboxPolicy`].
    pub async fn connect() -> Result<Self, ConnectError> {
        Self::connect_with(SandboxPolicy::default()).await
    }

    /// Connects to the engine at `DOCKER_HOST` (or the default local socket), checks that it
    /// answers and reads its platform.
    pub async fn connect_with(policy: SandboxPolicy) -> Result<Self, ConnectError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        Self::connect_to(&endpoint, policy).await
    }

    /// Connects to the engine at `endpoint` (`unix:///path`, `tcp://host:port`), checks
    /// that it answers and reads its platform.
    pub async fn connect_to(endpoint: &str, policy: SandboxPolicy) -> Result<Self, ConnectError> {
        let endpoint = endpoint.to_owned();
        let unreachable = |source| ConnectError::Unreachable {
            endpoint: endpoint.clone(),
            source,
        };
        let docker = Docker::connect_with_host(&endpoint).map_err(unreachable)?;
        let (version, info) = tokio::time::timeout(CONNECT_TIMEOUT, async {
            docker.ping().await?;
            Ok((docker.version().await?, docker.info().await?))
        })
        .await
        .map_err(|_| ConnectError::Timeout {
            endpoint: endpoint.clone(),
            timeout: CONNECT_TIMEOUT,
        })?
        .map_err(unreachable)?;
        let missing = missing_sandbox_features(&info);
        if !missing.is_empty() {
            return Err(ConnectError::Unsandboxable { endpoint, missing });
        }
        let platform = Platform {
            os: version.os.unwrap_or_else(|| "linux".to_owned()),
            architecture: version
                .arch
                .unwrap_or_else(|| go_arch(std::env::consts::ARCH).to_owned()),
        };
        tracing::debug!(%endpoint, os = %platform.os, arch = %platform.architecture, "connected to the Docker engine");
        Ok(DockerRuntime {
            docker,
            policy,
            platform,
            endpoint,
            df_cache: Arc::default(),
        })
    }

    /// Whether the engine still answers a ping within `timeout` (readiness probes).
    pub async fn ping(&self, timeout: Duration) -> Result<(), ConnectError> {
        match tokio::time::timeout(timeout, self.docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(ConnectError::Unreachable {
                endpoint: self.endpoint.clone(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                endpoint: self.endpoint.clone(),
                timeout,
            }),
        }
    }

    /// Where the engine was found.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The engine host's platform.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The sandbox settings applied to every container.
    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    /// Whether the engine has the NVIDIA container runtime (`nvidia` among `info().runtimes`),
    /// without which GPU requests cannot be served.
    pub async fn gpu_runtime_present(&self) -> Result<bool, EngineError> {
        let info = self.docker.info().await.map_err(|source| EngineError {
            operation: "read the system info of",
            target: "the engine".to_owned(),
            source,
        })?;
        Ok(has_gpu_runtime(&info))
    }

    /// The engine's data root (`DockerRootDir`, e.g. `/var/lib/docker`), where images and
    /// containers take disk; `None` if the engine does not say. The path is the engine's: a
    /// remote or rootless engine's may not exist as such on this host.
    pub async fn data_root(&self) -> Result<Option<std::path::PathBuf>, EngineError> {
        let info = self.docker.info().await.map_err(|source| EngineError {
            operation: "read the system info of",
            target: "the engine".to_owned(),
            source,
        })?;
        Ok(info
            .docker_root_dir
            .filter(|d| !d.is_empty())
            .map(Into::into))
    }
}

/// What the engine reports it cannot enforce of the sandbox. A feature it does not report
/// on (older engines) is assumed present.
fn missing_sandbox_features(info: &SystemInfo) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let seccomp = info.security_options.as_ref().map(|options| {
        options
            .iter()
            .any(|o| o.contains("name=seccomp") && !o.contains("profile=unconfined"))
    });
    if seccomp == Some(false) {
        missing.push("seccomp");
    }
    for (supported, feature) in [
        (info.pids_limit, "pids limit"),
        (info.memory_limit, "memory limit"),
        (info.swap_limit, "swap limit"),
        (info.cpu_cfs_quota, "CPU quota"),
    ] {
        if supported == Some(false) {
            missing.push(feature);
        }
    }
    missing
}

/// Whether `info` lists the NVIDIA container runtime.
fn has_gpu_runtime(info: &SystemInfo) -> bool {
    info.runtimes
        .as_ref()
        .is_some_and(|runtimes| runtimes.contains_key("nvidia"))
}

/// Rust's name for a CPU architecture in Go's (image config) vocabulary.
fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Options that list every container, running or not, matching one engine filter
/// (`label` → `key=value`, `volume` → a volume name).
pub(crate) fn all_containers_where(
    filter: &str,
    value: String,
) -> bollard::query_parameters::ListContainersOptions {
    bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(std::collections::HashMap::from([(
            filter.to_owned(),
            vec![value],
        )])),
        ..Default::default()
    }
}

/// The HTTP status of an engine refusal, if the engine answered at all.
pub(crate) fn engine_status(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message, without the client's wrapping.
pub(crate) fn engine_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::Runtime;

    use super::*;

    #[test]
    fn engines_that_cannot_sandbox_are_named() {
        let full = SystemInfo {
            security_options: Some(vec!["name=seccomp,profile=default".to_owned()]),
            pids_limit: Some(true),
            memory_limit: Some(true),
            swap_limit: Some(true),
            cpu_cfs_quota: Some(true),
            ..Default::default()
        };
        assert!(missing_sandbox_features(&full).is_empty());
        assert!(missing_sandbox_features(&SystemInfo::default()).is_empty());
        let weak = SystemInfo {
            security_options: Some(vec!["name=seccomp,profile=unconfined".to_owned()]),
            pids_limit: Some(false),
            swap_limit: Some(false),
            ..full.clone()
        };
        assert_eq!(
            missing_sandbox_features(&weak),
            ["seccomp", "pids limit", "swap limit"]
        );
        let no_seccomp = SystemInfo {
            security_options: Some(vec!["name=apparmor".to_owned()]),
            ..full
        };
        assert_eq!(missing_sandbox_features(&no_seccomp), ["seccomp"]);
    }

    #[test]
    fn the_gpu_runtime_is_found_by_name() {
        let runc = HashMap::from([("runc".to_owned(), Runtime::default())]);
        let mut info = SystemInfo {
            runtimes: Some(runc.clone()),
            ..Default::default()
        };
        assert!(!has_gpu_runtime(&info));
        assert!(!has_gpu_runtime(&SystemInfo::default()));
        info.runtimes = Some(
            runc.into_iter()
                .chain([("nvidia".to_owned(), Runtime::default())])
                .collect(),
        );
        assert!(has_gpu_runtime(&info));
    }

    #[test]
    fn rust_arch_names_map_to_image_arch_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }
}
