//! [`FleetHub`]: the fleet logs one node holds and the `/peercompute/fleet/1` service that
//! keeps them in step with other members. A robot holds its fleet's log; a gateway holds the
//! logs of every fleet that uses it — it verifies each entry exactly as a robot does, so it
//! can store and forward entries but never forge or alter one — and the latest signed status
//! of each robot.
//!
//! - [`FleetHub::insert`] verifies and stores entries and announces what is new on
//!   [`FleetHub::subscribe`] (the robot's reconciler and the gateway's forwarder listen).
//! - [`serve`] answers peers: `Push` (store, `Ack` each), `Pull` (pages of what the asker
//!   lacks, then the reverse pull), `Status` (kept), `StatusRequest` (`Statuses`),
//!   `LogsRequest` (robots with a [`LogSource`]: `Logs` for members allowed to view the group).
//! - `fleet_client` (re-exported here): [`sync_with`] is anti-entropy with one peer, both
//!   ways, on one stream; [`push_to`] sends new entries to one peer; [`forward_changes`]
//!   pushes what is new to chosen peers; statuses are sent and asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use libp2p::PeerId;
use peercompute_fleet::{
    EntryHash, FleetId, FleetLog, FleetMessage, FleetStore, Inserted, LoadReport,
    MAX_ENTRIES_PER_MESSAGE, MemberKey, PushResult, SignedEntry, SignedStatus, StoreError,
};
use tokio::sync::{Semaphore, broadcast};
use tracing::{debug, warn};

use crate::fleet::{FleetStream, FleetStreamError, fleet_protocol};
use crate::fleet_logs::answer_logs;
pub use crate::fleet_logs::{LogLines, LogSource};
use crate::node::{AdmitFn, Node};

/// How long one exchange may take.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_CONCURRENT_STREAMS: usize = 64;
/// Most pages one pull answer may take (a log of 20 × 4096 entries).
const MAX_PAGES: usize = 4096;
/// Most bytes of entries one exchange may bring (a peer cannot make us buffer more).
pub(crate) const MAX_PULL_BYTES: usize = 64 * 1024 * 1024;

/// Limits of a hub.
#[derive(Clone)]
pub struct HubPolicy {
    /// May this peer open fleet streams at all?
    pub admit: AdmitFn,
    /// May a new fleet (its genesis) be stored here? Robots hold only the fleets they joined;
    /// a gateway holds any, up to `max_fleets`.
    pub accept_new_fleets: bool,
    pub max_fleets: usize,
    /// Most entries kept per fleet.
    pub max_entries: usize,
}

impl std::fmt::Debug for HubPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubPolicy")
            .field("accept_new_fleets", &self.accept_new_fleets)
            .field("max_fleets", &self.max_fleets)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

/// New entries stored in a fleet's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetChange {
    pub fleet: FleetId,
    pub entries: Vec<EntryHash>,
    /// Who sent them (`None` for local writes).
    pub from: Option<PeerId>,
}

