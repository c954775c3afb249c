//! Identity of every Peer Compute participant: one Ed25519 key.
//!
//! The same key serves three purposes, so each participant has exactly one name — its
//! libp2p [`PeerId`] (`12D3KooW…`):
//!
//! - [`key`]: loading, creating and protecting `<home>/identity.key` (PKCS#8 PEM, mode 0600),
//!   and deriving the peer id.
//! - `pending`: a key rotation in progress (`identity.key.next`) and the switch to it.
//! - [`home`]: where a participant's files live (`--home`, `$PEERCOMPUTE_HOME`, `~/.peercompute`).
//! - [`cert`]: a self-signed X.509 certificate carrying the Ed25519 key, for QUIC/TLS.
//! - [`verify`]: rustls verifiers that authenticate the remote side by the Ed25519 key in its
//!   certificate — any key on the gateway side (the allowlist decides afterwards), one pinned
//!   peer id on the provider side.
//! - [`fsutil`]: atomic file writes shared by everything that persists state.
//! - [`trust`]: the trusted peers file `<home>/trusted_peers.json` — [`TrustStore`] edits it,
//!   [`TrustWatcher`] gives a daemon a live view that follows edits without a restart.

mod cert;
mod fsutil;
mod home;
mod key;
mod pending;
mod trust;
mod verify;

pub use cert::{CertError, peer_id_from_cert, self_signed_cert};
pub use fsutil::{remove_stale_tmp, write_atomic};
pub use home::{HOME_ENV, resolve_home};
pub use key::{Identity, IdentityError, KEY_FILE};
pub use libp2p_identity::PeerId;
pub use multiaddr::Multiaddr;
pub use pending::{
    Finished, NEXT_KEY_FILE, finish_rotation, load_or_create_next, next_key_path, pending_next,
};
pub use trust::{AddOutcome, TRUST_FILE, TrustError, TrustStore, TrustWatcher, TrustedPeer};
pub use verify::{AnyEd25519ClientVerifier, PinnedPeerServerVerifier};

/// Parses a textual peer id, with an error message a person can act on.
pub fn parse_peer_id(s: &str) -> Result<PeerId, String> {
    s.trim().parse::<PeerId>().map_err(|e| {
        format!("`{s}` is not a peer id ({e}); peer ids look like 12D3KooW… (see `id`)")
    })
}
