//! The ACME account: created once on the configured directory, its credentials kept in
//! `<state>/acme/account.json` (mode 0600) and reused on every later start.
//!
//! The HTTP client is ours rather than instant-acme's default: it uses the ring provider
//! explicitly (no process-wide default needed), trusts the system roots plus `--acme-ca`, and
//! bounds every request in time, so a silent ACME server cannot stall renewals.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, BodyWrapper, BytesResponse, HttpClient, NewAccount,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::store::{CertFiles, write};
use crate::tls::TlsError;

/// Longest any single request to the ACME server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTPS client every ACME request goes through.
#[derive(Clone)]
pub(crate) struct AcmeHttp {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

impl AcmeHttp {
    /// Trusts the system roots and, when given, every certificate in `extra_ca` (PEM).
    pub(crate) fn new(extra_ca: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let invalid = |reason: String| TlsError::Invalid {
                path: path.to_path_buf(),
                reason,
            };
            for cert in crate::tls::pem_certs(&pem).map_err(invalid)? {
                roots.add(cert).map_err(|e| invalid(e.to_string()))?;
            }
        } else if added == 0 {
            tracing::warn!(
                "no system CA certificates found: the ACME server's TLS cannot be verified \
                 (install ca-certificates, or pass --acme-ca FILE)"
            );
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }
}

impl std::fmt::Debug for AcmeHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeHttp").finish_non_exhaustive()
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let uri = req.uri().clone();
        let fut = self.inner.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(resp)) => Ok(BytesResponse::from(resp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(
                    format!("{uri}: {}", error_chain(&e)).into(),
                )),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("{uri}: no answer within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

/// `e: cause: cause` — hyper's top-level messages alone say little ("client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The stored account for `directory`, if there is one (contacts the server: the directory
/// is fetched).
pub(crate) async fn load_stored(
    files: &CertFiles,
    directory: &str,
    http: &AcmeHttp,
) -> Option<Result<Account, instant_acme::Error>> {
    let path = files.account_path();
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<StoredAccount>(&bytes) {
        Ok(stored) if stored.directory == directory => Some(
            Account::builder_with_http(Box::new(http.clone()))
                .from_credentials(stored.credentials)
                .await,
        ),
        Ok(stored) => {
            info!(
                old = %stored.directory,
                new = %directory,
                "ACME directory changed: a new account will be registered"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                "stored ACME account unreadable ({e}); a new one will be registered"
            );
            None
        }
    }
}

/// Loads the stored account for `directory`, or registers a new one and stores it.
pub(crate) async fn load_or_create(
    files: &CertFiles,
    directory: &str,
    email: Option<&str>,
    http: &AcmeHttp,
) -> Result<Account, instant_acme::Error> {
    if let Some(stored) = load_stored(files, directory, http).await {
        return stored;
    }
    let path = files.account_path();
    let contact = email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            None,
        )
        .await?;
    let stored = serde_json::to_vec_pretty(&StoredAccount {
        directory: directory.to_owned(),
        credentials,
    })?;
    write(&path, &stored).map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
    info!(id = %account.id(), %directory, "ACME account registered");
    Ok(account)
}
