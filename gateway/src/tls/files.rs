//! `--tls files`: a certificate chain and key from PEM files, and the PEM parsing every
//! certificate source shares (`rustls-pki-types`' [`PemObject`]).

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Every `CERTIFICATE` block of `pem`, in order (other blocks are skipped); at least one.
pub(crate) fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(chain)
}

/// The first private key block of `pem` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
        e => e.to_string(),
    })
}

/// Reads a PEM chain and a PEM private key.
pub(crate) fn load_pem_files(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let invalid = |p: &Path, reason: String| TlsError::Invalid {
        path: p.to_path_buf(),
        reason,
    };
    let chain = pem_certs(&read(cert)?).map_err(|e| invalid(cert, e))?;
    let key_der = pem_key(&read(key)?).map_err(|e| invalid(key, e))?;
    Ok((chain, key_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_found_or_named_when_missing() {
        let k = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .expect("params")
            .self_signed(&k)
            .expect("cert");
        let both = format!("{}{}{}", k.serialize_pem(), cert.pem(), cert.pem());
        let chain = pem_certs(both.as_bytes()).expect("chain");
        assert_eq!(chain.len(), 2, "every CERTIFICATE block, the key skipped");
        assert_eq!(&chain[0], cert.der());
        let key = pem_key(both.as_bytes()).expect("key");
        assert_eq!(key.secret_der(), k.serialize_der().as_slice());

        let err = pem_certs(k.serialize_pem().as_bytes()).expect_err("no cert");
        assert_eq!(err, "no CERTIFICATE block found");
        let err = pem_key(cert.pem().as_bytes()).expect_err("no key");
        assert_eq!(err, "no PRIVATE KEY block found");
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(pem_certs(broken.as_bytes()).is_err(), "missing END marker");
    }
}
