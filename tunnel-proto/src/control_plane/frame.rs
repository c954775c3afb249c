//! Control-plane frames: `type: u8 | length: u32 BE | JSON body`.
//!
//! Two decoders share the frame format. [`decode_control_plane`] reads the stream between
//! peerctl and a provider: signed envelopes and the provider's answers; a bare request type is
//! refused there. [`decode_request`] reads the payload of a [`SignedEnvelope`] once its
//! signature holds: only request types. Both refuse an unknown (or misplaced) type as soon as
//! the type byte is present and a length above [`MAX_CONTROL_PLANE_FRAME`] as soon as the
//! 5-byte prefix is, before buffering the body; both return `Ok(None)` without consuming
//! anything while a frame is incomplete.
//!
//! One type is not JSON: `VolumeData` carries raw archive bytes, at most [`MAX_VOLUME_DATA`].
//! The stream decoder reads it as an answer (an export); a provider reads the archive of an
//! import with [`decode_import_data`], which accepts nothing else, and only after a signed
//! `VolumeImportRequest` on the same stream.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::messages::{
    DeployProgress, DeployRequest, DeployResponse, ErrorResponse, ListRequest, ListResponse,
    LogEntry, LogsEnd, LogsRequest, StatusRequest, StatusResponse, StopRequest, StopResponse,
};
use super::signing::SignedEnvelope;
use super::validate::{InvalidMessage, validate_deployment_id, validate_finite, validate_tail};
use super::volumes::{
    MAX_VOLUME_DATA, VolumeEnd, VolumeExportRequest, VolumeImportRequest, VolumeRemoveRequest,
    VolumeRemoved, VolumesRequest, VolumesResponse, validate_volume_ref,
};

/// libp2p protocol name of the control plane.
pub const CONTROL_PLANE_PROTOCOL: &str = "/peercompute/control/1";

/// Largest frame body accepted or produced (256 KiB).
pub const MAX_CONTROL_PLANE_FRAME: usize = 256 * 1024;

const PREFIX: usize = 5;

/// The type byte of a control-plane frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A [`SignedEnvelope`] carrying one request frame.
    Signed,
    DeployRequest,
    StopRequest,
    StatusRequest,
    ListRequest,
    LogsRequest,
    VolumesRequest,
    VolumeRemoveRequest,
    VolumeExportRequest,
    VolumeImportRequest,
    DeployProgress,
    DeployResponse,
    StopResponse,
    StatusResponse,
    ListResponse,
    LogEntry,
    LogsEnd,
    VolumesResponse,
    VolumeRemoved,
    /// Raw archive bytes (not JSON), at most [`MAX_VOLUME_DATA`].
    VolumeData,
    VolumeEnd,
    Error,
}

impl MessageType {
    /// Every type, in wire order.
    pub const ALL: [Self; 22] = [
        Self::Signed,
        Self::DeployRequest,
        Self::StopRequest,
        Self::StatusRequest,
        Self::ListRequest,
        Self::LogsRequest,
        Self::VolumesRequest,
        Self::VolumeRemoveRequest,
        Self::VolumeExportRequest,
        Self::VolumeImportRequest,
        Self::DeployProgress,
        Self::DeployResponse,
        Self::StopResponse,
        Self::StatusResponse,
        Self::ListResponse,
        Self::LogEntry,
        Self::LogsEnd,
        Self::VolumesResponse,
        Self::VolumeRemoved,
        Self::VolumeData,
        Self::VolumeEnd,
        Self::Error,
    ];

