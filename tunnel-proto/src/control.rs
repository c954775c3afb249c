//! Control-stream messages and their codec: `type: u8 | length: u32 BE | body`.
//!
//! [`decode_control`] consumes one whole frame from the front of a buffer, or returns
//! `Ok(None)` when more bytes are needed. It refuses unknown types and oversized lengths as
//! soon as the 5-byte prefix is present, so a peer cannot make the other side buffer more than
//! [`MAX_CONTROL_FRAME`] bytes.

use bytes::{Buf, BufMut, BytesMut};

use crate::grant::NameGrant;
use crate::name::validate_name;
use crate::wire::{DecodeError, EncodeError, Reader, put_str_list, put_str8, put_str16};

/// Largest control frame body accepted or produced.
pub const MAX_CONTROL_FRAME: usize = 16 * 1024;

const PREFIX: usize = 5;

const T_HELLO: u8 = 0x01;
const T_WELCOME: u8 = 0x02;
const T_REGISTER: u8 = 0x03;
const T_REGISTERED: u8 = 0x04;
const T_REFUSED: u8 = 0x05;
const T_UNREGISTER: u8 = 0x06;
const T_PING: u8 = 0x07;
const T_PONG: u8 = 0x08;
const T_GOAWAY: u8 = 0x09;
const T_REGISTER_GRANTED: u8 = 0x0A;
const T_REGISTER_FLEET: u8 = 0x0B;

/// First protocol version with [`ControlMessage::RegisterGranted`]; a provider sends it only
/// when the Welcome agreed on this version or later.
pub const SHARED_NAMES_VERSION: u16 = 2;

/// First protocol version with [`ControlMessage::RegisterFleet`]; a provider sends it only
/// when the Welcome agreed on this version or later.
pub const FLEET_NAMES_VERSION: u16 = 3;

/// Length of a fleet id on the wire: the fleet key's Ed25519 public key.
pub const FLEET_ID_LEN: usize = 32;

/// Why the gateway refused a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseCode {
    /// The name belongs to another provider key.
    NameOwned,
    /// The name is not a valid DNS label.
    InvalidName,
    /// This provider already holds as many names as the gateway allows.
    TooManyNames,
    /// The gateway cannot take the name right now (e.g. it cannot record it: disk full); the
    /// provider keeps the name and registers it again later. Older providers read it as
    /// `Other(5)` and drop the name.
    TryLater,
    /// A code this build does not know (kept so newer gateways stay readable).
    Other(u8),
}

impl RefuseCode {
    fn to_u8(self) -> u8 {
        match self {
            Self::NameOwned => 1,
            Self::InvalidName => 2,
            Self::TooManyNames => 3,
            Self::TryLater => 5,
            Self::Other(v) => v,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::NameOwned,
            2 => Self::InvalidName,
            3 => Self::TooManyNames,
            5 => Self::TryLater,
            v => Self::Other(v),
        }
    }
}

/// Why one side is closing the tunnel. Also used as the QUIC application close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoAwayCode {
    /// The gateway is shutting down: finish in-flight requests and reconnect later.
    Shutdown,
    /// No tunnel protocol version in common.
    UnsupportedVersion,
    /// The provider's peer id is not admitted by this gateway.
    NotAllowed,
    /// The other side broke the protocol.
    ProtocolError,
    /// A newer connection from the same provider replaced this one.
    Replaced,
    /// A code this build does not know.
    Other(u16),
}

impl GoAwayCode {
    /// Numeric value on the wire and as QUIC close code.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Shutdown => 1,
            Self::UnsupportedVersion => 2,
            Self::NotAllowed => 3,
            Self::ProtocolError => 4,
            Self::Replaced => 5,
            Self::Other(v) => v,
        }
    }

    /// Inverse of [`GoAwayCode::to_u16`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::Shutdown,
            2 => Self::UnsupportedVersion,
            3 => Self::NotAllowed,
            4 => Self::ProtocolError,
            5 => Self::Replaced,
            v => Self::Other(v),
        }
    }
}