/// Why an exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot open a fleet stream to {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("fleet exchange with {peer}: {source}")]
    Stream {
        peer: PeerId,
        source: FleetStreamError,
    },
    #[error("{peer} did not answer within {EXCHANGE_TIMEOUT:?}")]
    Timeout { peer: PeerId },
    #[error("{peer} answered: {message}")]
    Remote { peer: PeerId, message: String },
    #[error("{peer} sent an unexpected message: {what}")]
    Unexpected { peer: PeerId, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Inner {
    root: PathBuf,
    policy: HubPolicy,
    fleets: Mutex<BTreeMap<FleetId, FleetStore>>,
    statuses: Mutex<BTreeMap<(FleetId, MemberKey), SignedStatus>>,
    changes: broadcast::Sender<FleetChange>,
    /// Where a robot reads its fleet containers' logs (`None`: not a robot).
    log_source: Mutex<Option<LogSource>>,
}

/// The fleet logs of one node (cheap to clone).
#[derive(Clone)]
pub struct FleetHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FleetHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHub")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FleetHub {
    /// Opens every fleet log under `root` (`<root>/<fleet id>/entries/…`), verifying each;
    /// what did not verify is returned per fleet, to be logged.
    pub fn open(
        root: &Path,
        policy: HubPolicy,
    ) -> Result<(Self, Vec<(FleetId, LoadReport)>), StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Write {
            path: root.to_owned(),
            source,
        })?;
        let mut fleets = BTreeMap::new();
        let mut reports = Vec::new();
        let entries = std::fs::read_dir(root).map_err(|source| StoreError::Read {
            path: root.to_owned(),
            source,
        })?;
        for item in entries.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Ok(fleet) = name.parse::<FleetId>() else {
                continue;
            };
            let (store, report) = FleetStore::open(&item.path(), fleet, unix_now())?;
            if !report.bad.is_empty() {
                reports.push((fleet, report));
            }
            fleets.insert(fleet, store);
        }
        let (changes, _) = broadcast::channel(256);
        let inner = Inner {
            root: root.to_owned(),
            policy,
            fleets: Mutex::new(fleets),
            statuses: Mutex::new(BTreeMap::new()),
            changes,
            log_source: Mutex::new(None),
        };
        Ok((
            FleetHub {
                inner: Arc::new(inner),
            },
            reports,
        ))
    }

    fn fleets(&self) -> MutexGuard<'_, BTreeMap<FleetId, FleetStore>> {
        self.inner.fleets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fleets held here.
    pub fn fleet_ids(&self) -> Vec<FleetId> {
        self.fleets().keys().copied().collect()
    }

    /// Runs `f` on a fleet's log, if held.
    pub fn with_log<R>(&self, fleet: &FleetId, f: impl FnOnce(&FleetLog) -> R) -> Option<R> {
        self.fleets().get(fleet).map(|s| f(s.log()))
    }

    /// New entries, as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<FleetChange> {
        self.inner.changes.subscribe()
    }

    /// Makes this hub answer `LogsRequest` (robots): members allowed to view a group get its
    /// container's lines from `source`.
    pub fn set_log_source(&self, source: LogSource) {
        *self
            .inner
            .log_source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    pub(crate) fn log_source(&self) -> Option<LogSource> {
        self.inner
            .log_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts holding `fleet` (a robot that joins); its log stays empty until a genesis.
    pub fn hold(&self, fleet: FleetId) -> Result<(), StoreError> {
        let mut fleets = self.fleets();
        if let std::collections::btree_map::Entry::Vacant(slot) = fleets.entry(fleet) {
            let dir = self.inner.root.join(fleet.to_string());
            let (store, _) = FleetStore::open(&dir, fleet, unix_now())?;
            slot.insert(store);
        }
        Ok(())
    }

    /// Verifies and stores `entries` (canonical order helps: parents first), announcing
    /// what is new. Each gets a result.
    pub fn insert(
        &self,
        fleet: FleetId,
        entries: Vec<SignedEntry>,
        from: Option<PeerId>,
    ) -> Vec<PushResult> {
        let now = unix_now();
        let mut results = Vec::with_capacity(entries.len());
        let mut new = Vec::new();
        {
            let mut fleets = self.fleets();
            if !fleets.contains_key(&fleet) {
                let refused = if !self.inner.policy.accept_new_fleets {
                    Some(format!("fleet {fleet} is not held here"))
                } else if fleets.len() >= self.inner.policy.max_fleets {
                    Some(format!(
                        "this node holds {} fleets, its limit",
                        fleets.len()
                    ))
                } else {
                    let dir = self.inner.root.join(fleet.to_string());
                    match FleetStore::open(&dir, fleet, now) {
                        Ok((store, _)) => {
                            fleets.insert(fleet, store);
                            None
                        }
                        Err(e) => Some(e.to_string()),
                    }
                };
                if let Some(reason) = refused {
                    return entries
                        .iter()
                        .map(|_| PushResult::Refused {
                            reason: reason.clone(),
                        })
                        .collect();
                }
            }
            let store = fleets.get_mut(&fleet).expect("inserted above");
            for entry in entries {
                let hash = entry.hash();
                if store.log().len() >= self.inner.policy.max_entries {
                    results.push(PushResult::Refused {
                        reason: format!("the log holds {} entries, its limit", store.log().len()),
                    });
                    continue;
                }
                match store.insert(entry, now) {
                    Ok(Inserted::New) => {
                        new.push(hash);
                        results.push(PushResult::Stored(hash));
                    }
                    Ok(Inserted::Duplicate) => results.push(PushResult::Duplicate(hash)),
                    Err(e) => results.push(PushResult::Refused {
                        reason: e.to_string(),
                    }),
                }
            }
        }
        if !new.is_empty() {
            debug!(%fleet, new = new.len(), "fleet entries stored");
            let _ = self.inner.changes.send(FleetChange {
                fleet,
                entries: new,
                from,
            });
        }
        results
    }

    /// Keeps a robot's status if it verifies, its robot is a member of a fleet held here, and
    /// it is newer than the one held. Statuses of strangers are dropped: any peer reaching the
    /// hub could otherwise fill it with keys of its own making, shown as robots of the fleet.
    pub fn record_status(&self, status: SignedStatus) -> bool {
        if !status.verify() {
            return false;
        }
        let (fleet, robot) = (status.report.fleet, status.report.robot);
        let member = self
            .with_log(&fleet, |log| {
                log.state().is_some_and(|s| s.members.contains_key(&robot))
            })
            .unwrap_or(false);
        if !member {
            return false;
        }
        let key = (fleet, robot);
        let mut statuses = self
            .inner
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let newer = statuses
            .get(&key)
            .is_none_or(|old| old.report.at_ms <= status.report.at_ms);
        if newer {
            statuses.insert(key, status);
        }
        newer
    }

    /// The latest status of every robot of `fleet` heard from.
    pub fn statuses(&self, fleet: &FleetId) -> Vec<SignedStatus> {
        let statuses = self
            .inner
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        statuses
            .iter()
            .filter(|((f, _), _)| f == fleet)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Wire bytes of the entries of `fleet` not in or below `heads`, in canonical order.
    pub(crate) fn missing_for(&self, fleet: &FleetId, heads: &[EntryHash]) -> Option<Vec<Vec<u8>>> {
        self.with_log(fleet, |log| {
            log.entries_not_below(heads)
                .into_iter()
                .map(|e| e.bytes().to_vec())
                .collect()
        })
    }

    pub(crate) fn heads(&self, fleet: &FleetId) -> Vec<EntryHash> {
        self.with_log(fleet, FleetLog::heads).unwrap_or_default()
    }
}

/// Decodes entries received from `peer`; undecodable ones become refusals.
pub(crate) fn decode_entries(entries: &[Vec<u8>]) -> (Vec<SignedEntry>, Vec<PushResult>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for bytes in entries {
        match SignedEntry::decode(bytes) {
            Ok(e) => ok.push(e),
            Err(e) => bad.push(PushResult::Refused {
                reason: e.to_string(),
            }),
        }
    }
    (ok, bad)
}

/// Accepts fleet streams until the node stops.
pub async fn serve(node: Node, hub: FleetHub) {
    let mut incoming = match node.control().accept(fleet_protocol()) {
        Ok(incoming) => incoming,
        Err(e) => {
            warn!("cannot accept fleet streams: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_STREAMS));
    while let Some((peer, stream)) = incoming.next().await {
        if !(hub.inner.policy.admit)(&peer) {
            debug!(%peer, "fleet stream from a peer not admitted; dropped");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "too many fleet streams at once; dropping one");
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut stream = FleetStream::new(stream);
            let served = tokio::time::timeout(EXCHANGE_TIMEOUT, answer(&hub, peer, &mut stream));
            match served.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "fleet stream ended: {e}"),
                Err(_) => debug!(%peer, "fleet stream timed out"),
            }
            stream.close().await;
            drop(permit);
        });
    }
}

async fn answer(
    hub: &FleetHub,
    peer: PeerId,
    stream: &mut FleetStream,
) -> Result<(), FleetStreamError> {
    let Some(first) = stream.read().await? else {
        return Ok(());
    };
    if let Some(message) = crate::fleet_revoked::refusal(hub, &peer, &first) {
        debug!(%peer, "{message}");
        return stream.write(&FleetMessage::Error { message }).await;
    }
    match first {
        FleetMessage::Push { fleet, entries } => {
            // Pages of one push share the stream: each is acknowledged before the next. They
            // are all of the first page's fleet (the one the revocation check saw).
            let mut entries = entries;
            loop {
                let (ok, mut results) = decode_entries(&entries);
                results.extend(hub.insert(fleet, ok, Some(peer)));
                stream.write(&FleetMessage::Ack { results }).await?;
                match stream.read().await? {
                    Some(FleetMessage::Push {
                        fleet: f,
                        entries: e,
                    }) if f == fleet => entries = e,
                    Some(FleetMessage::Push { .. }) => {
                        let message = "a push's pages must all be of one fleet".to_owned();
                        return stream.write(&FleetMessage::Error { message }).await;
                    }
                    _ => return Ok(()),
                }
            }
        }
        FleetMessage::Pull { fleet, heads } => {
            // A fleet new here (its admin's first sync) is taken if the policy allows: we
            // have nothing to send, and the reverse pull brings its entries.
            let missing = hub
                .missing_for(&fleet, &heads)
                .or_else(|| hub.inner.policy.accept_new_fleets.then(Vec::new));
            let Some(missing) = missing else {
                let message = format!("fleet {fleet} is not held here");
                return stream.write(&FleetMessage::Error { message }).await;
            };
            send_pages(stream, missing).await?;
            // The reverse pull: what the asker has that we lack.
            let heads = hub.heads(&fleet);
            stream.write(&FleetMessage::Pull { fleet, heads }).await?;
            let received = receive_pages(stream).await?;
            let (ok, mut results) = decode_entries(&received);
            results.extend(hub.insert(fleet, ok, Some(peer)));
            stream.write(&FleetMessage::Ack { results }).await
        }
        FleetMessage::Status(status) => {
            let kept = hub.record_status(status);
            debug!(%peer, kept, "robot status");
            stream.write(&FleetMessage::Ack { results: vec![] }).await
        }
        FleetMessage::StatusRequest { fleet } => {
            let statuses = hub.statuses(&fleet);
            stream.write(&FleetMessage::Statuses { statuses }).await
        }
        FleetMessage::LogsRequest { fleet, query } => {
            let answer = answer_logs(hub, peer, fleet, query).await;
            stream.write(&answer).await
        }
        other => {
            let message = format!("cannot start an exchange with {}", message_name(&other));
            stream.write(&FleetMessage::Error { message }).await
        }
    }
}

fn message_name(m: &FleetMessage) -> &'static str {
    match m {
        FleetMessage::Push { .. } => "Push",
        FleetMessage::Ack { .. } => "Ack",
        FleetMessage::Pull { .. } => "Pull",
        FleetMessage::Entries { .. } => "Entries",
        FleetMessage::StatusRequest { .. } => "StatusRequest",
        FleetMessage::Status(_) => "Status",
        FleetMessage::Error { .. } => "Error",
        FleetMessage::Statuses { .. } => "Statuses",
        FleetMessage::LogsRequest { .. } => "LogsRequest",
        FleetMessage::Logs { .. } => "Logs",
    }
}

