//! The fleet exchange protocol (`/peercompute/fleet/1`), sans-IO: what members say to each
//! other about a fleet log, and the frames it travels in.
//!
//! ```text
//!  frame:  length: u32 BE (at most MAX_FLEET_FRAME) | postcard bytes of a FleetMessage
//!
//!  pusher                         member                 puller                  member
//!   │ Push{fleet, entries} ──────▶ │                      │ Pull{fleet, heads} ──▶ │
//!   │ ◀────── Ack{results}         │                      │ ◀── Entries{.., more}  │ (repeated
//!   │                              │                      │ ◀── Entries{.., done}  │  in pages)
//!  robot                          gateway                asker                 gateway
//!   │ Status(report) ────────────▶ │                      │ StatusRequest{fleet} ▶ │
//!   │ ◀────── Ack{[]}              │                      │ ◀── Statuses{..}       │
//!  member                         robot
//!   │ LogsRequest{fleet, query} ─▶ │   (the robot checks the asker's role covers the group)
//!   │ ◀── Logs{lines, truncated}   │
//!
//!  Anti-entropy on (re)connect is two pulls on one stream: A sends Pull{A's heads}, B answers
//!  with pages, then A answers B's Pull{B's heads} the same way.
//! ```
//!
//! Entries travel as their signed wire bytes and are verified by the receiver like any other
//! (a relay can store and forward them, never alter them). Any message may be answered by
//! `Error{message}`. The length is checked before a byte of the body is buffered.

use serde::{Deserialize, Serialize};

use crate::ids::{EntryHash, FleetId};
use crate::logs::LogsQuery;
#[cfg(doc)]
use crate::logs::{MAX_LOG_BYTES, MAX_LOG_TAIL};
use crate::status::SignedStatus;

/// Protocol id on libp2p.
pub const FLEET_PROTOCOL: &str = "/peercompute/fleet/1";
/// Largest frame body, in bytes.
pub const MAX_FLEET_FRAME: usize = 1024 * 1024;
/// Most entries in one `Push` or `Entries` page (pages of at most ~1 MiB).
pub const MAX_ENTRIES_PER_MESSAGE: usize = 20;

/// One message of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetMessage {
    /// New entries for the receiver to verify, store and pass on, in canonical order.
    Push {
        fleet: FleetId,
        entries: Vec<Vec<u8>>,
    },
    /// What happened to each pushed entry, in order.
    Ack { results: Vec<PushResult> },
    /// Asks for the entries neither in `heads` nor below them (empty: all of them).
    Pull {
        fleet: FleetId,
        heads: Vec<EntryHash>,
    },
    /// One page of the answer to `Pull`; `more` until the last page.
    Entries { entries: Vec<Vec<u8>>, more: bool },
    /// Asks a robot how it is.
    StatusRequest { fleet: FleetId },
    /// A robot's signed status, pushed to a member that collects them (answered by `Ack`).
    Status(SignedStatus),
    /// The request could not be served.
    Error { message: String },
    /// The answer to `StatusRequest` from a member that collects statuses (the gateway): the
    /// latest report of every robot it heard from.
    Statuses { statuses: Vec<SignedStatus> },
    /// Asks a robot for the container logs of the fleet app it runs for `query.group`
    /// (answered by `Logs`, or `Error` naming why not: not a robot, not allowed, no app).
    LogsRequest { fleet: FleetId, query: LogsQuery },
    /// The answer to `LogsRequest`: lines oldest first, at most [`MAX_LOG_TAIL`] lines and
    /// [`MAX_LOG_BYTES`] bytes; `truncated` when a limit left some out.
    Logs { lines: Vec<String>, truncated: bool },
}

/// The fate of one pushed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushResult {
    Stored(EntryHash),
    Duplicate(EntryHash),
    /// Refused, with the reason a person reads.
    Refused {
        reason: String,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a fleet frame of {0} bytes exceeds the {MAX_FLEET_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("a fleet frame does not decode: {0}")]
    Malformed(String),
}

/// The frame of `message` (length prefix included).
pub fn encode_message(message: &FleetMessage) -> Result<Vec<u8>, WireError> {
    let body = postcard::to_allocvec(message).map_err(|e| WireError::Malformed(e.to_string()))?;
    if body.len() > MAX_FLEET_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| WireError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The body length a frame header announces, checked against the limit (read the 4 header
/// bytes, call this, then read exactly that many bytes and call [`decode_body`]).
pub fn body_len(header: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FLEET_FRAME {
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode_body(body: &[u8]) -> Result<FleetMessage, WireError> {
    if body.len() > MAX_FLEET_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let (message, rest): (FleetMessage, _) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Decodes one whole frame from the front of `buf`: the message and the bytes it took, or
/// `None` while the frame is incomplete.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(FleetMessage, usize)>, WireError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = body_len(header.try_into().expect("4 bytes"))?;
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, 4 + len)))
}
