//! Wire types and sans-IO codecs of the tunnel between a gateway and a provider.
//!
//! The provider dials the gateway over QUIC with ALPN [`ALPN`] and authenticates with its
//! Ed25519 client certificate. On that one connection:
//!
//! ```text
//!  provider (QUIC client)                                gateway (QUIC server)
//!   │ ── bidi stream 0, opened by provider: CONTROL ─────────────────────────▶ │
//!   │    Hello{min,max,agent}            ─▶                                    │
//!   │                                    ◀─  Welcome{version,gateway_id,p2p}   │
//!   │    Register{name}                  ─▶                                    │
//!   │    | RegisterGranted{name,grant} (v2) ─▶                                 │
//!   │    | RegisterFleet{name,fleet,group} (v3) ─▶                             │
//!   │                                    ◀─  Registered{name,url}              │
//!   │                                        | Refused{name,code,reason}       │
//!   │    Ping{n} / Pong{n}               ◀─▶                                   │
//!   │                                    ◀─  GoAway{code,message}  (drain)     │
//!   │                                                                          │
//!   │ ◀─ one bidi stream per proxied request, opened by gateway: DATA ──────── │
//!   │    StreamHeader{kind,route,client}, then raw HTTP/1.1 bytes both ways    │
//! ```
//!
//! Control frame: `type: u8 | length: u32 BE | body`. Body fields are big-endian integers,
//! strings as `u16 length | UTF-8` except route names (`name`), which are `u8 length | UTF-8`,
//! lists as `u16 count | items`. A length above [`MAX_CONTROL_FRAME`] is refused before any
//! allocation; unknown types are refused as soon as the type byte is seen.
//!
//! Data stream header: `version: u8 | length: u16 BE | kind: u8 | route: u8 len | bytes |
//! family: u8 (4 or 6) | ip (4 or 16 bytes) | port: u16 BE`, at most [`MAX_STREAM_HEADER`]
//! bytes. After it the stream carries the bytes of one HTTP/1.1 exchange (or a WebSocket
//! session after `101`).
//!
//! Modules:
//! - [`control`]: control messages and their codec.
//! - `congestion`: the [`TunnelCongestion`] knob both sides map to their QUIC controller.
//! - [`stream`]: the data stream header codec.
//! - [`name`]: the route-name rules (DNS labels).
//! - `grant`: [`NameGrant`], the owner-signed permission for another provider key to serve a
//!   name too (sent in `RegisterGranted`, protocol version 2). A robot of a fleet asks for
//!   its group's shared name with `RegisterFleet` (protocol version 3): no grant travels, the
//!   gateway decides from the fleet log it holds.
//! - [`wire`]: the primitive readers and writers both codecs share.
//! - [`control_plane`]: the libp2p control plane between peerctl and a provider
//!   (`/peercompute/control/1`): JSON messages in `type | length | JSON` frames, signed
//!   requests ([`SignedEnvelope`]) and the [`ReplayGuard`].
//! - `io` (feature `tokio`): thin async adapters that feed socket bytes to the codecs.
//! - `quantity`: CPU (`500m`, `0.5`) and memory (`256M`, `1GiB`) as people type them, parsed
//!   into a [`DeployRequest`]'s `cpu_millis` / `memory_bytes`, and printed back.

mod congestion;
mod control;
mod control_plane;
mod grant;
#[cfg(feature = "tokio")]
mod io;
mod name;
mod quantity;
mod stream;
mod wire;

pub use congestion::TunnelCongestion;
pub use control::{
    ControlMessage, FLEET_ID_LEN, FLEET_NAMES_VERSION, GoAwayCode, MAX_CONTROL_FRAME, RefuseCode,
    SHARED_NAMES_VERSION, decode_control, encode_control,
};
pub use control_plane::{
    CONTROL_PLANE_PROTOCOL, ControlPlaneDecodeError, ControlPlaneEncodeError, ControlPlaneMessage,
    DEFAULT_MAX_SKEW_SECS, DEFAULT_REPLAY_CAPACITY, DeployProgress, DeployRequest, DeployResponse,
    DeployStage, DeploymentState, DeploymentSummary, EnvVar, ErrorCode, ErrorResponse,
    InvalidMessage, ListRequest, ListResponse, LogEntry, LogStream, LogsEnd, LogsRequest,
    MAX_ATTACH_NAME, MAX_CONTROL_PLANE_FRAME, MAX_DEPLOYMENT_ID, MAX_DEVICES, MAX_ENV_BYTES,
    MAX_ENV_VARS, MAX_IMAGE_REF, MAX_LOG_TAIL, MAX_MOUNT_PATH, MAX_SIGNED_PAYLOAD, MAX_VOLUME_DATA,
    MAX_VOLUMES, MIN_VOLUME_SHARE, MessageType, NoUrl, Nonce, ReplayError, ReplayGuard, Request,
    SIGNATURE_DOMAIN, SignedEnvelope, StatusRequest, StatusResponse, StopRequest, StopResponse,
    VerifyError, VolumeEnd, VolumeExportRequest, VolumeImportRequest, VolumeInfo, VolumeMount,
    VolumeRemoveRequest, VolumeRemoved, VolumeUsage, VolumesRequest, VolumesResponse,
    decode_control_plane, decode_import_data, decode_request, encode_control_plane, encode_request,
    signing_message, validate_deployment_id, validate_device_name, validate_image_ref,
    validate_mount_path, validate_sha256, validate_share, validate_volume_name,
    validate_volume_ref,
};
pub use grant::{GRANT_SIGNATURE_DOMAIN, GRANT_TEXT_PREFIX, GrantError, MAX_GRANT_SECS, NameGrant};
#[cfg(feature = "tokio")]
pub use io::{ControlReader, IoError, bind_udp, read_stream_header, write_control};
/// The peer id type of signed envelopes (`libp2p-identity`'s, re-exported).
pub use libp2p_identity::PeerId;
pub use name::{NameError, validate_name};
pub use quantity::{
    QuantityError, VolumeArgError, format_cpu, format_memory, parse_cpu, parse_memory, parse_volume,
};
pub use stream::{MAX_STREAM_HEADER, StreamHeader, StreamKind, decode_stream_header};
pub use wire::{DecodeError, EncodeError};

/// ALPN protocol id of the tunnel.
pub const ALPN: &[u8] = b"peercompute-tunnel/1";

/// Tunnel protocol versions this build speaks (inclusive range).
pub const MIN_VERSION: u16 = 1;
/// Highest tunnel protocol version this build speaks.
pub const MAX_VERSION: u16 = 3;

/// Picks the highest version both ranges share.
pub fn negotiate_version(peer_min: u16, peer_max: u16) -> Option<u16> {
    let hi = peer_max.min(MAX_VERSION);
    let lo = peer_min.max(MIN_VERSION);
    (lo <= hi).then_some(hi)
}

#[cfg(test)]
mod tests;
