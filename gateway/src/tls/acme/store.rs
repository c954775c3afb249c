//! Certificates on disk, so a restart serves them without asking the ACME server.
//!
//! Layout under `<state>/acme/`:
//!
//! ```text
//! account.json          ACME account credentials (private key inside), mode 0600
//! certs/<name>.pem      private key + certificate chain, one file written atomically, 0600
//! certs/<name>.json     which ACME directory issued it
//! ```
//!
//! `<name>` is the first name a certificate covers (the domain for the wildcard). Key and
//! chain live in one file so a crash can never pair a new chain with an old key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use peercompute_identity::write_atomic;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::tls::{TlsError, certified_key, pem_certs, pem_key};

/// A certificate ready to serve, with what the renewal schedule needs.
#[derive(Clone)]
pub(crate) struct Certified {
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names in the leaf's subjectAltName.
    pub(crate) names: Vec<String>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    /// Directory URL of the issuing ACME server (empty when unknown).
    pub(crate) directory: String,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Certified {
    /// Parses a PEM chain and a PEM key (what an order returns), checking that they match.
    pub(crate) fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        directory: &str,
    ) -> Result<Self, String> {
        let chain =
            pem_certs(chain_pem.as_bytes()).map_err(|e| format!("certificate chain: {e}"))?;
        let key = pem_key(key_pem.as_bytes()).map_err(|e| format!("private key: {e}"))?;
        Self::from_der(chain, &key, directory)
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'static>,
        directory: &str,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("no CERTIFICATE block")?;
        let (names, not_before, not_after) = leaf_facts(leaf)?;
        let ck = certified_key(chain, key).map_err(|e| e.to_string())?;
        ck.keys_match()
            .map_err(|e| format!("key does not match the certificate: {e}"))?;
        Ok(Self {
            key: ck,
            names,
            not_before,
            not_after,
            directory: directory.to_owned(),
        })
    }

    /// Whether this certificate covers exactly `wanted` (order ignored).
    pub(crate) fn covers(&self, wanted: &[String]) -> bool {
        let mut a = self.names.clone();
        let mut b = wanted.to_vec();
        a.sort();
        b.sort();
        a == b
    }

    /// The ARI identifier of the leaf (authority key id + serial), if it has an AKI.
    pub(crate) fn ari_id(&self) -> Option<instant_acme::CertificateIdentifier<'static>> {
        use x509_parser::extensions::ParsedExtension;
        let leaf = self.key.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let aki = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })?;
        let serial = cert.tbs_certificate.raw_serial().to_vec();
        Some(
            instant_acme::CertificateIdentifier::new(
                rustls::pki_types::Der::from_slice(&aki),
                rustls::pki_types::Der::from_slice(&serial),
            )
            .into_owned(),
        )
    }
}

/// SAN DNS names and validity of a leaf certificate.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let time = |t: i64| {
        let secs = u64::try_from(t).map_err(|_| "validity before 1970".to_string())?;
        Ok::<_, String>(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    };
    let validity = cert.validity();
    let not_before = time(validity.not_before.timestamp())?;
    let not_after = time(validity.not_after.timestamp())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = gn {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    Ok((names, not_before, not_after))
}

#[derive(Serialize, Deserialize)]
struct Meta {
    directory: String,
}

/// The `acme/` directory of the state dir.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    dir: PathBuf,
}

impl CertFiles {
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("acme"),
        }
    }

    pub(crate) fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    fn pem_path(&self, name: &str) -> PathBuf {
        self.dir
            .join("certs")
            .join(format!("{}.pem", file_stem(name)))
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir
            .join("certs")
            .join(format!("{}.json", file_stem(name)))
    }

    /// Writes a certificate and its key (0600, atomically), then its metadata.
    pub(crate) fn save(
        &self,
        name: &str,
        chain_pem: &str,
        key_pem: &str,
        directory: &str,
    ) -> Result<(), TlsError> {
        let pem = format!("{}\n{}", key_pem.trim_end(), chain_pem);
        write(&self.pem_path(name), pem.as_bytes())?;
        let meta = serde_json::to_vec_pretty(&Meta {
            directory: directory.to_owned(),
        })
        .map_err(|e| TlsError::Generate(e.to_string()))?;
        write(&self.meta_path(name), &meta)
    }

    /// The stored certificate named `name`, if there is a usable one.
    pub(crate) fn load(&self, name: &str) -> Result<Option<Certified>, TlsError> {
        let path = self.pem_path(name);
        let pem = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TlsError::Read { path, source }),
        };
        let invalid = |reason: String| TlsError::Invalid {
            path: path.clone(),
            reason,
        };
        let chain = pem_certs(&pem).map_err(invalid)?;
        let key = pem_key(&pem).map_err(invalid)?;
        let directory = std::fs::read(self.meta_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            .map(|m| m.directory)
            .unwrap_or_default();
        Certified::from_der(chain, &key, &directory)
            .map(Some)
            .map_err(invalid)
    }

    /// Names of every stored certificate.
    pub(crate) fn stored_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("certs")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".pem").map(str::to_owned))
            .filter(|n| file_stem(n) == *n)
            .collect();
        names.sort();
        names
    }
}

/// A host name as a file name: lowercase DNS characters only, `*` spelled `_`.
fn file_stem(name: &str) -> String {
    name.to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    if let Some(parent) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| TlsError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    write_atomic(path, bytes, 0o600).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A self-signed chain + key for `names`, valid from `nb` to `na` (unix seconds).
    pub(crate) fn self_signed(names: &[&str], nb: i64, na: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(nb).expect("nb");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(na).expect("na");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn save_load_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = CertFiles::new(dir.path());
        assert!(files.load("apps.test").expect("absent").is_none());
        let (chain, key) = self_signed(&["apps.test", "*.apps.test"], 1_700_000_000, 1_800_000_000);
        files
            .save("apps.test", &chain, &key, "https://ca/dir")
            .expect("save");
        let got = files.load("apps.test").expect("load").expect("present");
        assert!(got.covers(&["*.apps.test".into(), "apps.test".into()]));
        assert!(!got.covers(&["apps.test".into()]));
        assert_eq!(got.directory, "https://ca/dir");
        assert_eq!(
            got.not_after,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        );
        let mode = std::fs::metadata(files.pem_path("apps.test"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(files.stored_names(), vec!["apps.test".to_string()]);
    }

    #[test]
    fn mismatched_key_and_garbage_are_refused() {
        let (chain, _) = self_signed(&["a.test"], 1_700_000_000, 1_800_000_000);
        let (_, other_key) = self_signed(&["a.test"], 1_700_000_000, 1_800_000_000);
        let err = Certified::from_pem(&chain, &other_key, "").expect_err("mismatch");
        assert!(err.contains("does not match"), "{err}");
        assert!(Certified::from_pem("garbage", &other_key, "").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let files = CertFiles::new(dir.path());
        write(
            &files.pem_path("x.test"),
            b"-----BEGIN CERTIFICATE-----\nnope\n",
        )
        .expect("w");
        assert!(
            files.load("x.test").is_err(),
            "corrupt file is an error, not a panic"
        );
    }

    #[test]
    fn file_names_are_tame() {
        assert_eq!(file_stem("*.Apps.test"), "_.apps.test");
        assert_eq!(file_stem("../etc/passwd"), "_etc_passwd");
    }
}
