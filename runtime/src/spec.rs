//! What the daemon may ask of the runtime: a [`ContainerSpec`] holds an image, one port, an
//! environment, CPU/memory limits and the provider-built [`Attachments`] (named volumes by
//! engine name, device nodes its owner granted, GPUs), and nothing else — there is no field
//! through which a request could ask for privileges, host paths, capabilities or host
//! namespaces. This module validates a spec before anything reaches the engine (attachments
//! included: volume names must be ours, mount targets and device paths follow the wire rules)
//! and defines the labels that tie a container to its deployment.

/// Label carrying the deployment id.
pub const LABEL_DEPLOYMENT: &str = "peercompute.deployment";
/// Label carrying the owner's peer id.
pub const LABEL_OWNER: &str = "peercompute.owner";
/// Label carrying the route name.
pub const LABEL_NAME: &str = "peercompute.name";
/// Label set to `true` on every container this runtime creates.
pub const LABEL_MANAGED: &str = "peercompute.managed";
/// Label carrying a fleet container's group, `<fleet id>/<group>` (an emergency stop selects
/// the containers to kill by it).
pub const LABEL_FLEET_GROUP: &str = "peercompute.fleet-group";
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
/// Most named volumes one container may mount.
pub const MAX_VOLUMES: usize = 8;
/// Most device nodes one container may be given.
pub const MAX_DEVICES: usize = 8;
/// Prefix of every engine volume name this runtime makes (`pcv-<24 hex>-…`).
pub const VOLUME_PREFIX: &str = "pcv-";
/// Mount targets a volume may never cover: the engine writes these files itself.
const RESERVED_TARGETS: [&str; 3] = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];
/// Trees a volume may never be mounted over or under.
const RESERVED_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];

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
    /// The fleet group the container serves, `<fleet id>/<group>` (a label,
    /// [`LABEL_FLEET_GROUP`]); `None` outside fleets.
    pub fleet_group: Option<String>,
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
    /// A volume name this runtime did not make.
    #[error(
        "volume {0:?} is not a provider volume name: expected pcv-<24 hex>-<app>-<volume> (volume_name)"
    )]
    VolumeName(String),
    /// A fleet group label that is empty, over 256 bytes or holds control characters.
    #[error("fleet group {0:?} is invalid: 1-256 bytes, no control characters")]
    FleetGroup(String),
    /// A mount target outside the rules.
    #[error(
        "volume mount point {0:?} is invalid: use an absolute, normalized path of at most 255 printable bytes, not /, nothing under /proc, /sys or /dev, not /etc/hosts, /etc/hostname or /etc/resolv.conf, distinct and not nested in another"
    )]
    VolumeTarget(String),
    /// A device host path that is not absolute and normalized.
    #[error("device host path {0:?} is invalid: use the absolute, resolved path of the node")]
    DeviceHostPath(String),
    /// A device container path outside /dev/.
    #[error(
        "device path in the container {0:?} is invalid: use a normalized path under /dev/, one per device"
    )]
    DeviceContainerPath(String),
    /// Too many volumes or devices.
    #[error(
        "too many attachments ({volumes} volumes, {devices} devices): at most {MAX_VOLUMES} of each"
    )]
    TooManyAttachments {
        /// Volumes given.
        volumes: usize,
        /// Devices given.
        devices: usize,
    },
    /// A GPU request for nothing, or with a bad id.
    #[error(
        "GPU request {0} is invalid: ask for a count of at least 1 or for ids of letters, digits, - and _"
    )]
    Gpu(String),
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
        self.attach.validate()
    }

    /// The container name: `peercompute-<name>-<first 12 characters of the deployment id>`.
    /// Valid for the engine whenever [`validate`](Self::validate) passed.
    pub fn container_name(&self) -> String {
        let short: String = self.deployment_id.chars().take(12).collect();
        format!("peercompute-{}-{short}", self.name)
    }
}

