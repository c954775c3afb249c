//! The properties the fuzz targets check, shared with `cargo test`: the fuzz targets in
//! `fuzz_targets/` call these functions, and `tests/fuzz_corpus.rs` of the crate includes this
//! file with `#[path]` to replay every file of `corpus/<target>/` through the same code.
//!
//! For any input bytes, decoding repeatedly from the front of one buffer until the decoder
//! asks for more bytes or refuses the input must never panic, and:
//! - every decoded value consumed at least one byte, and re-encoding it gives exactly the bytes
//!   it was decoded from (the encoding is canonical), which decode back to the same value;
//! - "need more bytes" (`Ok(None)`) leaves the buffer untouched and is only answered while a
//!   frame of the maximum size could still complete, so a peer cannot make us wait forever.
//!
//! Only `bytes` and the codec crate are used here, so the file compiles in both crates.

use bytes::BytesMut;
use peercompute_tunnel_proto::{
    DecodeError, MAX_CONTROL_FRAME, MAX_STREAM_HEADER, decode_control, decode_stream_header,
    encode_control,
};

/// Control frame prefix: `type: u8 | length: u32 BE`.
const CONTROL_PREFIX: usize = 5;
/// Stream header prefix: `version: u8 | length: u16 BE`.
const STREAM_PREFIX: usize = 3;

/// How decoding one input went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How many values were decoded (and round-tripped) before the end.
    pub decoded: usize,
    /// Why decoding stopped.
    pub end: End,
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The decoder asked for more bytes (`Ok(None)`); this many were left in the buffer.
    NeedMore(usize),
    /// The decoder refused the bytes.
    Refused(DecodeError),
}

/// Decodes control frames from `data` until the decoder needs more bytes or refuses, checking
/// the module-level properties for each frame. Panics when one does not hold.
pub fn check_control_frames(data: &[u8]) -> Report {
    let mut buf = BytesMut::from(data);
    let mut decoded = 0;
    loop {
        let before = buf.clone();
        match decode_control(&mut buf) {
            Ok(Some(msg)) => {
                let consumed = before.len() - buf.len();
                assert!(
                    consumed >= CONTROL_PREFIX,
                    "a frame consumed {consumed} bytes"
                );
                assert_eq!(
                    &before[consumed..],
                    &buf[..],
                    "decoding consumed bytes from the front only"
                );
                let mut again = BytesMut::new();
                encode_control(&msg, &mut again)
                    .unwrap_or_else(|e| panic!("decoded {msg:?} does not re-encode: {e}"));
                assert_eq!(
                    &again[..],
                    &before[..consumed],
                    "re-encoding {msg:?} differs from the bytes it came from"
                );
                let back = decode_control(&mut again);
                assert_eq!(back, Ok(Some(msg)), "re-encoded frame decodes differently");
                assert!(again.is_empty(), "re-encoded frame left bytes behind");
                decoded += 1;
            }
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) must not consume bytes");
                assert!(
                    buf.len() < CONTROL_PREFIX + MAX_CONTROL_FRAME,
                    "waiting for more bytes with {} buffered",
                    buf.len()
                );
                return Report {
                    decoded,
                    end: End::NeedMore(buf.len()),
                };
            }
            Err(e) => {
                return Report {
                    decoded,
                    end: End::Refused(e),
                };
            }
        }
    }
}

/// Decodes stream headers from `data` until the decoder needs more bytes or refuses, checking
/// the module-level properties for each header. Panics when one does not hold.
///
/// A real stream carries one header followed by HTTP bytes; decoding on after the first header
/// just feeds those bytes (or further headers) to the decoder as more hostile input.
pub fn check_stream_headers(data: &[u8]) -> Report {
    let mut buf = BytesMut::from(data);
    let mut decoded = 0;
    loop {
        let before = buf.clone();
        match decode_stream_header(&mut buf) {
            Ok(Some(header)) => {
                let consumed = before.len() - buf.len();
                assert!(
                    consumed >= STREAM_PREFIX,
                    "a header consumed {consumed} bytes"
                );
                assert_eq!(
                    &before[consumed..],
                    &buf[..],
                    "decoding consumed bytes from the front only"
                );
                let mut again = BytesMut::new();
                header
                    .encode(&mut again)
                    .unwrap_or_else(|e| panic!("decoded {header:?} does not re-encode: {e}"));
                assert_eq!(
                    &again[..],
                    &before[..consumed],
                    "re-encoding {header:?} differs from the bytes it came from"
                );
                let back = decode_stream_header(&mut again);
                assert_eq!(
                    back,
                    Ok(Some(header)),
                    "re-encoded header decodes differently"
                );
                assert!(again.is_empty(), "re-encoded header left bytes behind");
                decoded += 1;
            }
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) must not consume bytes");
                assert!(
                    buf.len() < STREAM_PREFIX + MAX_STREAM_HEADER,
                    "waiting for more bytes with {} buffered",
                    buf.len()
                );
                return Report {
                    decoded,
                    end: End::NeedMore(buf.len()),
                };
            }
            Err(e) => {
                return Report {
                    decoded,
                    end: End::Refused(e),
                };
            }
        }
    }
}
