//! A robot's signed status: what it runs and how it is. Status is not part of the log (it
//! changes all the time); robots sign it so that whoever relays it cannot alter it, publish
//! it on change and periodically, and answer queries with it.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::ids::{EntryHash, FleetId, MemberKey};
use crate::sig::{self, Sig};

const STATUS_DOMAIN: &[u8] = b"peercompute-fleet/1 status\0";

/// Where a robot is with one group's release (ordered as an apply goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// Known, not started (waiting for an earlier apply, or stopped by an e-stop).
    Pending,
    /// Pulling the image.
    Fetching,
    /// Started beside the old one, waiting for it to be healthy.
    Starting,
    /// Serving.
    Healthy,
    /// Never became healthy: the previous release kept serving.
    RolledBack,
    /// Could not be applied and nothing was serving before (see `reason`).
    Failed,
}

impl Phase {
    /// The lowercase word people read.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Fetching => "fetching",
            Phase::Starting => "starting",
            Phase::Healthy => "healthy",
            Phase::RolledBack => "rolled back",
            Phase::Failed => "failed",
        }
    }

    /// Whether the robot is done with this release (well or badly).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Healthy | Phase::RolledBack | Phase::Failed)
    }
}

/// One group's app on a robot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub group: String,
    /// The release entry being applied or applied last.
    pub release: EntryHash,
    pub version: String,
    pub phase: Phase,
    /// The version serving now (the previous one after a rollback).
    pub serving: Option<String>,
    /// The public URL it is served at, when the robot has a gateway.
    pub url: Option<String>,
    /// How long the last apply took, in milliseconds.
    pub apply_ms: Option<u64>,
    /// Why it was rolled back or failed: what failed and the container's last log lines.
    pub reason: Option<String>,
    /// When the phase last changed (Unix milliseconds, the robot's clock).
    pub changed_at_ms: u64,
}

/// How a robot is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub fleet: FleetId,
    pub robot: MemberKey,
    /// The robot's clock (Unix milliseconds).
    pub at_ms: u64,
    pub agent: String,
    pub uptime_secs: u64,
    /// Entries in the robot's copy of the log.
    pub log_len: u64,
    pub apps: Vec<AppStatus>,
    /// Machine load: CPU use over the last interval (per mille of all cores), memory and disk.
    pub cpu_permille: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_free_bytes: u64,
    /// The robot's last finished applies, oldest first: at most [`MAX_HISTORY_PER_GROUP`]
    /// per group and [`MAX_HISTORY`] in all (what `peerctl fleet metrics` counts).
    pub history: Vec<Outcome>,
    /// The group names this robot serves or asked for (`<app>.<domain>`, served by every
    /// robot of the group), one per group at most.
    pub group_names: Vec<GroupName>,
}

/// A group's shared name as one robot holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupName {
    pub group: String,
    /// The app's name, which the group serves at `<name>.<domain>`.
    pub name: String,
    /// The URL the gateway confirmed (`None`: not confirmed yet, or refused).
    pub url: Option<String>,
    /// Why the gateway refused it (the robot still serves its own `<app>-<robot>`).
    pub refused: Option<String>,
}

/// Most [`Outcome`]s a robot keeps (and reports) per group.
pub const MAX_HISTORY_PER_GROUP: usize = 20;
/// Most [`Outcome`]s one status report carries, whatever the number of groups (about 60
/// bytes each: a status stays a few kilobytes).
pub const MAX_HISTORY: usize = 64;

/// How one apply of a release ended on a robot: one row of the robot's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub group: String,
    /// The release entry applied (after a rollback: the earlier release it returned to).
    pub release: EntryHash,
    pub version: String,
    /// A final phase: healthy, rolled back or failed.
    pub phase: Phase,
    /// How long the apply took, in milliseconds (absent for a release re-adopted at start).
    pub apply_ms: Option<u64>,
    /// When it ended (Unix milliseconds, the robot's clock).
    pub at_ms: u64,
}

/// A status report and the robot's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatus {
    pub report: StatusReport,
    pub signature: Sig,
}

impl SignedStatus {
    /// Signs `report` with the robot's key.
    pub fn sign(report: StatusReport, key: &SigningKey) -> Self {
        let body = postcard::to_allocvec(&report).expect("a StatusReport always serializes");
        let signature = sig::sign(key, STATUS_DOMAIN, &body);
        SignedStatus { report, signature }
    }

    /// Whether the robot named in the report signed it.
    pub fn verify(&self) -> bool {
        postcard::to_allocvec(&self.report).is_ok_and(|body| {
            sig::verify(&self.report.robot.0, STATUS_DOMAIN, &body, &self.signature)
        })
    }
}
