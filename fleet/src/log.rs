//! [`FleetLog`]: the set of verified entries a member holds, and the state folded from them.
//!
//! Entries form a DAG: each names the heads its author had seen. The canonical order is by
//! Lamport clock, then hash — parents always come first, and every member that holds the same
//! set folds the same state, whatever order it learned the entries in. Inserting checks, in
//! order: the fleet, duplicates, the genesis rule, that every parent is known (else the caller
//! fetches them: [`InsertError::MissingParents`]), the clock and time rules, and finally
//! authority — judged against the entry's causal past (its ancestors), so the verdict does not
//! depend on which concurrent entries a member happened to see first. A refused entry is not
//! stored. The state is the fold of every stored entry in canonical order: an entry built on
//! every head (the usual case) is folded onto the current state; a concurrent one refolds the
//! log, and an entry a concurrent one overrides (two releases with one sequence number) stays
//! in the log but is skipped by the fold, on every member alike.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::SignedEntry;
use crate::entry::Op;
use crate::ids::{EntryHash, FleetId, MemberKey};
use crate::state::{FleetState, Refusal};

/// How far in the future an entry's time may be, against the receiver's clock.
pub const MAX_FUTURE_SECS: u64 = 300;

/// Why an entry was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("entry {hash}: its parents are unknown here ({} missing); fetch them first", missing.len())]
    MissingParents {
        hash: EntryHash,
        missing: Vec<EntryHash>,
    },
    #[error("entry {0}: its clock is not one more than its parents' largest")]
    Clock(EntryHash),
    #[error("entry {0}: its time is before one of its parents'")]
    TimeBeforeParent(EntryHash),
    #[error("entry {hash}: its time is {ahead} s ahead of this machine's clock")]
    FromTheFuture { hash: EntryHash, ahead: u64 },
    #[error("entry {hash} refused: {refusal}")]
    Refused { hash: EntryHash, refusal: Refusal },
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new entry, now part of the state.
    New,
    /// Already held.
    Duplicate,
}

/// A member's copy of one fleet's log.
#[derive(Debug, Clone)]
pub struct FleetLog {
    fleet: FleetId,
    entries: BTreeMap<EntryHash, SignedEntry>,
    /// Canonical order: (clock, hash).
    order: BTreeSet<(u64, EntryHash)>,
    heads: BTreeSet<EntryHash>,
    state: Option<FleetState>,
    /// Every stored `Revoke`, by the key it revokes: that key's entries which are not its
    /// ancestors are void (stored, forwarded, skipped by the fold) when the revoke is
    /// effective (see `effective_revokes`).
    revokes: BTreeMap<MemberKey, Vec<EntryHash>>,
    /// Each entry's time floor: the time its children may not be before. An entry's `at`,
    /// but an e-stop's is its parents' floor (its own time may be far ahead).
    floor: BTreeMap<EntryHash, u64>,
    /// The genesis key and every key a stored `RotateRoot` of one of them named: their
    /// revokes (and rotations) always void.
    roots: BTreeSet<MemberKey>,
}

/// An entry checked against a log by [`FleetLog::prepare`], not yet part of it: the caller
/// makes it durable, then hands it to [`FleetLog::commit`] (which cannot fail). Preparing
/// borrows the log, so nothing is cloned but the state an entry changes.
#[derive(Debug)]
#[must_use = "a prepared entry is not in the log until it is committed"]
pub struct Prepared {
    hash: EntryHash,
    next: Next,
}

#[derive(Debug)]
enum Next {
    /// Already held: committing does nothing.
    Duplicate,
    /// A new entry and the state after it (built on every head, or the genesis).
    Folded(SignedEntry, Box<FleetState>),
    /// A new entry concurrent with others: the log is refolded when it is committed.
    Refold(SignedEntry),
}

impl Prepared {
    pub fn hash(&self) -> EntryHash {
        self.hash
    }

    /// What committing it does.
    pub fn inserted(&self) -> Inserted {
        match self.next {
            Next::Duplicate => Inserted::Duplicate,
            _ => Inserted::New,
        }
    }

    /// The entry, when it is new.
    pub fn entry(&self) -> Option<&SignedEntry> {
        match &self.next {
            Next::Duplicate => None,
            Next::Folded(signed, _) | Next::Refold(signed) => Some(signed),
        }
    }
}

