//! The participant's Ed25519 key in `<home>/identity.key` (PKCS#8 PEM, mode 0600).
//!
//! Loading refuses a key file that group or others can read, with the command that fixes it:
//! a leaked identity lets anyone impersonate the provider or the client.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use libp2p_identity::PeerId;

use crate::fsutil::write_atomic;

/// File name of the key inside a home or state directory.
pub const KEY_FILE: &str = "identity.key";

/// Why an identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is readable by other users (mode {mode:o}); fix it with `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not an Ed25519 PKCS#8 PEM key: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("no identity in {dir}: create one with `init`")]
    Missing { dir: PathBuf },
    #[error("cannot gather randomness for a new key: {0}")]
    Random(String),
}

/// One participant's key and the peer id derived from it.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    peer_id: PeerId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// A fresh random identity (not saved anywhere).
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    /// Wraps an existing signing key.
    pub fn from_signing_key(signing: SigningKey) -> Self {
        let peer_id = peer_id_from_public(&signing.verifying_key().to_bytes())
            .expect("a dalek verifying key is always a valid libp2p ed25519 key");
        Self { signing, peer_id }
    }

    /// Path of the key file inside `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    /// Loads `<dir>/identity.key`, refusing it if other users can read it.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let path = Self::path_in(dir);
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(IdentityError::Missing {
                dir: dir.to_path_buf(),
            }),
            _ => Self::load_file(&path),
        }
    }

    /// Loads a key kept at an explicit `path` (a fleet key, say), refusing it if other users
    /// can read it. A missing file is a [`IdentityError::Read`] error.
    pub fn load_file(path: &Path) -> Result<Self, IdentityError> {
        let path = path.to_path_buf();
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(source) => return Err(IdentityError::Read { path, source }),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions { path, mode });
        }
        let pem = fs::read_to_string(&path).map_err(|source| IdentityError::Read {
            path: path.clone(),
            source,
        })?;
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| IdentityError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_signing_key(signing))
    }

    /// Loads the identity in `dir`, creating the directory and a new key if there is none.
    /// Returns the identity and whether it was created now.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), IdentityError> {
        match Self::load(dir) {
            Ok(id) => Ok((id, false)),
            Err(IdentityError::Missing { .. }) => {
                let id = Self::generate()?;
                id.save(dir)?;
                Ok((id, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the key to `<dir>/identity.key` atomically with mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        self.save_file(&Self::path_in(dir))
    }

    /// Writes the key to `path` (PKCS#8 PEM) atomically with mode 0600, creating its
    /// directory if needed. An existing file is replaced: callers that must not overwrite
    /// check first.
    pub fn save_file(&self, path: &Path) -> Result<(), IdentityError> {
        let path = path.to_path_buf();
        let write_err = |source| IdentityError::Write {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(write_err)?;
        }
        let pem =
            self.signing
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| IdentityError::Malformed {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        write_atomic(&path, pem.as_bytes(), 0o600).map_err(write_err)
    }

    /// The libp2p peer id of this key.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The Ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The raw 32-byte public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// PKCS#8 DER of the private key (for rustls / rcgen).
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.signing
            .to_pkcs8_der()
            .expect("encoding an in-memory Ed25519 key as PKCS#8 cannot fail")
            .as_bytes()
            .to_vec()
    }

    /// The same key as a libp2p keypair.
    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut seed = self.signing.to_bytes();
        libp2p_identity::Keypair::ed25519_from_bytes(&mut seed)
            .expect("a 32-byte Ed25519 seed is always accepted")
    }
}

/// Peer id of a raw Ed25519 public key.
pub(crate) fn peer_id_from_public(public: &[u8; 32]) -> Option<PeerId> {
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(public).ok()?;
    Some(libp2p_identity::PublicKey::from(key).to_peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_idempotent_and_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, created) = Identity::load_or_create(dir.path()).expect("create");
        assert!(created);
        let (second, created) = Identity::load_or_create(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(first.peer_id(), second.peer_id());
        assert!(first.peer_id().to_string().starts_with("12D3KooW"));
        let mode = fs::metadata(Identity::path_in(dir.path()))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_world_readable_key_with_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        Identity::load_or_create(dir.path()).expect("create");
        let path = Identity::path_in(dir.path());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Identity::load(dir.path()).expect_err("must refuse");
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
    }

    #[test]
    fn malformed_key_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Identity::path_in(dir.path());
        write_atomic(&path, b"not a key", 0o600).expect("write");
        assert!(matches!(
            Identity::load(dir.path()),
            Err(IdentityError::Malformed { .. })
        ));
    }

    #[test]
    fn a_key_at_an_explicit_path_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleets").join("lekiwi.key");
        let id = Identity::generate().expect("generate");
        id.save_file(&path).expect("save");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            Identity::load_file(&path).expect("load").peer_id(),
            id.peer_id()
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            Identity::load_file(&path),
            Err(IdentityError::Permissions { .. })
        ));
        assert!(matches!(
            Identity::load_file(&dir.path().join("absent.key")),
            Err(IdentityError::Read { .. })
        ));
    }

    #[test]
    fn libp2p_keypair_has_same_peer_id() {
        let id = Identity::generate().expect("generate");
        assert_eq!(id.libp2p_keypair().public().to_peer_id(), id.peer_id());
    }

    #[test]
    fn debug_hides_secret() {
        let id = Identity::generate().expect("generate");
        let dbg = format!("{id:?}");
        assert!(dbg.contains("redacted"));
    }
}
