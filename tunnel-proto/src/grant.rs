//! Name grants: the owner of a route name lets another provider key serve it too.
//!
//! A [`NameGrant`] says "on the gateway of `domain`, provider `grantee` may serve `name`, which
//! `owner` holds, until `not_after`" and is signed by the owner's Ed25519 key. Sans-IO: the
//! caller passes `now` (unix seconds). Canonical encoding (all integers big-endian):
//!
//! ```text
//!  version u8 (=1) | domain u8 len | name u8 len | owner u8 len (peer id bytes)
//!  | grantee u8 len (peer id bytes) | not_after u64 | signature [64]
//! ```
//!
//! The signature covers `u8 len | GRANT_SIGNATURE_DOMAIN` followed by every byte before the
//! signature, so a grant can never be mistaken for another signed object. A grant lives at
//! most [`MAX_GRANT_SECS`] (90 days). Its text form, for files and terminals, is
//! `pcgrant1.` followed by the encoding in unpadded URL-safe base64.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, BytesMut};
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use libp2p_identity::PeerId;

use crate::control_plane::verifying_key;
use crate::name::validate_name;
use crate::wire::{DecodeError, EncodeError, Reader, put_str8};

/// Domain-separation string of grant signatures.
pub const GRANT_SIGNATURE_DOMAIN: &[u8] = b"peercompute-name-grant/1";
/// Longest a grant may live: 90 days.
pub const MAX_GRANT_SECS: u64 = 90 * 24 * 3600;
/// Prefix of a grant's text form.
pub const GRANT_TEXT_PREFIX: &str = "pcgrant1.";

const GRANT_VERSION: u8 = 1;
const SIG_LEN: usize = 64;

/// A signed permission for `grantee` to serve `owner`'s `name` on the gateway of `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameGrant {
    /// The gateway's public domain (`apps.example.com`): a grant is not valid elsewhere.
    pub domain: String,
    pub name: String,
    pub owner: PeerId,
    pub grantee: PeerId,
    /// Unix seconds after which the grant is void.
    pub not_after: u64,
    /// Owner's Ed25519 signature over the signing message (see the module docs).
    pub signature: [u8; SIG_LEN],
}

/// Why a grant is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the grant is for the gateway of {got}, not {expected}")]
    WrongDomain { expected: String, got: String },
    #[error("the grant is for name {got}, not {expected}")]
    WrongName { expected: String, got: String },
    #[error("the grant is for provider {got}, not this one ({expected})")]
    WrongGrantee { expected: String, got: String },
    #[error("the grant is signed by {got}, but the name belongs to {expected}")]
    WrongOwner { expected: String, got: String },
    #[error("the grant expired at {not_after} (now {now})")]
    Expired { not_after: u64, now: u64 },
    #[error("the grant lasts past {max_days} days from now", max_days = MAX_GRANT_SECS / 86400)]
    TooLong,
    #[error("the owner key {0} is not an Ed25519 key")]
    NotEd25519(String),
    #[error("the grant's signature does not verify under the owner key {0}")]
    BadSignature(String),
    #[error("malformed grant: {0}")]
    Malformed(String),
}

impl NameGrant {
    /// Signs a grant with the owner's `key` (its peer id becomes `owner`). Refuses a lifetime
    /// over [`MAX_GRANT_SECS`] counted from `now`.
    pub fn sign(
        key: &SigningKey,
        domain: &str,
        name: &str,
        grantee: PeerId,
        not_after: u64,
        now: u64,
    ) -> Result<Self, GrantError> {
        if not_after > now.saturating_add(MAX_GRANT_SECS) {
            return Err(GrantError::TooLong);
        }
        validate_name(name).map_err(|e| GrantError::Malformed(e.to_string()))?;
        let public =
            libp2p_identity::ed25519::PublicKey::try_from_bytes(&key.verifying_key().to_bytes())
                .map_err(|e| GrantError::Malformed(e.to_string()))?;
        let mut grant = Self {
            domain: domain.to_owned(),
            name: name.to_owned(),
            owner: libp2p_identity::PublicKey::from(public).to_peer_id(),
            grantee,
            not_after,
            signature: [0; SIG_LEN],
        };
        let message = grant
            .signing_message()
            .map_err(|e| GrantError::Malformed(e.to_string()))?;
        grant.signature = key.sign(&message).to_bytes();
        Ok(grant)
    }

