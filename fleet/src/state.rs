//! [`FleetState`]: what the log means — members and their groups, grants, invites, each
//! group's releases and which one is current, emergency stops, revoked keys — folded entry by
//! entry in the log's canonical order. [`FleetState::apply`] is the authority check: every
//! member runs it on every entry, against the state before that entry, and refuses the entry
//! with a [`Refusal`] that says why.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::entry::{Entry, Grant, Invite, Op, Release, Role, Rollback};
use crate::ids::{EntryHash, FleetId, MemberKey};
use crate::stops::Stop;

/// A robot of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: MemberKey,
    pub name: String,
    pub groups: Vec<String>,
    /// When it was enrolled (the entry's time).
    pub since: u64,
}

/// An invite and how many robots used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteState {
    pub invite: Invite,
    pub author: MemberKey,
    pub used: u32,
}

/// One release of a group, as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub hash: EntryHash,
    pub author: MemberKey,
    pub at: u64,
    pub release: Release,
}

/// A group's releases, oldest first, and which one robots should run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    /// The highest sequence number seen (releases and rollbacks).
    pub seq: u64,
    /// Shared between copies of the state (a copy is made per insert, to check an entry
    /// before it is stored): only a release of this group copies the list.
    pub releases: Arc<Vec<ReleaseRecord>>,
    /// Index into `releases` of the desired release.
    pub current: Option<usize>,
    /// The entry that last changed `current` (a release or a rollback).
    pub changed_by: Option<EntryHash>,
    /// The stops naming this group that no resume in their future has lifted, in fold order.
    pub stops: Vec<Stop>,
}

impl GroupState {
    /// The release robots of this group should run.
    pub fn desired(&self) -> Option<&ReleaseRecord> {
        self.current.and_then(|i| self.releases.get(i))
    }
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the entry belongs to fleet {found}, not {expected}")]
    WrongFleet { expected: FleetId, found: FleetId },
    #[error("only the fleet key may sign the genesis, and only once")]
    Genesis,
    #[error("{0} is not a member of the fleet with a role")]
    NotAuthorized(MemberKey),
    #[error("{0} was revoked")]
    Revoked(MemberKey),
    #[error("the grant of {member} expired at {expired_at} (Unix seconds)")]
    GrantExpired { member: MemberKey, expired_at: u64 },
    #[error("{member} is {role}, and a {role} may not {action}")]
    RoleMayNot {
        member: MemberKey,
        role: Role,
        action: &'static str,
    },
    #[error("{member} may act only in groups {allowed:?}, not in {group}")]
    OutsideGroups {
        member: MemberKey,
        group: String,
        allowed: Vec<String>,
    },
    #[error(
        "sequence {seq} of group {group} does not exceed {current}: an older release replayed (rollback attack); a return to an earlier release must be a signed rollback"
    )]
    StaleSequence {
        group: String,
        seq: u64,
        current: u64,
    },
    #[error("group {group} has no release {what} to roll back to")]
    NoRollbackTarget { group: String, what: String },
    #[error("unknown invite {0:?}")]
    UnknownInvite(EntryHash),
    #[error("the join token expired at {expired_at} (Unix seconds); ask an admin for a new one")]
    InviteExpired { expired_at: u64 },
    #[error(
        "the join token was already used {uses} time(s), all it allows; ask an admin for a new one"
    )]
    InviteUsedUp { uses: u32 },
    #[error("the join proof does not verify: the token was forged or made for another robot")]
    BadJoinProof,
    #[error("{0} is already a member; a join cannot be replayed")]
    AlreadyMember(MemberKey),
    #[error("robot name {name} must start with `{prefix}-`")]
    NamePrefix { name: String, prefix: String },
    #[error("the name {0} is taken by another member")]
    NameTaken(String),
    #[error("{0} is not a member")]
    UnknownMember(MemberKey),
    #[error("the fleet key cannot be revoked; rotate it instead")]
    RootKey,
    #[error("{0} is an admin: only the fleet key may revoke an admin")]
    AdminByRootOnly(MemberKey),
    #[error("{old} was rotated to {new}: sign with the new key")]
    Retired { old: MemberKey, new: MemberKey },
    #[error("the rotation proof does not verify: the token was forged or damaged")]
    BadRotationProof,
    #[error(
        "{0} already has a place in the fleet (member, role, revoked or retired): rotate to a fresh key"
    )]
    KeyInUse(MemberKey),
    #[error("only the fleet's current root key may hand the fleet to a new root")]
    RootOnly,
}

