//! Talking to the gateways (`peerctl gateways`) and to the fleet's robots on this LAN. The
//! gateways are the fleet's always-on store-and-forward members. Before a write, the local
//! copy is brought in step with each reachable gateway (anti-entropy both ways: robots' joins
//! and other members' entries come back, entries written offline go out) — or with a robot
//! on the LAN when no gateway answers; after it, the new entry is pushed to every gateway and
//! every robot reached on the LAN at once (`lan`: mDNS within `--lan-wait`, and the addresses
//! remembered in `<home>/lan-peers.json`). A gateway that cannot be reached is reported, never
//! fatal: the entry stays in the local copy and goes out with the next command that reaches
//! one. With robots on the LAN reached, gateways get no longer than the LAN wait (a cut WAN
//! must not hold an e-stop back).

mod lan;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use peercompute_fleet::{FleetId, MemberKey, PushResult, SignedEntry, SignedStatus};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{push_to, request_statuses, sync_with};
use peercompute_p2p::{Multiaddr, Node, PeerId};

use crate::client::{dial_gateway, start_fleet_node};
use crate::exit::CliError;
use crate::places::Places;

use super::local::Local;

#[allow(
    unreachable_pub,
    reason = "flattened into FleetCommand (cli.rs, A) and re-exported from fleet/mod.rs"
)]
pub use lan::LanArgs;

/// How long a LAN anti-entropy exchange may take before the write goes on without it.
const LAN_SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateways this client knows, as (peer id, addresses).
pub(crate) fn configured(places: &Places) -> Vec<(PeerId, Vec<Multiaddr>)> {
    places
        .gateways()
        .iter()
        .filter_map(crate::places::Gateway::parsed)
        .collect()
}

/// Gateways reached for one command, with the node that reached them.
#[derive(Debug)]
pub(crate) struct Session {
    node: Option<Node>,
    /// Reached gateways.
    pub(crate) reached: Vec<PeerId>,
    /// Robots of the fleet reached on the LAN.
    pub(crate) lan: Vec<PeerId>,
    /// The LAN search still running when a gateway was reached first ([`Session::push`]
    /// awaits it for the robots).
    lan_pending: std::sync::Mutex<Option<tokio::task::JoinHandle<Vec<PeerId>>>>,
    /// Every robot of the fleet (a push also goes to those connected by then).
    robots: BTreeSet<PeerId>,
    /// One line per gateway that could not be used.
    pub(crate) failed: Vec<String>,
    /// One line per exchange that brought or sent entries.
    pub(crate) notes: Vec<String>,
}

