//! The properties the fleet fuzz targets check, shared with `cargo test`: the targets in
//! `fuzz_targets/` call these functions, and the crate's `tests/fuzz_corpus.rs` includes this
//! file with `#[path]` to replay every file of `corpus/<target>/` through the same code.
//!
//! For any input bytes, nothing panics, and:
//! - `entry`: a decoded [`SignedEntry`] keeps exactly the bytes it came from (one entry, one
//!   encoding, one hash), follows the entry rules, and decodes again to itself; a refusal
//!   names a cause the bytes show (size, version).
//! - `fleet_frame`: decoding repeatedly from the front of one buffer, each frame takes its
//!   4-byte header and the length it announces; its message re-encodes to a frame no longer
//!   than it (postcard accepts overlong varints; frames, unlike entries, are not hashed) that
//!   decodes to the same message; every entry a frame carries goes through the `entry` checks
//!   and every status through verification; "need more bytes" is only answered while the
//!   announced frame is incomplete, and never for a length over [`MAX_FLEET_FRAME`].
//! - `join_token`: a parsed token's invite is the entry it carries, and its canonical text
//!   parses back to the same token.
//!
//! Only the fleet crate is used here, so the file compiles in both crates.

use peercompute_fleet::{
    DecodeError, FleetMessage, JoinToken, MAX_ENTRY_BYTES, MAX_FLEET_FRAME, Op, SignedEntry,
    TokenError, WireError, decode_frame, encode_message,
};

/// Frame header: `length: u32 BE`.
const HEADER: usize = 4;

/// The name of an op's variant, as reports pin it (`Op::kind`, which names every variant;
/// `tests/codec.rs` then asks for an entry of each).
pub fn op_name(op: &Op) -> &'static str {
    op.kind()
}

/// Every name [`op_name`] gives.
pub const OP_NAMES: [&str; 14] = [
    "genesis",
    "invite",
    "join",
    "enroll",
    "set-groups",
    "grant",
    "ungrant",
    "release",
    "rollback",
    "e-stop",
    "resume",
    "revoke",
    "rotate-member",
    "rotate-root",
];

/// A stable name for each kind of entry decode error (postcard's messages are not pinned).
pub fn decode_kind(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::TooLarge(_) => "too_large",
        DecodeError::TooShort(_) => "too_short",
        DecodeError::Version(_) => "version",
        DecodeError::Malformed(_) => "malformed",
        DecodeError::NotCanonical => "not_canonical",
        DecodeError::Invalid(_) => "invalid",
        DecodeError::BadSignature(_) => "bad_signature",
    }
}

/// What became of an input to the `entry` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryEnd {
    /// It is a signed entry with this op.
    Decoded(&'static str),
    /// It was refused; the kind of error (see [`decode_kind`]).
    Refused(&'static str),
}

/// Decodes `data` as one signed entry, checking the module-level properties. Panics when one
/// does not hold.
pub fn check_entry(data: &[u8]) -> EntryEnd {
    match SignedEntry::decode(data) {
        Ok(signed) => {
            assert_eq!(signed.bytes(), data, "a decoded entry keeps its bytes");
            assert_eq!(
                signed.entry().validate(),
                Ok(()),
                "a decoded entry is valid"
            );
            let again = SignedEntry::decode(signed.bytes());
            assert_eq!(
                again.as_ref(),
                Ok(&signed),
                "an entry decodes again to itself"
            );
            EntryEnd::Decoded(op_name(&signed.entry().op))
        }
        Err(e) => {
            match &e {
                DecodeError::TooLarge(n) => assert!(*n == data.len() && *n > MAX_ENTRY_BYTES),
                DecodeError::TooShort(n) => assert!(*n == data.len() && *n <= 65),
                DecodeError::Version(v) => assert_eq!(Some(v), data.first()),
                _ => {}
            }
            EntryEnd::Refused(decode_kind(&e))
        }
    }
}

/// How decoding one input to the `fleet_frame` target went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameReport {
    /// How many frames were decoded (and round-tripped) before the end.
    pub decoded: usize,
    /// How many entries carried by them decoded as signed entries.
    pub entries: usize,
    /// How many statuses carried by them verified.
    pub statuses: usize,
    /// Why decoding stopped.
    pub end: FrameEnd,
}

