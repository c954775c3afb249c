//! Keeping this robot's fleet logs in step with the gateway and with fleet peers on the LAN,
//! and joining with a saved token.
//!
//! LAN: a peer mDNS announces (or that connects) whose key is a member or grantee of a held
//! fleet is dialled, and synced with as soon as it is connected; every [`LAN_SYNC_EVERY`]
//! one connected fleet peer in turn is synced with (`lan`, a task of its own so a gateway
//! round waiting on a cut WAN never delays it). A robot with no gateway syncs this way only. Anti-entropy heals what a lost push missed (a partition, a robot away).
//!
//! A gateway round (on every tunnel (re)connect, when the gateway's libp2p address changes, and every
//! [`SYNC_EVERY`]): dial the gateway, run anti-entropy (`sync_with`, both ways) for every
//! fleet held; then, if a join token is saved and this robot is not yet a member, hold its
//! fleet, fetch the log (from fleet robots mDNS found on the LAN first, else from the gateway
//! and the token's bootstrap peers), write the `Join` entry, store it (which checks it like
//! every member will) and sync again to send it (LAN peers first). Every
//! step is bounded; a failure is logged once per kind until it changes or clears.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetId, InsertError, MemberKey, PushResult, Refusal};
use peercompute_p2p::fleet_hub::{FleetHub, sync_with, unix_now};
use peercompute_p2p::{Multiaddr, Node, PeerId};
use tokio::sync::watch;
use tracing::{debug, info, warn};

mod lan;

use super::join::{JoinStatus, author_join, bootstrap_peers, join_name, load_token};
use crate::tunnel::{GatewayP2p, TunnelHandle, TunnelStatus};