impl FleetLog {
    /// An empty log of `fleet` (it accepts only that fleet's genesis first).
    pub fn new(fleet: FleetId) -> Self {
        FleetLog {
            fleet,
            entries: BTreeMap::new(),
            order: BTreeSet::new(),
            heads: BTreeSet::new(),
            state: None,
            revokes: BTreeMap::new(),
            floor: BTreeMap::new(),
            roots: BTreeSet::from([MemberKey(fleet.0)]),
        }
    }

    pub fn fleet(&self) -> FleetId {
        self.fleet
    }

    /// The folded state, once the genesis is in.
    pub fn state(&self) -> Option<&FleetState> {
        self.state.as_ref()
    }

    /// Entries no other entry names as a parent: what a new entry should name.
    pub fn heads(&self) -> Vec<EntryHash> {
        self.heads.iter().copied().collect()
    }

    /// The clock a new entry on the current heads gets.
    pub fn next_clock(&self) -> u64 {
        self.heads
            .iter()
            .filter_map(|h| self.entries.get(h))
            .map(|e| e.entry().clock + 1)
            .max()
            .unwrap_or(0)
    }

    /// The latest time among the heads (a new entry's time must not be before it). An
    /// e-stop's own time does not count (it may come from a clock far ahead, and is exempt
    /// from [`MAX_FUTURE_SECS`]): its children need only be as late as its parents.
    pub fn latest_time(&self) -> u64 {
        self.heads
            .iter()
            .filter_map(|h| self.floor.get(h))
            .copied()
            .max()
            .unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, hash: &EntryHash) -> Option<&SignedEntry> {
        self.entries.get(hash)
    }

    pub fn contains(&self, hash: &EntryHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// Every entry in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = &SignedEntry> {
        self.order.iter().filter_map(|(_, h)| self.entries.get(h))
    }

    /// Entries that are neither in `heads` nor below them (what a peer whose heads these are
    /// lacks), in canonical order so the peer can insert them as they come. Heads unknown
    /// here are ignored: the peer then receives a little more than it needs.
    pub fn entries_not_below(&self, heads: &[EntryHash]) -> Vec<&SignedEntry> {
        let seen = self.ancestors(heads);
        self.iter().filter(|e| !seen.contains(&e.hash())).collect()
    }

    /// Writes and signs a new entry on the current heads (the caller then inserts it, which
    /// checks the author's authority like any member would). Its time is `now`, or the
    /// latest head's when this machine's clock is behind it.
    pub fn author(
        &self,
        key: &ed25519_dalek::SigningKey,
        op: Op,
        now: u64,
    ) -> Result<SignedEntry, crate::entry::EntryError> {
        let entry = crate::entry::Entry {
            fleet: self.fleet,
            parents: self.heads(),
            clock: self.next_clock(),
            author: crate::ids::MemberKey(key.verifying_key().to_bytes()),
            at: now.max(self.latest_time()),
            op,
        };
        SignedEntry::sign(entry, key)
    }

    /// Verifies `signed` against this log and stores it (see the module docs). `now` is the
    /// receiver's clock in Unix seconds.
    pub fn insert(&mut self, signed: SignedEntry, now: u64) -> Result<Inserted, InsertError> {
        let prepared = self.prepare(signed, now)?;
        let inserted = prepared.inserted();
        self.commit(prepared);
        Ok(inserted)
    }

