//! What the daemon may ask of the runtime: a [`ContainerSpec`] holds an image, one port, an
//! environment and CPU/memory limits, and nothing else — there is no field through which a
//! request could ask for privileges, mounts, devices, capabilities or host namespaces. This
//! module validates a spec before anything reaches the engine and defines the labels that tie
//! a container to its deployment.

/// Label carrying the deployment id.
pub const LABEL_DEPLOYMENT: &str = "peercompute.deployment";
/// Label carrying the owner's peer id.
pub const LABEL_OWNER: &str = "peercompute.owner";
/// Label carrying the route name.
pub const LABEL_NAME: &str = "peercompute.name";
/// Label set to `true` on every container this runtime creates.
pub const LABEL_MANAGED: &str = "peercompute.managed";
/// Label: peer id of the provider daemon that runs the container (several daemons may share
/// one engine; each reconciles only its own containers).
pub const LABEL_PROVIDER: &str = "peercompute.provider";

use std::path::PathBuf;

/// Most environment variables a container may receive.
pub const MAX_ENV_VARS: usize = 128;
/// Most bytes of environment (`KEY=VALUE` summed) a container may receive.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
/// The engine refuses memory limits under 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 << 20;

/// One container to run, as the daemon asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Deployment id: 1–64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
    pub deployment_id: String,
    /// The owner's peer id (`12D3KooW…`).
    /// Peer id of the provider daemon running it.
    pub provider: String,
    pub owner: String,
    /// Route name, a DNS label `[a-z0-9-]{1,63}`.
    pub name: String,
    /// Image reference (`nginx:1.27`, `registry:5000/app@sha256:…`).
    pub image: String,
    /// The TCP port the container listens on; published on 127.0.0.1.
    pub port: u16,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// CPU limit in millicores (1000 = one core).
    pub cpu_millis: u32,
    /// Memory limit in bytes (no swap on top).
    pub memory_bytes: u64,
    /// Named volumes, device nodes and GPUs the provider attaches (built by the provider from
    /// its own grants and volume names, never copied from a request). Empty by default.
    pub attach: Attachments,
}

/// What the provider attaches to a container beyond the sandbox: named volumes (never host
/// paths), device nodes its owner granted, and GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachments {
    /// Named volumes, mounted read-write.
    pub volumes: Vec<VolumeBinding>,
    /// Character device nodes, each allowed by one cgroup rule for its own major:minor.
    pub devices: Vec<DeviceBinding>,
    /// GPUs through the NVIDIA container runtime.
    pub gpus: Option<GpuRequest>,
}

/// One named volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBinding {
    /// The engine's volume name, `pcv-<24 hex>-<app>-<volume>` (see `volume_name`).
    pub volume: String,
    /// Absolute, normalized mount point inside the container (`/var/lib/app`).
    pub target: String,
}

/// One host device node mapped into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBinding {
    /// The node on the host, symlinks already resolved (`/dev/ttyACM0`).
    pub host_path: PathBuf,
    /// Where the node appears inside the container, under `/dev/`.
    pub container_path: String,
    /// What the device cgroup allows on it.
    pub access: DeviceAccess,
    /// The node's group on the host: added to the container's supplementary groups when it
    /// is not 0, so a non-root app user can open it.
    pub gid: Option<u32>,
}

/// Device cgroup permissions for a mapped node (never `m`: no mknod).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceAccess {
    /// Read only (`r`).
    R,
    /// Read and write (`rw`).
    Rw,
}

impl DeviceAccess {
    /// The engine's `CgroupPermissions` string: `r` or `rw`.
    pub fn cgroup_permissions(self) -> &'static str {
        match self {
            DeviceAccess::R => "r",
            DeviceAccess::Rw => "rw",
        }
    }
}

impl std::fmt::Display for DeviceAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cgroup_permissions())
    }
}

impl std::str::FromStr for DeviceAccess {
    type Err = String;

    /// `r` or `rw`; anything else (`m`, `rwm`, `w`) is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "r" => Ok(DeviceAccess::R),
            "rw" => Ok(DeviceAccess::Rw),
            other => Err(format!(
                "device access {other:?} is not allowed: use \"r\" or \"rw\""
            )),
        }
    }
}

/// GPUs requested from the NVIDIA container runtime (`device_requests`, driver `nvidia`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRequest {
    /// Any `n` GPUs.
    Count(u32),
    /// These GPUs, by index or UUID (`"0"`, `"GPU-…"`).
    DeviceIds(Vec<String>),
}

/// A spec the runtime refuses before contacting the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Bad deployment id.
    #[error(
        "deployment id {0:?} is invalid: use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
    )]
    DeploymentId(String),
    /// Bad owner peer id.
    #[error("owner {0:?} is not a peer id: expected 1-128 base58 characters")]
    Owner(String),
    /// Bad route name.
    #[error(
        "name {0:?} is invalid: use 1-63 characters of a-z 0-9 and -, not starting or ending with -"
    )]
    Name(String),
    /// Bad image reference.
    #[error("image {0:?} is not an image reference: expected something like nginx:1.27")]
    Image(String),
    /// Port zero.
    #[error("port 0 is not a port: give the TCP port the container listens on")]
    Port,
    /// Bad environment variable name or value.
    #[error(
        "environment variable {0:?} is invalid: names are letters, digits, _ . -, not starting with a digit; values hold no NUL byte"
    )]
    EnvVar(String),
    /// Environment too large.
    #[error(
        "environment too large ({count} variables, {bytes} bytes): at most {MAX_ENV_VARS} variables and {MAX_ENV_BYTES} bytes"
    )]
    EnvTooLarge {
        /// Variables given.
        count: usize,
        /// Bytes given.
        bytes: usize,
    },
    /// CPU limit zero.
    #[error("CPU limit 0m: ask for at least 1m")]
    Cpu,
    /// Memory limit below what the engine accepts.
    #[error("memory limit {0} bytes is below the engine's minimum of 6 MiB")]
    Memory(u64),
}

