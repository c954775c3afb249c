//! `--tls files`: a certificate chain and key from PEM files.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

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
    let cert_pem = read(cert)?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(cert, "no CERTIFICATE block found".into()));
    }
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| invalid(key, e.to_string()))?
        .ok_or_else(|| invalid(key, "no PRIVATE KEY block found".into()))?;
    Ok((chain, key_der))
}
