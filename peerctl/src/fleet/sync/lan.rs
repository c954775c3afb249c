//! Fleet robots on the same LAN as this laptop: found by mDNS within `--lan-wait`, or dialled
//! at once at the addresses remembered in `<home>/lan-peers.json` from earlier commands (so a
//! robot that answers mDNS slowly is still reached at once). Only members of the fleet are
//! dialled. `--no-lan` turns this off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peercompute_p2p::{Multiaddr, Node, PeerEvent, PeerId};
use serde::{Deserialize, Serialize};

/// How long a remembered address is tried again.
const KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most peers remembered.
const MAX_REMEMBERED: usize = 256;
/// A LAN dial answers in milliseconds, or the robot is not there.
const LAN_DIAL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The LAN flags of the fleet commands (flattened into them).
#[derive(Debug, Clone, clap::Args)]
#[allow(unreachable_pub, reason = "flattened into the public FleetCommand")]
pub struct LanArgs {
    /// How long to look for the fleet's robots on the LAN (mDNS) before a write goes out; robots
    /// remembered from earlier commands are dialled at once.
    #[arg(long, global = true, default_value = "300ms", value_parser = lan_wait)]
    pub lan_wait: Duration,
    /// Do not look for robots on the LAN: talk to the gateways only.
    #[arg(long, global = true)]
    pub no_lan: bool,
}

impl Default for LanArgs {
    fn default() -> Self {
        Self {
            lan_wait: Duration::from_millis(300),
            no_lan: false,
        }
    }
}

fn lan_wait(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration like 300ms or 2s"))?;
    if d > Duration::from_secs(60) {
        return Err("at most 60s".into());
    }
    Ok(d)
}

/// `<home>/lan-peers.json`: peer → addresses and when it was last reached.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LanCache {
    #[serde(default)]
    peers: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    addrs: Vec<String>,
    last_seen_unix: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LanCache {
    pub(crate) fn path(home: &Path) -> PathBuf {
        home.join("lan-peers.json")
    }

    /// The cache, or an empty one when the file is missing or damaged (it is only a hint).
    pub(crate) fn load(home: &Path) -> Self {
        std::fs::read(Self::path(home))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The remembered addresses of `peer`, if recent.
    fn addrs(&self, peer: &PeerId, now: u64) -> Vec<Multiaddr> {
        self.peers
            .get(&peer.to_string())
            .filter(|s| now.saturating_sub(s.last_seen_unix) < KEEP_FOR.as_secs())
            .map(|s| s.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default()
    }

    fn remember(&mut self, peer: PeerId, addrs: &[Multiaddr], now: u64) {
        self.peers.insert(
            peer.to_string(),
            Seen {
                addrs: addrs.iter().map(ToString::to_string).collect(),
                last_seen_unix: now,
            },
        );
        if self.peers.len() > MAX_REMEMBERED {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, s)| s.last_seen_unix)
                .map(|(p, _)| p.clone());
            if let Some(p) = oldest {
                self.peers.remove(&p);
            }
        }
    }

    /// Writes the cache (atomically); a failure only loses the hint.
    fn save(&self, home: &Path) {
        if let Ok(bytes) = serde_json::to_vec_pretty(self) {
            let _ = peercompute_identity::write_atomic(&Self::path(home), &bytes, 0o600);
        }
    }
}