impl Attachments {
    /// Whether nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty() && self.devices.is_empty() && self.gpus.is_none()
    }

    /// Re-checks what the provider built (the wire rules were checked on the request already;
    /// this is the runtime's own line of defence).
    fn validate(&self) -> Result<(), SpecError> {
        if self.volumes.len() > MAX_VOLUMES || self.devices.len() > MAX_DEVICES {
            return Err(SpecError::TooManyAttachments {
                volumes: self.volumes.len(),
                devices: self.devices.len(),
            });
        }
        for (i, binding) in self.volumes.iter().enumerate() {
            if !is_volume_name(&binding.volume) {
                return Err(SpecError::VolumeName(binding.volume.clone()));
            }
            let clash = self.volumes[..i]
                .iter()
                .any(|other| nested(&other.target, &binding.target));
            if !is_volume_target(&binding.target) || clash {
                return Err(SpecError::VolumeTarget(binding.target.clone()));
            }
        }
        for (i, device) in self.devices.iter().enumerate() {
            let host = device.host_path.to_str().unwrap_or_default();
            if !is_normalized_path(host) {
                return Err(SpecError::DeviceHostPath(
                    device.host_path.display().to_string(),
                ));
            }
            let path = &device.container_path;
            let taken = self.devices[..i]
                .iter()
                .any(|other| other.container_path == *path);
            if !path.starts_with("/dev/") || !is_normalized_path(path) || taken {
                return Err(SpecError::DeviceContainerPath(path.clone()));
            }
        }
        if let Some(group) = &self.fleet_group
            && (group.is_empty() || group.len() > 256 || group.chars().any(char::is_control))
        {
            return Err(SpecError::FleetGroup(group.clone()));
        }
        match &self.gpus {
            Some(GpuRequest::Count(0)) => Err(SpecError::Gpu("count 0".to_owned())),
            Some(GpuRequest::DeviceIds(ids))
                if ids.is_empty()
                    || ids.len() > MAX_DEVICES
                    || !ids.iter().all(|id| is_gpu_id(id)) =>
            {
                Err(SpecError::Gpu(format!("ids {ids:?}")))
            }
            _ => Ok(()),
        }
    }
}