    /// The byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Signed => 0x01,
            Self::DeployRequest => 0x10,
            Self::StopRequest => 0x11,
            Self::StatusRequest => 0x12,
            Self::ListRequest => 0x13,
            Self::LogsRequest => 0x14,
            Self::VolumesRequest => 0x15,
            Self::VolumeRemoveRequest => 0x16,
            Self::VolumeExportRequest => 0x17,
            Self::VolumeImportRequest => 0x18,
            Self::DeployProgress => 0x20,
            Self::DeployResponse => 0x21,
            Self::StopResponse => 0x22,
            Self::StatusResponse => 0x23,
            Self::ListResponse => 0x24,
            Self::LogEntry => 0x25,
            Self::LogsEnd => 0x26,
            Self::VolumesResponse => 0x27,
            Self::VolumeRemoved => 0x28,
            Self::VolumeData => 0x29,
            Self::VolumeEnd => 0x2a,
            Self::Error => 0x2f,
        }
    }

    /// Inverse of [`MessageType::to_u8`]; `None` for bytes that name no type.
    pub fn from_u8(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.to_u8() == byte)
    }

    /// Whether this type only travels inside a signed envelope.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Self::DeployRequest
                | Self::StopRequest
                | Self::StatusRequest
                | Self::ListRequest
                | Self::LogsRequest
                | Self::VolumesRequest
                | Self::VolumeRemoveRequest
                | Self::VolumeExportRequest
                | Self::VolumeImportRequest
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A message on the control-plane stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlPlaneMessage {
    /// Client → provider: a signed request.
    Signed(SignedEnvelope),
    DeployProgress(DeployProgress),
    DeployResponse(DeployResponse),
    StopResponse(StopResponse),
    StatusResponse(StatusResponse),
    ListResponse(ListResponse),
    LogEntry(LogEntry),
    LogsEnd(LogsEnd),
    VolumesResponse(VolumesResponse),
    VolumeRemoved(VolumeRemoved),
    /// Raw archive bytes of an export (provider → client) or an import (client → provider,
    /// read with [`decode_import_data`]); at most [`MAX_VOLUME_DATA`].
    VolumeData(Bytes),
    VolumeEnd(VolumeEnd),
    Error(ErrorResponse),
}

/// A request, as carried in the payload of a [`SignedEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Deploy(DeployRequest),
    Stop(StopRequest),
    Status(StatusRequest),
    List(ListRequest),
    Logs(LogsRequest),
    Volumes(VolumesRequest),
    VolumeRemove(VolumeRemoveRequest),
    VolumeExport(VolumeExportRequest),
    /// The archive follows on the same stream as `VolumeData` frames.
    VolumeImport(VolumeImportRequest),
}

impl Request {
    /// The frame type of this request.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Deploy(_) => MessageType::DeployRequest,
            Self::Stop(_) => MessageType::StopRequest,
            Self::Status(_) => MessageType::StatusRequest,
            Self::List(_) => MessageType::ListRequest,
            Self::Logs(_) => MessageType::LogsRequest,
            Self::Volumes(_) => MessageType::VolumesRequest,
            Self::VolumeRemove(_) => MessageType::VolumeRemoveRequest,
            Self::VolumeExport(_) => MessageType::VolumeExportRequest,
            Self::VolumeImport(_) => MessageType::VolumeImportRequest,
        }
    }

    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        match self {
            Self::Deploy(req) => req.validate(),
            Self::Stop(StopRequest { id }) | Self::Status(StatusRequest { id }) => {
                validate_deployment_id(id)
            }
            Self::List(ListRequest {}) | Self::Volumes(VolumesRequest {}) => Ok(()),
            Self::Logs(req) => {
                validate_deployment_id(&req.id)?;
                validate_tail(req.tail)
            }
            Self::VolumeRemove(VolumeRemoveRequest { volume })
            | Self::VolumeExport(VolumeExportRequest { volume }) => validate_volume_ref(volume),
            Self::VolumeImport(req) => req.validate(),
        }
    }
}

