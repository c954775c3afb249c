//! Property tests of the fleet log: arbitrary valid entries round trip through their wire
//! form and frames, arbitrary bytes never panic the decoders (the fuzz targets' checks,
//! included below), and the fold does not depend on the order entries arrive in — a random
//! history with concurrent branches, inserted in any order, gives the state and heads of the
//! canonical order, stops, resumes and revokes of people's keys included (a resume lifts only
//! the stops in its past, a revoke voids its key's concurrent entries). Branches that conflict (two releases of one group at once) converge too:
//! `concurrent_releases_of_one_group_converge_whatever_the_order` (it failed while authority
//! was judged against whatever a member had seen, rather than the entry's causal past).

mod support;

#[path = "../fuzz/src/lib.rs"]
pub mod checks;

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    Entry, EntryHash, FleetId, FleetLog, FleetMessage, Grant, HealthCheck, InsertError, Invite,
    Join, MemberKey, Op, Release, Role, Rollback, Sig, SignedEntry, decode_frame, encode_message,
};
use peercompute_tunnel_proto::{DeployRequest, EnvVar, MIN_VOLUME_SHARE, VolumeMount};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use support::*;

// ---------------------------------------------------------------------------------------------
// Strategies of valid entries

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?"
}

/// Any text of at most 64 characters, so at most 256 bytes.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=64).prop_map(String::from_iter)
}

fn groups(min: usize) -> impl Strategy<Value = Vec<String>> {
    btree_set(label(), min..4).prop_map(|s| s.into_iter().collect())
}

fn member_key() -> impl Strategy<Value = MemberKey> {
    any::<[u8; 32]>().prop_map(MemberKey)
}

fn any_release() -> impl Strategy<Value = Release> {
    let env = btree_map("[A-Z_][A-Z0-9_]{0,8}", "[^\0]{0,20}", 0..4).prop_map(|m| {
        m.into_iter()
            .map(|(key, value)| EnvVar { key, value })
            .collect::<Vec<_>>()
    });
    let spec = (
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8})?",
        any::<[u8; 32]>(),
        label(),
        1..=u16::MAX,
        env,
        proptest::option::of(1..=u32::MAX),
        proptest::option::of(1..=u64::MAX),
        attachments(),
    )
        .prop_map(|(repo, digest, name, port, env, cpu, mem, attach)| {
            let mut spec =
                DeployRequest::new(format!("{repo}@sha256:{}", hex::encode(digest)), port);
            spec.name = Some(name);
            spec.env = env;
            spec.cpu_millis = cpu;
            spec.memory_bytes = mem;
            (spec.volumes, spec.devices, spec.volume_exclusive) = attach;
            spec
        });
    let health = (proptest::option::of("/[a-z0-9/._-]{0,30}"), 1..=3600u32)
        .prop_map(|(path, timeout_secs)| HealthCheck { path, timeout_secs });
    (label(), 1..=u64::MAX, text(), spec, health).prop_map(|(group, seq, version, spec, health)| {
        Release {
            group,
            seq,
            version,
            spec,
            health,
        }
    })
}

/// Volumes, devices and `volume_exclusive` as the rules allow them: none half the time (a
/// release that travels as `Release`), else some (`ReleaseV2`).
fn attachments() -> impl Strategy<Value = (Vec<VolumeMount>, Vec<String>, bool)> {
    let volumes = vec(
        (
            proptest::option::of(MIN_VOLUME_SHARE..=u64::MAX),
            "[a-z]{1,8}",
        ),
        0..3,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (size_bytes, dir))| VolumeMount {
                name: format!("v{i}"),
                path: format!("/{dir}{i}"),
                size_bytes,
            })
            .collect::<Vec<_>>()
    });
    let devices = btree_set("[a-z][a-z0-9]{0,7}", 0..3).prop_map(|d| d.into_iter().collect());
    (volumes, devices, any::<bool>()).prop_map(|(volumes, devices, exclusive)| {
        let exclusive = exclusive && !volumes.is_empty();
        (volumes, devices, exclusive)
    })
}

