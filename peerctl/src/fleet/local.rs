//! The client's own copy of its fleets' logs, under `<home>/fleets/` (a [`FleetHub`] root:
//! `<home>/fleets/<fleet id>/entries/<hash>.entry`). Every entry peerctl writes is authored
//! on this copy and inserted into it first, so peerctl refuses what a robot would refuse,
//! with the same words, before anything leaves the machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    EntryHash, FleetId, FleetState, InsertError, LoadReport, Op, PushResult, Refusal, SignedEntry,
};
use peercompute_p2p::fleet_hub::{FleetHub, HubPolicy};

use crate::exit::{CliError, Kind};

/// Most fleets and entries the local copy keeps (far above any real fleet).
const MAX_FLEETS: usize = 1024;
const MAX_ENTRIES: usize = 1_000_000;

/// `<home>/fleets`: the hub root, and where fleet keys go by default.
pub(crate) fn fleets_dir(home: &Path) -> PathBuf {
    home.join("fleets")
}

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    peercompute_p2p::fleet_hub::unix_now()
}

/// The local copy of every fleet in `home`.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub(crate) hub: FleetHub,
    root: PathBuf,
    /// Fleets whose files did not all verify on opening.
    pub(crate) damaged: Vec<(FleetId, LoadReport)>,
}

impl Local {
    /// Opens (verifying every entry) the fleets under `<home>/fleets`.
    pub(crate) fn open(home: &Path) -> Result<Self, CliError> {
        let root = fleets_dir(home);
        let policy = HubPolicy {
            // Nobody dials a client: peerctl only asks.
            admit: Arc::new(|_| false),
            accept_new_fleets: true,
            max_fleets: MAX_FLEETS,
            max_entries: MAX_ENTRIES,
        };
        let (hub, damaged) =
            FleetHub::open(&root, policy).map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
        Ok(Self { hub, root, damaged })
    }

    /// The directory one fleet's log is kept in.
    pub(crate) fn dir_of(&self, fleet: &FleetId) -> PathBuf {
        self.root.join(fleet.to_string())
    }

    /// A warning line per damaged fleet (entries that did not verify are left out).
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.damaged
            .iter()
            .filter_map(|(fleet, report)| {
                let first = report.bad.first()?;
                Some(format!(
                    "warning: {} entr{} of fleet {fleet} did not verify and are left out (first: {}: {}); see `peerctl fleet log --verify`",
                    report.bad.len(),
                    if report.bad.len() == 1 { "y" } else { "ies" },
                    first.file,
                    first.reason
                ))
            })
            .collect()
    }

    /// The folded state of `fleet`, or an error saying the local copy lacks it.
    pub(crate) fn state(&self, fleet: &FleetId) -> Result<FleetState, CliError> {
        self.hub
            .with_log(fleet, |log| log.state().cloned())
            .flatten()
            .ok_or_else(|| self.missing(fleet))
    }

    /// Writes an entry doing `op`, signed by `key`, on the current heads of `fleet`, and
    /// stores it here after the checks every member runs.
    pub(crate) fn write(
        &self,
        fleet: FleetId,
        key: &SigningKey,
        op: Op,
    ) -> Result<SignedEntry, CliError> {
        let now = now();
        let checked = self.hub.with_log(&fleet, |log| {
            let entry = log
                .author(key, op, now)
                .map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))?;
            // Checked on a copy first for a typed refusal, then stored through the hub.
            let mut trial = log.clone();
            trial.insert(entry.clone(), now).map_err(refused)?;
            Ok::<_, CliError>(entry)
        });
        let entry = checked.ok_or_else(|| self.missing(&fleet))??;
        self.store(fleet, entry.clone())?;
        Ok(entry)
    }

    fn missing(&self, fleet: &FleetId) -> CliError {
        CliError::new(
            Kind::NotFound,
            format!(
                "no copy of fleet {fleet} here yet: add a gateway that holds it (`peerctl gateways add PEERID@MULTIADDR`) and run the command again"
            ),
        )
    }

    /// Stores an already signed entry (the genesis, say) after the usual checks.
    pub(crate) fn store(&self, fleet: FleetId, entry: SignedEntry) -> Result<EntryHash, CliError> {
        let hash = entry.hash();
        match self.hub.insert(fleet, vec![entry], None).pop() {
            Some(PushResult::Stored(h) | PushResult::Duplicate(h)) => Ok(h),
            Some(PushResult::Refused { reason }) => Err(CliError::new(Kind::BadRequest, reason)),
            None => Err(CliError::new(
                Kind::Other,
                format!("entry {hash} was neither stored nor refused"),
            )),
        }
    }
}

/// A refusal as users meet it: missing rights are a trust failure (exit 3), anything else a
/// bad request (exit 8); the words are the ones every robot would use.
fn refused(e: InsertError) -> CliError {
    let kind = match &e {
        InsertError::Refused {
            refusal:
                Refusal::NotAuthorized(_)
                | Refusal::Revoked(_)
                | Refusal::GrantExpired { .. }
                | Refusal::RoleMayNot { .. }
                | Refusal::OutsideGroups { .. },
            ..
        } => Kind::Trust,
        _ => Kind::BadRequest,
    };
    CliError::new(kind, e.to_string())
}

#[cfg(test)]
mod tests {
    use peercompute_fleet::{Grant, MemberKey, Role};

    use super::*;

    #[test]
    fn refusals_read_as_a_robots_and_leave_nothing_behind() {
        let home = tempfile::tempdir().expect("home");
        let local = Local::open(home.path()).expect("open");
        let (root, viewer) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let fleet = FleetId(root.verifying_key().to_bytes());
        local.hub.hold(fleet).expect("hold");
        local
            .write(fleet, &root, Op::Genesis { name: "t".into() })
            .expect("genesis");
        let grant = Op::Grant(Grant {
            member: MemberKey(viewer.verifying_key().to_bytes()),
            role: Role::Viewer,
            groups: Vec::new(),
            expires_at: None,
        });
        local.write(fleet, &root, grant).expect("grant");
        let enroll = Op::Enroll {
            member: MemberKey([9; 32]),
            name: "bot".into(),
            groups: vec!["production".into()],
        };
        let err = local.write(fleet, &viewer, enroll).expect_err("a viewer");
        assert_eq!(err.kind, Kind::Trust);
        assert!(
            err.message.contains("a viewer may not enrol robots"),
            "{}",
            err.message
        );
        let rollback = Op::Rollback(peercompute_fleet::Rollback {
            group: "production".into(),
            seq: 1,
            to_version: None,
        });
        let err = local
            .write(fleet, &root, rollback)
            .expect_err("nothing to roll back");
        assert_eq!(err.kind, Kind::BadRequest);
        assert!(err.message.contains("no release"), "{}", err.message);
        // Nothing refused was stored, on disk or in memory.
        let reopened = Local::open(home.path()).expect("reopen");
        let held = reopened.hub.with_log(&fleet, |log| log.len());
        assert_eq!(held, Some(2));
        assert!(reopened.warnings().is_empty());
    }
}
