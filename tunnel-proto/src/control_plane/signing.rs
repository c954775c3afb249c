//! Signed requests. A client never sends a request frame bare: it wraps the frame's exact
//! bytes in a [`SignedEnvelope`] naming the target provider, a random nonce and the time, and
//! signs all of it with its Ed25519 identity key. The provider verifies with the key embedded in
//! the Noise-authenticated peer id of the connection, so a request can neither be forged,
//! altered, re-targeted at another provider, delayed beyond the clock window, nor replayed.
//!
//! The signed message (see [`signing_message`]) is the concatenation of six fields, each
//! written as `length: u32 BE | bytes`:
//!
//! ```text
//!  1. SIGNATURE_DOMAIN   b"peercompute/control/1 signed request"  (domain separation)
//!  2. message type       1 byte: the payload's type byte (e.g. 0x10 DeployRequest)
//!  3. provider           the target provider's peer id, binary multihash (PeerId::to_bytes)
//!  4. nonce              16 bytes
//!  5. timestamp          8 bytes: unix seconds, u64 BE
//!  6. payload            the request frame, exactly as carried (type | length | JSON)
//! ```
//!
//! On the wire the envelope is the JSON body of a `Signed` frame:
//! `{"provider":"12D3KooW…","nonce":"<32 hex>","timestamp":1700000000,
//! "payload":"<base64>","signature":"<base64 of 64 bytes>"}` (standard base64 with padding).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::frame::{
    ControlPlaneDecodeError, ControlPlaneEncodeError, MessageType, Request, encode_request,
    request_from_payload,
};
use super::messages::ErrorCode;
use super::replay::{ReplayError, ReplayGuard};

/// Domain-separation tag, the first field of every signed message.
pub const SIGNATURE_DOMAIN: &[u8] = b"peercompute/control/1 signed request";

/// Largest request frame an envelope may carry (128 KiB: its base64 fits a control-plane
/// frame with room to spare).
pub const MAX_SIGNED_PAYLOAD: usize = 128 * 1024;

/// Identity multihash code: the digest of an Ed25519 peer id is the protobuf-encoded key.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// 16 random bytes that make each signed request unique. Text form: 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce([u8; 16]);

impl Nonce {
    /// A fresh nonce from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

impl FromStr for Nonce {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower_hex = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut bytes = [0u8; 16];
        match hex::decode_to_slice(s, &mut bytes) {
            Ok(()) if lower_hex => Ok(Self(bytes)),
            _ => Err("a nonce is 32 lowercase hex digits".to_owned()),
        }
    }
}

/// A request frame signed by a client for one provider. Fields are public so tests (and
/// tools) can build or alter envelopes; [`SignedEnvelope::verify`] checks every one of them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireEnvelope", into = "WireEnvelope")]
pub struct SignedEnvelope {
    /// The provider the request is for.
    pub provider: PeerId,
    pub nonce: Nonce,
    /// Unix seconds when the client signed.
    pub timestamp: u64,
    /// One request frame (`type | length | JSON`).
    pub payload: Vec<u8>,
    pub signature: [u8; 64],
}

impl fmt::Debug for SignedEnvelope {
    // The payload may carry secrets (env values): only its size is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedEnvelope")
            .field("provider", &self.provider)
            .field("nonce", &self.nonce)
            .field("timestamp", &self.timestamp)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .finish_non_exhaustive()
    }
}

/// Why a signed request was refused. [`VerifyError::code`] gives the protocol error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the request is addressed to provider {got}, this is {expected}")]
    WrongProvider {
        expected: Box<PeerId>,
        got: Box<PeerId>,
    },
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("peer {0} has no Ed25519 key in its id, so its requests cannot be verified")]
    NotEd25519(PeerId),
    #[error("the signature does not verify with the key of peer {0}")]
    BadSignature(PeerId),
    #[error("the signed payload is empty or larger than {MAX_SIGNED_PAYLOAD} bytes")]
    PayloadSize,
    #[error("bad request: {0}")]
    Payload(#[from] ControlPlaneDecodeError),
}

impl VerifyError {
    /// The error code the provider answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::WrongProvider { .. } | Self::PayloadSize | Self::Payload(_) => {
                ErrorCode::BadRequest
            }
            Self::Replay(ReplayError::Replayed(_)) => ErrorCode::Replayed,
            Self::Replay(ReplayError::Stale { .. } | ReplayError::Future { .. }) => {
                ErrorCode::Stale
            }
            Self::Replay(ReplayError::Full { .. }) => ErrorCode::LimitExceeded,
            Self::NotEd25519(_) | Self::BadSignature(_) => ErrorCode::BadSignature,
        }
    }
}