    /// Every check of [`FleetLog::insert`], without changing the log.
    pub fn prepare(&self, signed: SignedEntry, now: u64) -> Result<Prepared, InsertError> {
        let hash = signed.hash();
        if self.entries.contains_key(&hash) {
            return Ok(Prepared {
                hash,
                next: Next::Duplicate,
            });
        }
        let entry = signed.entry();
        let refused = |refusal| InsertError::Refused { hash, refusal };
        if entry.fleet != self.fleet {
            return Err(refused(Refusal::WrongFleet {
                expected: self.fleet,
                found: entry.fleet,
            }));
        }
        // A robot whose clock lags must still take a stop; every other op keeps the check.
        let exempt = matches!(entry.op, Op::EStop { .. });
        if !exempt && entry.at > now.saturating_add(MAX_FUTURE_SECS) {
            return Err(InsertError::FromTheFuture {
                hash,
                ahead: entry.at - now,
            });
        }
        if let Op::Genesis { name } = &entry.op {
            if self.state.is_some() || entry.author.0 != self.fleet.0 {
                return Err(refused(Refusal::Genesis));
            }
            let state = FleetState::genesis(self.fleet, name);
            return Ok(Prepared {
                hash,
                next: Next::Folded(signed, Box::new(state)),
            });
        }
        let missing: Vec<EntryHash> = entry
            .parents
            .iter()
            .filter(|p| !self.entries.contains_key(p))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(InsertError::MissingParents { hash, missing });
        }
        let parents = entry.parents.iter().filter_map(|p| self.entries.get(p));
        let max_clock = parents.map(|p| p.entry().clock).max().unwrap_or(0);
        let max_at = self.floor_of(&entry.parents);
        if entry.clock != max_clock + 1 {
            return Err(InsertError::Clock(hash));
        }
        if entry.at < max_at {
            return Err(InsertError::TimeBeforeParent(hash));
        }
        // Authority is judged against the entry's causal past only (its ancestors), which
        // every member holds in full before accepting it: the verdict is the same on every
        // member whatever else it has seen, so refusing here never splits the fleet. In the
        // usual case the entry builds on every head, and its past is the whole log.
        let on_every_head = entry.parents.iter().copied().eq(self.heads.iter().copied());
        let past = if on_every_head {
            self.state.clone()
        } else {
            let ancestors = self.ancestors(&entry.parents);
            self.fold_where(|h| ancestors.contains(h))
        };
        let mut state = past.ok_or(refused(Refusal::Genesis))?;
        // On every head, every folded entry is in the entry's past.
        state.apply(hash, entry).map_err(refused)?;
        if !on_every_head {
            return Ok(Prepared {
                hash,
                next: Next::Refold(signed),
            });
        }
        // A key with an effective revoke in the log writes only void entries from then on
        // (even when the fold skipped that revoke).
        let revoked_here = self.revokes.contains_key(&entry.author)
            && self
                .effective_revokes(&|_| true)
                .iter()
                .any(|(key, _)| *key == entry.author);
        let next = if revoked_here {
            self.state.clone().ok_or(refused(Refusal::Genesis))?
        } else {
            state
        };
        Ok(Prepared {
            hash,
            next: Next::Folded(signed, Box::new(next)),
        })
    }

    /// Adds a prepared entry. Prepare and commit against the same log, with nothing
    /// committed in between.
    pub fn commit(&mut self, prepared: Prepared) {
        match prepared.next {
            Next::Duplicate => {}
            Next::Folded(signed, state) => {
                self.store(signed);
                self.state = Some(*state);
            }
            Next::Refold(signed) => {
                self.store(signed);
                // With concurrent branches, the state is the fold of everything in canonical
                // order; an entry a concurrent one overrides (two releases with one sequence
                // number) stays in the log, skipped by the fold — on every member alike.
                self.state = self.fold_where(|_| true);
            }
        }
    }

    /// Is `a` an ancestor of `b` (or `b` itself)? A walk down from `b` that stops below `a`'s
    /// clock.
    fn is_ancestor(&self, a: &EntryHash, b: &EntryHash) -> bool {
        let Some(floor) = self.entries.get(a).map(|e| e.entry().clock) else {
            return false;
        };
        let mut seen = BTreeSet::new();
        let mut stack = vec![*b];
        while let Some(hash) = stack.pop() {
            if hash == *a {
                return true;
            }
            let Some(e) = self.entries.get(&hash) else {
                continue;
            };
            if e.entry().clock <= floor || !seen.insert(hash) {
                continue;
            }
            stack.extend(e.entry().parents.iter().copied());
        }
        false
    }

    /// The time floor below `parents` (the latest of theirs).
    fn floor_of(&self, parents: &[EntryHash]) -> u64 {
        parents
            .iter()
            .filter_map(|p| self.floor.get(p))
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// The entries `revokes` void among those `include` selects: written by the revoked key
    /// and not an ancestor of the revoke.
    fn voided_by(
        &self,
        revokes: &[(MemberKey, EntryHash)],
        include: &impl Fn(&EntryHash) -> bool,
    ) -> BTreeSet<EntryHash> {
        let mut voided = BTreeSet::new();
        for (key, revoke) in revokes {
            let past = self.ancestors(std::slice::from_ref(revoke));
            let void = self
                .entries
                .iter()
                .filter(|(h, e)| e.entry().author == *key && !past.contains(h) && include(h));
            voided.extend(void.map(|(h, _)| *h));
        }
        voided
    }

    /// The stored revokes and member rotations (among those `include` selects) that void: a
    /// root's always (it cannot be revoked, and only it may revoke an admin), an admin's
    /// unless a root's voids it. A revoked admin's back-dated revoke therefore voids nothing.
    fn effective_revokes(
        &self,
        include: &impl Fn(&EntryHash) -> bool,
    ) -> Vec<(MemberKey, EntryHash)> {
        let author = |h: &EntryHash| self.entries.get(h).map(|e| e.entry().author);
        let all: Vec<(MemberKey, EntryHash)> = self
            .revokes
            .iter()
            .flat_map(|(key, hashes)| hashes.iter().map(move |h| (*key, *h)))
            .filter(|(_, h)| include(h))
            .collect();
        let (by_root, by_admins): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|(_, h)| author(h).is_some_and(|a| self.roots.contains(&a)));
        let void = self.voided_by(&by_root, include);
        let mut effective = by_root;
        effective.extend(by_admins.into_iter().filter(|(_, h)| !void.contains(h)));
        effective
    }

    /// Entries among those `include` selects that an effective revoke voids.
    fn voided_where(&self, include: &impl Fn(&EntryHash) -> bool) -> BTreeSet<EntryHash> {
        self.voided_by(&self.effective_revokes(include), include)
    }

    /// Every entry at or below `heads`.
    fn ancestors(&self, heads: &[EntryHash]) -> BTreeSet<EntryHash> {
        let mut seen = BTreeSet::new();
        let mut stack = heads.to_vec();
        while let Some(hash) = stack.pop() {
            if seen.insert(hash)
                && let Some(e) = self.entries.get(&hash)
            {
                stack.extend(e.entry().parents.iter().copied());
            }
        }
        seen
    }

    /// Folds the entries `include` selects, in canonical order. Entries the state refuses at
    /// their place are skipped, as on every other member.
    fn fold_where(&self, include: impl Fn(&EntryHash) -> bool) -> Option<FleetState> {
        let voided = if self.revokes.is_empty() {
            BTreeSet::new()
        } else {
            self.voided_where(&include)
        };
        let mut state: Option<FleetState> = None;
        for (_, hash) in self.order.iter().filter(|(_, h)| include(h)) {
            if voided.contains(hash) {
                continue;
            }
            let entry = self.entries[hash].entry();
            match (&mut state, &entry.op) {
                (None, Op::Genesis { name }) => {
                    state = Some(FleetState::genesis(self.fleet, name));
                }
                (None, _) => {}
                (Some(s), _) => {
                    let _ = s.apply_with(*hash, entry, &|h| self.is_ancestor(h, hash));
                }
            }
        }
        state
    }

    fn store(&mut self, signed: SignedEntry) {
        let hash = signed.hash();
        let floor = match signed.entry().op {
            Op::EStop { .. } => self.floor_of(&signed.entry().parents),
            _ => signed.entry().at,
        };
        self.floor.insert(hash, floor);
        for parent in &signed.entry().parents {
            self.heads.remove(parent);
        }
        self.heads.insert(hash);
        self.order.insert((signed.entry().clock, hash));
        // A rotated member key is retired as a revoked one is: its entries concurrent with
        // the rotation are void.
        match &signed.entry().op {
            Op::Revoke { member, .. } if !self.roots.contains(member) => {
                self.revokes.entry(*member).or_default().push(hash);
            }
            Op::RotateMember(proof) => {
                self.revokes.entry(proof.old).or_default().push(hash);
            }
            Op::RotateRoot { new, .. } if self.roots.contains(&signed.entry().author) => {
                self.roots.insert(*new);
            }
            _ => {}
        }
        self.entries.insert(hash, signed);
    }
}