/// How often the logs are synced without any other reason.
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(30);
/// How often one connected fleet peer is synced with. An exchange that finds nothing new
/// is one small round trip, so this is cheap; it bounds how long a robot back from a
/// partition lacks what was pushed meanwhile.
pub(crate) const LAN_SYNC_EVERY: Duration = Duration::from_secs(3);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Dials retried after an immediate failure, and the pause before each.
const DIAL_RETRIES: usize = 4;
const DIAL_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The first pause before a round is tried again after a failure (doubling up to
/// [`SYNC_EVERY`]).
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Logs a failure once per kind, until its message changes or it clears.
#[derive(Debug, Default)]
pub(crate) struct Complaints {
    last: HashMap<&'static str, String>,
}

impl Complaints {
    pub(crate) fn fail(&mut self, kind: &'static str, message: String) {
        if self.last.get(kind) != Some(&message) {
            warn!("{message}");
            self.last.insert(kind, message);
        } else {
            debug!("{message}");
        }
    }

    pub(crate) fn clear(&mut self, kind: &'static str) {
        self.last.remove(kind);
    }
}

/// The syncing task's parts.
pub(crate) struct Syncer {
    pub(crate) node: Node,
    pub(crate) hub: FleetHub,
    pub(crate) key: SigningKey,
    /// The fleet directory (join token).
    pub(crate) dir: PathBuf,
    /// The gateway's libp2p meeting point, once known.
    pub(crate) gateway: watch::Receiver<Option<GatewayP2p>>,
    pub(crate) tunnel: Option<TunnelHandle>,
    complaints: Complaints,
    /// A token refused for good (its text), not tried again.
    refused_token: Option<String>,
    join: watch::Sender<JoinStatus>,
    /// Rounds that synced every held fleet with some peer (or held none).
    synced: watch::Sender<u32>,
}

impl Syncer {
    pub(crate) fn new(
        node: Node,
        hub: FleetHub,
        key: SigningKey,
        dir: PathBuf,
        gateway: watch::Receiver<Option<GatewayP2p>>,
        tunnel: Option<TunnelHandle>,
        join: watch::Sender<JoinStatus>,
    ) -> Self {
        Syncer {
            node,
            hub,
            key,
            dir,
            gateway,
            tunnel,
            complaints: Complaints::default(),
            refused_token: None,
            join,
            synced: watch::channel(0).0,
        }
    }

    /// How many rounds have finished that synced every held fleet with at least one peer
    /// (or held none); 0 until the first. The reconciler's boot gate waits on it.
    pub(crate) fn synced(&self) -> watch::Receiver<u32> {
        self.synced.subscribe()
    }

    fn me(&self) -> MemberKey {
        MemberKey(self.key.verifying_key().to_bytes())
    }

    /// Runs rounds until `stop` turns true.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Keys a held fleet revoked are refused at the node from now on (and on every change).
        let blocker = tokio::spawn(peercompute_p2p::block_revoked(
            self.node.clone(),
            self.hub.clone(),
        ));
        let _blocker = AbortOnDrop(blocker);
        let lan = lan::LanSync::new(self.node.clone(), self.hub.clone(), self.synced.clone());
        let _lan = AbortOnDrop(tokio::spawn(lan.run(stop.clone())));
        let mut session = 0u64;
        let mut next = tokio::time::Instant::now();
        let mut retry = RETRY_FIRST;
        loop {
            let tunnel = self.tunnel.clone();
            let reconnected = async {
                match &tunnel {
                    Some(t) => {
                        t.wait_for(
                            |s| matches!(s, TunnelStatus::Connected { session: n, .. } if *n > session),
                        )
                        .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                status = reconnected => match status {
                    TunnelStatus::Connected { session: n, .. } => session = n,
                    // The tunnel stopped: only the timer is left.
                    _ => self.tunnel = None,
                },
                changed = self.gateway.changed() => {
                    if changed.is_err() {
                        // The sender is gone (fixed addresses, or the tunnel stopped): the
                        // last value stays; do not spin on a closed channel.
                        let last = self.gateway.borrow().clone();
                        self.gateway = watch::channel(last).1;
                    }
                }
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let ok = tokio::select! {
                ok = self.round() => ok,
                _ = stop.changed() => return,
            };
            let pause = if ok {
                retry = RETRY_FIRST;
                SYNC_EVERY
            } else {
                let pause = retry;
                retry = (retry * 2).min(SYNC_EVERY);
                pause
            };
            next = tokio::time::Instant::now() + pause;
        }
    }

    /// One round (see the module docs); whether everything it tried worked.
    pub(crate) async fn round(&mut self) -> bool {
        let gateway = self.gateway.borrow().clone();
        let mut ok = true;
        // Nothing held, nothing to sync: no dial at all. (A dial of its own, racing the relay
        // keeper's QUIC-first one, could leave the gateway connection on TCP, and the
        // gateway would then observe no UDP address of ours for hole punching.)
        let held = !self.hub.fleet_ids().is_empty();
        let mut synced = !held;
        if let Some(gw) = gateway.as_ref().filter(|_| held) {
            if self.dial(gw.peer, gw.addrs.clone(), "dial").await {
                let mut all = true;
                for fleet in self.hub.fleet_ids() {
                    all &= self.sync(gw.peer, fleet).await;
                }
                ok &= all;
                synced |= all;
            } else {
                ok = false;
            }
        }
        if synced {
            self.synced.send_modify(|n| *n += 1);
        }
        ok & self.try_join(gateway.as_ref()).await
    }

    /// Whether `fleet`'s log is held here with a state (its creation entry at least).
    fn holds_log(&self, fleet: FleetId) -> bool {
        self.hub
            .with_log(&fleet, |l| l.state().is_some())
            .unwrap_or(false)
    }

    async fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, kind: &'static str) -> bool {
        let outcome = dial_retrying(self.node.clone(), peer, addrs).await;
        self.dial_outcome(kind, outcome)
    }

    /// The outcome of a background dial (see `join_step`), once it ends.
    async fn dialled(&mut self, peer: PeerId, dial: &mut AbortOnDrop<Result<(), String>>) -> bool {
        let outcome = (&mut dial.0)
            .await
            .unwrap_or_else(|e| Err(format!("fleet: the dial of {peer} ended: {e}")));
        self.dial_outcome("join-dial", outcome)
    }

    fn dial_outcome(&mut self, kind: &'static str, outcome: Result<(), String>) -> bool {
        match outcome {
            Ok(()) => {
                self.complaints.clear(kind);
                true
            }
            Err(message) => {
                self.complaints.fail(kind, message);
                false
            }
        }
    }

    async fn sync(&mut self, peer: PeerId, fleet: FleetId) -> bool {
        match sync_with(&self.node, peer, &self.hub, fleet).await {
            Ok(report) => {
                self.complaints.clear("sync");
                if report.received + report.sent > 0 {
                    info!(%fleet, %peer, received = report.received, sent = report.sent, "fleet log synced");
                }
                for reason in report.refused {
                    self.complaints.fail(
                        "refused",
                        format!("fleet {fleet}: an entry was refused: {reason}"),
                    );
                }
                true
            }
            Err(e) => {
                self.complaints.fail(
                    "sync",
                    format!("fleet {fleet}: sync with {peer} failed: {e}"),
                );
                false
            }
        }
    }

    /// The join step of a round, its outcome published; false when it should be tried
    /// again soon.
    async fn try_join(&mut self, gateway: Option<&GatewayP2p>) -> bool {
        let (done, status) = self.join_step(gateway).await;
        self.join.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
        done
    }

    async fn join_step(&mut self, gateway: Option<&GatewayP2p>) -> (bool, JoinStatus) {
        let (token, asked) = match load_token(&self.dir) {
            None => return (true, JoinStatus::NoToken),
            Some(Err(e)) => {
                let reason = format!("fleet: the saved join token is unusable: {e}");
                self.complaints.fail("token", reason.clone());
                return (true, JoinStatus::Refused { reason });
            }
            Some(Ok(t)) => t,
        };
        let text = token.token.to_text();
        if self.refused_token.as_ref() == Some(&text) {
            return (true, self.join.borrow().clone());
        }
        let fleet = token.fleet();
        let me = self.me();
        let member = |hub: &FleetHub| {
            hub.with_log(&fleet, |l| {
                l.state()
                    .and_then(|s| s.members.get(&me))
                    .map(|m| JoinStatus::Joined {
                        fleet,
                        name: m.name.clone(),
                    })
            })
            .flatten()
        };
        if let Some(joined) = member(&self.hub) {
            return (true, joined);
        }
        if let Err(e) = self.hub.hold(fleet) {
            let reason = format!("fleet {fleet}: cannot keep its log: {e}");
            self.complaints.fail("hold", reason.clone());
            return (false, JoinStatus::Waiting { reason });
        }
        let mut remote: Vec<(PeerId, Vec<Multiaddr>)> = gateway
            .map(|g| (g.peer, g.addrs.clone()))
            .into_iter()
            .collect();
        remote.extend(
            bootstrap_peers(&token)
                .into_iter()
                .map(|(p, a)| (p, vec![a])),
        );
        // The gateway and bootstrap peers are dialled in the background while robots on the
        // LAN are asked: those answer in milliseconds, where a gateway behind a cut WAN takes
        // its whole dial timeout.
        let mut dials: Vec<_> = remote
            .iter()
            .map(|(peer, addrs)| {
                let dial = dial_retrying(self.node.clone(), *peer, addrs.clone());
                (*peer, AbortOnDrop(tokio::spawn(dial)))
            })
            .collect();
        let lan = self
            .lan_join_log(fleet, &remote, || {
                dials.iter().all(|(_, d)| d.0.is_finished())
            })
            .await;
        let from_lan = self.holds_log(fleet);
        let mut reached = Vec::new();
        for (peer, dial) in &mut dials {
            // The log came from the LAN: the join is not held back by a slow dial, which is
            // awaited only to send the join once it is written.
            if from_lan {
                break;
            }
            if self.dialled(*peer, dial).await {
                self.sync(*peer, fleet).await;
                reached.push(*peer);
            }
        }
        if let Some(joined) = member(&self.hub) {
            return (true, joined);
        }
        let name = match join_name(&token, &me, asked.as_deref()) {
            Ok(name) => name,
            Err(e) => {
                let reason = format!("fleet {fleet}: {e}");
                self.complaints.fail("join", reason.clone());
                return (true, JoinStatus::Refused { reason });
            }
        };
        let now = unix_now();
        let verdict = self.hub.with_log(&fleet, |log| {
            if log.state().is_none() {
                return Err((
                    "waiting for its log (the gateway or a bootstrap peer must hold it) before joining"
                        .to_owned(),
                    false,
                ));
            }
            let entry = author_join(log, &token, &self.key, &name, now)
                .map_err(|e| (format!("cannot write the join: {e}"), true))?;
            // Checked on a copy first, for the typed reason (the hub answers in words).
            match log.clone().insert(entry.clone(), now) {
                Ok(_) => Ok(entry),
                Err(InsertError::Refused { refusal, .. }) => Err((
                    format!("joining as {name} was refused: {refusal}"),
                    is_permanent(&refusal),
                )),
                Err(e) => Err((format!("joining as {name} was refused: {e}"), false)),
            }
        });
        let entry = match verdict {
            None => {
                let reason = format!("fleet {fleet}: its log is not held here");
                return (false, JoinStatus::Waiting { reason });
            }
            Some(Ok(entry)) => entry,
            Some(Err((message, permanent))) => {
                let reason = format!("fleet {fleet}: {message}");
                self.complaints.fail("join", reason.clone());
                if permanent {
                    self.refused_token = Some(text);
                    return (true, JoinStatus::Refused { reason });
                }
                return (false, JoinStatus::Waiting { reason });
            }
        };
        match self.hub.insert(fleet, vec![entry], None).first() {
            Some(PushResult::Stored(_) | PushResult::Duplicate(_)) => {
                self.complaints.clear("join");
                info!(%fleet, %name, "joined the fleet; sending the join to its peers");
                let mut sent = false;
                for (peer, _) in &lan {
                    sent |= self.sync(*peer, fleet).await;
                }
                // When the log came from the LAN the join is out there already, and the
                // gateway's dial (still running, perhaps) no longer holds it back.
                for (peer, dial) in &mut dials {
                    if reached.contains(peer) || (from_lan && self.dialled(*peer, dial).await) {
                        sent |= self.sync(*peer, fleet).await;
                    }
                }
                (sent, JoinStatus::Joined { fleet, name })
            }
            Some(PushResult::Refused { reason }) => {
                let reason = format!("fleet {fleet}: joining as {name} was refused: {reason}");
                self.complaints.fail("join", reason.clone());
                (false, JoinStatus::Waiting { reason })
            }
            None => (
                false,
                JoinStatus::Waiting {
                    reason: "nothing stored".into(),
                },
            ),
        }
    }
}

/// Dials `peer`, again after an immediate failure ([`DIAL_RETRIES`]); each try bounded by
/// [`DIAL_TIMEOUT`]. The error is the message to log.
async fn dial_retrying(node: Node, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), String> {
    // Another task (the relay keeper) may be dialing the same peer: libp2p then cancels
    // this dial at once; a moment later the connection is up.
    // QUIC first, as the relay keeper dials: the gateway then observes our UDP address.
    let addrs = peercompute_p2p::quic_first(&addrs)
        .into_iter()
        .next()
        .unwrap_or(addrs);
    let mut outcome = tokio::time::timeout(DIAL_TIMEOUT, node.dial(peer, addrs.clone())).await;
    for _ in 0..DIAL_RETRIES {
        if !matches!(outcome, Ok(Err(_))) {
            break;
        }
        tokio::time::sleep(DIAL_RETRY_PAUSE).await;
        outcome = tokio::time::timeout(DIAL_TIMEOUT, node.dial(peer, addrs.clone())).await;
    }
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("fleet: cannot reach {peer} to sync: {e}")),
        Err(_) => Err(format!(
            "fleet: {peer} did not answer within {DIAL_TIMEOUT:?}; syncing later"
        )),
    }
}

/// Aborts a task when dropped (the syncer's helpers end with it).
struct AbortOnDrop<T = ()>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a refused join will be refused again (the token is spent, expired, forged, or the
/// name taken) rather than waiting for entries still missing here.
fn is_permanent(refusal: &Refusal) -> bool {
    matches!(
        refusal,
        Refusal::InviteExpired { .. }
            | Refusal::InviteUsedUp { .. }
            | Refusal::BadJoinProof
            | Refusal::NameTaken(_)
            | Refusal::NamePrefix { .. }
            | Refusal::Revoked(_)
    )
}