/// A message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Provider → gateway, first message: the versions it speaks and its software.
    Hello {
        min_version: u16,
        max_version: u16,
        agent: String,
    },
    /// Gateway → provider: the chosen version, the gateway's peer id and its libp2p addresses.
    Welcome {
        version: u16,
        gateway_id: String,
        p2p_addrs: Vec<String>,
    },
    /// Provider → gateway: route `name` to me.
    Register { name: String },
    /// Gateway → provider: `name` now answers at `url`.
    Registered { name: String, url: String },
    /// Gateway → provider: `name` was not registered.
    Refused {
        name: String,
        code: RefuseCode,
        reason: String,
    },
    /// Provider → gateway: stop routing `name`.
    Unregister { name: String },
    /// Liveness probe; the other side answers with the same nonce.
    Ping { nonce: u64 },
    /// Answer to [`ControlMessage::Ping`].
    Pong { nonce: u64 },
    /// Closing: drain and reconnect later (or never, depending on the code).
    GoAway { code: GoAwayCode, message: String },
    /// Provider → gateway (version ≥ 2): route `name` to me too, as its owner's `grant`
    /// allows. Body: `name: u8 len | grant: u16 len | NameGrant encoding`.
    RegisterGranted { name: String, grant: Box<NameGrant> },
    /// Provider → gateway (version ≥ 3): route `name` to me too, as a robot of `group` of
    /// fleet `fleet` (the fleet key's public key) whose current release is app `name`. The
    /// gateway decides from the fleet's log it holds; no signature travels. Body:
    /// `name: u8 len | fleet: [32] | group: u8 len`.
    RegisterFleet {
        name: String,
        fleet: [u8; FLEET_ID_LEN],
        group: String,
    },
}

/// Appends the frame for `msg` to `dst`.
pub fn encode_control(msg: &ControlMessage, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let mut body = BytesMut::new();
    let ty = match msg {
        ControlMessage::Hello {
            min_version,
            max_version,
            agent,
        } => {
            body.put_u16(*min_version);
            body.put_u16(*max_version);
            put_str16(&mut body, agent, "agent")?;
            T_HELLO
        }
        ControlMessage::Welcome {
            version,
            gateway_id,
            p2p_addrs,
        } => {
            body.put_u16(*version);
            put_str16(&mut body, gateway_id, "gateway_id")?;
            put_str_list(&mut body, p2p_addrs, "p2p_addrs")?;
            T_WELCOME
        }
        ControlMessage::Register { name } => {
            validate_name(name)?;
            put_str8(&mut body, name, "name")?;
            T_REGISTER
        }
        ControlMessage::Registered { name, url } => {
            put_str8(&mut body, name, "name")?;
            put_str16(&mut body, url, "url")?;
            T_REGISTERED
        }
        ControlMessage::Refused { name, code, reason } => {
            put_str8(&mut body, name, "name")?;
            body.put_u8(code.to_u8());
            put_str16(&mut body, reason, "reason")?;
            T_REFUSED
        }
        ControlMessage::Unregister { name } => {
            put_str8(&mut body, name, "name")?;
            T_UNREGISTER
        }
        ControlMessage::Ping { nonce } => {
            body.put_u64(*nonce);
            T_PING
        }
        ControlMessage::Pong { nonce } => {
            body.put_u64(*nonce);
            T_PONG
        }
        ControlMessage::GoAway { code, message } => {
            body.put_u16(code.to_u16());
            put_str16(&mut body, message, "message")?;
            T_GOAWAY
        }
        ControlMessage::RegisterGranted { name, grant } => {
            validate_name(name)?;
            put_str8(&mut body, name, "name")?;
            let mut raw = BytesMut::new();
            grant.encode(&mut raw)?;
            let len = u16::try_from(raw.len()).map_err(|_| EncodeError::FieldTooLong {
                field: "grant",
                len: raw.len(),
                max: usize::from(u16::MAX),
            })?;
            body.put_u16(len);
            body.put_slice(&raw);
            T_REGISTER_GRANTED
        }
        ControlMessage::RegisterFleet { name, fleet, group } => {
            validate_name(name)?;
            put_str8(&mut body, name, "name")?;
            body.put_slice(fleet);
            if group.is_empty() {
                return Err(EncodeError::Empty("group"));
            }
            put_str8(&mut body, group, "group")?;
            T_REGISTER_FLEET
        }
    };
    if body.len() > MAX_CONTROL_FRAME {
        return Err(EncodeError::TooLarge {
            len: body.len(),
            max: MAX_CONTROL_FRAME,
        });
    }
    dst.reserve(PREFIX + body.len());
    dst.put_u8(ty);
    dst.put_u32(u32::try_from(body.len()).expect("body length is bounded by MAX_CONTROL_FRAME"));
    dst.put_slice(&body);
    Ok(())
}

