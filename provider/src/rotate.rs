//! The robot's key rotation: `peercomputed rotate-key` makes the next key and its rotation
//! token; the switch to it happens once a fleet admin has published the token.
//!
//! 1. [`request`] writes `<home>/identity.key.next` (0600; run again, it reuses it and
//!    prints the same token) and returns the token
//!    ([`RotationProof`]: the current key vouches for the next, the next proves it is held).
//! 2. An admin's `peerctl fleet rotate-member TOKEN` publishes `RotateMember`; every member's
//!    fold then records `retired[current] = next`.
//! 3. [`finish_pending`], first thing when the daemon starts (and before it re-executes
//!    itself when the entry arrives while it runs, see [`watch`]): when a held fleet log
//!    retired the current key for the next one, the identity crate's `finish_rotation`
//!    renames `identity.key` → `identity.key.retired-<unix secs>`, then `identity.key.next`
//!    → `identity.key`, and syncs the directory. A crash between the two renames leaves the
//!    next key without `identity.key`; the next start finishes it. A next key no log names
//!    changes nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use peercompute_fleet::{FleetId, FleetState, FleetStore, MemberKey, RotationProof};
use peercompute_identity::{Finished, Identity, IdentityError, PeerId};
use peercompute_p2p::fleet_hub::{FleetHub, unix_now};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

pub use peercompute_identity::NEXT_KEY_FILE;

/// Why a rotation step could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the fleet logs to see whether the key was rotated: {0}")]
    Store(#[from] peercompute_fleet::StoreError),
}

/// What `rotate-key` hands to a fleet admin.
#[derive(Debug, Clone)]
pub struct RotationRequest {
    /// The rotation token (`pcrotate1.…`; it holds no secret).
    pub token: String,
    pub old: PeerId,
    pub new: PeerId,
    /// Whether the next key was made now (false: an earlier run's is reused).
    pub created: bool,
}

/// What [`finish_pending`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// No next key: nothing pending.
    Nothing,
    /// A next key that no held fleet log names yet.
    Pending { next: PeerId },
    /// The next key is now `identity.key`; `old` is `None` when an interrupted switch was
    /// finished (the old key was already set aside).
    Switched { old: Option<PeerId>, new: PeerId },
}

/// `peercomputed rotate-key`: the next key (made unless an earlier run made it) and the
/// token for it. An interrupted switch is finished first, so the current key is never one
/// made afresh over a rotation.
pub fn request(home: &Path) -> Result<RotationRequest, RotateError> {
    if !Identity::path_in(home).exists() {
        finish_pending(home)?;
    }
    let (current, _) = Identity::load_or_create(home)?;
    let (next, created) = peercompute_identity::load_or_create_next(home)?;
    let token = RotationProof::new(current.signing_key(), next.signing_key()).to_text();
    Ok(RotationRequest {
        token,
        old: current.peer_id(),
        new: next.peer_id(),
        created,
    })
}

/// The public key of the next key, if one is pending (a damaged file is reported).
pub(crate) fn pending_key(home: &Path) -> Result<Option<MemberKey>, RotateError> {
    Ok(peercompute_identity::pending_next(home)?.map(|next| MemberKey(next.public_key_bytes())))
}

/// Whether `state` retired `current` for `next`.
pub(crate) fn rotated_to(state: &FleetState, current: &MemberKey, next: &MemberKey) -> bool {
    state.retired.get(current) == Some(next)
}

