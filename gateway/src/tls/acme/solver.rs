//! The challenge type in use and how to satisfy it: publish (per authorization), wait until
//! it can be seen, and clean up everything published (after success, failure or shutdown).

use std::sync::Mutex;

use instant_acme::{ChallengeType, KeyAuthorization};

use super::dns01::{Dns01, Dns01Error};
use super::http01::Http01Tokens;
use super::tlsalpn01::AlpnChallenges;

/// One of the three challenge types, with its state.
#[derive(Debug)]
pub(crate) enum Solver {
    Dns01(Dns01),
    Http01 {
        tokens: Http01Tokens,
        live: Mutex<Vec<String>>,
    },
    TlsAlpn01 {
        challenges: AlpnChallenges,
        live: Mutex<Vec<String>>,
    },
}

/// Why a challenge could not be presented.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SolverError {
    #[error(transparent)]
    Dns01(#[from] Dns01Error),
    #[error("TLS-ALPN-01 certificate: {0}")]
    AlpnCert(String),
}

impl Solver {
    pub(crate) fn http01(tokens: Http01Tokens) -> Self {
        Self::Http01 {
            tokens,
            live: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn tls_alpn01(challenges: AlpnChallenges) -> Self {
        Self::TlsAlpn01 {
            challenges,
            live: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn kind(&self) -> ChallengeType {
        match self {
            Self::Dns01(_) => ChallengeType::Dns01,
            Self::Http01 { .. } => ChallengeType::Http01,
            Self::TlsAlpn01 { .. } => ChallengeType::TlsAlpn01,
        }
    }

    /// Makes the answer to one challenge available.
    pub(crate) async fn present(
        &self,
        identifier: &str,
        token: &str,
        key_auth: &KeyAuthorization,
    ) -> Result<(), SolverError> {
        match self {
            Self::Dns01(dns) => Ok(dns.present(identifier, &key_auth.dns_value()).await?),
            Self::Http01 { tokens, live } => {
                tokens.insert(token, key_auth.as_str());
                lock(live).push(token.to_owned());
                Ok(())
            }
            Self::TlsAlpn01 { challenges, live } => {
                challenges
                    .insert(identifier, key_auth.digest().as_ref())
                    .map_err(SolverError::AlpnCert)?;
                lock(live).push(identifier.to_owned());
                Ok(())
            }
        }
    }

    /// Waits until what was presented can be seen by the ACME server.
    pub(crate) async fn wait_ready(&self) -> Result<(), SolverError> {
        match self {
            Self::Dns01(dns) => Ok(dns.wait_visible().await?),
            // Served from memory: visible at once.
            Self::Http01 { .. } | Self::TlsAlpn01 { .. } => Ok(()),
        }
    }

    /// Withdraws everything presented.
    pub(crate) async fn cleanup(&self) {
        match self {
            Self::Dns01(dns) => dns.cleanup().await,
            Self::Http01 { tokens, live } => {
                for t in std::mem::take(&mut *lock(live)) {
                    tokens.remove(&t);
                }
            }
            Self::TlsAlpn01 { challenges, live } => {
                for n in std::mem::take(&mut *lock(live)) {
                    challenges.remove(&n);
                }
            }
        }
    }
}

fn lock(m: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
