//! The three names of the fleet log: a [`FleetId`] (the fleet key's public half, the root of
//! trust), a [`MemberKey`] (a member's Ed25519 public key; shown as its libp2p peer id, the
//! name every other command uses) and an [`EntryHash`] (SHA-256 of a signed entry).

use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

/// Prefix of a fleet id in text (`pcf` + base58 of the key), so it is never mistaken for a
/// peer id (`12D3KooW…`).
const FLEET_PREFIX: &str = "pcf";

/// Why a textual id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{0}` is not a fleet id: fleet ids look like pcf… (see `peerctl fleet list`)")]
    Fleet(String),
    #[error("`{0}` is not a peer id of an Ed25519 key (peer ids look like 12D3KooW…)")]
    Member(String),
    #[error("`{0}` is not an entry hash (64 hex digits, or a unique prefix of at least 8)")]
    Hash(String),
}

/// A fleet: the public half of its fleet key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FleetId(pub [u8; 32]);

impl fmt::Display for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FLEET_PREFIX}{}", bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetId({self})")
    }
}

impl FromStr for FleetId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Fleet(s.to_owned());
        let body = s.trim().strip_prefix(FLEET_PREFIX).ok_or_else(bad)?;
        let bytes = bs58::decode(body).into_vec().map_err(|_| bad())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
        Ok(FleetId(key))
    }
}

/// A member: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberKey(pub [u8; 32]);

impl MemberKey {
    /// The libp2p peer id of this key (`12D3KooW…`), or `None` for bytes that are not a
    /// point on the curve (only a forged entry carries such a key).
    pub fn peer_id(&self) -> Option<PeerId> {
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0).ok()?;
        Some(libp2p_identity::PublicKey::from(key).to_peer_id())
    }

    /// The key of a peer id, when the peer id embeds an Ed25519 key (every Peer Compute id).
    pub fn from_peer_id(peer: &PeerId) -> Option<Self> {
        let public =
            libp2p_identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
        let ed = public.try_into_ed25519().ok()?;
        Some(MemberKey(ed.to_bytes()))
    }
}

impl fmt::Display for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer_id() {
            Some(peer) => write!(f, "{peer}"),
            None => write!(f, "invalid-key-{}", hex::encode(&self.0[..8])),
        }
    }
}

impl fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberKey({self})")
    }
}

impl FromStr for MemberKey {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let peer: PeerId = s
            .trim()
            .parse()
            .map_err(|_| IdError::Member(s.to_owned()))?;
        MemberKey::from_peer_id(&peer).ok_or_else(|| IdError::Member(s.to_owned()))
    }
}

/// The SHA-256 of a signed entry's bytes: how entries name their parents.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The first 12 hex digits, as people read hashes.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.short())
    }
}

impl FromStr for EntryHash {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bytes = hex::decode(s.trim()).map_err(|_| IdError::Hash(s.to_owned()))?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| IdError::Hash(s.to_owned()))?;
        Ok(EntryHash(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    #[test]
    fn fleet_id_round_trips_and_refuses_peer_ids() {
        let id = FleetId(key(1));
        let text = id.to_string();
        assert!(text.starts_with("pcf"), "{text}");
        assert_eq!(text.parse::<FleetId>(), Ok(id));
        let member = MemberKey(key(1)).to_string();
        assert!(member.starts_with("12D3KooW"), "{member}");
        assert!(member.parse::<FleetId>().is_err());
        assert!("pcf".parse::<FleetId>().is_err());
        assert!("pcf111".parse::<FleetId>().is_err());
    }

    #[test]
    fn member_key_round_trips_through_its_peer_id() {
        let member = MemberKey(key(7));
        let peer = member.peer_id().expect("a real key");
        assert_eq!(MemberKey::from_peer_id(&peer), Some(member));
        assert_eq!(member.to_string().parse::<MemberKey>(), Ok(member));
        assert!("12D3KooWnope".parse::<MemberKey>().is_err());
    }

    #[test]
    fn entry_hash_parses_64_hex_digits_only() {
        let hash = EntryHash([0xab; 32]);
        assert_eq!(hash.to_string().parse::<EntryHash>(), Ok(hash));
        assert_eq!(hash.short(), "abababababab");
        assert!("abab".parse::<EntryHash>().is_err());
        assert!(format!("{hash}00").parse::<EntryHash>().is_err());
    }
}