pub(crate) async fn send_pages(
    stream: &mut FleetStream,
    entries: Vec<Vec<u8>>,
) -> Result<(), FleetStreamError> {
    let mut pages = entries.chunks(MAX_ENTRIES_PER_MESSAGE).peekable();
    if pages.peek().is_none() {
        return stream
            .write(&FleetMessage::Entries {
                entries: vec![],
                more: false,
            })
            .await;
    }
    while let Some(page) = pages.next() {
        let more = pages.peek().is_some();
        stream
            .write(&FleetMessage::Entries {
                entries: page.to_vec(),
                more,
            })
            .await?;
    }
    Ok(())
}

pub(crate) async fn receive_pages(
    stream: &mut FleetStream,
) -> Result<Vec<Vec<u8>>, FleetStreamError> {
    let mut all = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..MAX_PAGES {
        match stream.read().await? {
            Some(FleetMessage::Entries { entries, more }) => {
                bytes += entries.iter().map(Vec::len).sum::<usize>();
                if bytes > MAX_PULL_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "more than 64 MiB of entries in one exchange",
                    )
                    .into());
                }
                all.extend(entries);
                if !more {
                    return Ok(all);
                }
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "expected a page of entries",
                )
                .into());
            }
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "too many pages").into())
}

pub use crate::fleet_client::{
    ForwardTargets, Reach, SyncReport, forward_changes, push_to, request_logs, request_statuses,
    send_status, sync_with,
};