/// Why control-plane bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlPlaneDecodeError {
    #[error("control-plane frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown control-plane message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{0} must be sent inside a signed envelope")]
    UnsignedRequest(MessageType),
    #[error("a signed payload must be a request, not {0}")]
    NotARequest(MessageType),
    #[error("the signed payload ends inside its frame")]
    TruncatedPayload,
    #[error("{0} bytes follow the request in the signed payload")]
    TrailingPayload(usize),
    #[error("expected the volume archive (VolumeData), got {0}")]
    NotVolumeData(MessageType),
    #[error("an empty VolumeData frame: an archive is sent in frames of at least one byte")]
    EmptyVolumeData,
    #[error("{ty} body is not accepted: {reason}")]
    Json { ty: MessageType, reason: String },
    #[error("invalid {ty}: {source}")]
    Invalid {
        ty: MessageType,
        source: InvalidMessage,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlPlaneEncodeError {
    #[error("{ty} of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        ty: MessageType,
        len: usize,
        max: usize,
    },
    #[error("{ty} cannot be encoded as JSON: {reason}")]
    Json { ty: MessageType, reason: String },
    #[error("invalid {ty}: {source}")]
    Invalid {
        ty: MessageType,
        source: InvalidMessage,
    },
}

/// Appends the frame for `msg` to `dst`.
pub fn encode_control_plane(
    msg: &ControlPlaneMessage,
    dst: &mut BytesMut,
) -> Result<(), ControlPlaneEncodeError> {
    match msg {
        ControlPlaneMessage::Signed(m) => put_frame(MessageType::Signed, m, dst),
        ControlPlaneMessage::DeployProgress(m) => put_frame(MessageType::DeployProgress, m, dst),
        ControlPlaneMessage::DeployResponse(m) => put_frame(MessageType::DeployResponse, m, dst),
        ControlPlaneMessage::StopResponse(m) => put_frame(MessageType::StopResponse, m, dst),
        ControlPlaneMessage::StatusResponse(m) => {
            validate_finite("cpu_percent", m.cpu_percent).map_err(|source| {
                ControlPlaneEncodeError::Invalid {
                    ty: MessageType::StatusResponse,
                    source,
                }
            })?;
            put_frame(MessageType::StatusResponse, m, dst)
        }
        ControlPlaneMessage::ListResponse(m) => put_frame(MessageType::ListResponse, m, dst),
        ControlPlaneMessage::LogEntry(m) => put_frame(MessageType::LogEntry, m, dst),
        ControlPlaneMessage::LogsEnd(m) => put_frame(MessageType::LogsEnd, m, dst),
        ControlPlaneMessage::VolumesResponse(m) => put_frame(MessageType::VolumesResponse, m, dst),
        ControlPlaneMessage::VolumeRemoved(m) => put_frame(MessageType::VolumeRemoved, m, dst),
        ControlPlaneMessage::VolumeData(data) => put_raw(MessageType::VolumeData, data, dst),
        ControlPlaneMessage::VolumeEnd(m) => put_frame(MessageType::VolumeEnd, m, dst),
        ControlPlaneMessage::Error(m) => put_frame(MessageType::Error, m, dst),
    }
}

/// Appends the frame for `req` to `dst` (the bytes a [`SignedEnvelope`] carries and signs).
pub fn encode_request(req: &Request, dst: &mut BytesMut) -> Result<(), ControlPlaneEncodeError> {
    let ty = req.message_type();
    req.validate()
        .map_err(|source| ControlPlaneEncodeError::Invalid { ty, source })?;
    match req {
        Request::Deploy(m) => put_frame(ty, m, dst),
        Request::Stop(m) => put_frame(ty, m, dst),
        Request::Status(m) => put_frame(ty, m, dst),
        Request::List(m) => put_frame(ty, m, dst),
        Request::Logs(m) => put_frame(ty, m, dst),
        Request::Volumes(m) => put_frame(ty, m, dst),
        Request::VolumeRemove(m) => put_frame(ty, m, dst),
        Request::VolumeExport(m) => put_frame(ty, m, dst),
        Request::VolumeImport(m) => put_frame(ty, m, dst),
    }
}

fn put_frame<T: Serialize>(
    ty: MessageType,
    body: &T,
    dst: &mut BytesMut,
) -> Result<(), ControlPlaneEncodeError> {
    let json = serde_json::to_vec(body).map_err(|e| ControlPlaneEncodeError::Json {
        ty,
        reason: e.to_string(),
    })?;
    put_raw(ty, &json, dst)
}

