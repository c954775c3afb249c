//! The replay guard of signed requests, persisted in `<home>/state/nonces.json` before a
//! request is acted on, so a request captured and replayed after a daemon restart is still
//! refused.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use peercompute_identity::{PeerId, write_atomic};
use peercompute_tunnel_proto::{ReplayGuard, Request, SignedEnvelope, VerifyError};
use tracing::{info, warn};

/// Why the guard could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ReplayStoreError {
    path: PathBuf,
    reason: String,
}

/// A request whose signature, time and nonce are good.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) request: Request,
    /// Whether its nonce reached the disk, and if not, the sentence for the client.
    pub(crate) saved: Result<(), String>,
}

/// Persistent replay guard.
#[derive(Debug)]
pub(crate) struct ReplayStore {
    path: PathBuf,
    guard: Mutex<ReplayGuard>,
    /// The last save failed (one warning per failing stretch).
    failing: AtomicBool,
}

impl ReplayStore {
    pub(crate) fn open(state_dir: &Path) -> Result<Self, ReplayStoreError> {
        let path = state_dir.join("nonces.json");
        peercompute_identity::remove_stale_tmp(state_dir, "nonces.json");
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
            failing: AtomicBool::new(false),
        })
    }

    /// Verifies `envelope` from `signer` for provider `me`, then persists the nonce. A request
    /// whose nonce could not be saved (a full disk) is still returned, with `saved` saying why:
    /// the caller serves what is safe to replay and refuses the rest. The guard in memory
    /// refuses a replay either way, until the daemon restarts.
    pub(crate) fn verify(
        &self,
        envelope: &SignedEnvelope,
        signer: &PeerId,
        me: &PeerId,
        now: u64,
    ) -> Result<Verified, VerifyError> {
        let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        guard.expire(now);
        let request = envelope.verify(signer, me, now, &mut guard)?;
        let bytes = serde_json::to_vec(&*guard).expect("the guard always serialises");
        let saved = write_atomic(&self.path, &bytes, 0o600);
        let failing = saved.is_err();
        if self.failing.swap(failing, Ordering::Relaxed) != failing {
            match &saved {
                Err(e) => {
                    warn!(path = %self.path.display(), "cannot record request nonces: {e}; only status, ls, logs and stop are served until it can")
                }
                Ok(()) => info!(path = %self.path.display(), "request nonces are recorded again"),
            }
        }
        let dir = self.path.parent().unwrap_or(&self.path);
        let saved = saved.map_err(|e| {
            format!(
                "cannot record the request in {}: {e}; free space and retry",
                dir.display()
            )
        });
        Ok(Verified { request, saved })
    }

    /// How many nonces the guard holds (the crash tests' version number).
    #[cfg(feature = "testsupport")]
    pub(crate) fn recorded(&self) -> usize {
        self.guard.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