/// Decodes one frame from the front of `src`, consuming it. `Ok(None)`: need more bytes.
pub fn decode_control(src: &mut BytesMut) -> Result<Option<ControlMessage>, DecodeError> {
    if src.len() < PREFIX {
        if let Some(&ty) = src.first() {
            known_type(ty)?;
        }
        return Ok(None);
    }
    let ty = src[0];
    known_type(ty)?;
    let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
    if len > MAX_CONTROL_FRAME {
        return Err(DecodeError::TooLarge {
            len,
            max: MAX_CONTROL_FRAME,
        });
    }
    if src.len() < PREFIX + len {
        return Ok(None);
    }
    src.advance(PREFIX);
    let body = src.split_to(len);
    decode_body(ty, &body).map(Some)
}

fn known_type(ty: u8) -> Result<(), DecodeError> {
    match ty {
        T_HELLO..=T_REGISTER_FLEET => Ok(()),
        other => Err(DecodeError::UnknownType(other)),
    }
}

fn decode_body(ty: u8, body: &[u8]) -> Result<ControlMessage, DecodeError> {
    let mut r = Reader::new(body);
    let msg = match ty {
        T_HELLO => ControlMessage::Hello {
            min_version: r.u16("min_version")?,
            max_version: r.u16("max_version")?,
            agent: r.str16("agent")?,
        },
        T_WELCOME => ControlMessage::Welcome {
            version: r.u16("version")?,
            gateway_id: r.str16("gateway_id")?,
            p2p_addrs: r.str_list("p2p_addrs")?,
        },
        T_REGISTER => {
            let name = r.str8("name")?;
            validate_name(&name)?;
            ControlMessage::Register { name }
        }
        T_REGISTERED => ControlMessage::Registered {
            name: r.str8("name")?,
            url: r.str16("url")?,
        },
        T_REFUSED => ControlMessage::Refused {
            name: r.str8("name")?,
            code: RefuseCode::from_u8(r.u8("code")?),
            reason: r.str16("reason")?,
        },
        T_UNREGISTER => ControlMessage::Unregister {
            name: r.str8("name")?,
        },
        T_PING => ControlMessage::Ping {
            nonce: r.u64("nonce")?,
        },
        T_PONG => ControlMessage::Pong {
            nonce: r.u64("nonce")?,
        },
        T_GOAWAY => ControlMessage::GoAway {
            code: GoAwayCode::from_u16(r.u16("code")?),
            message: r.str16("message")?,
        },
        T_REGISTER_GRANTED => {
            let name = r.str8("name")?;
            validate_name(&name)?;
            let len = usize::from(r.u16("grant")?);
            let grant = Box::new(NameGrant::decode(r.bytes(len, "grant")?)?);
            ControlMessage::RegisterGranted { name, grant }
        }
        T_REGISTER_FLEET => {
            let name = r.str8("name")?;
            validate_name(&name)?;
            let mut fleet = [0; FLEET_ID_LEN];
            fleet.copy_from_slice(r.bytes(FLEET_ID_LEN, "fleet")?);
            let group = r.str8("group")?;
            if group.is_empty() {
                return Err(DecodeError::Empty("group"));
            }
            ControlMessage::RegisterFleet { name, fleet, group }
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    r.finish()?;
    Ok(msg)
}