/// The fleet as the log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetState {
    pub fleet: FleetId,
    pub name: String,
    pub members: BTreeMap<MemberKey, Member>,
    pub grants: BTreeMap<MemberKey, Grant>,
    pub invites: BTreeMap<EntryHash, InviteState>,
    pub groups: BTreeMap<String, GroupState>,
    pub revoked: BTreeMap<MemberKey, String>,
    /// Fleet-wide stops (an e-stop naming no group) no resume has lifted, in fold order: they
    /// cover every group, those released later too.
    pub stops_all: Vec<Stop>,
    /// The fleet's root key now: the genesis key until a `RotateRoot`.
    pub root: MemberKey,
    /// Keys rotated away (members' and roots'), each with the key that replaced it.
    pub retired: BTreeMap<MemberKey, MemberKey>,
}

impl FleetState {
    /// The state right after a genesis entry (checked by the caller).
    pub fn genesis(fleet: FleetId, name: &str) -> Self {
        FleetState {
            fleet,
            name: name.to_owned(),
            members: BTreeMap::new(),
            grants: BTreeMap::new(),
            invites: BTreeMap::new(),
            groups: BTreeMap::new(),
            revoked: BTreeMap::new(),
            stops_all: Vec::new(),
            root: MemberKey(fleet.0),
            retired: BTreeMap::new(),
        }
    }

    /// The role `key` holds at time `at`, and its groups (empty = all). The root key (the
    /// fleet key, or the key it was rotated to) is an admin of every group.
    pub fn role_at(&self, key: &MemberKey, at: u64) -> Result<(Role, &[String]), Refusal> {
        if *key == self.root {
            return Ok((Role::Admin, &[]));
        }
        self.not_revoked(key)?;
        let grant = self.grants.get(key).ok_or(Refusal::NotAuthorized(*key))?;
        if let Some(expired_at) = grant.expires_at.filter(|&t| at > t) {
            return Err(Refusal::GrantExpired {
                member: *key,
                expired_at,
            });
        }
        Ok((grant.role, &grant.groups))
    }

    /// May `who` read what robots of `group` show (their container logs) at time `at`? Every
    /// role may (viewer, operator, developer, admin), if its grant is unexpired and its groups
    /// (empty = all) include `group`; the fleet key may always. Refused: no role (robots and
    /// strangers), revoked, expired, or outside its groups.
    pub fn may_view(&self, who: &MemberKey, group: &str, at: u64) -> Result<(), Refusal> {
        let (_role, scope) = self.role_at(who, at)?;
        if scope.is_empty() || scope.iter().any(|g| g == group) {
            return Ok(());
        }
        Err(Refusal::OutsideGroups {
            member: *who,
            group: group.to_owned(),
            allowed: scope.to_vec(),
        })
    }

    /// The groups `member` is in (robots), empty for others.
    pub fn groups_of(&self, member: &MemberKey) -> &[String] {
        self.members.get(member).map_or(&[], |m| &m.groups)
    }

    /// Checks `entry` against this state and applies it, as if every entry folded so far were
    /// in its causal past (true when it builds on every head).
    pub fn apply(&mut self, hash: EntryHash, entry: &Entry) -> Result<(), Refusal> {
        self.apply_with(hash, entry, &|_| true)
    }

