//! The fleet log of Peer Compute: how a fleet of robots agrees, without a central server, on
//! who belongs, who may do what, and which release each group runs.
//!
//! A fleet is a fleet key (its root of trust, kept by its owner, possibly offline) and an
//! append-only log every member holds in full. Entries are small (no images), signed by their
//! author and hash-chained into a DAG; every member verifies each entry — signature, links,
//! and the author's authority against the state before it — before storing it, so the
//! gateway and other relays can store and forward entries but never forge or alter one.
//! This crate is pure: no sockets, no clock (`now` is passed in), no files.
//!
//! Modules, in the order an entry travels:
//! - [`ids`]: [`FleetId`] (the fleet key), [`MemberKey`] (a member's key, shown as its peer
//!   id), [`EntryHash`].
//! - `entry`: [`Entry`] and its [`Op`]s (genesis, invite, join, enrol, groups, grants,
//!   release, rollback, e-stop/resume, revoke, key rotation) and the rules an entry follows
//!   by itself.
//! - `rotation`: [`RotationProof`], a key vouching for its successor, and the root's chain.
//! - `release_wire`: the postcard form of an [`Op`]; a release with volumes or devices is a
//!   variant of its own (`ReleaseV2`), so a release without them keeps its bytes.
//! - `codec`: [`SignedEntry`], the versioned, canonical wire form and its signature.
//! - `invite`: [`JoinToken`], what a robot joins with, and the join proof.
//! - `state`: [`FleetState`], the fold, and the authority check ([`Refusal`]).
//! - `stops`: [`Stop`], the emergency stops in force and how e-stops and resumes fold.
//! - `log`: [`FleetLog`], the verified set of entries, its heads and canonical order.
//! - `sig`: the signatures every part shares, each with its own domain.
//! - `logs`: [`LogsQuery`], a member's request for a group's container logs, and
//!   [`LogWindow`], the selection a robot answers it with.
//! - `status`: [`SignedStatus`], a robot's signed report of what it runs.
//! - `wire`: [`FleetMessage`], the exchange protocol members speak, and its frames.
//! - `image_wire`: the `/peercompute/image/1` exchange (Want/Have/Blob), sans-IO frames.
//! - `store` (feature `fs`): [`FleetStore`], a log kept as one atomic file per entry — the
//!   only part that touches files, a thin shell over [`FleetLog`].
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use peercompute_fleet::{FleetId, FleetLog, Op};
//!
//! let fleet_key = SigningKey::from_bytes(&[7; 32]);
//! let fleet = FleetId(fleet_key.verifying_key().to_bytes());
//! let mut log = FleetLog::new(fleet);
//! let genesis = log.author(&fleet_key, Op::Genesis { name: "lekiwi".into() }, 1_000).unwrap();
//! log.insert(genesis, 1_000).unwrap();
//! assert_eq!(log.state().unwrap().name, "lekiwi");
//! ```

mod codec;
mod entry;
pub mod ids;
mod image_wire;
mod invite;
mod log;
mod logs;
mod release_wire;
mod rotation;
mod sig;
mod state;
mod state_keys;
mod status;
mod stops;
#[cfg(feature = "fs")]
mod store;
mod wire;

pub use codec::{DecodeError, ENTRY_VERSION, MAX_ENTRY_BYTES, SignedEntry};
pub use entry::{
    Entry, EntryError, Grant, HealthCheck, Invite, Join, MAX_GROUPS, MAX_HEALTH_PATH,
    MAX_HEALTH_TIMEOUT_SECS, MAX_PARENTS, MAX_TEXT, Op, Release, Role, Rollback, normalize_groups,
};
pub use ids::{EntryHash, FleetId, IdError, MemberKey};
pub use image_wire::{
    BadDigest, BlobDigest, IMAGE_PROTOCOL, ImageMessage, ImageWireError, MAX_IMAGE_BLOBS,
    MAX_IMAGE_FRAME, decode_image_body, decode_image_frame, encode_image_message, image_body_len,
};
pub use invite::{JoinToken, MAX_TOKEN_LEN, ParsedToken, TokenError};
pub use log::{FleetLog, InsertError, Inserted, MAX_FUTURE_SECS, Prepared};
pub use logs::{
    DEFAULT_LOG_TAIL, LogWindow, LogsQuery, MAX_GREP, MAX_LOG_BYTES, MAX_LOG_LINE, MAX_LOG_TAIL,
};
pub use rotation::{RotationProof, RotationTokenError, root_possession};
pub use sig::Sig;
pub use state::{FleetState, GroupState, InviteState, Member, Refusal, ReleaseRecord};
pub use status::{
    AppStatus, GroupName, MAX_HISTORY, MAX_HISTORY_PER_GROUP, Outcome, Phase, SignedStatus,
    StatusReport,
};
pub use stops::Stop;
#[cfg(feature = "fs")]
pub use store::{BadEntry, FleetStore, LoadReport, StoreError};
pub use wire::{
    FLEET_PROTOCOL, FleetMessage, MAX_ENTRIES_PER_MESSAGE, MAX_FLEET_FRAME, PushResult, WireError,
    body_len, decode_body, decode_frame, encode_message,
};
