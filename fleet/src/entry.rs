//! What a fleet log entry says: an [`Entry`] names its fleet, its parents (the heads its
//! author had seen, which makes the log a hash-chained DAG), a Lamport clock, its author and
//! the author's wall-clock time, and one [`Op`]. The rules an entry must follow by itself
//! (names are DNS labels, lists are bounded and sorted, a release is pinned by digest) are
//! [`Entry::validate`]; who may write it is `authority`'s job.

use std::collections::BTreeSet;

use peercompute_tunnel_proto::{DeployRequest, InvalidMessage, validate_name};
use serde::{Deserialize, Serialize};

use crate::ids::{EntryHash, FleetId, MemberKey};
use crate::rotation::RotationProof;
use crate::sig::Sig;

/// Most parents one entry names (concurrent heads merged at once).
pub const MAX_PARENTS: usize = 16;
/// Most groups one member, grant or invite names.
pub const MAX_GROUPS: usize = 32;
/// Longest free text (a fleet name, a version, a reason), in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest health-check path, in bytes.
pub const MAX_HEALTH_PATH: usize = 256;
/// Longest health timeout a release may ask for, in seconds.
pub const MAX_HEALTH_TIMEOUT_SECS: u32 = 3600;

/// One entry of a fleet log, before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The fleet it belongs to.
    pub fleet: FleetId,
    /// The heads its author had seen: sorted, no duplicates, empty only for the genesis.
    pub parents: Vec<EntryHash>,
    /// Lamport clock: 0 for the genesis, else 1 + the largest clock of its parents.
    pub clock: u64,
    /// Who signed it.
    pub author: MemberKey,
    /// The author's clock when it was written, in Unix seconds (never before a parent's).
    pub at: u64,
    /// What it does.
    pub op: Op,
}

/// What an entry does. Its wire form is `release_wire::OpWire` (a release with volumes or
/// devices travels as a variant of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    into = "crate::release_wire::OpWire",
    from = "crate::release_wire::OpWire"
)]
pub enum Op {
    /// Starts the fleet; signed by the fleet key.
    Genesis { name: String },
    /// Admits robots holding a join token made with `invite_key`'s secret half.
    Invite(Invite),
    /// A robot enrols itself with a join token (authored by the robot).
    Join(Join),
    /// An admin enrols a robot whose key it already has.
    Enroll {
        member: MemberKey,
        name: String,
        groups: Vec<String>,
    },
    /// Replaces a member's groups.
    SetGroups {
        member: MemberKey,
        groups: Vec<String>,
    },
    /// Gives a key a role (replacing any earlier grant).
    Grant(Grant),
    /// Takes a key's role away.
    Ungrant { member: MemberKey },
    /// A new release for a group.
    Release(Release),
    /// Returns a group to an earlier release.
    Rollback(Rollback),
    /// Stops every app of the groups: robots kill their containers at once and start nothing
    /// of them until a resume. No group: every group, those released later too. `everything`
    /// (no group only) also halts what robots run outside the fleet.
    EStop {
        groups: Vec<String>,
        reason: String,
        everything: bool,
    },
    /// Lifts an emergency stop.
    Resume { groups: Vec<String> },
    /// Revokes a key: its later entries are refused, and it is no longer a member.
    Revoke { member: MemberKey, reason: String },
    /// Moves a member's name, groups and grant to a new key the old one vouched for; the old
    /// key is retired (see `rotation`).
    RotateMember(RotationProof),
    /// The current root hands the fleet to a new root key, which proves it is held.
    RotateRoot { new: MemberKey, possession: Sig },
}

impl Op {
    /// An emergency stop of `groups` (empty: every group, those released later too).
    pub fn estop(groups: Vec<String>, reason: impl Into<String>) -> Op {
        Op::EStop {
            groups,
            reason: reason.into(),
            everything: false,
        }
    }

    /// An emergency stop of every group and of what robots run outside the fleet
    /// (`peerctl fleet estop --all`).
    pub fn estop_everything(reason: impl Into<String>) -> Op {
        Op::EStop {
            groups: Vec::new(),
            reason: reason.into(),
            everything: true,
        }
    }