    /// Checks `entry` against this state and applies it. `in_past(h)` says whether entry `h`
    /// is an ancestor of `entry`: a resume lifts only the stops in its causal past, so a stop
    /// concurrent with a resume stays in force on every member (fail-safe).
    pub fn apply_with(
        &mut self,
        hash: EntryHash,
        entry: &Entry,
        in_past: &dyn Fn(&EntryHash) -> bool,
    ) -> Result<(), Refusal> {
        if entry.fleet != self.fleet {
            return Err(Refusal::WrongFleet {
                expected: self.fleet,
                found: entry.fleet,
            });
        }
        if let Op::Join(join) = &entry.op {
            return self.apply_join(hash, entry, join);
        }
        let (role, scope) = self.role_at(&entry.author, entry.at)?;
        let scope = scope.to_vec();
        let may = |roles: &[Role], action: &'static str| {
            if roles.contains(&role) {
                Ok(())
            } else {
                Err(Refusal::RoleMayNot {
                    member: entry.author,
                    role,
                    action,
                })
            }
        };
        let in_scope = |groups: &[String]| -> Result<(), Refusal> {
            if scope.is_empty() {
                return Ok(());
            }
            let outside = if groups.is_empty() {
                Some("every group")
            } else {
                groups
                    .iter()
                    .find(|g| !scope.contains(g))
                    .map(String::as_str)
            };
            match outside {
                Some(group) => Err(Refusal::OutsideGroups {
                    member: entry.author,
                    group: group.to_owned(),
                    allowed: scope.clone(),
                }),
                None => Ok(()),
            }
        };
        use Role::{Admin, Developer, Operator};
        match &entry.op {
            Op::Genesis { .. } => Err(Refusal::Genesis),
            Op::Join(_) => unreachable!("handled above"),
            Op::Invite(invite) => {
                may(&[Admin], "invite robots")?;
                in_scope(&invite.groups)?;
                self.invites.insert(
                    hash,
                    InviteState {
                        invite: invite.clone(),
                        author: entry.author,
                        used: 0,
                    },
                );
                Ok(())
            }
            Op::Enroll {
                member,
                name,
                groups,
            } => {
                may(&[Admin], "enrol robots")?;
                in_scope(groups)?;
                self.not_revoked(member)?;
                self.check_name(member, name)?;
                self.members.insert(
                    *member,
                    Member {
                        key: *member,
                        name: name.clone(),
                        groups: groups.clone(),
                        since: entry.at,
                    },
                );
                Ok(())
            }
            Op::SetGroups { member, groups } => {
                may(&[Admin], "change groups")?;
                in_scope(groups)?;
                let m = self
                    .members
                    .get_mut(member)
                    .ok_or(Refusal::UnknownMember(*member))?;
                m.groups = groups.clone();
                Ok(())
            }
            Op::Grant(grant) => {
                may(&[Admin], "grant roles")?;
                in_scope(&[])?;
                self.not_revoked(&grant.member)?;
                self.grants.insert(grant.member, grant.clone());
                Ok(())
            }
            Op::Ungrant { member } => {
                may(&[Admin], "take roles away")?;
                in_scope(&[])?;
                self.grants
                    .remove(member)
                    .map(|_| ())
                    .ok_or(Refusal::UnknownMember(*member))
            }
            Op::Revoke { member, reason } => {
                may(&[Admin], "revoke keys")?;
                in_scope(&[])?;
                if *member == self.root {
                    return Err(Refusal::RootKey);
                }
                let admin = self.grants.get(member).is_some_and(|g| g.role == Admin);
                if admin && entry.author != self.root {
                    return Err(Refusal::AdminByRootOnly(*member));
                }
                self.grants.remove(member);
                self.members.remove(member);
                self.revoked.insert(*member, reason.clone());
                Ok(())
            }
            Op::Release(release) => {
                may(&[Admin, Developer], "release")?;
                in_scope(std::slice::from_ref(&release.group))?;
                self.apply_release(hash, entry, release)
            }
            Op::Rollback(rollback) => {
                may(&[Admin, Developer, Operator], "roll back")?;
                in_scope(std::slice::from_ref(&rollback.group))?;
                self.apply_rollback(hash, rollback)
            }
            Op::EStop {
                groups,
                reason,
                everything,
            } => {
                may(&[Admin, Operator], "stop")?;
                in_scope(groups)?;
                self.stop(hash, entry, groups, reason, *everything);
                Ok(())
            }
            Op::Resume { groups } => {
                may(&[Admin, Operator], "resume")?;
                in_scope(groups)?;
                self.resume(groups, in_past);
                Ok(())
            }
            Op::RotateMember(proof) => {
                may(&[Admin], "rotate keys")?;
                in_scope(self.groups_of(&proof.old))?;
                self.apply_rotate_member(proof)
            }
            Op::RotateRoot { new, possession } => {
                self.apply_rotate_root(&entry.author, new, possession)
            }
        }
    }

    /// Refuses a key revoked for good (rotation is the way back) or rotated away.
    pub(crate) fn not_revoked(&self, key: &MemberKey) -> Result<(), Refusal> {
        if let Some(new) = self.retired.get(key) {
            return Err(Refusal::Retired {
                old: *key,
                new: *new,
            });
        }
        if self.revoked.contains_key(key) {
            return Err(Refusal::Revoked(*key));
        }
        Ok(())
    }

    pub(crate) fn check_name(&self, member: &MemberKey, name: &str) -> Result<(), Refusal> {
        let taken = self
            .members
            .values()
            .any(|m| m.name == name && m.key != *member);
        if taken {
            return Err(Refusal::NameTaken(name.to_owned()));
        }
        Ok(())
    }

    /// A release or rollback must raise its group's sequence (checked before anything
    /// changes, so a refused entry leaves no trace in the state).
    fn check_seq(&self, group: &str, seq: u64) -> Result<(), Refusal> {
        let current = self.groups.get(group).map_or(0, |g| g.seq);
        if seq <= current {
            return Err(Refusal::StaleSequence {
                group: group.to_owned(),
                seq,
                current,
            });
        }
        Ok(())
    }

    fn apply_release(
        &mut self,
        hash: EntryHash,
        entry: &Entry,
        release: &Release,
    ) -> Result<(), Refusal> {
        self.check_seq(&release.group, release.seq)?;
        let group = self.groups.entry(release.group.clone()).or_default();
        group.seq = release.seq;
        Arc::make_mut(&mut group.releases).push(ReleaseRecord {
            hash,
            author: entry.author,
            at: entry.at,
            release: release.clone(),
        });
        group.current = Some(group.releases.len() - 1);
        group.changed_by = Some(hash);
        Ok(())
    }

    fn apply_rollback(&mut self, hash: EntryHash, rollback: &Rollback) -> Result<(), Refusal> {
        self.check_seq(&rollback.group, rollback.seq)?;
        let Some(group) = self.groups.get_mut(&rollback.group) else {
            return Err(Refusal::NoRollbackTarget {
                group: rollback.group.clone(),
                what: "at all".to_owned(),
            });
        };
        let current = group.current;
        let target = match &rollback.to_version {
            Some(version) => group
                .releases
                .iter()
                .rposition(|r| &r.release.version == version),
            None => current.and_then(|i| i.checked_sub(1)),
        };
        let Some(target) = target.filter(|&t| Some(t) != current) else {
            return Err(Refusal::NoRollbackTarget {
                group: rollback.group.clone(),
                what: rollback
                    .to_version
                    .clone()
                    .unwrap_or_else(|| "before the current one".to_owned()),
            });
        };
        group.seq = rollback.seq;
        group.current = Some(target);
        group.changed_by = Some(hash);
        Ok(())
    }
}
