//! The header the gateway writes first on every data stream: which route the request is for,
//! who the visitor is, and what kind of bytes follow.
//!
//! `version: u8 | length: u16 BE | kind: u8 | route: u8 len + bytes | family: u8 | ip | port: u16`

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, BytesMut};

use crate::name::validate_name;
use crate::wire::{DecodeError, EncodeError, Reader, put_str8};

/// Largest header body accepted.
pub const MAX_STREAM_HEADER: usize = 512;

const VERSION: u8 = 1;
const PREFIX: usize = 3;

/// What the stream carries after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// One HTTP/1.1 request and its response (and, after `101`, the upgraded session).
    Http,
}

impl StreamKind {
    fn to_u8(self) -> u8 {
        match self {
            Self::Http => 1,
        }
    }

    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(Self::Http),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Header of one data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// What follows the header.
    pub kind: StreamKind,
    /// The route name the visitor asked for.
    pub route: String,
    /// The visitor's address as the gateway saw it.
    pub client: SocketAddr,
}

impl StreamHeader {
    /// Appends the encoded header to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        validate_name(&self.route)?;
        let mut body = BytesMut::with_capacity(64);
        body.put_u8(self.kind.to_u8());
        put_str8(&mut body, &self.route, "route")?;
        match self.client.ip() {
            IpAddr::V4(ip) => {
                body.put_u8(4);
                body.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                body.put_u8(6);
                body.put_slice(&ip.octets());
            }
        }
        body.put_u16(self.client.port());
        dst.put_u8(VERSION);
        dst.put_u16(u16::try_from(body.len()).expect("a header body is under 100 bytes"));
        dst.put_slice(&body);
        Ok(())
    }
}

/// Decodes a header from the front of `src`, consuming it. `Ok(None)`: need more bytes.
pub fn decode_stream_header(src: &mut BytesMut) -> Result<Option<StreamHeader>, DecodeError> {
    let Some(&version) = src.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    if src.len() < PREFIX {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([src[1], src[2]]));
    if len > MAX_STREAM_HEADER {
        return Err(DecodeError::TooLarge {
            len,
            max: MAX_STREAM_HEADER,
        });
    }
    if src.len() < PREFIX + len {
        return Ok(None);
    }
    src.advance(PREFIX);
    let body = src.split_to(len);
    let mut r = Reader::new(&body);
    let kind = StreamKind::from_u8(r.u8("kind")?)?;
    let route = r.str8("route")?;
    validate_name(&route)?;
    let ip = match r.u8("family")? {
        4 => {
            let b: [u8; 4] = r.bytes(4, "ip")?.try_into().expect("4 bytes were read");
            IpAddr::V4(Ipv4Addr::from(b))
        }
        6 => {
            let b: [u8; 16] = r.bytes(16, "ip")?.try_into().expect("16 bytes were read");
            IpAddr::V6(Ipv6Addr::from(b))
        }
        other => return Err(DecodeError::UnknownFamily(other)),
    };
    let port = r.u16("port")?;
    r.finish()?;
    Ok(Some(StreamHeader {
        kind,
        route,
        client: SocketAddr::new(ip, port),
    }))
}
