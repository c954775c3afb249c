//! The volume ledger: every named volume this provider keeps, with its share (the bytes its
//! owner may use, from `:SIZE`, default 1 GiB) and the usage last measured. Pure: no engine,
//! no file, no clock (`now` is passed in); `super` persists it and feeds it measurements.
//!
//! Admission counts what volumes may hold, in use or not: Σ over all volumes of
//! max(share, last measured), minus the volumes the request reuses, plus what it asks, must
//! stay ≤ `--max-volumes-size`. A larger `:SIZE` on a reused volume raises its share; a
//! smaller one (or none) keeps it.

use std::collections::BTreeMap;
use std::fmt;

use peercompute_tunnel_proto::format_memory;
use serde::{Deserialize, Serialize};

/// The share of a volume asked without `:SIZE`.
pub const DEFAULT_SHARE_BYTES: u64 = 1 << 30;
/// Most volumes one scope (a client, a fleet) may keep on a provider: volumes outlive their
/// deployments, and each is measured at every check.
pub const MAX_VOLUMES_PER_SCOPE: usize = 64;

/// Who a volume belongs to and what it is called there: `peer:<id>` or `fleet:<id>`, the
/// app, and the volume's name in the request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeId {
    pub scope: String,
    pub app: String,
    pub volume: String,
}

impl VolumeId {
    /// How people name it: `blog/data` (the scope is implied by who asks).
    pub fn label(&self) -> String {
        format!("{}/{}", self.app, self.volume)
    }
}

/// One volume in the ledger, keyed by its engine name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: VolumeId,
    pub share_bytes: u64,
    /// What the last check measured; `None` before the first check or when the engine
    /// could not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Unix seconds.
    pub created_at: u64,
}

impl Entry {
    /// What this volume holds of the maximum: its share, or more when it already uses more.
    pub fn held_bytes(&self) -> u64 {
        self.share_bytes.max(self.used_bytes.unwrap_or(0))
    }

    /// Used beyond its share (at the last measurement).
    pub fn is_over_share(&self) -> bool {
        self.used_bytes.is_some_and(|u| u > self.share_bytes)
    }
}

/// One volume a deploy or release asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The engine name (`pcv-…`), computed by the runtime from the id, never from a request.
    pub name: String,
    pub id: VolumeId,
    /// `:SIZE`, if given.
    pub size_bytes: Option<u64>,
}

/// An admitted ask: the share it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub id: VolumeId,
    pub share_bytes: u64,
    /// Not in the ledger before this grant.
    pub new: bool,
}

/// Why an ask was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not enough room under the maximum.
    #[error(
        "volumes: asked {} for {}, {} available of {} (--max-volumes-size); `peerctl volumes ls` shows what holds the rest",
        format_memory(*.asked_bytes), .labels.join(", "), format_memory(*.available_bytes), format_memory(*.max_bytes)
    )]
    Space {
        asked_bytes: u64,
        labels: Vec<String>,
        available_bytes: u64,
        max_bytes: u64,
    },
    /// The scope keeps [`MAX_VOLUMES_PER_SCOPE`] volumes already.
    #[error(
        "volumes: you keep {held} volumes on this provider, at most {MAX_VOLUMES_PER_SCOPE}: remove some with `peerctl volumes rm APP/NAME` (`peerctl volumes ls` lists them)"
    )]
    TooMany { held: usize },
    /// The engine name is held by a volume of another scope (a hash collision, or labels
    /// edited by hand): never mount someone else's data.
    #[error(
        "volume {label} cannot be used: its engine volume {name} belongs to someone else on this provider; pick another volume name (the provider's operator sees the collision in its log)"
    )]
    Collision { label: String, name: String },
}

/// The ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    volumes: BTreeMap<String, Entry>,
}

/// What [`Ledger::rebuild`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Found in the engine, missing from the ledger: added with the default share (or what
    /// they use, if more).
    pub added: Vec<String>,
    /// In the ledger, gone from the engine (removed by hand): dropped.
    pub dropped: Vec<String>,
}