/// Switches to the next key when a fleet log held under `home` retired the current key for
/// it (see the module docs). Called first thing when the daemon starts.
pub fn finish_pending(home: &Path) -> Result<Switch, RotateError> {
    let Some(next_key) = pending_key(home)? else {
        return Ok(Switch::Nothing);
    };
    let next = next_key
        .peer_id()
        .expect("a key loaded from a PEM file is a valid Ed25519 key");
    let current = match Identity::load(home) {
        Ok(current) => Some(current),
        Err(IdentityError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let states = held_states(home)?;
    let accepted = |next: &[u8; 32]| {
        let next = MemberKey(*next);
        current.as_ref().is_some_and(|current| {
            let current = MemberKey(current.public_key_bytes());
            states.iter().any(|s| rotated_to(s, &current, &next))
        })
    };
    match peercompute_identity::finish_rotation(home, unix_now(), accepted)? {
        Finished::Nothing => Ok(Switch::Pending { next }),
        Finished::Switched { .. } => Ok(Switch::Switched {
            old: current.map(|c| c.peer_id()),
            new: next,
        }),
    }
}

/// The states of the fleet logs kept under `<home>/fleet` (`<fleet id>/entries/…`).
fn held_states(home: &Path) -> Result<Vec<FleetState>, RotateError> {
    let root = crate::fleet::fleet_dir(home);
    let items = match fs::read_dir(&root) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RotateError::Io {
                what: "read",
                path: root,
                source,
            });
        }
    };
    let mut states = Vec::new();
    for item in items.flatten() {
        let Ok(fleet) = item.file_name().to_string_lossy().parse::<FleetId>() else {
            continue;
        };
        if !item.path().join("entries").is_dir() {
            continue;
        }
        let (store, _) = FleetStore::open(&item.path(), fleet, unix_now())?;
        states.extend(store.log().state().cloned());
    }
    Ok(states)
}

/// While the daemon runs: when a held log retires this robot's key (`me`) for its pending
/// next key, says so on `rotated` (the new peer id) and ends; the daemon then stops,
/// switches ([`finish_pending`]) and re-executes itself.
pub(crate) async fn watch(
    hub: FleetHub,
    home: PathBuf,
    me: MemberKey,
    rotated: watch::Sender<Option<PeerId>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = hub.subscribe();
    let mut warned = false;
    loop {
        match rotated_here(&hub, &home, &me) {
            Seen::Nothing => {}
            Seen::Switch(new) => {
                info!(peer_id = %new, "key rotated: switching to {new}");
                rotated.send_replace(Some(new));
                return;
            }
            Seen::Elsewhere { fleet, to } if !warned => {
                warned = true;
                warn!(
                    "fleet {fleet} rotated this robot's key to {to}, but this robot does not hold that key (its pending {NEXT_KEY_FILE} is another or none): the fleet refuses this key from now on; run `peercomputed rotate-key` and have an admin publish its token from this robot's home"
                );
            }
            Seen::Elsewhere { .. } => {}
        }
        tokio::select! {
            r = changes.recv() => {
                if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// What the held logs say of this robot's key.
enum Seen {
    /// Not retired.
    Nothing,
    /// Retired for the pending next key: switch to it.
    Switch(PeerId),
    /// Retired for a key this robot does not hold.
    Elsewhere { fleet: String, to: MemberKey },
}

/// Whether a held log retired `me`, and for which key; the next key's file is read only then.
fn rotated_here(hub: &FleetHub, home: &Path, me: &MemberKey) -> Seen {
    let retired: Vec<(String, MemberKey)> = hub
        .fleet_ids()
        .iter()
        .filter_map(|fleet| {
            hub.with_log(fleet, |log| {
                let state = log.state()?;
                Some((state.name.clone(), *state.retired.get(me)?))
            })
            .flatten()
        })
        .collect();
    let Some((fleet, to)) = retired.first().cloned() else {
        return Seen::Nothing;
    };
    let next = match pending_key(home) {
        Ok(next) => next,
        Err(e) => {
            warn!("this key was rotated but {NEXT_KEY_FILE} cannot be read: {e}");
            None
        }
    };
    match next {
        Some(next) if retired.iter().any(|(_, to)| *to == next) => match next.peer_id() {
            Some(peer) => Seen::Switch(peer),
            None => Seen::Nothing,
        },
        _ => Seen::Elsewhere { fleet, to },
    }
}

#[cfg(test)]
mod tests;