impl Session {
    /// No gateway: everything stays local.
    pub(crate) fn offline() -> Self {
        Self {
            node: None,
            reached: Vec::new(),
            lan: Vec::new(),
            lan_pending: std::sync::Mutex::new(None),
            robots: BTreeSet::new(),
            failed: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Dials every gateway within `timeout` and syncs `fleet` with each one reached, and
    /// reaches the fleet's robots on the LAN as `lan` says (`--lan-wait`, `--no-lan`).
    pub(crate) async fn open_with(
        identity: &Identity,
        gateways: &[(PeerId, Vec<Multiaddr>)],
        local: &Local,
        fleet: FleetId,
        timeout: Duration,
        lan: &LanArgs,
    ) -> Result<Self, CliError> {
        let mut session = Self::offline();
        let members = if lan.no_lan {
            BTreeSet::new()
        } else {
            fleet_robots(local, &fleet, identity)
        };
        if gateways.is_empty() && members.is_empty() {
            return Ok(session);
        }
        let node = start_fleet_node(identity, !members.is_empty()).await?;
        let start = tokio::time::Instant::now();
        let mut lan_reach = {
            let (node, home, members) = (node.clone(), home_of(local, &fleet), members.clone());
            let wait = lan.lan_wait;
            tokio::spawn(async move {
                if members.is_empty() {
                    return Vec::new();
                }
                lan::reach_members(&node, &home, &members, wait).await
            })
        };
        let mut lan_reached = None;
        let mut gateways_done = None;
        {
            let gateway_syncs = sync_gateways(&node, gateways, local, fleet, start + timeout);
            tokio::pin!(gateway_syncs);
            while gateways_done.is_none() {
                // Robots on the LAN reached: the gateways get until the LAN wait is over.
                let cut_off = lan_reached
                    .as_ref()
                    .is_some_and(|r: &Vec<PeerId>| !r.is_empty());
                tokio::select! {
                    done = &mut gateway_syncs => gateways_done = Some(done),
                    r = &mut lan_reach, if lan_reached.is_none() => {
                        lan_reached = Some(r.unwrap_or_default());
                    }
                    () = tokio::time::sleep_until(start + lan.lan_wait), if cut_off => break,
                }
            }
        }
        match gateways_done {
            Some(done) => session.absorb(done),
            None => session.failed.push(format!(
                "no gateway answered within {:?}; the robots on the LAN have it",
                lan.lan_wait
            )),
        }
        // With a gateway reached the write goes on at once: the LAN search keeps running and
        // a push waits for it only for the robots (a WAN robot must not wait for mDNS).
        match lan_reached {
            Some(reached) => session.lan = reached,
            None if !session.reached.is_empty() => {
                session.lan_pending = std::sync::Mutex::new(Some(lan_reach));
            }
            None => session.lan = lan_reach.await.unwrap_or_default(),
        }
        session.robots = members;
        if session.reached.is_empty()
            && let Some(robot) = session.lan.first().copied()
        {
            let synced =
                tokio::time::timeout(LAN_SYNC_TIMEOUT, sync_with(&node, robot, &local.hub, fleet))
                    .await;
            match synced {
                Ok(Ok(report)) => session.note_sync(&format!("robot {robot} (LAN)"), report),
                Ok(Err(e)) => session.failed.push(format!("robot {robot} (LAN): {e}")),
                Err(_) => session.failed.push(format!(
                    "robot {robot} (LAN): no sync within {LAN_SYNC_TIMEOUT:?}"
                )),
            }
        }
        session.node = Some(node);
        Ok(session)
    }

    fn absorb(
        &mut self,
        done: Vec<(
            PeerId,
            Result<peercompute_p2p::fleet_hub::SyncReport, String>,
        )>,
    ) {
        for (gw, outcome) in done {
            match outcome {
                Ok(report) => {
                    self.note_sync(&format!("gateway {gw}"), report);
                    self.reached.push(gw);
                }
                Err(e) => self.failed.push(e),
            }
        }
    }

    fn note_sync(&mut self, who: &str, report: peercompute_p2p::fleet_hub::SyncReport) {
        if report.received + report.sent > 0 {
            self.notes.push(format!(
                "{who}: {} entr{} received, {} sent",
                report.received,
                plural(report.received),
                report.sent
            ));
        }
        for reason in report.refused {
            self.notes
                .push(format!("{who}: an entry was refused: {reason}"));
        }
    }

    /// Whether robots were reached on the LAN, or the search for them still runs.
    pub(crate) fn lan_searching(&self) -> bool {
        !self.lan.is_empty()
            || self
                .lan_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }

    /// The node this session synced with (connected to the gateways and the LAN robots
    /// reached), when it started one.
    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Where a write went, in words: "sent to 3 robots on the LAN; no gateway reached".
    #[allow(
        dead_code,
        reason = "write.rs (A) prints it in place of \"no gateway reached\""
    )]
    pub(crate) fn reach_summary(&self) -> String {
        let gateways = match self.reached.len() {
            0 => "no gateway reached".to_owned(),
            1 => "1 gateway reached".to_owned(),
            n => format!("{n} gateways reached"),
        };
        match self.lan.len() {
            0 => gateways,
            1 => format!("sent to 1 robot on the LAN; {gateways}"),
            n => format!("sent to {n} robots on the LAN; {gateways}"),
        }
    }