    /// Checks the grant for serving `name` on the gateway of `domain` by tunnel peer `grantee`
    /// at `now`: fields, expiry, lifetime, then the owner's signature (`verify_strict`). The
    /// caller still checks that `owner` is the name's recorded owner.
    pub fn verify(
        &self,
        domain: &str,
        name: &str,
        grantee: &PeerId,
        now: u64,
    ) -> Result<(), GrantError> {
        if !self.domain.eq_ignore_ascii_case(domain) {
            return Err(GrantError::WrongDomain {
                expected: domain.to_owned(),
                got: self.domain.clone(),
            });
        }
        if self.name != name {
            return Err(GrantError::WrongName {
                expected: name.to_owned(),
                got: self.name.clone(),
            });
        }
        if self.grantee != *grantee {
            return Err(GrantError::WrongGrantee {
                expected: grantee.to_string(),
                got: self.grantee.to_string(),
            });
        }
        if self.not_after <= now {
            return Err(GrantError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        if self.not_after > now.saturating_add(MAX_GRANT_SECS) {
            return Err(GrantError::TooLong);
        }
        let key = verifying_key(&self.owner)
            .map_err(|_| GrantError::NotEd25519(self.owner.to_string()))?;
        let message = self
            .signing_message()
            .map_err(|e| GrantError::Malformed(e.to_string()))?;
        key.verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| GrantError::BadSignature(self.owner.to_string()))
    }

    /// The bytes the owner signs.
    pub fn signing_message(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = BytesMut::new();
        put_bytes8(&mut out, GRANT_SIGNATURE_DOMAIN, "signature_domain")?;
        self.put_unsigned(&mut out)?;
        Ok(out.to_vec())
    }

    fn put_unsigned(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        dst.put_u8(GRANT_VERSION);
        put_str8(dst, &self.domain, "domain")?;
        put_str8(dst, &self.name, "name")?;
        put_bytes8(dst, &self.owner.to_bytes(), "owner")?;
        put_bytes8(dst, &self.grantee.to_bytes(), "grantee")?;
        dst.put_u64(self.not_after);
        Ok(())
    }

    /// Appends the canonical encoding.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.put_unsigned(dst)?;
        dst.put_slice(&self.signature);
        Ok(())
    }

    /// Decodes a whole canonical encoding (no trailing bytes). Does not verify it.
    pub fn decode(src: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(src);
        Self::read(&mut r).and_then(|g| r.finish().map(|()| g))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("grant_version")?;
        if version != GRANT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let domain = r.str8("domain")?;
        let name = r.str8("name")?;
        validate_name(&name)?;
        let owner = read_peer(r, "owner")?;
        let grantee = read_peer(r, "grantee")?;
        let not_after = r.u64("not_after")?;
        let mut signature = [0; SIG_LEN];
        signature.copy_from_slice(r.bytes(SIG_LEN, "signature")?);
        Ok(Self {
            domain,
            name,
            owner,
            grantee,
            not_after,
            signature,
        })
    }

    /// The text form: `pcgrant1.<base64url>`.
    pub fn to_text(&self) -> Result<String, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode(&mut buf)?;
        Ok(format!(
            "{GRANT_TEXT_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&buf)
        ))
    }

    /// Parses the text form (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, GrantError> {
        let body = text.trim().strip_prefix(GRANT_TEXT_PREFIX).ok_or_else(|| {
            GrantError::Malformed(format!("does not start with {GRANT_TEXT_PREFIX}"))
        })?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| GrantError::Malformed(format!("bad base64: {e}")))?;
        Self::decode(&raw).map_err(|e| GrantError::Malformed(e.to_string()))
    }
}

fn put_bytes8(dst: &mut BytesMut, b: &[u8], field: &'static str) -> Result<(), EncodeError> {
    let len = u8::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: b.len(),
        max: usize::from(u8::MAX),
    })?;
    dst.put_u8(len);
    dst.put_slice(b);
    Ok(())
}

fn read_peer(r: &mut Reader<'_>, field: &'static str) -> Result<PeerId, DecodeError> {
    let len = usize::from(r.u8(field)?);
    PeerId::from_bytes(r.bytes(len, field)?).map_err(|_| DecodeError::BadPeerId(field))
}

#[cfg(test)]
mod tests;
