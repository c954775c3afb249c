//! Several gateways sharing state through etcd (issue 14): which provider key owns which
//! route name, and the cluster's allow and revoked sets, read from a local cache that a prefix
//! watch keeps current, so routes keep answering while etcd is away.
//!
//! A gateway connects once ([`ClusterStore::connect`]) and keeps the cloneable handle. A
//! background task holds the gateway's lease (TTL 10 s, renewed every ~3 s) and the watch;
//! [`ClusterStore::up`] says whether etcd answers. [`ClusterStore::claim`] is one etcd
//! transaction, so two gateways racing for one name get exactly one [`Claim::Won`]; while etcd
//! is away a new name is [`Claim::Unavailable`] and a name the cache says is the caller's is
//! [`Claim::Already`]. `owner`/`owners` and the peer sets are answered from the cache, which is
//! mirrored to a file so a restart while etcd is down still knows the owners.
//!
//! Behind the gateway's stores (wired in `gateway/src/cluster/`, behind `--cluster`):
//! - `NameStore::claim(name, peer)` → [`ClusterStore::claim`]: `Won`/`Already` → Ok,
//!   `Owned(o)` → `NameStoreError::Owned { owner: o }`, `Held` → the refusal
//!   `Shared::released_from` gives today, `Unavailable(e)` → "try later" with `e`'s text.
//! - `NameStore::release(name)` → [`ClusterStore::owner`] then
//!   [`ClusterStore::release`]`(name, owner)`; `Release::OwnedBy` means a claim came in between.
//! - `owner`/`owners` have the same shapes (`Option<String>`, `Vec<(name, owner)>` sorted by
//!   name); `NameStore::transfer` → [`ClusterStore::transfer`].
//! - The in-memory release hold (`released_from`, `lift_hold`, `claimed`) →
//!   [`ClusterStore::hold`] and [`ClusterStore::lift_hold`]; a claim by another key ends the
//!   hold inside its own transaction.
//! - `Allowlist`: [`ClusterStore::revoked`] wins over flags and file,
//!   [`ClusterStore::is_allowed`] adds to them, and [`ClusterStore::peer_changes`] is forwarded
//!   into its `changes` counter so live tunnels re-check their peer.
//!
//! Map, in the order data flows:
//! - `options.rs`: [`ClusterOptions`], and the `etcd://`/`etcds://` endpoint spelling.
//! - `keys.rs`: the key schema under `/peercompute/v1/<domain>/` (written once, table-tested).
//! - `store.rs`: [`ClusterStore`] (connect, `up`, reads from the cache, shutdown) and the state
//!   its handle shares with the driver.
//! - `driver.rs`: the background session loop: lease, schema check, snapshot, watch.
//! - `cache.rs`: the pure cache; per-key revisions and tombstones keep a write's answer and
//!   the watch from undoing each other.
//! - `names.rs`: [`ClusterStore::claim`] and [`ClusterStore::release`], and the release hold.
//! - `transfer.rs`: [`ClusterStore::transfer`], every name of a rotated key to its new key.
//! - `peers.rs`: allow and revoke, and their change counter.
//! - `mirror.rs`: the cache's copy on disk.
//! - `follow.rs`: raw sub-prefixes the cache does not keep ([`ClusterStore::follow`]) and
//!   lease-bound puts (the ACME certificates, the per-gateway tunnel records).
//! - `lock.rs`: [`ClusterStore::lock`] (etcd Lock API on the gateway lease) and
//!   [`ClusterStore::put_fenced`], a write only while the lock is held.
//! - `error.rs`: [`ClusterError`], whose texts say what to do.

mod cache;
mod driver;
mod error;
mod follow;
mod keys;
mod lock;
mod mirror;
mod names;
mod options;
mod peers;
mod store;
mod transfer;

pub use cache::{HoldRecord, NameRecord, PeerRecord};
pub use error::ClusterError;
pub use follow::Followed;
pub use lock::LockKey;
pub use names::{Claim, Release};
pub use options::{ClusterOptions, ClusterTls};
pub use store::ClusterStore;