impl Ledger {
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.volumes.get(name)
    }

    /// Every volume, by engine name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.volumes.iter()
    }

    /// The volumes of one scope (what a client may see), by engine name.
    pub fn of_scope<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = (&'a String, &'a Entry)> {
        self.volumes
            .iter()
            .filter(move |(_, e)| e.id.scope == scope)
    }

    /// The engine name of `app/volume` in `scope`, if the ledger has it.
    pub fn find(&self, scope: &str, app: &str, volume: &str) -> Option<&String> {
        self.volumes
            .iter()
            .find(|(_, e)| e.id.scope == scope && e.id.app == app && e.id.volume == volume)
            .map(|(name, _)| name)
    }

    /// Σ of what every volume holds.
    pub fn held_bytes(&self) -> u64 {
        self.volumes
            .values()
            .fold(0u64, |sum, e| sum.saturating_add(e.held_bytes()))
    }

    /// The share `ask` gets: a larger `:SIZE` raises a known volume's share, a smaller one
    /// or none keeps it; a new volume gets `:SIZE` or the default.
    pub fn share_for(&self, ask: &Ask) -> u64 {
        match (self.volumes.get(&ask.name), ask.size_bytes) {
            (Some(e), Some(size)) => e.share_bytes.max(size),
            (Some(e), None) => e.share_bytes,
            (None, Some(size)) => size,
            (None, None) => DEFAULT_SHARE_BYTES,
        }
    }

    /// Admits `asks` under `max_bytes`, without changing the ledger ([`Ledger::grant`]
    /// records the result).
    pub fn admit(&self, asks: &[Ask], max_bytes: u64) -> Result<Vec<Grant>, Refusal> {
        let mut reused = 0u64;
        let mut asked = 0u64;
        let mut grants = Vec::with_capacity(asks.len());
        for ask in asks {
            let known = self.volumes.get(&ask.name);
            if known.is_some_and(|e| e.id != ask.id) {
                return Err(Refusal::Collision {
                    label: ask.id.label(),
                    name: ask.name.clone(),
                });
            }
            if let Some(e) = known {
                reused = reused.saturating_add(e.held_bytes());
            }
            let share_bytes = self.share_for(ask);
            asked = asked.saturating_add(share_bytes);
            grants.push(Grant {
                name: ask.name.clone(),
                id: ask.id.clone(),
                share_bytes,
                new: known.is_none(),
            });
        }
        let new = grants.iter().filter(|g| g.new).count();
        if let Some(first) = asks.first().filter(|_| new > 0) {
            let held = self.of_scope(&first.id.scope).count();
            if held + new > MAX_VOLUMES_PER_SCOPE {
                return Err(Refusal::TooMany { held });
            }
        }
        let others = self.held_bytes().saturating_sub(reused);
        let available_bytes = max_bytes.saturating_sub(others);
        if asked > available_bytes {
            return Err(Refusal::Space {
                asked_bytes: asked,
                labels: asks.iter().map(|a| a.id.label()).collect(),
                available_bytes,
                max_bytes,
            });
        }
        Ok(grants)
    }

    /// Records admitted grants: new volumes enter, known ones keep the larger share.
    pub fn grant(&mut self, grants: &[Grant], now: u64) {
        for g in grants {
            self.volumes
                .entry(g.name.clone())
                .and_modify(|e| e.share_bytes = e.share_bytes.max(g.share_bytes))
                .or_insert_with(|| Entry {
                    id: g.id.clone(),
                    share_bytes: g.share_bytes,
                    used_bytes: None,
                    created_at: now,
                });
        }
    }

    /// Undoes [`Ledger::grant`] for the grants that were new (the deploy failed before
    /// their volumes existed).
    pub fn ungrant_new(&mut self, grants: &[Grant]) {
        for g in grants.iter().filter(|g| g.new) {
            self.volumes.remove(&g.name);
        }
    }

    /// Drops a volume (removed).
    pub fn forget(&mut self, name: &str) -> Option<Entry> {
        self.volumes.remove(name)
    }

    /// Sets a share outright (an import with `--share`): never below what it was.
    pub fn raise_share(&mut self, name: &str, share_bytes: u64) {
        if let Some(e) = self.volumes.get_mut(name) {
            e.share_bytes = e.share_bytes.max(share_bytes);
        }
    }

    /// Records a measurement; `None` when the engine could not say (kept as it was).
    pub fn measured(&mut self, name: &str, used_bytes: Option<u64>) {
        if let (Some(e), Some(used)) = (self.volumes.get_mut(name), used_bytes) {
            e.used_bytes = Some(used);
        }
    }

    /// The volumes over their share at the last measurement.
    pub fn over_share(&self) -> Vec<(&String, &Entry)> {
        self.volumes
            .iter()
            .filter(|(_, e)| e.is_over_share())
            .collect()
    }

    /// Brings the ledger in line with the engine's volumes (engine name, id from labels,
    /// usage): volumes the engine has and the ledger lacks are added (a lost or old
    /// `volumes.json`), ledger entries the engine lacks are dropped, and an entry whose labels
    /// disagree is replaced by what the labels say.
    pub fn rebuild(
        &mut self,
        found: impl IntoIterator<Item = (String, VolumeId, Option<u64>)>,
        now: u64,
    ) -> Rebuilt {
        let mut report = Rebuilt::default();
        let mut kept = BTreeMap::new();
        for (name, id, used) in found {
            let entry = match self.volumes.remove(&name) {
                Some(mut e) if e.id == id => {
                    if used.is_some() {
                        e.used_bytes = used;
                    }
                    e
                }
                _ => {
                    report.added.push(name.clone());
                    Entry {
                        id,
                        share_bytes: DEFAULT_SHARE_BYTES.max(used.unwrap_or(0)),
                        used_bytes: used,
                        created_at: now,
                    }
                }
            };
            kept.insert(name, entry);
        }
        report.dropped = std::mem::take(&mut self.volumes).into_keys().collect();
        self.volumes = kept;
        report
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn id(scope: &str, app: &str, vol: &str) -> VolumeId {
        VolumeId {
            scope: scope.into(),
            app: app.into(),
            volume: vol.into(),
        }
    }

    fn ask(name: &str, app_vol: (&str, &str), size: Option<u64>) -> Ask {
        Ask {
            name: name.into(),
            id: id("peer:A", app_vol.0, app_vol.1),
            size_bytes: size,
        }
    }

    /// A ledger holding `(name, app, vol, share, used)`.
    fn ledger(entries: &[(&str, &str, &str, u64, Option<u64>)]) -> Ledger {
        let mut l = Ledger::default();
        for &(name, app, vol, share, used) in entries {
            l.volumes.insert(
                name.into(),
                Entry {
                    id: id("peer:A", app, vol),
                    share_bytes: share,
                    used_bytes: used,
                    created_at: 1,
                },
            );
        }
        l
    }

    #[test]
    fn admission_table() {
        let max = 10 * GIB;
        // (ledger, asks, the shares granted or the bytes the refusal says are available)
        type Case = (Ledger, Vec<Ask>, Result<Vec<u64>, u64>);
        let cases: Vec<Case> = vec![
            // Empty: the default share, and up to the maximum exactly.
            (
                ledger(&[]),
                vec![ask("v1", ("blog", "data"), None)],
                Ok(vec![GIB]),
            ),
            (
                ledger(&[]),
                vec![ask("v1", ("blog", "data"), Some(max))],
                Ok(vec![max]),
            ),
            (
                ledger(&[]),
                vec![ask("v1", ("blog", "data"), Some(max + 1))],
                Err(max),
            ),
            // Others hold max(share, used): 4 + 5 (over its 1 GiB share) = 9 held, 1 left.
            (
                ledger(&[
                    ("o1", "x", "a", 4 * GIB, Some(GIB)),
                    ("o2", "y", "b", GIB, Some(5 * GIB)),
                ]),
                vec![ask("v1", ("blog", "data"), Some(2 * GIB))],
                Err(GIB),
            ),
            // Unused volumes count too (in use or not).
            (
                ledger(&[("o1", "x", "a", 9 * GIB, None)]),
                vec![ask("v1", ("blog", "data"), None)],
                Ok(vec![GIB]),
            ),
            (
                ledger(&[("o1", "x", "a", 9 * GIB + 1, None)]),
                vec![ask("v1", ("blog", "data"), None)],
                Err(GIB - 1),
            ),
            // A reused volume does not count against itself: redeploying with the same
            // share fits even when the ledger is full.
            (
                ledger(&[
                    ("v1", "blog", "data", 2 * GIB, Some(GIB)),
                    ("o1", "x", "a", 8 * GIB, None),
                ]),
                vec![ask("v1", ("blog", "data"), None)],
                Ok(vec![2 * GIB]),
            ),
            // A larger :SIZE raises the share; it must fit.
            (
                ledger(&[
                    ("v1", "blog", "data", 2 * GIB, None),
                    ("o1", "x", "a", 7 * GIB, None),
                ]),
                vec![ask("v1", ("blog", "data"), Some(3 * GIB))],
                Ok(vec![3 * GIB]),
            ),
            (
                ledger(&[
                    ("v1", "blog", "data", 2 * GIB, None),
                    ("o1", "x", "a", 7 * GIB, None),
                ]),
                vec![ask("v1", ("blog", "data"), Some(4 * GIB))],
                Err(3 * GIB),
            ),
            // A smaller :SIZE keeps the share.
            (
                ledger(&[("v1", "blog", "data", 2 * GIB, None)]),
                vec![ask("v1", ("blog", "data"), Some(MIB))],
                Ok(vec![2 * GIB]),
            ),
            // Several asks add up.
            (
                ledger(&[("o1", "x", "a", 6 * GIB, None)]),
                vec![
                    ask("v1", ("blog", "data"), Some(2 * GIB)),
                    ask("v2", ("blog", "cache"), Some(2 * GIB)),
                ],
                Ok(vec![2 * GIB, 2 * GIB]),
            ),
            (
                ledger(&[("o1", "x", "a", 6 * GIB, None)]),
                vec![
                    ask("v1", ("blog", "data"), Some(2 * GIB)),
                    ask("v2", ("blog", "cache"), Some(2 * GIB + 1)),
                ],
                Err(4 * GIB),
            ),
            // Over the maximum already (it was lowered): nothing available, no underflow.
            (
                ledger(&[("o1", "x", "a", 20 * GIB, None)]),
                vec![ask("v1", ("blog", "data"), Some(1))],
                Err(0),
            ),
        ];
        for (i, (l, asks, want)) in cases.into_iter().enumerate() {
            let got = l.admit(&asks, max);
            match (got, want) {
                (Ok(grants), Ok(shares)) => {
                    let got: Vec<u64> = grants.iter().map(|g| g.share_bytes).collect();
                    assert_eq!(got, shares, "case {i}");
                }
                (
                    Err(Refusal::Space {
                        available_bytes, ..
                    }),
                    Err(avail),
                ) => {
                    assert_eq!(available_bytes, avail, "case {i}")
                }
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_scope_keeps_at_most_64_volumes() {
        let mut l = Ledger::default();
        for i in 0..MAX_VOLUMES_PER_SCOPE {
            let grants = l
                .admit(&[ask(&format!("v{i}"), ("app", "v"), Some(1))], 10 * GIB)
                .expect("fits");
            l.grant(&grants, 1);
        }
        let err = l
            .admit(&[ask("one-more", ("app", "w"), Some(1))], 10 * GIB)
            .expect_err("too many");
        assert_eq!(err, Refusal::TooMany { held: 64 });
        // Reusing one is fine, and another scope is not counted.
        assert!(l.admit(&[ask("v3", ("app", "v"), None)], 10 * GIB).is_ok());
        let mut theirs = ask("b1", ("app", "v"), Some(1));
        theirs.id.scope = "peer:B".into();
        assert!(l.admit(&[theirs], 10 * GIB).is_ok());
    }

    #[test]
    fn refusal_says_the_numbers_and_where_to_look() {
        let l = ledger(&[("o1", "x", "a", 8 * GIB + GIB / 2, None)]);
        let err = l
            .admit(&[ask("v1", ("blog", "data"), Some(2 * GIB))], 10 * GIB)
            .expect_err("too big");
        assert_eq!(
            err.to_string(),
            "volumes: asked 2 GiB for blog/data, 1.5 GiB available of 10 GiB (--max-volumes-size); `peerctl volumes ls` shows what holds the rest"
        );
    }

    #[test]
    fn another_scope_under_the_same_engine_name_is_a_collision() {
        let l = ledger(&[("v1", "blog", "data", GIB, None)]);
        let mut theirs = ask("v1", ("blog", "data"), None);
        theirs.id.scope = "peer:B".into();
        assert!(matches!(
            l.admit(&[theirs], 10 * GIB),
            Err(Refusal::Collision { .. })
        ));
    }

    #[test]
    fn grant_records_raises_and_new_grants_can_be_undone() {
        let mut l = ledger(&[("v1", "blog", "data", 2 * GIB, Some(MIB))]);
        let grants = l
            .admit(
                &[
                    ask("v1", ("blog", "data"), Some(3 * GIB)),
                    ask("v2", ("blog", "cache"), None),
                ],
                10 * GIB,
            )
            .expect("fits");
        assert_eq!(
            grants.iter().map(|g| g.new).collect::<Vec<_>>(),
            [false, true]
        );
        l.grant(&grants, 7);
        assert_eq!(l.get("v1").map(|e| e.share_bytes), Some(3 * GIB));
        assert_eq!(l.get("v1").map(|e| e.used_bytes), Some(Some(MIB)));
        assert_eq!(
            l.get("v2").map(|e| (e.share_bytes, e.created_at)),
            Some((GIB, 7))
        );
        l.ungrant_new(&grants);
        assert!(l.get("v2").is_none());
        assert!(l.get("v1").is_some(), "a reused volume is never dropped");
    }

    #[test]
    fn measurements_mark_volumes_over_their_share() {
        let mut l = ledger(&[
            ("v1", "blog", "data", 4 * MIB, None),
            ("v2", "blog", "cache", 4 * MIB, None),
        ]);
        l.measured("v1", Some(6 * MIB));
        l.measured("v2", Some(4 * MIB));
        l.measured("gone", Some(GIB));
        let over: Vec<&String> = l.over_share().into_iter().map(|(n, _)| n).collect();
        assert_eq!(over, ["v1"]);
        // Unknown (-1 from the engine) keeps the last figure.
        l.measured("v1", None);
        assert_eq!(l.get("v1").and_then(|e| e.used_bytes), Some(6 * MIB));
        assert_eq!(l.held_bytes(), 10 * MIB);
    }

    #[test]
    fn rebuild_follows_the_engine_labels() {
        let mut l = ledger(&[
            ("v1", "blog", "data", 3 * GIB, Some(MIB)),
            ("gone", "old", "data", GIB, None),
        ]);
        let report = l.rebuild(
            [
                ("v1".to_owned(), id("peer:A", "blog", "data"), Some(2 * MIB)),
                ("v3".to_owned(), id("peer:B", "wiki", "db"), Some(3 * GIB)),
                ("v4".to_owned(), id("fleet:F", "cam", "rec"), None),
            ],
            9,
        );
        assert_eq!(report.added, ["v3", "v4"]);
        assert_eq!(report.dropped, ["gone"]);
        assert_eq!(
            l.get("v1").map(|e| e.share_bytes),
            Some(3 * GIB),
            "share kept"
        );
        assert_eq!(l.get("v1").and_then(|e| e.used_bytes), Some(2 * MIB));
        assert_eq!(
            l.get("v3").map(|e| e.share_bytes),
            Some(3 * GIB),
            "at least its use"
        );
        assert_eq!(
            l.get("v4").map(|e| e.share_bytes),
            Some(DEFAULT_SHARE_BYTES)
        );
        assert_eq!(l.of_scope("peer:B").count(), 1);
        assert_eq!(
            l.find("fleet:F", "cam", "rec").map(String::as_str),
            Some("v4")
        );
    }

    #[test]
    fn round_trips_as_json() {
        let l = ledger(&[("v1", "blog", "data", GIB, Some(5))]);
        let text = serde_json::to_string(&l).expect("json");
        assert_eq!(serde_json::from_str::<Ledger>(&text).expect("parse"), l);
    }
}
