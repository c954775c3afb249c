//! Errors as users meet them, each with a distinct exit code so scripts can react.

use peercompute_tunnel_proto::ErrorCode;

/// What kind of failure, and its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else (1).
    Other,
    /// Trust missing on one side, or a bad signature (3).
    Trust,
    /// The provider could not be reached (4).
    Unreachable,
    /// The provider's limits are exhausted (5).
    Limit,
    /// No such deployment (6).
    NotFound,
    /// Image missing or for another platform (7).
    Image,
    /// The request itself is wrong (8).
    BadRequest,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Trust => 3,
            Self::Unreachable => 4,
            Self::Limit => 5,
            Self::NotFound => 6,
            Self::Image => 7,
            Self::BadRequest => 8,
        }
    }

    /// The kind of a provider's protocol error.
    pub fn of(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NotTrusted
            | ErrorCode::BadSignature
            | ErrorCode::Replayed
            | ErrorCode::Stale => Self::Trust,
            ErrorCode::LimitExceeded => Self::Limit,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::ImageNotFound | ErrorCode::ImagePlatform => Self::Image,
            ErrorCode::BadRequest => Self::BadRequest,
            _ => Self::Other,
        }
    }
}

/// A one-line error for the user, with its kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
}

impl CliError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
