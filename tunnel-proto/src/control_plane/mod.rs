//! The libp2p control plane between `peerctl` and a provider (`/peercompute/control/1`):
//! deploy, stop, status, list and logs, as JSON messages in length-prefixed frames, with
//! every request signed by the client's key.
//!
//! ```text
//!  frame: type: u8 | length: u32 BE | JSON body (at most MAX_CONTROL_PLANE_FRAME bytes)
//!
//!  peerctl (libp2p client)                               peercomputed (provider)
//!   │ Signed{provider,nonce,timestamp,payload,signature} ─▶ verify: signer = Noise peer id,
//!   │   payload = one request frame:                       provider = me, |now-ts| ≤ 5 min,
//!   │   DeployRequest | StopRequest | StatusRequest        nonce unseen, verify_strict
//!   │   | ListRequest | LogsRequest | Volumes… (see `volumes`)
//!   │                    ◀─ DeployProgress* (pulling / starting / waiting / registering)
//!   │                    ◀─ DeployResponse | StopResponse | StatusResponse | ListResponse
//!   │                    ◀─ LogEntry* LogsEnd
//!   │                    ◀─ VolumesResponse | VolumeRemoved | VolumeData* VolumeEnd
//!   │ VolumeData* (only after a signed VolumeImportRequest) ─▶
//!   │                    ◀─ Error{code,message}   (instead of any answer)
//! ```
//!
//! Requests never travel bare: on the stream they are refused as soon as their type byte is
//! seen ([`ControlPlaneDecodeError::UnsignedRequest`]); inside a [`SignedEnvelope`] the payload
//! must be exactly one request frame. Every JSON body refuses unknown fields, so a request
//! cannot carry Docker options the schema does not have.
//!
//! Modules:
//! - `frame`: message types, the frame codec and its errors.
//! - `messages`: the JSON bodies.
//! - `attach`: the rules of a deploy request's volumes and devices (names, never host paths).
//! - `validate`: the rules a deploy request (image reference, name, env, limits) and the
//!   deployment ids of other requests must follow.
//! - `signing`: the signed envelope, its canonical signing encoding and its verification.
//! - `volumes`: the volume requests and answers (list, remove, export, import) and their
//!   rules.
//! - `replay`: the persisted nonce set that refuses replays, also after a restart.

mod attach;
mod frame;
mod messages;
mod replay;
mod signing;
pub(crate) use signing::verifying_key;
mod validate;
mod volumes;

pub use attach::{
    MAX_ATTACH_NAME, MAX_DEVICES, MAX_MOUNT_PATH, MAX_VOLUMES, MIN_VOLUME_SHARE,
    validate_device_name, validate_mount_path, validate_share, validate_volume_name,
};
pub use frame::{
    CONTROL_PLANE_PROTOCOL, ControlPlaneDecodeError, ControlPlaneEncodeError, ControlPlaneMessage,
    MAX_CONTROL_PLANE_FRAME, MessageType, Request, decode_control_plane, decode_import_data,
    decode_request, encode_control_plane, encode_request,
};
pub use messages::{
    DeployProgress, DeployRequest, DeployResponse, DeployStage, DeploymentState, DeploymentSummary,
    EnvVar, ErrorCode, ErrorResponse, ListRequest, ListResponse, LogEntry, LogStream, LogsEnd,
    LogsRequest, NoUrl, StatusRequest, StatusResponse, StopRequest, StopResponse, VolumeMount,
};
pub use replay::{DEFAULT_MAX_SKEW_SECS, DEFAULT_REPLAY_CAPACITY, ReplayError, ReplayGuard};
pub use signing::{
    MAX_SIGNED_PAYLOAD, Nonce, SIGNATURE_DOMAIN, SignedEnvelope, VerifyError, signing_message,
};
pub use validate::{
    InvalidMessage, MAX_DEPLOYMENT_ID, MAX_ENV_BYTES, MAX_ENV_VARS, MAX_IMAGE_REF, MAX_LOG_TAIL,
    validate_deployment_id, validate_image_ref,
};
pub use volumes::{
    MAX_VOLUME_DATA, VolumeEnd, VolumeExportRequest, VolumeImportRequest, VolumeInfo,
    VolumeRemoveRequest, VolumeRemoved, VolumeUsage, VolumesRequest, VolumesResponse,
    validate_sha256, validate_volume_ref,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod volume_tests;