/// The bytes a client signs (see the module docs): every field length-prefixed with a u32 BE.
/// `payload` must not be empty; its first byte is the message type.
pub fn signing_message(
    provider: &PeerId,
    nonce: &Nonce,
    timestamp: u64,
    payload: &[u8],
) -> Vec<u8> {
    let ty = payload
        .first()
        .map(std::slice::from_ref)
        .unwrap_or_default();
    let provider = provider.to_bytes();
    let fields: [&[u8]; 6] = [
        SIGNATURE_DOMAIN,
        ty,
        &provider,
        nonce.as_bytes(),
        &timestamp.to_be_bytes(),
        payload,
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| 4 + f.len()).sum());
    for field in fields {
        let len = u32::try_from(field.len()).expect("signed fields are bounded by the frame size");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

impl SignedEnvelope {
    /// Encodes `request` and signs it for `provider` with `key`.
    pub fn sign(
        key: &SigningKey,
        provider: PeerId,
        request: &Request,
        nonce: Nonce,
        timestamp: u64,
    ) -> Result<Self, ControlPlaneEncodeError> {
        let mut frame = BytesMut::new();
        encode_request(request, &mut frame)?;
        if frame.len() > MAX_SIGNED_PAYLOAD {
            return Err(ControlPlaneEncodeError::TooLarge {
                ty: request.message_type(),
                len: frame.len(),
                max: MAX_SIGNED_PAYLOAD,
            });
        }
        let payload = frame.to_vec();
        let signature = key
            .sign(&signing_message(&provider, &nonce, timestamp, &payload))
            .to_bytes();
        Ok(Self {
            provider,
            nonce,
            timestamp,
            payload,
            signature,
        })
    }

    /// Verifies a request received from `signer` (the Noise-authenticated peer id of the
    /// connection) by provider `me` at `now` (unix seconds), records its nonce in `guard`, and
    /// returns the request. Checks, in order: the target provider, the clock window and the
    /// nonce (cheap, no state change), the signature (`verify_strict`), then records the nonce
    /// and decodes the payload. Persist `guard` before acting on the request.
    pub fn verify(
        &self,
        signer: &PeerId,
        me: &PeerId,
        now: u64,
        guard: &mut ReplayGuard,
    ) -> Result<Request, VerifyError> {
        if self.provider != *me {
            return Err(VerifyError::WrongProvider {
                expected: Box::new(*me),
                got: Box::new(self.provider),
            });
        }
        if self.payload.is_empty() || self.payload.len() > MAX_SIGNED_PAYLOAD {
            return Err(VerifyError::PayloadSize);
        }
        guard.check(&self.nonce, self.timestamp, now)?;
        let key = verifying_key(signer)?;
        let message = signing_message(&self.provider, &self.nonce, self.timestamp, &self.payload);
        key.verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| VerifyError::BadSignature(*signer))?;
        guard.record(&self.nonce, self.timestamp, now)?;
        Ok(request_from_payload(&self.payload)?)
    }

    /// The type byte of the carried request frame, if any.
    pub fn payload_type(&self) -> Option<MessageType> {
        self.payload.first().copied().and_then(MessageType::from_u8)
    }
}

/// The Ed25519 public key embedded in an identity-multihash peer id (`12D3KooW…`).
pub(crate) fn verifying_key(peer: &PeerId) -> Result<VerifyingKey, VerifyError> {
    let not_ed25519 = || VerifyError::NotEd25519(*peer);
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return Err(not_ed25519());
    }
    let public = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest())
        .map_err(|_| not_ed25519())?;
    if public.to_peer_id() != *peer {
        return Err(not_ed25519());
    }
    let ed25519 = public.try_into_ed25519().map_err(|_| not_ed25519())?;
    VerifyingKey::from_bytes(&ed25519.to_bytes()).map_err(|_| not_ed25519())
}

/// The JSON form of an envelope.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    provider: String,
    nonce: String,
    timestamp: u64,
    payload: String,
    signature: String,
}

impl From<SignedEnvelope> for WireEnvelope {
    fn from(env: SignedEnvelope) -> Self {
        Self {
            provider: env.provider.to_base58(),
            nonce: env.nonce.to_string(),
            timestamp: env.timestamp,
            payload: BASE64.encode(&env.payload),
            signature: BASE64.encode(env.signature),
        }
    }
}

impl TryFrom<WireEnvelope> for SignedEnvelope {
    type Error = String;

    fn try_from(wire: WireEnvelope) -> Result<Self, String> {
        let provider = wire
            .provider
            .parse::<PeerId>()
            .map_err(|e| format!("provider `{}` is not a peer id: {e}", wire.provider))?;
        let nonce = wire.nonce.parse::<Nonce>()?;
        // Checked on the text length, before decoding allocates.
        if wire.payload.len() > MAX_SIGNED_PAYLOAD.div_ceil(3) * 4 {
            return Err(format!("payload is larger than {MAX_SIGNED_PAYLOAD} bytes"));
        }
        let payload = BASE64
            .decode(&wire.payload)
            .map_err(|e| format!("payload is not base64: {e}"))?;
        if wire.signature.len() != 88 {
            return Err("signature is not 64 bytes in base64".to_owned());
        }
        let signature: [u8; 64] = BASE64
            .decode(&wire.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("signature is not 64 bytes in base64")?;
        Ok(Self {
            provider,
            nonce,
            timestamp: wire.timestamp,
            payload,
            signature,
        })
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
