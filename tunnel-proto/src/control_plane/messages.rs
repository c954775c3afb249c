//! The JSON bodies of control-plane frames. Every struct refuses unknown fields (and serde_json
//! refuses duplicate ones), so what a peer can ask for is exactly what is written here: there
//! is no field for privileged mode, capabilities, host mounts, device paths, namespaces,
//! sysctls, a user or a working directory (volumes and devices are names the provider
//! resolves, see `attach`). Optional fields may be absent or `null`; times are unix seconds.
//! (serde also accepts a struct written as a JSON array of its fields in order; an array
//! cannot carry more elements than the struct has fields, so it widens nothing.)
//! The rules beyond types (image syntax, names, env limits) are in `validate`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::attach::validate_attachments;
use super::validate::{InvalidMessage, validate_env, validate_image_ref};
use super::volumes::VolumeUsage;
use crate::name::validate_name;

/// One environment variable of a deployment. Its `Debug` output hides the value, which often
/// holds a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVar")
            .field("key", &self.key)
            .field(
                "value",
                &format_args!("<{} bytes redacted>", self.value.len()),
            )
            .finish()
    }
}

/// Run `image` on the provider and publish its `port` under `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Docker image reference, e.g. `nginx:1.27` or `registry:5000/team/app@sha256:…`.
    pub image: String,
    /// Route name (a DNS label); the provider picks one when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The container port to publish (not 0).
    pub port: u16,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// CPU limit in millicores; the provider's default when absent.
    #[serde(default)]
    pub cpu_millis: Option<u32>,
    /// Memory limit in bytes (swap included); the provider's default when absent.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Named volumes to mount. Absent when empty, so a request without volumes keeps the
    /// bytes it had before volumes existed (and an older provider still reads it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Devices to map, by the names the provider's owner granted (never paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// In a fleet switch, stop the old container before the new one starts, so the two never
    /// share the volumes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub volume_exclusive: bool,
}

/// A named volume a deployment asks for: the provider's volume `name` of this app, mounted
/// at `path`. The name never becomes a host path: the provider derives the engine's volume
/// name from the requester, the app and `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// Where it is mounted in the container: absolute and normalized.
    pub path: String,
    /// The share of the provider's volume space it asks for; the provider's default when
    /// absent.
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl DeployRequest {
    /// A request for `image` on `port` with every optional field absent.
    pub fn new(image: impl Into<String>, port: u16) -> Self {
        Self {
            image: image.into(),
            name: None,
            port,
            env: Vec::new(),
            cpu_millis: None,
            memory_bytes: None,
            volumes: Vec::new(),
            devices: Vec::new(),
            volume_exclusive: false,
        }
    }

    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        validate_image_ref(&self.image)?;
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if self.port == 0 {
            return Err(InvalidMessage::PortZero);
        }
        validate_env(&self.env)?;
        if self.cpu_millis == Some(0) {
            return Err(InvalidMessage::Zero("cpu_millis"));
        }
        if self.memory_bytes == Some(0) {
            return Err(InvalidMessage::Zero("memory_bytes"));
        }
        validate_attachments(&self.volumes, &self.devices, self.volume_exclusive)
    }
}

/// Where a deployment is on its way to answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStage {
    Pulling,
    Starting,
    Waiting,
    Registering,
}

/// Provider → client during a deploy; `layer`/`current`/`total` describe an image pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployProgress {
    pub stage: DeployStage,
    pub message: String,
    #[serde(default)]
    pub layer: Option<String>,
    #[serde(default)]
    pub current: Option<u64>,
    #[serde(default)]
    pub total: Option<u64>,
}

/// The state of a deployment's container, as the Docker engine names it. States this build
/// does not know read as `Unknown`, so a newer provider stays readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    #[serde(other)]
    Unknown,
}

/// Provider → client: the deployment runs, and answers at `url` when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployResponse {
    pub id: String,
    pub name: String,
    /// The public URL; `null` when there is none (yet): `no_url` says why.
    #[serde(default)]
    pub url: Option<String>,
    /// The provider's peer id.
    pub peer: String,
    pub image: String,
    pub status: DeploymentState,
    /// Why `url` is `null`; absent when there is a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_url: Option<NoUrl>,
}

/// Why a deployment that runs has no public URL. Reasons this build does not know read as
/// `Unknown`, so a newer provider stays readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoUrl {
    /// The provider has no gateway configured: the app answers on the provider's host only.
    NoGateway,
    /// The provider is not connected to its gateway now; the route registers as soon as its
    /// tunnel is up (`status` then shows the URL).
    Pending,
    /// The provider's tunnel client has stopped (its log says why, e.g. a gateway that is not
    /// the pinned one); no route registers until its operator fixes that.
    TunnelStopped,
    #[serde(other)]
    Unknown,
}

impl fmt::Display for NoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoUrl::NoGateway => {
                "no public URL (no gateway): the provider has no gateway configured, so the app answers on the provider's host only"
            }
            NoUrl::Pending => {
                "URL pending: the provider is not connected to its gateway now; the route registers as soon as its tunnel is up"
            }
            NoUrl::TunnelStopped => {
                "no public URL: the provider's tunnel to its gateway has stopped; its operator must check the daemon's log"
            }
            NoUrl::Unknown => "no public URL",
        })
    }
}

/// Stop and remove a deployment (by id or name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    pub id: String,
}

/// Provider → client: the deployment is stopped; `removed` tells whether its container is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopResponse {
    pub id: String,
    pub removed: bool,
}

/// Ask for one deployment's state and resource use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub id: String,
}

/// Provider → client: one deployment in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusResponse {
    pub id: String,
    pub name: String,
    pub image: String,
    pub url: String,
    pub state: DeploymentState,
    pub created_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// The volumes it mounts, with their use and share; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeUsage>,
    /// The devices mapped into it (by granted name); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Why the provider stopped it (e.g. a volume over its share); absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

/// List this client's deployments on the provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {}

/// One line of a [`ListResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub url: String,
    pub state: DeploymentState,
    pub created_at: u64,
    /// Why the provider stopped it (e.g. a volume over its share); absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

/// Provider → client: the deployments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListResponse {
    pub deployments: Vec<DeploymentSummary>,
}

/// Ask for a deployment's log lines: the last `tail` (all when absent), then live ones while
/// `follow` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    pub id: String,
    pub follow: bool,
    #[serde(default)]
    pub tail: Option<u32>,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Provider → client: one log line (`timestamp` as the engine reports it, RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    pub stream: LogStream,
    pub line: String,
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// Provider → client: no more log lines will follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsEnd {}

/// What kind of failure an [`ErrorResponse`] reports; peerctl chooses its advice and exit
/// code from it. Codes this build does not know read as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The client is not in the provider's trusted peers.
    NotTrusted,
    BadSignature,
    Replayed,
    /// The request's timestamp is outside the accepted window (check the clocks).
    Stale,
    BadRequest,
    /// Admission refused it: the message has the numbers (asked, available).
    LimitExceeded,
    NotFound,
    ImageNotFound,
    /// The image is for another CPU architecture.
    ImagePlatform,
    /// The container runtime failed.
    Runtime,
    Internal,
    /// A device asked for is not granted to the requester (or not granted at all): the
    /// message says who can grant it and how.
    NotGranted,
    /// The volume is mounted by a deployment (running or stopped): stop it first.
    InUse,
    #[serde(other)]
    Unknown,
}

/// Provider → client: the request failed; `message` says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
}
