//! The gateway's persisted state, reachable by the crash tests (`state-writer`): the name table
//! (numbered names claimed through the gateway's own `NameStore`) and an ACME certificate
//! (numbered certificates saved through the ACME store's `CertFiles`), so a test can kill a
//! writer mid-write and check the files hold the old or the new version. Compiled only with
//! the `testsupport` feature.

use std::path::Path;

use peercompute_identity::Identity;

use crate::names::NameStore;
use crate::tls::acme::CertFiles;

/// How many owners `names.json` holds before the versioned claims start (a busy gateway).
const OWNERS: u64 = 500;

/// `<state>/names.json` through the gateway's `NameStore`; the version is the number of
/// `w…` names claimed.
#[derive(Debug)]
pub struct Names {
    store: NameStore,
    key: Identity,
}

impl Names {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| e.to_string())?;
        let store = NameStore::open(state_dir).map_err(|e| e.to_string())?;
        let key = Identity::generate().map_err(|e| e.to_string())?;
        if store.owners().len() < OWNERS as usize {
            // One claim per owner would cost 500 writes: write the table once instead.
            let others: Vec<(String, String)> = (0..OWNERS)
                .map(|i| {
                    let owner = Identity::generate().map(|k| k.peer_id().to_string());
                    owner.map(|o| (format!("app-{i:03}"), o))
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            store.preload(others);
            store.save_now().map_err(|e| e.to_string())?;
        }
        Ok(Self { store, key })
    }

    pub fn version(&self) -> u64 {
        self.store
            .owners()
            .iter()
            .filter(|(name, _)| name.starts_with('w'))
            .count() as u64
    }

    /// Claims `w{version}` (a new name, so the table is rewritten).
    pub fn write(&mut self, version: u64) -> Result<(), String> {
        self.store
            .claim(&format!("w{version}"), &self.key.peer_id())
            .map_err(|e| e.to_string())
    }
}

/// The certificate `AcmeCert` rewrites: a wildcard, as DNS-01 orders it.
const CERT_NAME: &str = "*.crash.example";
/// Version N's certificate starts at this time plus N seconds.
const CERT_EPOCH: i64 = 1_780_000_000;

/// `<state>/acme/certs/_.crash.example.{pem,json}` through the ACME store's `CertFiles`, as a
/// renewal writes them (key and chain in one 0600 file, then the metadata); the version is the
/// leaf's `not_before` less [`CERT_EPOCH`]. The store's own load checks the key matches the
/// chain, so a file mixing two versions fails to open.
#[derive(Debug)]
pub struct AcmeCert {
    files: CertFiles,
}

impl AcmeCert {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        Ok(Self {
            files: CertFiles::new(state_dir),
        })
    }

    /// The stored version, 0 without a certificate; an error when it does not open.
    pub fn version(&self) -> Result<u64, String> {
        let Some(cert) = self.files.load(CERT_NAME).map_err(|e| e.to_string())? else {
            return Ok(0);
        };
        let since = cert
            .not_before
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        u64::try_from(CERT_EPOCH)
            .ok()
            .and_then(|epoch| since.checked_sub(epoch))
            .ok_or_else(|| format!("not_before {since} is before the test's epoch"))
    }

    /// Saves a fresh key and certificate whose `not_before` encodes `version`.
    pub fn write(&mut self, version: u64) -> Result<(), String> {
        let offset = i64::try_from(version).map_err(|e| e.to_string())?;
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()]).map_err(|e| e.to_string())?;
        params.not_before = time::OffsetDateTime::from_unix_timestamp(CERT_EPOCH + offset)
            .map_err(|e| e.to_string())?;
        params.not_after = time::OffsetDateTime::from_unix_timestamp(CERT_EPOCH + 90 * 86_400)
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        self.files
            .save(
                CERT_NAME,
                &cert.pem(),
                &key.serialize_pem(),
                "https://acme.crash.example/directory",
            )
            .map_err(|e| e.to_string())
    }
}