impl ContainerSpec {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !is_deployment_id(&self.deployment_id) {
            return Err(SpecError::DeploymentId(self.deployment_id.clone()));
        }
        if !is_peer_id(&self.owner) {
            return Err(SpecError::Owner(self.owner.clone()));
        }
        if !is_dns_label(&self.name) {
            return Err(SpecError::Name(self.name.clone()));
        }
        if !is_image_reference(&self.image) {
            return Err(SpecError::Image(self.image.clone()));
        }
        if self.port == 0 {
            return Err(SpecError::Port);
        }
        let mut bytes = 0;
        for (key, value) in &self.env {
            if !is_env_name(key) || value.contains('\0') {
                return Err(SpecError::EnvVar(key.clone()));
            }
            bytes += key.len() + 1 + value.len();
        }
        if self.env.len() > MAX_ENV_VARS || bytes > MAX_ENV_BYTES {
            return Err(SpecError::EnvTooLarge {
                count: self.env.len(),
                bytes,
            });
        }
        if self.cpu_millis == 0 {
            return Err(SpecError::Cpu);
        }
        if self.memory_bytes < MIN_MEMORY_BYTES {
            return Err(SpecError::Memory(self.memory_bytes));
        }
        Ok(())
    }

    /// The container name: `peercompute-<name>-<first 12 characters of the deployment id>`.
    /// Valid for the engine whenever [`validate`](Self::validate) passed.
    pub fn container_name(&self) -> String {
        let short: String = self.deployment_id.chars().take(12).collect();
        format!("peercompute-{}-{short}", self.name)
    }
}

fn is_deployment_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn is_peer_id(s: &str) -> bool {
    // Base58 alphabet: no 0, O, I or l.
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() && !b"0OIl".contains(&b))
}

/// A DNS label as the gateway routes it: `[a-z0-9-]{1,63}`, no leading or trailing `-`.
pub(crate) fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(crate) fn is_image_reference(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && !s.starts_with(['-', '/', ':', '@'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn valid() -> ContainerSpec {
        ContainerSpec {
            deployment_id: "d0f1e2d3c4b5a697".into(),
            owner: "12D3KooWGzBsgmrnAYwPJ4pBaEacvYeWrPWR9d2rSdnh6NPEtbTL".into(),
            provider: "12D3KooWProviderForTests".to_owned(),
            name: "blog".into(),
            image: "nginx:1.27".into(),
            port: 80,
            env: vec![("MODE".into(), "prod".into())],
            cpu_millis: 500,
            memory_bytes: 256 << 20,
            attach: Attachments::default(),
        }
    }

    #[test]
    fn a_minimal_spec_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
        assert_eq!(valid().container_name(), "peercompute-blog-d0f1e2d3c4b5");
    }

    #[test]
    fn invalid_specs_table() {
        type Edit = fn(&mut ContainerSpec);
        let cases: &[(Edit, &str)] = &[
            (|s| s.deployment_id = String::new(), "deployment id"),
            (|s| s.deployment_id = "-x".into(), "deployment id"),
            (|s| s.deployment_id = "a/b".into(), "deployment id"),
            (|s| s.deployment_id = "a".repeat(65), "deployment id"),
            (|s| s.owner = String::new(), "not a peer id"),
            (|s| s.owner = "12D3KooW0".into(), "not a peer id"),
            (|s| s.name = "Blog".into(), "name"),
            (|s| s.name = "-blog".into(), "name"),
            (|s| s.name = "blog-".into(), "name"),
            (|s| s.name = "b_log".into(), "name"),
            (|s| s.name = "a".repeat(64), "name"),
            (|s| s.image = String::new(), "image"),
            (|s| s.image = "-v /:/host".into(), "image"),
            (|s| s.image = "nginx latest".into(), "image"),
            (|s| s.port = 0, "port 0"),
            (
                |s| s.env.push(("".into(), "x".into())),
                "environment variable",
            ),
            (
                |s| s.env.push(("A=B".into(), "x".into())),
                "environment variable",
            ),
            (
                |s| s.env.push(("1A".into(), "x".into())),
                "environment variable",
            ),
            (
                |s| s.env.push(("A".into(), "x\0y".into())),
                "environment variable",
            ),
            (
                |s| s.env = (0..129).map(|i| (format!("V{i}"), String::new())).collect(),
                "environment too large",
            ),
            (
                |s| s.env = vec![("BIG".into(), "x".repeat(MAX_ENV_BYTES))],
                "environment too large",
            ),
            (|s| s.cpu_millis = 0, "CPU limit"),
            (|s| s.memory_bytes = (6 << 20) - 1, "minimum of 6 MiB"),
        ];
        for (edit, message) in cases {
            let mut spec = valid();
            edit(&mut spec);
            let err = spec.validate().expect_err("should be refused");
            assert!(
                err.to_string().contains(message),
                "{err} should say {message}"
            );
        }
    }
}