/// Every op but the genesis.
fn op() -> impl Strategy<Value = Op> {
    let role = prop_oneof![
        Just(Role::Admin),
        Just(Role::Developer),
        Just(Role::Operator),
        Just(Role::Viewer)
    ];
    prop_oneof![
        (
            member_key(),
            groups(1),
            proptest::option::of(label()),
            any::<u64>(),
            1..=u32::MAX
        )
            .prop_map(
                |(invite_key, groups, name_prefix, expires_at, uses)| Op::Invite(Invite {
                    invite_key,
                    groups,
                    name_prefix,
                    expires_at,
                    uses,
                })
            ),
        (
            any::<[u8; 32]>(),
            label(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(invite, name, a, b)| Op::Join(Join {
                invite: EntryHash(invite),
                name,
                proof: Sig([a, b].concat().try_into().expect("64 bytes")),
            })),
        (member_key(), label(), groups(0)).prop_map(|(member, name, groups)| Op::Enroll {
            member,
            name,
            groups
        }),
        (member_key(), groups(0)).prop_map(|(member, groups)| Op::SetGroups { member, groups }),
        (
            member_key(),
            role,
            groups(0),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(member, role, groups, expires_at)| Op::Grant(Grant {
                member,
                role,
                groups,
                expires_at,
            })),
        member_key().prop_map(|member| Op::Ungrant { member }),
        any_release().prop_map(Op::Release),
        (label(), 1..=u64::MAX, proptest::option::of(text())).prop_map(
            |(group, seq, to_version)| Op::Rollback(Rollback {
                group,
                seq,
                to_version,
            })
        ),
        (groups(0), text()).prop_map(|(groups, reason)| Op::estop(groups, reason)),
        text().prop_map(Op::estop_everything),
        groups(0).prop_map(|groups| Op::Resume { groups }),
        (member_key(), text()).prop_map(|(member, reason)| Op::Revoke { member, reason }),
    ]
}

/// A valid signed entry by one of a few keys: a genesis, or any other op on 1 to 16 parents.
fn signed_entry() -> impl Strategy<Value = SignedEntry> {
    let genesis = text().prop_map(|name| (Op::Genesis { name }, BTreeSet::new(), 0));
    let other = (op(), btree_set(any::<[u8; 32]>(), 1..=16), 1..=u64::MAX);
    (
        prop_oneof![1 => genesis, 11 => other],
        1..=4u8,
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(|((op, parents, clock), author, fleet, at)| {
            let key = key(author);
            let entry = Entry {
                fleet: FleetId(fleet),
                parents: parents.into_iter().map(EntryHash).collect(),
                clock,
                author: member(&key),
                at,
                op,
            };
            SignedEntry::sign(entry, &key).expect("the strategy makes valid entries")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn valid_entries_round_trip(signed in signed_entry()) {
        prop_assert_eq!(SignedEntry::decode(signed.bytes()), Ok(signed.clone()));
        let name = checks::op_name(&signed.entry().op);
        prop_assert_eq!(checks::check_entry(signed.bytes()), checks::EntryEnd::Decoded(name));
    }

    /// A release travels as `Release` (op 7, the bytes it always had) exactly when it has no
    /// volumes, devices or `volume_exclusive`, else as `ReleaseV2` (op 12); both round trip.
    #[test]
    fn releases_travel_as_v1_or_v2(release in any_release()) {
        let w = World::new();
        let plain = release.spec.volumes.is_empty()
            && release.spec.devices.is_empty()
            && !release.spec.volume_exclusive;
        let fk = w.fleet_key.clone();
        let signed = author(&w, &fk, Op::Release(release));
        let prefix = op_offset(signed.entry());
        prop_assert_eq!(signed.bytes()[1 + prefix], if plain { 7 } else { 12 });
        prop_assert_eq!(SignedEntry::decode(signed.bytes()), Ok(signed.clone()));
    }

    #[test]
    fn entries_travel_whole_in_frames(entries in vec(signed_entry(), 0..4), more in any::<bool>()) {
        let bytes: Vec<Vec<u8>> = entries.iter().map(|e| e.bytes().to_vec()).collect();
        let message = FleetMessage::Entries { entries: bytes, more };
        let frame = encode_message(&message).expect("fits a frame");
        prop_assert_eq!(decode_frame(&frame), Ok(Some((message, frame.len()))));
        let report = checks::check_fleet_frames(&frame);
        prop_assert_eq!(report.entries, entries.len());
        prop_assert_eq!(decode_frame(&frame[..frame.len() - 1]), Ok(None));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        checks::check_entry(&bytes);
        checks::check_fleet_frames(&bytes);
        checks::check_join_token(&bytes);
    }

    #[test]
    fn a_flipped_byte_never_passes(
        signed in signed_entry(),
        at in any::<prop::sample::Index>(),
        mask in 1..=255u8,
    ) {
        let mut bytes = signed.bytes().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        prop_assert!(matches!(checks::check_entry(&bytes), checks::EntryEnd::Refused(_)));
    }
}

// ---------------------------------------------------------------------------------------------
// Order independence

/// A history writer on one branch of a fleet log. Branches act on their own group and their
/// own keys and robots, so that their entries commute: no entry of one branch can change
/// whether an entry of the other is allowed. (Conflicting branches are another matter: see
/// `concurrent_releases_of_one_group_converge_whatever_the_order`.)
struct Branch {
    w: World,
    /// 0 the trunk, 1 and 2 the concurrent branches, 3 after their merge.
    tag: u8,
    devs: Vec<SigningKey>,
    robots: Vec<SigningKey>,
    made: u8,
}

const GROUPS: [&str; 2] = ["production", "staging"];

impl Branch {
    fn trunk() -> Self {
        let mut w = World::new();
        w.grant(&key(11), Role::Developer, &[], None);
        w.grant(&key(12), Role::Admin, &[], None);
        w.grant(&key(13), Role::Operator, &GROUPS, None);
        Branch {
            w,
            tag: 0,
            devs: vec![],
            robots: vec![],
            made: 0,
        }
    }

    fn fork(&self, tag: u8) -> Self {
        Branch {
            w: World {
                fleet_key: self.w.fleet_key.clone(),
                log: self.w.log.clone(),
            },
            tag,
            devs: vec![],
            robots: vec![],
            made: 0,
        }
    }

    fn group(&self, x: u8) -> &'static str {
        match self.tag {
            1 | 2 => GROUPS[usize::from(self.tag - 1)],
            _ => GROUPS[usize::from(x % 2)],
        }
    }

    /// A new key of this branch (seeds 100..=239, ten per branch and kind).
    fn new_key(&mut self, kind: u8) -> Option<SigningKey> {
        (self.made < 10).then(|| {
            self.made += 1;
            key(100 + 70 * kind + 10 * self.tag + self.made)
        })
    }

    fn actor(&self, who: u8) -> SigningKey {
        let mut actors = vec![self.w.fleet_key.clone(), key(11), key(12), key(13)];
        actors.extend(self.devs.iter().cloned());
        actors[usize::from(who) % actors.len()].clone()
    }

    /// Tries one step; a refused entry is simply not part of the history.
    fn step(&mut self, kind: u8, who: u8, x: u8) {
        let group = self.group(x);
        let state = self.w.log.state().expect("genesis in");
        let seq = state.groups.get(group).map_or(0, |g| g.seq) + 1;
        let versions: Vec<String> = state.groups.get(group).map_or(vec![], |g| {
            g.releases
                .iter()
                .map(|r| r.release.version.clone())
                .collect()
        });
        let actor = self.actor(who);
        let pick = |v: &[SigningKey]| (!v.is_empty()).then(|| v[usize::from(x) % v.len()].clone());
        let op = match kind % 13 {
            0 | 1 => release(group, seq, &format!("v{}-{seq}-{x}", self.tag)),
            2 => rollback(group, seq, None),
            3 => {
                let to = (!versions.is_empty())
                    .then(|| versions[usize::from(x) % versions.len()].as_str());
                rollback(group, seq, to)
            }
            4 => {
                let Some(dev) = self.new_key(0) else { return };
                let op = Op::Grant(Grant {
                    member: member(&dev),
                    role: Role::Developer,
                    groups: vec![group.to_owned()],
                    expires_at: None,
                });
                self.devs.push(dev);
                op
            }
            5 => {
                let Some(dev) = pick(&self.devs) else { return };
                Op::Ungrant {
                    member: member(&dev),
                }
            }
            6 => {
                let Some(robot) = self.new_key(1) else { return };
                let name = format!("r{}-{}", self.tag, self.made);
                let op = Op::Enroll {
                    member: member(&robot),
                    name,
                    groups: vec![group.to_owned()],
                };
                self.robots.push(robot);
                op
            }
            7 => {
                let Some(robot) = pick(&self.robots) else {
                    return;
                };
                Op::Revoke {
                    member: member(&robot),
                    reason: "lost".into(),
                }
            }
            8 => Op::estop(vec![group.to_owned()], "stop"),
            10 => Op::Resume {
                groups: vec![group.to_owned()],
            },
            11 => Op::estop(vec![], "stop everything"),
            12 => {
                // A person's key (the developer, the operator, or one this branch granted):
                // its entries on the other branch become void.
                let mut people = vec![key(11), key(13)];
                people.extend(self.devs.iter().cloned());
                let person = &people[usize::from(x) % people.len()];
                Op::Revoke {
                    member: member(person),
                    reason: "lost".into(),
                }
            }
            _ => {
                let Some(robot) = self.new_key(1) else { return };
                let token = self.w.invite(&[group], 1, NOW + 3600);
                let name = format!("lekiwi-{}x{}", self.tag, self.made);
                let _ = self.w.join(&robot, &token, &name, NOW);
                return;
            }
        };
        match self.w.write(&actor, op) {
            Ok(_) | Err(InsertError::Refused { .. }) => {}
            Err(e) => panic!("a branch write failed other than by refusal: {e}"),
        }
    }
}

type Steps = Vec<(u8, u8, u8)>;

fn steps(max: usize) -> impl Strategy<Value = Steps> {
    vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..max)
}

/// Trunk, two concurrent branches merged into the first, then more on the merge.
fn history(trunk_steps: &Steps, a_steps: &Steps, b_steps: &Steps, after: &Steps) -> FleetLog {
    let mut trunk = Branch::trunk();
    for &(k, w, x) in trunk_steps {
        trunk.step(k, w, x);
    }
    let (mut a, mut b) = (trunk.fork(1), trunk.fork(2));
    for &(k, w, x) in a_steps {
        a.step(k, w, x);
    }
    for &(k, w, x) in b_steps {
        b.step(k, w, x);
    }
    // At least one entry on each branch: the fleet key releases the branch's group.
    a.step(0, 0, 0);
    b.step(0, 0, 0);
    let missing: Vec<SignedEntry> =
        b.w.log
            .entries_not_below(&a.w.log.heads())
            .into_iter()
            .cloned()
            .collect();
    for entry in missing {
        a.w.log
            .insert(entry, LATER)
            .expect("commuting branches merge");
    }
    let mut merged = a.fork(3);
    // An entry that names both branches' heads.
    let fk = merged.w.fleet_key.clone();
    merged
        .w
        .write(&fk, Op::Resume { groups: vec![] })
        .expect("the fleet key may resume");
    for &(k, w, x) in after {
        merged.step(k, w, x);
    }
    merged.w.log
}

/// Inserts `entries` in the given order into a fresh log, retrying those whose parents are
/// not in yet until no more go in.
fn insert_any_order(fleet: FleetId, mut pending: Vec<SignedEntry>) -> (FleetLog, Vec<SignedEntry>) {
    let mut log = FleetLog::new(fleet);
    loop {
        let before = pending.len();
        let mut waiting = Vec::new();
        for entry in pending {
            match log.insert(entry.clone(), LATER) {
                Ok(_) => {}
                Err(InsertError::MissingParents { .. }) => waiting.push(entry),
                Err(e) => panic!("entry {} refused in this order: {e}", entry.hash()),
            }
        }
        pending = waiting;
        if pending.is_empty() || pending.len() == before {
            return (log, pending);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_state_does_not_depend_on_the_order_entries_arrive_in(
        trunk_steps in steps(8),
        a_steps in steps(16),
        b_steps in steps(16),
        after in steps(6),
        seed in any::<u64>(),
    ) {
        let merged = history(&trunk_steps, &a_steps, &b_steps, &after);
        let canonical: Vec<SignedEntry> = merged.iter().cloned().collect();
        let (in_order, left) = insert_any_order(merged.fleet(), canonical.clone());
        prop_assert!(left.is_empty());
        prop_assert_eq!(in_order.state(), merged.state());

        let mut shuffled = canonical;
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let (log, left) = insert_any_order(merged.fleet(), shuffled);
        prop_assert!(left.is_empty(), "{} entries never went in", left.len());
        prop_assert_eq!(log.state(), in_order.state());
        prop_assert_eq!(log.heads(), in_order.heads());
        prop_assert_eq!(log.len(), in_order.len());
    }
}

/// The generator of histories does what the property needs: two branches written apart
/// (entries of the same clock on both), merged by an entry naming both, each step doing what
/// its numbers say.
#[test]
fn a_history_has_concurrent_branches() {
    // Trunk: the developer releases production. A: the fleet key releases production, grants
    // a developer who releases it. B: the fleet key releases staging, the admin enrols a robot,
    // the operator stops staging. Then each branch's closing release, the merge (a resume of
    // every group), and a rollback of production.
    let steps_a: Steps = vec![(0, 0, 0), (4, 0, 0), (0, 4, 0)];
    let steps_b: Steps = vec![(0, 0, 1), (6, 2, 0), (8, 3, 0)];
    let log = history(&vec![(1, 1, 0)], &steps_a, &steps_b, &vec![(2, 0, 0)]);
    assert_eq!(log.len(), 1 + 3 + 1 + 4 + 4 + 1 + 1);
    let merge: Vec<&SignedEntry> = log.iter().filter(|e| e.entry().parents.len() > 1).collect();
    assert_eq!(merge.len(), 1);
    assert_eq!(merge[0].entry().parents.len(), 2);
    let clocks: Vec<u64> = log.iter().map(|e| e.entry().clock).collect();
    assert!(clocks.windows(2).any(|w| w[0] == w[1]), "{clocks:?}");
    let state = log.state().expect("genesis in");
    let desired = |g: &str| state.groups[g].desired().map(|r| r.release.version.clone());
    assert_eq!(desired("production").as_deref(), Some("v1-3-0"));
    assert_eq!(desired("staging").as_deref(), Some("v2-2-0"));
    assert_eq!(state.groups["production"].releases.len(), 4);
    assert_eq!(state.members.len(), 1);
    assert_eq!(state.grants.len(), 4);
    assert!(state.groups.keys().all(|g| state.stop_for(g).is_none()));
}

/// Inserts `entries` in order into a fresh log, leaving out those it refuses (as a member does).
fn insert_tolerantly(fleet: FleetId, entries: &[&SignedEntry]) -> FleetLog {
    let mut log = FleetLog::new(fleet);
    for entry in entries {
        let _ = log.insert((*entry).clone(), LATER);
    }
    log
}

/// Two people release to one group at once, each on their own copy of the log: one release
/// sorts first and wins, the other is skipped — and an entry written on top of the loser
/// (here a release of another group) must count on every member or on none.
#[test]
fn concurrent_releases_of_one_group_converge_whatever_the_order() {
    let trunk = Branch::trunk();
    let fk = trunk.w.fleet_key.clone();
    let (mut a, mut b) = (trunk.fork(1), trunk.fork(2));
    let ra =
        a.w.write(&fk, release("production", 1, "a"))
            .expect("a's release");
    let rb =
        b.w.write(&fk, release("production", 1, "b"))
            .expect("b's release");
    let sort = |e: &SignedEntry| (e.entry().clock, e.hash());
    let (winner, loser, loser_branch) = if sort(&ra) < sort(&rb) {
        (ra, rb, &mut b)
    } else {
        (rb, ra, &mut a)
    };
    let child = loser_branch
        .w
        .write(&fk, release("staging", 1, "on-the-loser"))
        .expect("written on the loser's branch");
    let prefix: Vec<&SignedEntry> = trunk.w.log.iter().collect();
    let winner_first = [&winner, &loser, &child];
    let loser_first = [&loser, &child, &winner];
    let x = insert_tolerantly(
        trunk.w.log.fleet(),
        &[&prefix[..], &winner_first[..]].concat(),
    );
    let y = insert_tolerantly(
        trunk.w.log.fleet(),
        &[&prefix[..], &loser_first[..]].concat(),
    );
    assert_eq!(
        x.state(),
        y.state(),
        "two members hold the same entries and disagree"
    );
    assert_eq!(x.heads(), y.heads());
}
