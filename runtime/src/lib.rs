//! The sandboxed container runtime of a Peer Compute provider. `peercomputed` calls it to run
//! a trusted peer's image through the Docker Engine API (bollard): every container is started
//! with the same locked-down settings, whatever the request says, and published only on
//! 127.0.0.1 where the provider's tunnel reaches it.
//!
//! A deploy goes: [`Admission::admit`] (does it fit the provider's limits?) →
//! [`DockerRuntime::ensure_image`] (local, or pulled with progress) →
//! [`DockerRuntime::start`] (sandboxed, returns the 127.0.0.1 address) →
//! [`DockerRuntime::wait_ready`] (running and accepting connections, or an error with the
//! container's last log lines). A fleet release instead pins its image by digest
//! ([`DockerRuntime::resolve_digest`] when it is made, [`DockerRuntime::ensure_pinned`] on each
//! robot, verified against the digest) and gates the switch on
//! [`DockerRuntime::wait_healthy`] (an HTTP path answering 2xx, or the port accepting for a
//! settle period). Then [`status`](DockerRuntime::status),
//! [`addr`](DockerRuntime::addr) (the port changes when the restart policy restarts it),
//! [`logs`](DockerRuntime::logs), [`stop`](DockerRuntime::stop), and after a daemon restart
//! [`list_managed`](DockerRuntime::list_managed) to reconcile by label.
//!
//! A spec may carry [`Attachments`] the provider built from its own grants: named volumes
//! ([`volume_name`], [`DockerRuntime::ensure_volume`] first), device nodes its owner granted
//! ([`probe_device`] → [`ProbedDevice::binding`]) and GPUs. They widen the sandbox by exactly
//! those resources: a volume mount, a device with a cgroup rule for its own number, the node's
//! group; never a host path, a capability or privileged mode.
//!
//! ```no_run
//! # async fn deploy() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use peercompute_runtime::{ContainerSpec, DockerRuntime};
//!
//! let runtime = DockerRuntime::connect().await?;
//! let spec = ContainerSpec {
//!     deployment_id: "d41d8cd98f00".into(),
//!     provider: "12D3KooWLocalProviderPeerIdGoesHere".into(),
//!     owner: "12D3KooWGzBsgmrnAYwPJ4pBaEacvYeWrPWR9d2rSdnh6NPEtbTL".into(),
//!     name: "blog".into(),
//!     image: "nginx:1.27".into(),
//!     port: 80,
//!     env: vec![],
//!     cpu_millis: 500,
//!     memory_bytes: 256 << 20,
//!     attach: Default::default(),
//! };
//! runtime.ensure_image(&spec.image, |p| println!("{} {:?}", p.status, p.current)).await?;
//! let started = runtime.start(&spec).await?;
//! runtime.wait_ready(&started.id, started.addr, Duration::from_secs(30)).await?;
//! println!("serving on {}", started.addr);
//! # Ok(()) }
//! ```
//!
//! # Modules
//! - `engine` — [`DockerRuntime`]: connecting (`DOCKER_HOST`), the host [`Platform`],
//!   shared error helpers.
//! - `spec` — [`ContainerSpec`], its validation and the `peercompute.*` labels.
//! - `sandbox` — the pure spec → create-body function that applies the [`SandboxPolicy`].
//! - `container` — start, stop, halt and resume, the current published address.
//! - `network` — the sandbox network every container joins (own bridge, containers isolated
//!   from each other).
//! - `egress` — the nftables rules that keep containers off this host and private networks.
//! - `status` — status and list_managed, container states and deployment labels.
//! - `usage` — CPU and memory figures from a stats sample.
//! - `volume` — named volumes: [`volume_name`], ensure (labels checked), list, usage, users,
//!   remove (never forced; in use is [`VolumeError::InUse`]).
//! - `df` — the engine's own volume sizes (`system df`, either answer shape), for daemons
//!   that cannot read the volumes' directories.
//! - `archive` — a volume's files as a tar stream, out ([`VolumeExport`]) and in, through a
//!   helper container that is never started.
//! - `device` — [`probe_device`]: a granted node resolved and checked (character devices
//!   only, a denylist of host nodes).
//! - `ready` — wait_ready and its log-carrying [`ReadyError`].
//! - `logs` — the container's output as a stream of [`LogLine`]s.
//! - `image` — ensure_image: local, pulled with [`PullProgress`], platform check;
//!   resolve_digest and ensure_pinned, which verifies the pulled image's digest.
//! - `oci` — pure: the canonical peer manifest (uncompressed OCI manifest from the config bytes
//!   and layer diff_ids: the digest any holder of the image can recompute), reading a `docker save` archive
//!   ([`SaveIndex`]) and writing the one `docker load` takes.
//! - `digest` — pure: [`PinnedImage`] (`repo@sha256:…`, parsed strictly), the image reference
//!   grammar, matching `RepoDigests` against a pin.
//! - `health` — wait_healthy against a [`HealthCheck`] (HTTP 2xx or port accepting, for a
//!   settle period), its [`HealthReport`] and log-carrying [`HealthError`].
//! - `prune` — remove_image (never forced) and images_in_use, for a fleet robot dropping
//!   the images of releases it no longer keeps.
//! - `admission` — pure [`Admission`] ledger against the provider's [`Limits`].
//! - `quantity` — parsing `--cpu 500m|0.5` and `--memory 256M|1GiB` (defined in
//!   `peercompute-tunnel-proto`, re-exported).
//! - `time` — the engine's RFC 3339 timestamps.
//! - `testsupport` (cargo feature `testsupport`, for tests only) — scratch images from bytes,
//!   busybox, unique names, a local registry, cleanup guard.

