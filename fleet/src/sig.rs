//! [`Sig`]: an Ed25519 signature as entries carry it (serde has no 64-byte arrays), and the
//! signing and verification every signed thing of the fleet shares. Each kind of signed
//! message has its own domain prefix, so a signature made for one can never pass as another.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub [u8; 64]);

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sig({}…)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Sig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SigVisitor;
        impl Visitor<'_> for SigVisitor {
            type Value = Sig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 bytes of Ed25519 signature")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Sig, E> {
                let bytes: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Sig(bytes))
            }
        }
        d.deserialize_bytes(SigVisitor)
    }
}

/// Signs `domain | message`.
pub(crate) fn sign(key: &SigningKey, domain: &[u8], message: &[u8]) -> Sig {
    Sig(key.sign(&domained(domain, message)).to_bytes())
}

/// Verifies a signature made by [`sign`] (strictly: no malleable or small-order forms).
pub(crate) fn verify(public: &[u8; 32], domain: &[u8], message: &[u8], sig: &Sig) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    key.verify_strict(&domained(domain, message), &Signature::from_bytes(&sig.0))
        .is_ok()
}

fn domained(domain: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + message.len());
    out.extend_from_slice(domain);
    out.extend_from_slice(message);
    out
}