    /// The op's name as people read it in the log (`release`, `e-stop`, …). No wildcard: a
    /// new op must be named here.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Genesis { .. } => "genesis",
            Op::Invite(_) => "invite",
            Op::Join(_) => "join",
            Op::Enroll { .. } => "enroll",
            Op::SetGroups { .. } => "set-groups",
            Op::Grant(_) => "grant",
            Op::Ungrant { .. } => "ungrant",
            Op::Release(_) => "release",
            Op::Rollback(_) => "rollback",
            Op::EStop { .. } => "e-stop",
            Op::Resume { .. } => "resume",
            Op::Revoke { .. } => "revoke",
            Op::RotateMember(_) => "rotate-member",
            Op::RotateRoot { .. } => "rotate-root",
        }
    }
}

/// Roles, from most to least power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Enrol, invite, grant, release, roll back, stop.
    Admin,
    /// Release and roll back in its groups.
    Developer,
    /// Roll back and stop in its groups, view.
    Operator,
    /// View only.
    Viewer,
}

impl Role {
    /// The lowercase name people type.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "developer" => Ok(Role::Developer),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!(
                "`{s}` is not a role: use admin, developer, operator or viewer"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An invitation for robots to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The public half of the token's secret: a join proves it holds the secret.
    pub invite_key: MemberKey,
    /// Groups a robot joins with.
    pub groups: Vec<String>,
    /// Robots joining name themselves `<prefix>-<suffix>`.
    pub name_prefix: Option<String>,
    /// No join after this (Unix seconds).
    pub expires_at: u64,
    /// How many robots may join with it.
    pub uses: u32,
}

/// A robot's enrolment with a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The invite entry.
    pub invite: EntryHash,
    /// The robot's name (a DNS label).
    pub name: String,
    /// The invite key's signature over the fleet and the robot's key (see `invite`).
    pub proof: Sig,
}

/// A role given to a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub member: MemberKey,
    pub role: Role,
    /// The groups the role acts on; empty for every group.
    pub groups: Vec<String>,
    /// Not honoured after this (Unix seconds).
    pub expires_at: Option<u64>,
}

/// A signed release: what every robot of `group` should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub group: String,
    /// Grows with every release or rollback of the group; an entry that does not raise it is
    /// refused (rollback attack).
    pub seq: u64,
    /// The version people name it by (`v3`, `2026-12-06.1`).
    pub version: String,
    /// The container: image pinned by digest (`repo@sha256:…`), port, env, resources; its
    /// `name` is the app name, so a robot serves it at `<app>-<robot>`.
    pub spec: DeployRequest,
    pub health: HealthCheck,
}

impl Release {
    /// The app's name (the spec's name; validated to be present).
    pub fn app(&self) -> &str {
        self.spec.name.as_deref().unwrap_or_default()
    }
}

/// How a robot decides a new release is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// An HTTP path that must answer 2xx; without one, the port must accept connections.
    pub path: Option<String>,
    /// How long the release may take to become healthy, in seconds.
    pub timeout_secs: u32,
}

/// A return to an earlier release of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub group: String,
    /// Raises the group's sequence like a release does.
    pub seq: u64,
    /// The version to return to; the one before the current when absent.
    pub to_version: Option<String>,
}

/// Why an entry breaks a rule it can be checked against alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("the genesis must have no parents and clock 0, and only the genesis may")]
    Genesis,
    #[error("parents must be sorted, distinct and at most {MAX_PARENTS}")]
    Parents,
    #[error("{what} is {len} bytes, at most {max} are allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: {source}")]
    Name {
        what: &'static str,
        source: peercompute_tunnel_proto::NameError,
    },
    #[error("groups must be sorted, distinct, non-empty where required, and at most {MAX_GROUPS}")]
    Groups,
    #[error("the release is invalid: {0}")]
    Spec(#[from] InvalidMessage),
    #[error("a release must pin its image by digest (`repo@sha256:…`), got `{0}`")]
    NotPinned(String),
    #[error("a release must name its app")]
    NoApp,
    #[error("health timeout must be 1..={MAX_HEALTH_TIMEOUT_SECS} s")]
    HealthTimeout,
    #[error("health path must start with `/` and hold no spaces or control characters")]
    HealthPath,
    #[error("an invite must allow at least one use")]
    NoUses,
    #[error("a sequence number starts at 1")]
    SeqZero,
    #[error("an e-stop of everything names no group (it covers them all)")]
    EverythingWithGroups,
    #[error("a key cannot be rotated to itself")]
    SameKey,
}