/// Reaches the fleet's robots on the LAN: `members` remembered in the cache are dialled at
/// once, the others as mDNS announces them within `wait`. Returns (at the latest when `wait`
/// is over) the robots reached, and remembers their addresses.
pub(crate) async fn reach_members(
    node: &Node,
    home: &Path,
    members: &BTreeSet<PeerId>,
    wait: Duration,
) -> Vec<PeerId> {
    let now = unix_now();
    let mut cache = LanCache::load(home);
    let mut events = node.peer_events();
    let deadline = tokio::time::Instant::now() + wait;
    let mut found: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
    for peer in members {
        let addrs = cache.addrs(peer, now);
        if !addrs.is_empty() {
            found.insert(*peer, addrs);
        }
    }
    for (peer, addrs) in node.lan_peers().await {
        if members.contains(&peer) {
            found.insert(peer, addrs);
        }
    }
    // Dials run while mDNS answers come in.
    let mut dials = Vec::new();
    let mut dialled = BTreeSet::new();
    let dial = |peer: PeerId, addrs: Vec<Multiaddr>| {
        let node = node.clone();
        tokio::spawn(async move {
            let ok = matches!(
                tokio::time::timeout(LAN_DIAL_TIMEOUT, node.dial(peer, addrs.clone())).await,
                Ok(Ok(()))
            );
            (peer, ok)
        })
    };
    for (peer, addrs) in &found {
        dialled.insert(*peer);
        dials.push(dial(*peer, addrs.clone()));
    }
    while dialled.len() < members.len() {
        let event = tokio::select! {
            e = events.recv() => e,
            () = tokio::time::sleep_until(deadline) => break,
        };
        if let Ok(PeerEvent::Lan { peer, addrs }) = event
            && members.contains(&peer)
        {
            let fresh = found
                .insert(peer, addrs.clone())
                .is_none_or(|old| old != addrs);
            if dialled.insert(peer) || fresh {
                dials.push(dial(peer, addrs));
            }
        }
    }
    // A robot on the LAN answers within the wait; a dial still pending then (a remembered
    // robot that is away) must not hold the write back when others answered: it is left to
    // finish on its own (a push still goes to it if it is connected by then). When none
    // answered in time, the pending dials are awaited (each bounded): a slow LAN is better
    // than reaching nobody.
    let mut reached = BTreeSet::new();
    let mut pending = Vec::new();
    for mut dial in dials {
        match tokio::time::timeout_at(deadline, &mut dial).await {
            Ok(Ok((peer, true))) => {
                reached.insert(peer);
            }
            Ok(_) => {}
            Err(_) => pending.push(dial),
        }
    }
    if reached.is_empty() {
        for dial in pending {
            if let Ok((peer, true)) = dial.await {
                reached.insert(peer);
            }
        }
    }
    // Remember what mDNS announced now (not stale cached addresses of robots not reached).
    for (peer, addrs) in node.lan_peers().await {
        if reached.contains(&peer) {
            cache.remember(peer, &addrs, now);
        }
    }
    for peer in &reached {
        if !cache.peers.contains_key(&peer.to_string())
            && let Some(addrs) = found.get(peer)
        {
            cache.remember(*peer, addrs, now);
        }
    }
    if !reached.is_empty() {
        cache.save(home);
    }
    reached.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_recent_peers_and_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = PeerId::random();
        let addr: Multiaddr = "/ip4/10.1.1.2/udp/9000/quic-v1".parse().expect("multiaddr");
        let mut cache = LanCache::default();
        cache.remember(p, std::slice::from_ref(&addr), 1_000);
        cache.save(dir.path());
        let cache = LanCache::load(dir.path());
        assert_eq!(cache.addrs(&p, 1_000), vec![addr.clone()]);
        assert!(
            cache.addrs(&p, 1_000 + KEEP_FOR.as_secs()).is_empty(),
            "too old"
        );
        let mut full = LanCache::default();
        for i in 0..=MAX_REMEMBERED {
            full.remember(PeerId::random(), &[], i as u64);
        }
        assert_eq!(full.peers.len(), MAX_REMEMBERED);
        assert!(
            full.peers.values().all(|s| s.last_seen_unix > 0),
            "the oldest went"
        );
        std::fs::write(LanCache::path(dir.path()), b"{not json").expect("write");
        assert!(
            LanCache::load(dir.path()).peers.is_empty(),
            "damaged: ignored"
        );
    }

    #[test]
    fn lan_wait_is_bounded() {
        assert_eq!(lan_wait("300ms"), Ok(Duration::from_millis(300)));
        assert!(lan_wait("2m").is_err());
        assert!(lan_wait("soon").is_err());
    }
}
