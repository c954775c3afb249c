//! Certificates the gateway serves, behind SNI resolvers.
//!
//! - [`CertStore`]: the visitor-facing certificate (from `dev` or `files`; later ACME), held
//!   behind a lock so a renewed certificate can be swapped in without a restart.
//! - [`TunnelResolver`]: on the QUIC listener, a provider that pins the gateway's peer id asks
//!   for the reserved name [`PINNED_SNI`] (or sends no SNI) and gets the self-signed
//!   certificate of the gateway's Ed25519 identity; a provider that verifies by CA asks for the
//!   domain and gets the visitor-facing certificate.

mod dev;
mod files;

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub(crate) use dev::ensure_dev_certs;
pub(crate) use files::load_pem_files;

/// SNI a provider sends when it authenticates the gateway by pinned peer id.
pub const PINNED_SNI: &str = "gateway.peercompute.invalid";

/// Why certificates could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot generate certificate: {0}")]
    Generate(String),
    #[error("unusable private key: {0}")]
    Key(String),
}

/// Builds a rustls certified key from a chain and a private key.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signer = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// The current visitor-facing certificate; swappable.
pub(crate) struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    pub(crate) fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(key),
        })
    }

    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the served certificate; new handshakes use it at once.
    #[allow(dead_code)] // used by certificate renewal
    pub(crate) fn swap(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Certificate choice on the tunnel listener.
pub(crate) struct TunnelResolver {
    pub(crate) identity: Arc<CertifiedKey>,
    pub(crate) https: Arc<CertStore>,
}

impl fmt::Debug for TunnelResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for TunnelResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) if name != PINNED_SNI => Some(self.https.current()),
            _ => Some(self.identity.clone()),
        }
    }
}