impl Entry {
    /// Checks the rules an entry must follow by itself.
    pub fn validate(&self) -> Result<(), EntryError> {
        let genesis = matches!(self.op, Op::Genesis { .. });
        if genesis != self.parents.is_empty() || genesis != (self.clock == 0) {
            return Err(EntryError::Genesis);
        }
        if self.parents.len() > MAX_PARENTS || !strictly_sorted(&self.parents) {
            return Err(EntryError::Parents);
        }
        self.op.validate()
    }
}

impl Op {
    fn validate(&self) -> Result<(), EntryError> {
        match self {
            Op::Genesis { name } => text("fleet name", name),
            Op::Invite(invite) => {
                groups(&invite.groups, true)?;
                if let Some(prefix) = &invite.name_prefix {
                    label("name prefix", prefix)?;
                }
                if invite.uses == 0 {
                    return Err(EntryError::NoUses);
                }
                Ok(())
            }
            Op::Join(join) => label("robot name", &join.name),
            Op::Enroll {
                name, groups: g, ..
            } => {
                label("robot name", name)?;
                groups(g, false)
            }
            Op::SetGroups { groups: g, .. } => groups(g, false),
            Op::Grant(grant) => groups(&grant.groups, false),
            Op::Ungrant { .. } => Ok(()),
            Op::Release(release) => release.validate(),
            Op::Rollback(rollback) => {
                label("group", &rollback.group)?;
                if rollback.seq == 0 {
                    return Err(EntryError::SeqZero);
                }
                rollback
                    .to_version
                    .as_deref()
                    .map_or(Ok(()), |v| text("version", v))
            }
            Op::EStop {
                groups: g,
                reason,
                everything,
            } => {
                groups(g, false)?;
                if *everything && !g.is_empty() {
                    return Err(EntryError::EverythingWithGroups);
                }
                text("reason", reason)
            }
            Op::Resume { groups: g } => groups(g, false),
            Op::Revoke { reason, .. } => text("reason", reason),
            Op::RotateMember(proof) if proof.old == proof.new => Err(EntryError::SameKey),
            Op::RotateMember(_) | Op::RotateRoot { .. } => Ok(()),
        }
    }
}

impl Release {
    fn validate(&self) -> Result<(), EntryError> {
        label("group", &self.group)?;
        if self.seq == 0 {
            return Err(EntryError::SeqZero);
        }
        text("version", &self.version)?;
        self.spec.validate()?;
        match self.spec.image.split_once('@') {
            Some((_, digest)) if digest.starts_with("sha256:") && digest.len() == 71 => {}
            _ => return Err(EntryError::NotPinned(self.spec.image.clone())),
        }
        let Some(app) = &self.spec.name else {
            return Err(EntryError::NoApp);
        };
        label("app name", app)?;
        if self.health.timeout_secs == 0 || self.health.timeout_secs > MAX_HEALTH_TIMEOUT_SECS {
            return Err(EntryError::HealthTimeout);
        }
        if let Some(path) = &self.health.path {
            let ok = path.starts_with('/')
                && path.len() <= MAX_HEALTH_PATH
                && !path.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(EntryError::HealthPath);
            }
        }
        Ok(())
    }
}

fn strictly_sorted<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] < w[1])
}

fn text(what: &'static str, s: &str) -> Result<(), EntryError> {
    if s.len() > MAX_TEXT {
        return Err(EntryError::TooLong {
            what,
            len: s.len(),
            max: MAX_TEXT,
        });
    }
    Ok(())
}

fn label(what: &'static str, s: &str) -> Result<(), EntryError> {
    validate_name(s).map_err(|source| EntryError::Name { what, source })
}

fn groups(g: &[String], required: bool) -> Result<(), EntryError> {
    if g.len() > MAX_GROUPS || !strictly_sorted(g) || (required && g.is_empty()) {
        return Err(EntryError::Groups);
    }
    for group in g {
        label("group", group)?;
    }
    Ok(())
}

/// Sorts and dedups groups typed by a person (`production,staging`).
pub fn normalize_groups<I, S>(groups: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let set: BTreeSet<String> = groups
        .into_iter()
        .map(|g| g.as_ref().trim().to_ascii_lowercase())
        .filter(|g| !g.is_empty())
        .collect();
    set.into_iter().collect()
}
