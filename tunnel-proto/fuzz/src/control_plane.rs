//! The properties the `control_plane_frame` fuzz target checks, shared with `cargo test`: the
//! target (`fuzz_targets/control_plane_frame.rs`) and the crate's `tests/fuzz_corpus.rs` and
//! `tests/control_plane_props.rs` include this file with `#[path]`, so every file of
//! `corpus/control_plane_frame/` is replayed through the same code by plain `cargo test`.
//!
//! The same bytes are fed to the three control-plane decoders (the stream decoder, the signed
//! payload's request decoder, and the import-archive decoder a provider reads `VolumeData`
//! with after a signed import request), decoding repeatedly from the front of one buffer until the
//! decoder asks for more bytes or refuses. It must never panic, and:
//! - every decoded value consumed at least the 5-byte prefix, from the front only;
//! - re-encoding a decoded value succeeds (unless the canonical JSON outgrows the frame
//!   maximum), decodes back to the same value, and re-encoding that gives the same bytes (JSON
//!   admits many spellings of one value, so the canonical form is the encoder's output);
//! - "need more bytes" (`Ok(None)`) leaves the buffer untouched and is only answered while a
//!   frame of the maximum size could still complete;
//! - a signed envelope goes through full verification (as the provider named in it, with the
//!   clock at its timestamp and the test client [`CLIENT_ID`] as signer) without panicking.
//!
//! Only `bytes` and the codec crate are used here, so the file compiles in both crates.

use bytes::{Bytes, BytesMut};
use peercompute_tunnel_proto::{
    ControlPlaneDecodeError, ControlPlaneEncodeError, ControlPlaneMessage, MAX_CONTROL_PLANE_FRAME,
    PeerId, ReplayGuard, decode_control_plane, decode_import_data, decode_request,
    encode_control_plane, encode_request,
};

/// Peer id of the Ed25519 key with the 32-byte seed `[1; 32]`, the signer of the corpus seeds.
pub const CLIENT_ID: &str = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5";

/// Frame prefix: `type: u8 | length: u32 BE`.
const PREFIX: usize = 5;

/// How decoding one input with one decoder went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneReport {
    /// How many values were decoded (and round-tripped) before the end.
    pub decoded: usize,
    /// How many signed envelopes passed verification.
    pub verified: usize,
    /// Why decoding stopped.
    pub end: PlaneEnd,
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneEnd {
    /// The decoder asked for more bytes (`Ok(None)`); this many were left in the buffer.
    NeedMore(usize),
    /// The decoder refused the bytes; the error's kind (see [`kind`]).
    Refused(&'static str),
}

/// A stable name for each kind of decode error (JSON error texts vary between serde_json
/// versions, so seeds pin the kind only).
pub fn kind(e: &ControlPlaneDecodeError) -> &'static str {
    match e {
        ControlPlaneDecodeError::TooLarge { .. } => "too_large",
        ControlPlaneDecodeError::UnknownType(_) => "unknown_type",
        ControlPlaneDecodeError::UnsignedRequest(_) => "unsigned_request",
        ControlPlaneDecodeError::NotARequest(_) => "not_a_request",
        ControlPlaneDecodeError::TruncatedPayload => "truncated_payload",
        ControlPlaneDecodeError::TrailingPayload(_) => "trailing_payload",
        ControlPlaneDecodeError::NotVolumeData(_) => "not_volume_data",
        ControlPlaneDecodeError::EmptyVolumeData => "empty_volume_data",
        ControlPlaneDecodeError::Json { .. } => "json",
        ControlPlaneDecodeError::Invalid { .. } => "invalid",
    }
}

/// Runs the three decoders over `data`: (stream decoder report, request decoder report); the
/// import decoder's report is [`check_import_data`]'s.
pub fn check_control_plane(data: &[u8]) -> (PlaneReport, PlaneReport) {
    check_import_data(data);
    let signer: PeerId = CLIENT_ID.parse().expect("CLIENT_ID is a valid peer id");
    let stream = check_frames(
        data,
        decode_control_plane,
        encode_control_plane,
        |msg: &ControlPlaneMessage| match msg {
            ControlPlaneMessage::Signed(env) => {
                let mut guard = ReplayGuard::default();
                env.verify(&signer, &env.provider, env.timestamp, &mut guard)
                    .is_ok()
            }
            _ => false,
        },
    );
    let requests = check_frames(data, decode_request, encode_request, |_| false);
    (stream, requests)
}

/// Runs the import-archive decoder over `data`.
pub fn check_import_data(data: &[u8]) -> PlaneReport {
    check_frames(data, decode_import_data, encode_volume_data, |_| false)
}

fn encode_volume_data(data: &Bytes, dst: &mut BytesMut) -> Result<(), ControlPlaneEncodeError> {
    encode_control_plane(&ControlPlaneMessage::VolumeData(data.clone()), dst)
}

fn check_frames<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    decode: fn(&mut BytesMut) -> Result<Option<T>, ControlPlaneDecodeError>,
    encode: fn(&T, &mut BytesMut) -> Result<(), ControlPlaneEncodeError>,
    verify: impl Fn(&T) -> bool,
) -> PlaneReport {
    let mut buf = BytesMut::from(data);
    let (mut decoded, mut verified) = (0, 0);
    loop {
        let before = buf.clone();
        match decode(&mut buf) {
            Ok(Some(value)) => {
                let consumed = before.len() - buf.len();
                assert!(consumed >= PREFIX, "a frame consumed {consumed} bytes");
                assert_eq!(
                    &before[consumed..],
                    &buf[..],
                    "consumed from the front only"
                );
                check_round_trip(&value, decode, encode);
                if verify(&value) {
                    verified += 1;
                }
                decoded += 1;
            }
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) must not consume bytes");
                assert!(
                    buf.len() < PREFIX + MAX_CONTROL_PLANE_FRAME,
                    "waiting for more bytes with {} buffered",
                    buf.len()
                );
                return PlaneReport {
                    decoded,
                    verified,
                    end: PlaneEnd::NeedMore(buf.len()),
                };
            }
            Err(e) => {
                return PlaneReport {
                    decoded,
                    verified,
                    end: PlaneEnd::Refused(kind(&e)),
                };
            }
        }
    }
}

fn check_round_trip<T: PartialEq + std::fmt::Debug>(
    value: &T,
    decode: fn(&mut BytesMut) -> Result<Option<T>, ControlPlaneDecodeError>,
    encode: fn(&T, &mut BytesMut) -> Result<(), ControlPlaneEncodeError>,
) {
    let mut canonical = BytesMut::new();
    match encode(value, &mut canonical) {
        Ok(()) => {}
        Err(ControlPlaneEncodeError::TooLarge { .. }) => return,
        Err(e) => panic!("decoded {value:?} does not re-encode: {e}"),
    }
    let mut again = canonical.clone();
    let back = decode(&mut again)
        .unwrap_or_else(|e| panic!("re-encoded {value:?} does not decode: {e}"))
        .unwrap_or_else(|| panic!("re-encoded {value:?} is incomplete"));
    assert_eq!(&back, value, "re-encoded value decodes differently");
    assert!(again.is_empty(), "re-encoded frame left bytes behind");
    let mut twice = BytesMut::new();
    encode(&back, &mut twice).unwrap_or_else(|e| panic!("{back:?} does not re-encode: {e}"));
    assert_eq!(twice, canonical, "the canonical encoding is not stable");
}
