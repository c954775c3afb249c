//! Key rotation: how a key is replaced without losing what it holds.
//!
//! - A member's key (a robot's, or a person's with a role): the owner makes a fresh key and a
//!   [`RotationProof`] — the old key vouches for the new one and the new key proves it is
//!   held, both over `old | new`, each under its own domain — and hands its text form (a
//!   rotation token) to an admin, whose `RotateMember` entry moves the member's name, groups
//!   and grant to the new key. The old key is retired: its later entries are refused, and its
//!   entries concurrent with the rotation are void, as for a revoke. The proof names no fleet:
//!   a robot in several fleets hands the same token to each.
//! - The fleet's root key: the current root signs a `RotateRoot` entry naming the new root,
//!   which proves possession over `fleet | new` (so a proof made for one fleet serves no
//!   other). Roots chain as TUF's root does; the fleet id (the genesis key) never changes.
//!
//! Text form of a token: `pcrotate1.` + base64url (no padding) of the postcard bytes of
//! [`RotationProof`]. It holds no secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::ids::{FleetId, MemberKey};
use crate::sig::{self, Sig};

const TOKEN_PREFIX: &str = "pcrotate1.";
const VOUCH_DOMAIN: &[u8] = b"peercompute-fleet/1 rotate-vouch\0";
const POSSESS_DOMAIN: &[u8] = b"peercompute-fleet/1 rotate-possess\0";
const ROOT_DOMAIN: &[u8] = b"peercompute-fleet/1 rotate-root\0";
/// Longest rotation token text accepted (a whole one is under 300 bytes).
const MAX_ROTATION_TOKEN_LEN: usize = 1024;

/// A key's move to a new key, signed by both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationProof {
    pub old: MemberKey,
    pub new: MemberKey,
    /// The old key's signature over `old | new`.
    pub vouch: Sig,
    /// The new key's signature over `old | new`.
    pub possession: Sig,
}

/// Why a rotation token cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationTokenError {
    #[error(
        "this is not a rotation token (they start with `{TOKEN_PREFIX}`); copy the whole line `peercomputed rotate-key` or `peerctl id --rotate` printed"
    )]
    Prefix,
    #[error("the rotation token is damaged ({0}); copy the whole line again")]
    Damaged(String),
    #[error(
        "the rotation token does not verify: it was forged, or its two keys' signatures do not match"
    )]
    Forged,
}

impl RotationProof {
    /// `old` vouches for `new`, and `new` proves it is held.
    pub fn new(old: &SigningKey, new: &SigningKey) -> Self {
        let (old_key, new_key) = (member_of(old), member_of(new));
        let message = pair(&old_key, &new_key);
        RotationProof {
            old: old_key,
            new: new_key,
            vouch: sig::sign(old, VOUCH_DOMAIN, &message),
            possession: sig::sign(new, POSSESS_DOMAIN, &message),
        }
    }

    /// Both signatures hold, and the keys differ.
    pub fn verify(&self) -> bool {
        let message = pair(&self.old, &self.new);
        self.old != self.new
            && sig::verify(&self.old.0, VOUCH_DOMAIN, &message, &self.vouch)
            && sig::verify(&self.new.0, POSSESS_DOMAIN, &message, &self.possession)
    }

    /// The text people copy.
    pub fn to_text(&self) -> String {
        let bytes = postcard::to_allocvec(self).expect("a RotationProof always serializes");
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token and checks both signatures.
    pub fn parse(text: &str) -> Result<Self, RotationTokenError> {
        let text = text.trim();
        if text.len() > MAX_ROTATION_TOKEN_LEN {
            return Err(RotationTokenError::Damaged("it is too long".into()));
        }
        let body = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(RotationTokenError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| RotationTokenError::Damaged(e.to_string()))?;
        let (proof, rest): (RotationProof, _) = postcard::take_from_bytes(&bytes)
            .map_err(|e| RotationTokenError::Damaged(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RotationTokenError::Damaged("bytes after its end".into()));
        }
        if !proof.verify() {
            return Err(RotationTokenError::Forged);
        }
        Ok(proof)
    }
}

/// The new root's proof that it is held, for a `RotateRoot` entry of `fleet`.
pub fn root_possession(new: &SigningKey, fleet: FleetId) -> Sig {
    sig::sign(new, ROOT_DOMAIN, &root_message(fleet, &member_of(new)))
}

pub(crate) fn verify_root_possession(new: &MemberKey, fleet: FleetId, possession: &Sig) -> bool {
    sig::verify(&new.0, ROOT_DOMAIN, &root_message(fleet, new), possession)
}

fn member_of(key: &SigningKey) -> MemberKey {
    MemberKey(key.verifying_key().to_bytes())
}

fn pair(old: &MemberKey, new: &MemberKey) -> Vec<u8> {
    [old.0, new.0].concat()
}

fn root_message(fleet: FleetId, new: &MemberKey) -> Vec<u8> {
    [fleet.0, new.0].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_token_round_trips_and_verifies() {
        let proof = RotationProof::new(&key(1), &key(2));
        assert!(proof.verify());
        let text = proof.to_text();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(RotationProof::parse(&format!(" {text}\n")), Ok(proof));
    }

    #[test]
    fn forged_or_swapped_proofs_are_refused() {
        let good = RotationProof::new(&key(1), &key(2));
        // The new key claimed by someone else: the possession does not match.
        let mut stolen = good.clone();
        stolen.new = member_of(&key(3));
        assert!(!stolen.verify());
        // Signatures swapped between the roles (domains differ).
        let mut swapped = good.clone();
        std::mem::swap(&mut swapped.vouch, &mut swapped.possession);
        assert!(!swapped.verify());
        // A key rotated to itself.
        assert!(!RotationProof::new(&key(1), &key(1)).verify());
        assert_eq!(
            RotationProof::parse(&stolen.to_text()),
            Err(RotationTokenError::Forged)
        );
    }

    #[test]
    fn bad_text_is_refused_with_what_to_do() {
        assert_eq!(
            RotationProof::parse("pcjoin1.abc"),
            Err(RotationTokenError::Prefix)
        );
        assert!(matches!(
            RotationProof::parse("pcrotate1.!!"),
            Err(RotationTokenError::Damaged(_))
        ));
        let text = RotationProof::new(&key(1), &key(2)).to_text();
        let cut = &text[..text.len() - 4];
        assert!(matches!(
            RotationProof::parse(cut),
            Err(RotationTokenError::Damaged(_))
        ));
        let long = format!("{TOKEN_PREFIX}{}", "A".repeat(2000));
        assert!(matches!(
            RotationProof::parse(&long),
            Err(RotationTokenError::Damaged(_))
        ));
    }

    #[test]
    fn a_root_possession_serves_one_fleet() {
        let new = key(5);
        let (a, b) = (FleetId([1; 32]), FleetId([2; 32]));
        let proof = root_possession(&new, a);
        assert!(verify_root_possession(&member_of(&new), a, &proof));
        assert!(!verify_root_possession(&member_of(&new), b, &proof));
        assert!(!verify_root_possession(&member_of(&key(6)), a, &proof));
    }
}
