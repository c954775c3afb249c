//! Why a tunnel connection ended ([`CloseReason`], the same words for QUIC and TCP) and the
//! error of opening or accepting a stream on it ([`ConnError`]).

use std::fmt;

use peercompute_tunnel_proto::GoAwayCode;

use crate::conn::ConnId;

/// Why a tunnel connection ended.
///
/// QUIC carries a code and a reason in its CONNECTION_CLOSE frame, so a QUIC peer's close
/// arrives as [`CloseReason::Peer`] with both. yamux's GoAway carries neither, so a TCP peer's
/// close is `Peer { code: None, .. }`; on TCP the reason a person can act on travels as a
/// `GoAway` message on the control stream before the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed the connection with this code and reason.
    Local { code: GoAwayCode, reason: String },
    /// The peer closed the connection: with its code and reason on QUIC, without on TCP.
    Peer {
        code: Option<GoAwayCode>,
        reason: String,
    },
    /// The connection broke: idle timeout, reset, I/O or protocol error.
    Lost(String),
}

impl CloseReason {
    /// The GoAway code of a close that carried one (ours, or a QUIC peer's).
    pub fn code(&self) -> Option<GoAwayCode> {
        match self {
            Self::Local { code, .. } => Some(*code),
            Self::Peer { code, .. } => *code,
            Self::Lost(_) => None,
        }
    }

    /// The QUIC close error as a [`CloseReason`]. A local close needs the code and reason the
    /// caller kept ([`quinn::ConnectionError::LocallyClosed`] carries none).
    pub fn from_quic(e: &quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => Self::Peer {
                code: u16::try_from(close.error_code.into_inner())
                    .ok()
                    .map(GoAwayCode::from_u16),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            quinn::ConnectionError::LocallyClosed => Self::Local {
                code: GoAwayCode::Other(0),
                reason: "closed by this side".to_owned(),
            },
            quinn::ConnectionError::TimedOut => {
                Self::Lost("the peer stopped answering (timed out)".to_owned())
            }
            other => Self::Lost(other.to_string()),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { code, reason } => write!(f, "closed by this side ({code:?}): {reason}"),
            Self::Peer {
                code: Some(code),
                reason,
            } => write!(f, "closed by the peer ({code:?}): {reason}"),
            Self::Peer { code: None, reason } => write!(f, "closed by the peer: {reason}"),
            Self::Lost(why) => write!(f, "connection lost: {why}"),
        }
    }
}

/// Opening or accepting a stream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// The connection is closed (or closed while waiting).
    #[error("tunnel connection {id} is closed: {reason}")]
    Closed { id: ConnId, reason: CloseReason },
    /// yamux refused to open another stream although a stream permit was free: more streams
    /// are still counted open on this side than its limits allow for (see `MuxLimits`).
    #[error("tunnel connection {id} has too many streams open")]
    TooManyStreams { id: ConnId },
}
