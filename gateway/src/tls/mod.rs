//! Certificates the gateway serves, behind SNI resolvers.
//!
//! - [`auto`]: what `--tls auto` resolves to for the domain, and the start-up line saying why.
//! - [`CertStore`]: the visitor-facing certificates (from `dev`, `files` or [`acme`]): a
//!   default certificate plus, for ACME per-name certificates, one per exact host name; held
//!   behind locks so a renewed certificate is swapped in without a restart. Handshakes in
//!   progress keep the certificate they started with.
//! - [`TunnelResolver`]: on the QUIC listener, a provider that pins the gateway's peer id asks
//!   for the reserved name [`PINNED_SNI`] (or sends no SNI) and gets the self-signed
//!   certificate of the gateway's Ed25519 identity; a provider that verifies by CA asks for the
//!   domain and gets the visitor-facing certificate.

pub(crate) mod acme;
mod auto;
mod dev;
mod files;
pub(crate) mod status;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use auto::{ChallengeReason, PrivateName, TlsChoice, TlsReason, TlsSource};
pub(crate) use auto::{LineContext, TlsInputs, choose as choose_tls};
pub(crate) use dev::ensure_dev_certs;
pub(crate) use files::{load_pem_files, pem_certs, pem_key};

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

/// The current visitor-facing certificates; swappable.
pub(crate) struct CertStore {
    default: RwLock<Option<Arc<CertifiedKey>>>,
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    /// A store serving `key` for every name.
    pub(crate) fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        let store = Self::empty();
        store.swap(key);
        store
    }

    /// A store with no certificate yet (ACME before the first order): handshakes fail until
    /// one is installed.
    pub(crate) fn empty() -> Arc<Self> {
        Arc::new(Self {
            default: RwLock::new(None),
            by_name: RwLock::new(HashMap::new()),
        })
    }

    /// The certificate for `sni`: an exact per-name certificate, else the default one.
    pub(crate) fn for_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let by_name = self.by_name.read().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = by_name.get(&name) {
                return Some(key.clone());
            }
        }
        self.default
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the default certificate; new handshakes use it at once.
    pub(crate) fn swap(&self, key: Arc<CertifiedKey>) {
        *self.default.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }

    /// Installs or replaces the certificate served for exactly `name`.
    pub(crate) fn swap_name(&self, name: &str, key: Arc<CertifiedKey>) {
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.for_name(hello.server_name())
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
            Some(name) if name != PINNED_SNI => self.https.for_name(Some(name)),
            _ => Some(self.identity.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let k = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&k)
            .expect("cert");
        let der = PrivateKeyDer::Pkcs8(k.serialize_der().into());
        certified_key(vec![cert.der().clone()], &der).expect("certified key")
    }

    #[test]
    fn exact_name_wins_then_default() {
        let store = CertStore::empty();
        assert!(store.for_name(Some("a.apps.test")).is_none(), "empty store");
        let (a, d) = (key("a.apps.test"), key("apps.test"));
        store.swap_name("a.apps.test", a.clone());
        assert!(store.for_name(Some("b.apps.test")).is_none());
        store.swap(d.clone());
        let got = |sni| store.for_name(sni).expect("cert").cert[0].clone();
        assert_eq!(got(Some("A.apps.test.")), a.cert[0], "case and dot folded");
        assert_eq!(got(Some("b.apps.test")), d.cert[0]);
        assert_eq!(got(None), d.cert[0]);
    }
}