    /// Pushes `entry` to every gateway and every LAN robot reached, all at once; one line
    /// per peer saying what happened.
    pub(crate) async fn push(&self, fleet: FleetId, entry: &SignedEntry) -> Vec<String> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        let gateways = self.reached.iter().map(|p| (*p, format!("gateway {p}")));
        let mut pushes = Self::push_each(node, fleet, entry, gateways.collect());
        // Then the robots: those the LAN search reaches (awaited now if still running), and
        // those whose connection came up after the LAN wait.
        let pending = self
            .lan_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut robots: Vec<PeerId> = self.lan.clone();
        if let Some(search) = pending {
            robots.extend(search.await.unwrap_or_default());
        }
        for peer in &self.robots {
            if !robots.contains(peer) && node.path(*peer).await.is_some() {
                robots.push(*peer);
            }
        }
        let robots = robots.iter().map(|p| (*p, format!("robot {p} (LAN)")));
        pushes.extend(Self::push_each(node, fleet, entry, robots.collect()));
        let mut lines = Vec::new();
        for push in pushes {
            if let Ok(line) = push.await {
                lines.push(line);
            }
        }
        lines
    }

    /// Starts a push of `entry` to each target; each task ends with a line saying how it went.
    fn push_each(
        node: &Node,
        fleet: FleetId,
        entry: &SignedEntry,
        targets: Vec<(PeerId, String)>,
    ) -> Vec<tokio::task::JoinHandle<String>> {
        targets
            .into_iter()
            .map(|(peer, who)| {
                let bytes = vec![entry.bytes().to_vec()];
                let node = node.clone();
                tokio::spawn(async move {
                    match push_to(&node, peer, fleet, bytes).await {
                        Ok(results) => match results.first() {
                            Some(PushResult::Stored(_)) => format!("sent to {who}"),
                            Some(PushResult::Duplicate(_)) => format!("{who} already had it"),
                            Some(PushResult::Refused { reason }) => {
                                format!("{who} refused it: {reason}")
                            }
                            None => format!("{who} did not answer for it"),
                        },
                        Err(e) => format!("cannot send it to {who}: {e}"),
                    }
                })
            })
            .collect()
    }

    /// The statuses every reached gateway holds for `fleet`, and each robot reached on the
    /// LAN its own: the newest per robot.
    pub(crate) async fn statuses(&mut self, fleet: FleetId) -> Vec<SignedStatus> {
        let Some(node) = self.node.clone() else {
            return Vec::new();
        };
        let mut all: Vec<SignedStatus> = Vec::new();
        for gw in &self.reached {
            match request_statuses(&node, *gw, fleet).await {
                Ok(statuses) => all.extend(statuses),
                Err(e) => self.failed.push(format!("gateway {gw}: {e}")),
            }
        }
        let pending = self
            .lan_pending
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(search) = pending {
            let found = search.await.unwrap_or_default();
            self.lan.extend(found);
        }
        let asks: Vec<_> = self
            .lan
            .iter()
            .map(|robot| {
                let node = node.clone();
                let robot = *robot;
                tokio::spawn(async move {
                    let asked = request_statuses(&node, robot, fleet);
                    (robot, tokio::time::timeout(LAN_SYNC_TIMEOUT, asked).await)
                })
            })
            .collect();
        for ask in asks {
            let Ok((robot, answer)) = ask.await else {
                continue;
            };
            match answer {
                Ok(Ok(statuses)) => all.extend(statuses),
                Ok(Err(e)) => self.failed.push(format!("robot {robot} (LAN): {e}")),
                Err(_) => self.failed.push(format!(
                    "robot {robot} (LAN): no status within {LAN_SYNC_TIMEOUT:?}"
                )),
            }
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.report.at_ms));
        let mut seen = std::collections::BTreeSet::new();
        all.retain(|s| seen.insert(s.report.robot));
        all
    }
}

/// Dials every gateway (until `deadline`) and syncs `fleet` with each one reached.
async fn sync_gateways(
    node: &Node,
    gateways: &[(PeerId, Vec<Multiaddr>)],
    local: &Local,
    fleet: FleetId,
    deadline: tokio::time::Instant,
) -> Vec<(
    PeerId,
    Result<peercompute_p2p::fleet_hub::SyncReport, String>,
)> {
    // All at once: an unreachable first gateway must not eat the others' time.
    let tasks: Vec<_> = gateways
        .iter()
        .map(|(gw, addrs)| {
            let (node, hub, gw, addrs) = (node.clone(), local.hub.clone(), *gw, addrs.clone());
            tokio::spawn(async move {
                dial_gateway(&node, gw, &addrs, deadline).await?;
                sync_with(&node, gw, &hub, fleet)
                    .await
                    .map_err(|e| format!("gateway {gw}: {e}"))
            })
        })
        .collect();
    let mut done = Vec::new();
    for ((gw, _), task) in gateways.iter().zip(tasks) {
        let outcome = task
            .await
            .unwrap_or_else(|e| Err(format!("gateway {gw}: {e}")));
        done.push((*gw, outcome));
    }
    done
}

/// The peer ids of the fleet's robots (members) but this client.
fn fleet_robots(local: &Local, fleet: &FleetId, me: &Identity) -> BTreeSet<PeerId> {
    let me = MemberKey(me.public_key_bytes());
    local
        .hub
        .with_log(fleet, |log| {
            log.state()
                .map(|s| {
                    s.members
                        .keys()
                        .filter(|k| **k != me)
                        .filter_map(MemberKey::peer_id)
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// The client's home: `<home>/fleets/<fleet>` is the fleet's local copy.
fn home_of(local: &Local, fleet: &FleetId) -> std::path::PathBuf {
    let dir = local.dir_of(fleet);
    dir.parent()
        .and_then(Path::parent)
        .map_or_else(|| dir.clone(), Path::to_path_buf)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}
