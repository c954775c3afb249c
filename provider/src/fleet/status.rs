//! This robot's signed status: the applier writes each group's [`AppStatus`] on a
//! [`StatusBoard`], which also records each finished apply in the robot's [`History`]
//! (persisted in `history.json`); [`publish`] signs a [`StatusReport`] (apps, history, uptime,
//! machine load) and sends it to the gateway when the board changes and every
//! [`STATUS_EVERY`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use peercompute_fleet::{AppStatus, FleetId, GroupName, MemberKey, SignedStatus, StatusReport};
use peercompute_p2p::Node;
use peercompute_p2p::fleet_hub::{FleetHub, send_status};
use tokio::sync::watch;
use tracing::warn;

use super::history::History;
use super::sync::Complaints;
use crate::tunnel::GatewayP2p;

/// How often a status is sent without a change.
pub(crate) const STATUS_EVERY: Duration = Duration::from_secs(30);

/// Each group's app status, per fleet; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct StatusBoard {
    apps: Arc<Mutex<BTreeMap<(FleetId, String), AppStatus>>>,
    /// Each group's shared name, per fleet (`group_names`).
    group_names: Arc<Mutex<BTreeMap<(FleetId, String), GroupName>>>,
    history: Arc<Mutex<History>>,
    /// Where the history is persisted (none: kept in memory only).
    history_path: Option<PathBuf>,
    changed: watch::Sender<u64>,
}