#[cfg(test)]
pub(crate) mod tests {
    use peercompute_fleet::{FleetLog, Op, StatusReport};
    use peercompute_identity::Identity;

    use super::*;

    /// A signed status of `robot` in `fleet` at `at_ms`, with nothing running.
    pub(crate) fn report(fleet: FleetId, robot: &Identity, at_ms: u64) -> SignedStatus {
        let report = StatusReport {
            fleet,
            robot: MemberKey(robot.public_key_bytes()),
            at_ms,
            agent: "test".into(),
            uptime_secs: 1,
            log_len: 2,
            apps: vec![],
            cpu_permille: 0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            disk_free_bytes: 0,
            history: vec![],
            group_names: Vec::new(),
        };
        SignedStatus::sign(report, robot.signing_key())
    }

    #[test]
    fn statuses_are_kept_only_for_members_of_a_held_fleet_and_only_when_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = HubPolicy {
            admit: Arc::new(|_| true),
            accept_new_fleets: true,
            max_fleets: 2,
            max_entries: 100,
        };
        let (hub, _) = FleetHub::open(dir.path(), policy).expect("hub");
        let (fleet_key, robot, stranger) = (
            Identity::generate().expect("identity"),
            Identity::generate().expect("identity"),
            Identity::generate().expect("identity"),
        );
        let fleet = FleetId(fleet_key.public_key_bytes());

        // Not held yet: nobody's status is kept.
        assert!(!hub.record_status(report(fleet, &robot, 10)));

        let mut log = FleetLog::new(fleet);
        let now = unix_now();
        for op in [
            Op::Genesis {
                name: "lekiwi".into(),
            },
            Op::Enroll {
                member: MemberKey(robot.public_key_bytes()),
                name: "r1".into(),
                groups: vec!["production".into()],
            },
        ] {
            let entry = log.author(fleet_key.signing_key(), op, now).expect("entry");
            log.insert(entry.clone(), now).expect("valid");
            hub.insert(fleet, vec![entry], None);
        }

        assert!(hub.record_status(report(fleet, &robot, 10)));
        assert!(!hub.record_status(report(fleet, &robot, 9)), "older");
        // A stranger's signed status, even one from the far future, is not a robot of the fleet.
        assert!(!hub.record_status(report(fleet, &stranger, u64::MAX)));
        let mut forged = report(fleet, &robot, 11);
        forged.report.at_ms = 12;
        assert!(!hub.record_status(forged), "signature no longer matches");
        let held = hub.statuses(&fleet);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].report.at_ms, 10);
    }
}
