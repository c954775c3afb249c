//! The replay guard of signed requests, persisted in `<home>/state/nonces.json` before a
//! request is acted on, so a request captured and replayed after a daemon restart is still
//! refused.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use peercompute_identity::{PeerId, write_atomic};
use peercompute_tunnel_proto::{ReplayGuard, Request, SignedEnvelope, VerifyError};

/// Why the guard could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ReplayStoreError {
    path: PathBuf,
    reason: String,
}

/// Persistent replay guard.
#[derive(Debug)]
pub(crate) struct ReplayStore {
    path: PathBuf,
    guard: Mutex<ReplayGuard>,
}

impl ReplayStore {
    pub(crate) fn open(state_dir: &Path) -> Result<Self, ReplayStoreError> {
        let path = state_dir.join("nonces.json");
        let err = |reason: String| ReplayStoreError {
            path: path.clone(),
            reason,
        };
        let guard = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                err(format!(
                    "corrupt ({e}); move it away to reset replay protection"
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ReplayGuard::new(
                peercompute_tunnel_proto::DEFAULT_MAX_SKEW_SECS,
                peercompute_tunnel_proto::DEFAULT_REPLAY_CAPACITY,
            ),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Self {
            path,
            guard: Mutex::new(guard),
        })
    }

    /// Verifies `envelope` from `signer` for provider `me` and persists the nonce before
    /// returning the request.
    pub(crate) fn verify(
        &self,
        envelope: &SignedEnvelope,
        signer: &PeerId,
        me: &PeerId,
        now: u64,
    ) -> Result<Request, VerifyOrSave> {
        let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        guard.expire(now);
        let request = envelope
            .verify(signer, me, now, &mut guard)
            .map_err(VerifyOrSave::Verify)?;
        let bytes = serde_json::to_vec(&*guard).expect("the guard always serialises");
        write_atomic(&self.path, &bytes, 0o600).map_err(VerifyOrSave::Save)?;
        Ok(request)
    }
}

/// A refused request, or a guard that could not be saved (then the request is refused too).
#[derive(Debug)]
pub(crate) enum VerifyOrSave {
    Verify(VerifyError),
    Save(std::io::Error),
}
