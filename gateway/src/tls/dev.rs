//! `--tls dev`: a local CA kept in the state dir (`dev-ca.pem`, key mode 0600) and a
//! certificate for `D` and `*.D` signed by it. The CA is made once, so a browser or
//! `curl --cacert` that trusts it keeps working across restarts; the leaf is re-issued when the
//! domain changes or it nears expiry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use peercompute_identity::write_atomic;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::{TlsError, load_pem_files};

const CA_CERT: &str = "dev-ca.pem";
const CA_KEY: &str = "dev-ca.key";
const LEAF_CERT: &str = "dev-cert.pem";
const LEAF_KEY: &str = "dev-key.pem";
const LEAF_NAMES: &str = "dev-cert.names";

/// Makes sure the dev CA and a leaf for `domain` exist; returns the CA path, chain and key.
pub(crate) fn ensure_dev_certs(
    state_dir: &Path,
    domain: &str,
) -> Result<
    (
        PathBuf,
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
    ),
    TlsError,
> {
    let ca_path = state_dir.join(CA_CERT);
    let ca_key_path = state_dir.join(CA_KEY);
    let (ca_pem, ca_key) = if ca_path.exists() && ca_key_path.exists() {
        let pem = read_string(&ca_path)?;
        let key_pem = read_string(&ca_key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Invalid {
            path: ca_key_path.clone(),
            reason: e.to_string(),
        })?;
        (pem, key)
    } else {
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = ca_params()?.self_signed(&key).map_err(gen_err)?;
        write(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write(&ca_path, cert.pem().as_bytes(), 0o644)?;
        (cert.pem(), key)
    };

    let leaf_path = state_dir.join(LEAF_CERT);
    let leaf_key_path = state_dir.join(LEAF_KEY);
    let names_path = state_dir.join(LEAF_NAMES);
    let wanted = format!("{domain}\n*.{domain}\n");
    let fresh = leaf_path.exists()
        && leaf_key_path.exists()
        && std::fs::read_to_string(&names_path).ok().as_deref() == Some(wanted.as_str())
        && std::fs::metadata(&leaf_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(300 * 86_400));
    if !fresh {
        // The issuer is rebuilt from the same parameters the CA was made with: same subject,
        // same key, so the leaf chains to the stored CA certificate.
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = CertificateParams::new(vec![domain.to_owned(), format!("*.{domain}")])
            .map_err(gen_err)?;
        params.distinguished_name.push(DnType::CommonName, domain);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(86_400);
        params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(365 * 86_400);
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        write(&leaf_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write(
            &leaf_path,
            format!("{}{}", cert.pem(), ca_pem).as_bytes(),
            0o644,
        )?;
        write(&names_path, wanted.as_bytes(), 0o644)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        return Ok((ca_path, vec![cert.der().clone()], der));
    }
    let (chain, key) = load_pem_files(&leaf_path, &leaf_key_path)?;
    // Serve only the leaf: clients that trust the CA need nothing more.
    Ok((ca_path, chain.into_iter().take(1).collect(), key))
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(DnType::CommonName, "Peer Compute dev CA");
    params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(86_400);
    params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(10 * 365 * 86_400);
    Ok(params)
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn read_string(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    write_atomic(path, bytes, mode).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_kept_and_leaf_follows_domain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, chain1, _) = ensure_dev_certs(dir.path(), "apps.localhost").expect("first");
        let ca_pem = std::fs::read(&ca).expect("ca");
        let (_, chain2, _) = ensure_dev_certs(dir.path(), "apps.localhost").expect("second");
        assert_eq!(chain1, chain2, "leaf reused");
        let (_, chain3, _) = ensure_dev_certs(dir.path(), "other.localhost").expect("third");
        assert_ne!(chain1, chain3, "leaf re-issued for a new domain");
        assert_eq!(std::fs::read(&ca).expect("ca"), ca_pem, "CA kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
