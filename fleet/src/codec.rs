//! The wire form of a signed entry, sans-IO:
//!
//! ```text
//!  version: u8 (= 1) | entry: postcard bytes of Entry | signature: 64 bytes (Ed25519)
//! ```
//!
//! The signature covers `"peercompute-fleet/1 entry\0" | entry`; the entry's hash is the
//! SHA-256 of the whole wire form, signature included. Postcard (its 1.x wire format is a
//! written specification: varints, length-prefixed strings and sequences, enum variants by
//! index) is canonical for one value, and decoding insists on it: the bytes must re-encode to
//! themselves, so one entry has one hash. A whole entry is at most [`MAX_ENTRY_BYTES`],
//! checked before anything is decoded, and every length inside is bounded by the bytes
//! present, so no input makes the decoder allocate more than its own size.

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::entry::{Entry, EntryError};
use crate::ids::{EntryHash, MemberKey};
use crate::sig::{self, Sig};

/// The only format version so far.
pub const ENTRY_VERSION: u8 = 1;
/// Largest signed entry, in bytes (a release with 64 env variables of 32 KiB fits).
pub const MAX_ENTRY_BYTES: usize = 48 * 1024;
/// Domain of entry signatures.
const ENTRY_DOMAIN: &[u8] = b"peercompute-fleet/1 entry\0";
const SIG_LEN: usize = 64;

/// Why bytes are not a signed entry of this fleet format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the entry is {0} bytes, at most {MAX_ENTRY_BYTES} are allowed")]
    TooLarge(usize),
    #[error("the entry is {0} bytes, too short to hold a version and a signature")]
    TooShort(usize),
    #[error(
        "entry format version {0} is not supported (this build reads version {ENTRY_VERSION}); upgrade"
    )]
    Version(u8),
    #[error("the entry does not decode: {0}")]
    Malformed(String),
    #[error("the entry is not in canonical form")]
    NotCanonical,
    #[error("the entry breaks a rule: {0}")]
    Invalid(#[from] EntryError),
    #[error("the signature does not verify against the author's key {0}")]
    BadSignature(MemberKey),
}

/// An entry with its signature, its wire bytes and its hash. Only [`SignedEntry::sign`] and
/// [`SignedEntry::decode`] make one, so its signature has always been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    entry: Entry,
    bytes: Vec<u8>,
    hash: EntryHash,
}

impl SignedEntry {
    /// Signs `entry` with `key`, whose public half must be the entry's author.
    pub fn sign(entry: Entry, key: &SigningKey) -> Result<Self, EntryError> {
        debug_assert_eq!(entry.author.0, key.verifying_key().to_bytes());
        entry.validate()?;
        let body = postcard::to_allocvec(&entry).expect("an Entry always serializes");
        let signature = sig::sign(key, ENTRY_DOMAIN, &body);
        let mut bytes = Vec::with_capacity(1 + body.len() + SIG_LEN);
        bytes.push(ENTRY_VERSION);
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&signature.0);
        let hash = hash_of(&bytes);
        Ok(SignedEntry { entry, bytes, hash })
    }

    /// Decodes and verifies a signed entry (format, canonical form, rules, signature).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        if bytes.len() < 1 + SIG_LEN + 1 {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes[0] != ENTRY_VERSION {
            return Err(DecodeError::Version(bytes[0]));
        }
        let (body, signature) = bytes[1..].split_at(bytes.len() - 1 - SIG_LEN);
        let (entry, rest): (Entry, _) =
            postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} bytes after the entry",
                rest.len()
            )));
        }
        let again =
            postcard::to_allocvec(&entry).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if again != body {
            return Err(DecodeError::NotCanonical);
        }
        entry.validate()?;
        let signature = Sig(signature
            .try_into()
            .expect("split at 64 bytes from the end"));
        if !sig::verify(&entry.author.0, ENTRY_DOMAIN, body, &signature) {
            return Err(DecodeError::BadSignature(entry.author));
        }
        Ok(SignedEntry {
            entry,
            bytes: bytes.to_vec(),
            hash: hash_of(bytes),
        })
    }

    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The wire bytes (what is stored and sent).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn hash(&self) -> EntryHash {
        self.hash
    }
}

fn hash_of(bytes: &[u8]) -> EntryHash {
    EntryHash(Sha256::digest(bytes).into())
}
