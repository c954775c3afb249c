//! TLS-ALPN-01 challenges (RFC 8737): while an order is validated, a handshake that offers
//! ALPN `acme-tls/1` for a name gets a self-signed certificate carrying the critical
//! `acmeIdentifier` extension instead of the served one. The HTTPS listener then closes the
//! connection without starting HTTP (see `server.rs`).
//!
//! The certificate is built with `CertifiedKey::new`: rustls' `from_der` helpers would
//! refuse the unknown critical extension.

use std::fmt;
use std::sync::Arc;

use dashmap::DashMap;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls::{CertStore, certified_key};

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// name → challenge certificate.
#[derive(Debug, Default, Clone)]
pub(crate) struct AlpnChallenges {
    certs: Arc<DashMap<String, Arc<CertifiedKey>>>,
}

impl AlpnChallenges {
    /// Builds and installs the challenge certificate for `name` from the SHA-256 digest of
    /// the key authorization.
    pub(crate) fn insert(&self, name: &str, digest: &[u8]) -> Result<(), String> {
        if digest.len() != 32 {
            return Err(format!(
                "key authorization digest has {} bytes",
                digest.len()
            ));
        }
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
        params
            .custom_extensions
            .push(CustomExtension::new_acme_identifier(digest));
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let ck = certified_key(vec![cert.der().clone()], &der).map_err(|e| e.to_string())?;
        self.certs.insert(name.to_ascii_lowercase(), ck);
        Ok(())
    }

    pub(crate) fn remove(&self, name: &str) {
        self.certs.remove(&name.to_ascii_lowercase());
    }

    fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.certs.get(&name).map(|c| c.clone())
    }
}

/// The visitor resolver when TLS-ALPN-01 is on: challenge handshakes get the challenge
/// certificate (or fail), every other handshake the [`CertStore`]'s answer.
pub(crate) struct AlpnResolver {
    pub(crate) store: Arc<CertStore>,
    pub(crate) challenges: AlpnChallenges,
}

impl fmt::Debug for AlpnResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlpnResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for AlpnResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return self.challenges.get(hello.server_name()?);
        }
        self.store.resolve(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_certificate_carries_the_digest() {
        let c = AlpnChallenges::default();
        assert!(
            c.insert("a.apps.test", &[7u8; 31]).is_err(),
            "wrong size refused"
        );
        c.insert("A.apps.test", &[7u8; 32]).expect("insert");
        let ck = c
            .get("a.apps.test.")
            .expect("installed under the folded name");
        let der = ck.cert[0].as_ref();
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, OCTET STRING of the digest.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let at = der
            .windows(oid.len())
            .position(|w| w == oid)
            .expect("acmeIdentifier extension present");
        let rest = &der[at + oid.len()..];
        assert_eq!(&rest[..3], &[0x01, 0x01, 0xff], "critical");
        assert!(rest.windows(32).any(|w| w == [7u8; 32]), "digest embedded");
        c.remove("a.apps.test");
        assert!(c.get("a.apps.test").is_none());
    }
}
