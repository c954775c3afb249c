//! A self-signed X.509 certificate carrying the participant's Ed25519 key, and the reverse:
//! the peer id of the key inside a certificate presented by the other side.
//!
//! The certificate is only a container for the key — trust comes from the peer id (pinned or
//! on an allowlist), never from a CA, so its names and dates carry no weight.

use libp2p_identity::PeerId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::key::{Identity, peer_id_from_public};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) } followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot build certificate: {0}")]
    Build(String),
    #[error("certificate is not valid X.509: {0}")]
    Parse(String),
    #[error("certificate does not carry an Ed25519 key")]
    NotEd25519,
}

/// A self-signed certificate for `identity`, valid for `names` (may be empty).
pub fn self_signed_cert(
    identity: &Identity,
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CertError> {
    let pkcs8 = identity.pkcs8_der();
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.clone()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| CertError::Build(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| CertError::Build(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.peer_id().to_string());
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| CertError::Build(e.to_string()))?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)),
    ))
}

/// The peer id of the Ed25519 key a certificate carries.
///
/// The key is taken from the parsed SubjectPublicKeyInfo (not by searching the bytes), so it
/// is the same key the TLS handshake signature is checked against.
pub fn peer_id_from_cert(cert: &CertificateDer<'_>) -> Result<PeerId, CertError> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| CertError::Parse(format!("{e:?}")))?;
    let spki = parsed.subject_public_key_info();
    let bytes = spki.as_ref();
    let key: [u8; 32] = bytes
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|k| k.try_into().ok())
        .ok_or(CertError::NotEd25519)?;
    peer_id_from_public(&key).ok_or(CertError::NotEd25519)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_round_trips_peer_id() {
        let id = Identity::generate().expect("generate");
        let (cert, _key) = self_signed_cert(&id, &[]).expect("cert");
        assert_eq!(peer_id_from_cert(&cert).expect("peer id"), id.peer_id());
    }

    #[test]
    fn non_ed25519_cert_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["x.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        assert!(matches!(
            peer_id_from_cert(cert.der()),
            Err(CertError::NotEd25519)
        ));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for bytes in [&b""[..], b"\x30\x00", b"\x30\x82\xff\xff", &[0u8; 64]] {
            assert!(peer_id_from_cert(&CertificateDer::from(bytes.to_vec())).is_err());
        }
    }
}