/// `pcv-<24 lowercase hex>-<rest>`, the rest of `[a-z0-9-]`, at most 128 bytes in all.
pub(crate) fn is_volume_name(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(VOLUME_PREFIX) else {
        return false;
    };
    let (hash, tail) = rest.split_at_checked(24).unwrap_or((rest, ""));
    s.len() <= 128
        && hash.len() == 24
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && tail.len() > 1
        && tail.starts_with('-')
        && !tail.ends_with('-')
        && tail
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Absolute, no empty, `.` or `..` component, no trailing `/`, printable ASCII without spaces,
/// backslashes, `:` or `,` (the engine's own separators), at most 255 bytes, not `/`.
pub(crate) fn is_normalized_path(s: &str) -> bool {
    s.len() <= 255
        && s.len() > 1
        && s.starts_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\\:,".contains(&b))
        && s[1..]
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// A mount target a volume may take (see [`SpecError::VolumeTarget`]).
pub(crate) fn is_volume_target(s: &str) -> bool {
    is_normalized_path(s)
        && !RESERVED_TARGETS.contains(&s)
        && !RESERVED_TREES.iter().any(|tree| nested(tree, s))
}

/// Whether one path is the other or lies under it.
fn nested(a: &str, b: &str) -> bool {
    let under = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

fn is_gpu_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
            attach: Attachments {
                volumes: vec![VolumeBinding {
                    volume: format!("pcv-{}-blog-data", "0123456789abcdef01234567"),
                    target: "/var/lib/app".into(),
                }],
                devices: vec![DeviceBinding {
                    host_path: "/dev/ttyACM0".into(),
                    container_path: "/dev/arm".into(),
                    access: DeviceAccess::Rw,
                    gid: Some(20),
                }],
                gpus: None,
                fleet_group: Some("pcfTest/production".into()),
            },
        }
    }

    #[test]
    fn a_minimal_spec_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
        assert_eq!(valid().container_name(), "peercompute-blog-d0f1e2d3c4b5");
    }

    #[test]
    fn a_fleet_group_label_is_bounded_and_printable() {
        for (group, ok) in [
            ("pcfTest/production", true),
            ("", false),
            ("a\nb", false),
            (&"g".repeat(257) as &str, false),
        ] {
            let mut spec = valid();
            spec.attach.fleet_group = Some(group.to_owned());
            assert_eq!(spec.validate().is_ok(), ok, "{group:?}");
        }
    }

    #[test]
    fn attachments_within_the_rules_are_valid() {
        let spec = valid();
        assert!(!spec.attach.is_empty());
        assert_eq!(spec.validate(), Ok(()));
        let mut two = valid();
        two.attach.volumes.push(VolumeBinding {
            volume: format!("pcv-{}-blog-cache", "0".repeat(24)),
            target: "/var/lib/app-cache".into(),
        });
        two.attach.gpus = Some(GpuRequest::DeviceIds(vec!["0".into(), "GPU-1a2b".into()]));
        assert_eq!(two.validate(), Ok(()));
        assert!(
            ContainerSpec {
                attach: Attachments::default(),
                ..valid()
            }
            .attach
            .is_empty()
        );
    }

    #[test]
    fn volume_names_and_mount_points_outside_the_rules_are_refused() {
        let hash = "0123456789abcdef01234567";
        let names = [
            "data".to_owned(),
            "/var/run/docker.sock".to_owned(),
            format!("pcv-{}-a", hash.to_uppercase()),
            format!("pcv-{hash}-"),
            format!("pcv-{hash}"),
            format!("pcv-{hash}-../x"),
            format!("pcv-{hash}-{}", "b".repeat(100)),
        ];
        for name in names {
            let mut spec = valid();
            spec.attach.volumes[0].volume = name.clone();
            assert_eq!(spec.validate(), Err(SpecError::VolumeName(name)));
        }
        let long = format!("/{}", "a".repeat(255));
        let targets = [
            "/",
            "data",
            "/data/",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/a b",
            "/x:/y",
            "/proc",
            "/sys/fs",
            "/dev/shm",
            "/dev",
            "/etc/resolv.conf",
            "/etc/hosts",
            &long,
        ];
        for target in targets {
            let mut spec = valid();
            spec.attach.volumes[0].target = target.to_owned();
            assert_eq!(
                spec.validate(),
                Err(SpecError::VolumeTarget(target.to_owned())),
                "{target}"
            );
        }
    }

    #[test]
    fn device_access_is_r_or_rw_only() {
        assert_eq!("r".parse(), Ok(DeviceAccess::R));
        assert_eq!("rw".parse(), Ok(DeviceAccess::Rw));
        for bad in ["", "w", "m", "rwm", "RW"] {
            assert!(bad.parse::<DeviceAccess>().is_err(), "{bad:?}");
        }
        assert_eq!(DeviceAccess::Rw.to_string(), "rw");
        assert_eq!(DeviceAccess::R.cgroup_permissions(), "r");
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
            (
                |s| {
                    let mut again = s.attach.volumes[0].clone();
                    again.target = "/var/lib/app/db".into();
                    s.attach.volumes.push(again);
                },
                "mount point",
            ),
            (
                |s| {
                    let again = s.attach.volumes[0].clone();
                    s.attach.volumes.push(again);
                },
                "mount point",
            ),
            (
                |s| s.attach.volumes = vec![s.attach.volumes[0].clone(); 9],
                "too many attachments",
            ),
            (
                |s| s.attach.devices = vec![s.attach.devices[0].clone(); 9],
                "too many attachments",
            ),
            (
                |s| s.attach.devices[0].host_path = "ttyACM0".into(),
                "device host path",
            ),
            (
                |s| s.attach.devices[0].host_path = "/dev/../etc/shadow".into(),
                "device host path",
            ),
            (
                |s| s.attach.devices[0].container_path = "/etc/arm".into(),
                "device path in the container",
            ),
            (
                |s| s.attach.devices[0].container_path = "/dev/".into(),
                "device path in the container",
            ),
            (
                |s| s.attach.devices[0].container_path = "/dev/../arm".into(),
                "device path in the container",
            ),
            (
                |s| {
                    let mut again = s.attach.devices[0].clone();
                    again.host_path = "/dev/ttyACM1".into();
                    s.attach.devices.push(again);
                },
                "device path in the container",
            ),
            (
                |s| s.attach.gpus = Some(GpuRequest::Count(0)),
                "GPU request",
            ),
            (
                |s| s.attach.gpus = Some(GpuRequest::DeviceIds(vec![])),
                "GPU request",
            ),
            (
                |s| s.attach.gpus = Some(GpuRequest::DeviceIds(vec!["0,1".into()])),
                "GPU request",
            ),
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