/// Why frame decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEnd {
    /// The decoder asked for more bytes (`Ok(None)`); this many were left.
    NeedMore(usize),
    /// The decoder refused: `too_large` or `malformed`.
    Refused(&'static str),
}

/// Decodes fleet frames from `data` until the decoder needs more bytes or refuses, checking
/// the module-level properties for each. Panics when one does not hold.
pub fn check_fleet_frames(data: &[u8]) -> FrameReport {
    let mut report = FrameReport {
        decoded: 0,
        entries: 0,
        statuses: 0,
        end: FrameEnd::NeedMore(0),
    };
    let mut rest = data;
    loop {
        let announced = rest
            .get(..HEADER)
            .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize);
        match decode_frame(rest) {
            Ok(Some((message, used))) => {
                assert_eq!(
                    Some(used - HEADER),
                    announced,
                    "a frame takes what it announces"
                );
                let again = encode_message(&message)
                    .unwrap_or_else(|e| panic!("decoded {message:?} does not re-encode: {e}"));
                assert!(again.len() <= used, "re-encoding {message:?} grew it");
                assert_eq!(
                    decode_frame(&again),
                    Ok(Some((message.clone(), again.len()))),
                    "a re-encoded frame decodes differently"
                );
                count_contents(&message, &mut report);
                report.decoded += 1;
                rest = &rest[used..];
            }
            Ok(None) => {
                if let Some(len) = announced {
                    assert!(len <= MAX_FLEET_FRAME, "waiting for a {len}-byte frame");
                    assert!(
                        rest.len() < HEADER + len,
                        "waiting with a whole frame buffered"
                    );
                }
                report.end = FrameEnd::NeedMore(rest.len());
                return report;
            }
            Err(e) => {
                if let WireError::TooLarge(n) = e {
                    assert_eq!(Some(n), announced, "only a header is refused as too large");
                }
                let kind = match e {
                    WireError::TooLarge(_) => "too_large",
                    WireError::Malformed(_) => "malformed",
                };
                report.end = FrameEnd::Refused(kind);
                return report;
            }
        }
    }
}

/// Runs the entries and statuses a message carries through their own checks.
fn count_contents(message: &FleetMessage, report: &mut FrameReport) {
    let (entries, statuses): (&[Vec<u8>], &[_]) = match message {
        FleetMessage::Push { entries, .. } | FleetMessage::Entries { entries, .. } => {
            (entries, &[])
        }
        FleetMessage::Status(status) => (&[], std::slice::from_ref(status)),
        FleetMessage::Statuses { statuses } => (&[], statuses),
        _ => (&[], &[]),
    };
    for entry in entries {
        if let EntryEnd::Decoded(_) = check_entry(entry) {
            report.entries += 1;
        }
    }
    report.statuses += statuses.iter().filter(|s| s.verify()).count();
}

/// What became of an input to the `join_token` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEnd {
    /// A whole token, checked.
    Parsed,
    /// Refused: `prefix`, `damaged` or `forged`.
    Refused(&'static str),
    /// Its invite entry was refused; the kind of error (see [`decode_kind`]).
    BadEntry(&'static str),
}

/// Parses `data` (as text, invalid UTF-8 replaced) as a join token, checking the module-level
/// properties. Panics when one does not hold.
pub fn check_join_token(data: &[u8]) -> TokenEnd {
    let text = String::from_utf8_lossy(data);
    match JoinToken::parse(&text) {
        Ok(parsed) => {
            assert_eq!(parsed.entry.bytes(), &parsed.token.invite[..]);
            assert!(matches!(&parsed.entry.entry().op, Op::Invite(i) if *i == parsed.invite));
            let again = JoinToken::parse(&parsed.token.to_text())
                .unwrap_or_else(|e| panic!("a parsed token's text does not parse: {e}"));
            assert_eq!(
                again.token, parsed.token,
                "a token's text parses to another"
            );
            TokenEnd::Parsed
        }
        Err(TokenError::Prefix) => TokenEnd::Refused("prefix"),
        Err(TokenError::Damaged(_)) => TokenEnd::Refused("damaged"),
        Err(TokenError::Forged) => TokenEnd::Refused("forged"),
        Err(TokenError::Entry(e)) => TokenEnd::BadEntry(decode_kind(&e)),
    }
}