fn put_raw(
    ty: MessageType,
    body: &[u8],
    dst: &mut BytesMut,
) -> Result<(), ControlPlaneEncodeError> {
    let max = max_body(ty);
    if body.len() > max {
        return Err(ControlPlaneEncodeError::TooLarge {
            ty,
            len: body.len(),
            max,
        });
    }
    dst.reserve(PREFIX + body.len());
    dst.put_u8(ty.to_u8());
    dst.put_u32(u32::try_from(body.len()).expect("body length is bounded by the frame maximum"));
    dst.put_slice(body);
    Ok(())
}

/// The largest body a frame of type `ty` may have.
fn max_body(ty: MessageType) -> usize {
    match ty {
        MessageType::VolumeData => MAX_VOLUME_DATA,
        _ => MAX_CONTROL_PLANE_FRAME,
    }
}

/// Decodes one frame of the control-plane stream from the front of `src`, consuming it.
/// `Ok(None)`: more bytes are needed.
pub fn decode_control_plane(
    src: &mut BytesMut,
) -> Result<Option<ControlPlaneMessage>, ControlPlaneDecodeError> {
    let Some((ty, body)) = split_frame(src, stream_type)? else {
        return Ok(None);
    };
    let msg = match ty {
        MessageType::Signed => ControlPlaneMessage::Signed(parse(ty, &body)?),
        MessageType::DeployProgress => ControlPlaneMessage::DeployProgress(parse(ty, &body)?),
        MessageType::DeployResponse => ControlPlaneMessage::DeployResponse(parse(ty, &body)?),
        MessageType::StopResponse => ControlPlaneMessage::StopResponse(parse(ty, &body)?),
        MessageType::StatusResponse => {
            // JSON has no NaN or infinity, so a parsed cpu_percent is always finite.
            ControlPlaneMessage::StatusResponse(parse(ty, &body)?)
        }
        MessageType::ListResponse => ControlPlaneMessage::ListResponse(parse(ty, &body)?),
        MessageType::LogEntry => ControlPlaneMessage::LogEntry(parse(ty, &body)?),
        MessageType::LogsEnd => ControlPlaneMessage::LogsEnd(parse(ty, &body)?),
        MessageType::VolumesResponse => ControlPlaneMessage::VolumesResponse(parse(ty, &body)?),
        MessageType::VolumeRemoved => ControlPlaneMessage::VolumeRemoved(parse(ty, &body)?),
        MessageType::VolumeData => ControlPlaneMessage::VolumeData(body.freeze()),
        MessageType::VolumeEnd => ControlPlaneMessage::VolumeEnd(parse(ty, &body)?),
        MessageType::Error => ControlPlaneMessage::Error(parse(ty, &body)?),
        request => return Err(ControlPlaneDecodeError::UnsignedRequest(request)),
    };
    Ok(Some(msg))
}

/// Decodes one request frame from the front of `src`, consuming it. `Ok(None)`: more bytes are
/// needed. Only request types are accepted, and every request is validated.
pub fn decode_request(src: &mut BytesMut) -> Result<Option<Request>, ControlPlaneDecodeError> {
    let Some((ty, body)) = split_frame(src, request_type)? else {
        return Ok(None);
    };
    let req = match ty {
        MessageType::DeployRequest => Request::Deploy(parse(ty, &body)?),
        MessageType::StopRequest => Request::Stop(parse(ty, &body)?),
        MessageType::StatusRequest => Request::Status(parse(ty, &body)?),
        MessageType::ListRequest => Request::List(parse(ty, &body)?),
        MessageType::LogsRequest => Request::Logs(parse(ty, &body)?),
        MessageType::VolumesRequest => Request::Volumes(parse(ty, &body)?),
        MessageType::VolumeRemoveRequest => Request::VolumeRemove(parse(ty, &body)?),
        MessageType::VolumeExportRequest => Request::VolumeExport(parse(ty, &body)?),
        MessageType::VolumeImportRequest => Request::VolumeImport(parse(ty, &body)?),
        other => return Err(ControlPlaneDecodeError::NotARequest(other)),
    };
    req.validate()
        .map_err(|source| ControlPlaneDecodeError::Invalid { ty, source })?;
    Ok(Some(req))
}