impl StatusBoard {
    /// A board whose history lives in memory only.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_history(History::default(), None)
    }

    /// A board whose history is read from `path` (see [`History::load`]) and written back
    /// there after each new outcome.
    pub(crate) fn load(path: PathBuf) -> Self {
        let (history, complaint) = History::load(&path);
        if let Some(why) = complaint {
            warn!("fleet: {why}");
        }
        Self::with_history(history, Some(path))
    }

    fn with_history(history: History, history_path: Option<PathBuf>) -> Self {
        StatusBoard {
            apps: Arc::new(Mutex::new(BTreeMap::new())),
            group_names: Arc::default(),
            history: Arc::new(Mutex::new(history)),
            history_path,
            changed: watch::channel(0).0,
        }
    }

    /// Sets a group's status and announces the change.
    pub(crate) fn set(&self, fleet: FleetId, status: AppStatus) {
        let key = (fleet, status.group.clone());
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        self.observe(&fleet, apps.get(&key), &status);
        apps.insert(key, status);
        drop(apps);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes a group's status in place, if it has one.
    pub(crate) fn update(&self, fleet: FleetId, group: &str, f: impl FnOnce(&mut AppStatus)) {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(app) = apps.get_mut(&(fleet, group.to_owned())) {
            let before = app.clone();
            f(app);
            self.observe(&fleet, Some(&before), app);
            drop(apps);
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Records the outcome a status change means, if any, and persists the history.
    fn observe(&self, fleet: &FleetId, prev: Option<&AppStatus>, next: &AppStatus) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if !history.observe(fleet, prev, next) {
            return;
        }
        if let Some(path) = &self.history_path
            && let Err(e) = history.save(path)
        {
            warn!(path = %path.display(), "fleet: cannot save the apply history: {e}");
        }
    }

    /// The finished applies a report of `fleet` carries.
    pub(crate) fn history(&self, fleet: &FleetId) -> Vec<peercompute_fleet::Outcome> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .outcomes(fleet)
    }

    pub(crate) fn remove(&self, fleet: FleetId, group: &str) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(fleet, group.to_owned()));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The apps of `fleet`.
    pub(crate) fn apps(&self, fleet: &FleetId) -> Vec<AppStatus> {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((f, _), _)| f == fleet)
            .map(|(_, a)| a.clone())
            .collect()
    }

    pub(crate) fn get(&self, fleet: &FleetId, group: &str) -> Option<AppStatus> {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(*fleet, group.to_owned()))
            .cloned()
    }

    /// Sets a group's shared name (asked for, confirmed or refused) and announces the change.
    pub(crate) fn set_group_name(&self, fleet: FleetId, name: GroupName) {
        let key = (fleet, name.group.clone());
        let mut names = self.group_names.lock().unwrap_or_else(|p| p.into_inner());
        if names.get(&key) == Some(&name) {
            return;
        }
        names.insert(key, name);
        drop(names);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Forgets a group's shared name (withdrawn).
    pub(crate) fn remove_group_name(&self, fleet: FleetId, group: &str) {
        let removed = self
            .group_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(fleet, group.to_owned()));
        if removed.is_some() {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The group names of `fleet`.
    pub(crate) fn group_names(&self, fleet: &FleetId) -> Vec<GroupName> {
        self.group_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((f, _), _)| f == fleet)
            .map(|(_, n)| n.clone())
            .collect()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What [`publish`] needs.
pub(crate) struct Publisher {
    pub(crate) node: Node,
    pub(crate) hub: FleetHub,
    pub(crate) key: SigningKey,
    pub(crate) board: StatusBoard,
    pub(crate) gateway: watch::Receiver<Option<GatewayP2p>>,
}

/// Signs a status of every fleet held on change and every [`STATUS_EVERY`], keeps it in the
/// robot's own hub (robots answer status requests from the LAN) and sends it to the gateway,
/// until `stop` turns true.
pub(crate) async fn publish(p: Publisher, mut stop: watch::Receiver<bool>) {
    let started = Instant::now();
    let mut changes = p.board.subscribe();
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let mut complaints = Complaints::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = changes.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let gateway = p.gateway.borrow().clone();
        for fleet in p.hub.fleet_ids() {
            let me = MemberKey(p.key.verifying_key().to_bytes());
            let member = p
                .hub
                .with_log(&fleet, |l| {
                    l.state().is_some_and(|s| s.members.contains_key(&me))
                })
                .unwrap_or(false);
            if !member {
                continue;
            }
            let report = report(&p, fleet, me, started);
            let signed = SignedStatus::sign(report, &p.key);
            // Kept here too: a laptop on the LAN with no gateway asks the robots themselves.
            p.hub.record_status(signed.clone());
            let Some(gateway) = &gateway else {
                continue;
            };
            match send_status(&p.node, gateway.peer, signed).await {
                Ok(()) => complaints.clear("status"),
                Err(e) => complaints.fail(
                    "status",
                    format!("fleet {fleet}: cannot send this robot's status: {e}"),
                ),
            }
        }
    }
}

fn report(p: &Publisher, fleet: FleetId, robot: MemberKey, started: Instant) -> StatusReport {
    let log_len = p.hub.with_log(&fleet, |l| l.len()).unwrap_or(0);
    let (memory_used_bytes, memory_total_bytes) = peercompute_ops::machine::memory();
    StatusReport {
        fleet,
        robot,
        at_ms: now_ms(),
        agent: format!("peercomputed/{}", env!("CARGO_PKG_VERSION")),
        uptime_secs: started.elapsed().as_secs(),
        log_len: u64::try_from(log_len).unwrap_or(u64::MAX),
        apps: p.board.apps(&fleet),
        cpu_permille: peercompute_ops::machine::cpu_permille(),
        memory_used_bytes,
        memory_total_bytes,
        disk_free_bytes: super::adopt::disk_free_bytes(),
        history: p.board.history(&fleet),
        group_names: p.board.group_names(&fleet),
    }
}

#[cfg(test)]
mod tests {
    use peercompute_fleet::{EntryHash, Phase};

    use super::*;

    fn app(group: &str, phase: Phase) -> AppStatus {
        AppStatus {
            group: group.into(),
            release: EntryHash([1; 32]),
            version: "v1".into(),
            phase,
            serving: None,
            url: None,
            apply_ms: None,
            reason: None,
            changed_at_ms: 0,
        }
    }

    #[test]
    fn the_board_keeps_one_status_per_group_and_announces_changes() {
        let board = StatusBoard::new();
        let mut changes = board.subscribe();
        let (a, b) = (FleetId([1; 32]), FleetId([2; 32]));
        board.set(a, app("production", Phase::Fetching));
        board.set(b, app("staging", Phase::Healthy));
        assert!(changes.has_changed().expect("open"));
        changes.mark_unchanged();
        board.update(a, "production", |s| s.phase = Phase::Healthy);
        assert!(
            changes.has_changed().expect("open"),
            "an update is a change"
        );
        changes.mark_unchanged();
        board.update(a, "nope", |s| s.phase = Phase::Failed);
        assert!(!changes.has_changed().expect("open"), "nothing to update");
        let apps = board.apps(&a);
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].phase, Phase::Healthy);
        board.remove(a, "production");
        assert!(board.apps(&a).is_empty());
        assert_eq!(board.apps(&b).len(), 1);
    }

    #[test]
    fn the_board_records_finished_applies_and_keeps_them_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = super::super::history::history_path(dir.path());
        let fleet = FleetId([1; 32]);
        let board = StatusBoard::load(path.clone());
        board.set(fleet, app("production", Phase::Fetching));
        board.update(fleet, "production", |s| s.phase = Phase::Starting);
        assert!(board.history(&fleet).is_empty(), "nothing finished yet");
        board.update(fleet, "production", |s| {
            s.phase = Phase::Healthy;
            s.apply_ms = Some(900);
        });
        let history = board.history(&fleet);
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].phase, history[0].apply_ms),
            (Phase::Healthy, Some(900))
        );
        // After a restart the re-adopted status (healthy, set at once) is not counted again.
        let board = StatusBoard::load(path);
        board.set(fleet, app("production", Phase::Healthy));
        assert_eq!(board.history(&fleet), history);
    }
}