mod admission;
mod archive;
mod container;
mod device;
mod df;
mod digest;
mod egress;
mod engine;
mod health;
mod image;
mod logs;
mod network;
mod oci;
mod prune;
mod quantity;
mod ready;
mod sandbox;
mod spec;
mod status;
#[cfg(feature = "testsupport")]
pub mod testsupport;
mod time;
mod usage;
mod volume;

pub use admission::{Admission, AdmissionError, Limits, Resources, Usage};
pub use archive::{HELPER_IMAGE, LABEL_HELPER, VolumeExport};
pub use container::{ContainerError, RestartAfter, StartedContainer};
pub use device::{DeviceError, DeviceKind, ProbedDevice, probe_device};
pub use digest::{DigestError, PinnedImage};
pub use egress::{
    BLOCKED_V4, EGRESS_TABLE, EgressError, egress_firewall_present, egress_ruleset,
    install_egress_firewall, remove_egress_firewall,
};
pub use engine::{ConnectError, DEFAULT_ENDPOINT, DockerRuntime, EngineError, Platform};
pub use health::{HealthCheck, HealthError, HealthReport, ProbeFailure, Unhealthy};
pub use image::{ImageError, ImageInfo, PEER_IMAGES_FILE, PeerImages, PullProgress, TransferError};
pub use logs::{LogLine, LogSource, LogStream};
pub use network::{NetworkError, SANDBOX_BRIDGE, SANDBOX_NETWORK};
pub use oci::{
    ArchiveRange, CONFIG_MEDIA_TYPE, Descriptor, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
    MAX_CONFIG_BYTES, MAX_LAYERS, MAX_MANIFEST_BYTES, OciError, PeerManifest, SaveIndex,
    is_sha256_digest, peer_manifest, sha256_digest, write_save_archive,
};
pub use prune::{ImagesInUse, RemoveImageError, Removed};
pub use quantity::{QuantityError, format_cpu, format_memory, parse_cpu, parse_memory};
pub use ready::{READY_LOG_LINES, ReadyError};
pub use sandbox::{PUBLISH_IP, SandboxPolicy};
pub use spec::{
    Attachments, ContainerSpec, DeviceAccess, DeviceBinding, GpuRequest, LABEL_DEPLOYMENT,
    LABEL_FLEET_GROUP, LABEL_MANAGED, LABEL_NAME, LABEL_OWNER, LABEL_PROVIDER, MAX_DEVICES,
    MAX_ENV_BYTES, MAX_ENV_VARS, MAX_VOLUMES, MIN_MEMORY_BYTES, SpecError, VOLUME_PREFIX,
    VolumeBinding,
};
pub use status::{ContainerState, ContainerStatus, DeploymentLabels, ManagedContainer};
pub use usage::ResourceUsage;
pub use volume::{
    LABEL_APP, LABEL_SCOPE, LABEL_VOLUME, MANAGED_VOLUME, ManagedVolume, VolumeError, VolumeLabels,
    VolumeUser, volume_name,
};