/// Decodes one frame of an import's archive from the front of `src`, consuming it: what a
/// provider reads after a signed `VolumeImportRequest`, and nothing else (any other type is
/// refused as soon as its byte is seen). An empty frame is refused too: it carries nothing,
/// and would only keep a transfer (and what the provider holds for it) alive. `Ok(None)`:
/// more bytes are needed.
pub fn decode_import_data(src: &mut BytesMut) -> Result<Option<Bytes>, ControlPlaneDecodeError> {
    if src.len() >= PREFIX && src[0] == MessageType::VolumeData.to_u8() && src[1..PREFIX] == [0; 4]
    {
        return Err(ControlPlaneDecodeError::EmptyVolumeData);
    }
    let Some((_, body)) = split_frame(src, volume_data_type)? else {
        return Ok(None);
    };
    Ok(Some(body.freeze()))
}

/// Decodes a signed payload: exactly one whole request frame.
pub(super) fn request_from_payload(payload: &[u8]) -> Result<Request, ControlPlaneDecodeError> {
    let mut buf = BytesMut::from(payload);
    match decode_request(&mut buf)? {
        Some(_) if !buf.is_empty() => Err(ControlPlaneDecodeError::TrailingPayload(buf.len())),
        Some(req) => Ok(req),
        None => Err(ControlPlaneDecodeError::TruncatedPayload),
    }
}

fn stream_type(byte: u8) -> Result<MessageType, ControlPlaneDecodeError> {
    match MessageType::from_u8(byte) {
        Some(ty) if ty.is_request() => Err(ControlPlaneDecodeError::UnsignedRequest(ty)),
        Some(ty) => Ok(ty),
        None => Err(ControlPlaneDecodeError::UnknownType(byte)),
    }
}

fn request_type(byte: u8) -> Result<MessageType, ControlPlaneDecodeError> {
    match MessageType::from_u8(byte) {
        Some(ty) if ty.is_request() => Ok(ty),
        Some(ty) => Err(ControlPlaneDecodeError::NotARequest(ty)),
        None => Err(ControlPlaneDecodeError::UnknownType(byte)),
    }
}

fn volume_data_type(byte: u8) -> Result<MessageType, ControlPlaneDecodeError> {
    match MessageType::from_u8(byte) {
        Some(MessageType::VolumeData) => Ok(MessageType::VolumeData),
        Some(ty) => Err(ControlPlaneDecodeError::NotVolumeData(ty)),
        None => Err(ControlPlaneDecodeError::UnknownType(byte)),
    }
}

/// Splits one whole frame off the front of `src`, checking the type byte with `accept` and the
/// length against the maximum before waiting for (or copying) the body.
fn split_frame(
    src: &mut BytesMut,
    accept: fn(u8) -> Result<MessageType, ControlPlaneDecodeError>,
) -> Result<Option<(MessageType, BytesMut)>, ControlPlaneDecodeError> {
    let Some(&first) = src.first() else {
        return Ok(None);
    };
    let ty = accept(first)?;
    if src.len() < PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
    let max = max_body(ty);
    if len > max {
        return Err(ControlPlaneDecodeError::TooLarge { len, max });
    }
    if src.len() < PREFIX + len {
        return Ok(None);
    }
    src.advance(PREFIX);
    Ok(Some((ty, src.split_to(len))))
}

fn parse<T: DeserializeOwned>(ty: MessageType, body: &[u8]) -> Result<T, ControlPlaneDecodeError> {
    serde_json::from_slice(body).map_err(|e| ControlPlaneDecodeError::Json {
        ty,
        reason: e.to_string(),
    })
}
