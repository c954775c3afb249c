//! The reconciler's pure core: what the fleet log wants this robot to run ([`FleetState`]),
//! against what it runs ([`AppliedFleet`]), gives a list of [`Action`]s. No Docker, no clock,
//! no I/O: the applier (`apply`) carries the actions out and records the outcome, which the
//! next call to [`plan`] reads back.
//!
//! Rules: for every group this robot is a member of, the group's desired release
//! ([`GroupState::desired`](peercompute_fleet::GroupState::desired)) is applied unless it is
//! the one serving already, or the one that failed its health gate last (a failed release is
//! not retried in a loop; a new release or a rollback changes the desired entry). A group
//! under an emergency stop starts nothing new. Apps of groups this robot left are removed.

use peercompute_fleet::{FleetState, MemberKey, ReleaseRecord};

use super::applied::AppliedFleet;

/// One step the applier takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Run `release` for `group` (a new release, or an earlier one after a rollback).
    Apply {
        group: String,
        release: Box<ReleaseRecord>,
    },
    /// The group is under an emergency stop: nothing new starts (`reason` from the log).
    Hold { group: String, reason: String },
    /// This robot is no longer in `group`: stop its app and withdraw its route.
    Remove { group: String },
}

/// What this robot should do now in one fleet (see the module docs).
pub(crate) fn plan(state: &FleetState, me: &MemberKey, applied: &AppliedFleet) -> Vec<Action> {
    let mine = state.groups_of(me);
    let mut actions = Vec::new();
    for group in mine {
        let Some(gs) = state.groups.get(group) else {
            continue;
        };
        if let Some(reason) = &gs.stopped {
            actions.push(Action::Hold {
                group: group.clone(),
                reason: reason.clone(),
            });
            continue;
        }
        let Some(desired) = gs.desired() else {
            continue;
        };
        let current = applied.groups.get(group);
        let serving = current.and_then(|a| a.serving.as_ref());
        if serving.is_some_and(|s| s.release == desired.hash.to_string()) {
            continue;
        }
        if current
            .and_then(|a| a.failed.as_ref())
            .is_some_and(|f| f.release == desired.hash.to_string())
        {
            continue;
        }
        actions.push(Action::Apply {
            group: group.clone(),
            release: Box::new(desired.clone()),
        });
    }
    for group in applied.groups.keys() {
        let still = mine.contains(group);
        let serving = applied.groups[group].serving.is_some();
        if !still && serving {
            actions.push(Action::Remove {
                group: group.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use peercompute_fleet::{
        FleetId, FleetLog, HealthCheck, Op, Release, Rollback, SignedEntry, normalize_groups,
    };
    use peercompute_tunnel_proto::DeployRequest;

    use super::*;
    use crate::fleet::applied::{AppliedGroup, Failure, Serving};

    const NOW: u64 = 1_800_000_000;

    struct World {
        fleet_key: SigningKey,
        robot: MemberKey,
        log: FleetLog,
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// A fleet with one robot (seed 2) enrolled in `groups`.
    fn world(groups: &[&str]) -> World {
        let fleet_key = key(1);
        let fleet = FleetId(fleet_key.verifying_key().to_bytes());
        let mut log = FleetLog::new(fleet);
        let robot = MemberKey(key(2).verifying_key().to_bytes());
        let mut w = World {
            fleet_key,
            robot,
            log: FleetLog::new(fleet),
        };
        let genesis = log
            .author(&w.fleet_key, Op::Genesis { name: "f".into() }, NOW)
            .expect("genesis");
        log.insert(genesis, NOW).expect("insert");
        w.log = log;
        w.write(Op::Enroll {
            member: robot,
            name: "r1".into(),
            groups: normalize_groups(groups),
        });
        w
    }

    impl World {
        fn write(&mut self, op: Op) -> SignedEntry {
            let e = self.log.author(&self.fleet_key, op, NOW).expect("author");
            self.log.insert(e.clone(), NOW).expect("insert");
            e
        }

        fn release(&mut self, group: &str, seq: u64, version: &str) -> SignedEntry {
            self.write(Op::Release(Release {
                group: group.into(),
                seq,
                version: version.into(),
                spec: DeployRequest {
                    name: Some("web".into()),
                    ..DeployRequest::new(
                        format!("127.0.0.1:5000/web@sha256:{}", "ab".repeat(32)),
                        80,
                    )
                },
                health: HealthCheck {
                    path: None,
                    timeout_secs: 10,
                },
            }))
        }

        fn plan(&self, applied: &AppliedFleet) -> Vec<Action> {
            plan(self.log.state().expect("state"), &self.robot, applied)
        }
    }

    fn serving(group: &str, release: &SignedEntry) -> AppliedFleet {
        let mut applied = AppliedFleet::default();
        applied.groups.insert(
            group.into(),
            AppliedGroup {
                serving: Some(Serving {
                    release: release.hash().to_string(),
                    ..Serving::default()
                }),
                ..AppliedGroup::default()
            },
        );
        applied
    }

    fn applied_hash(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Apply { group, release } => format!("apply {group} {}", release.hash),
                Action::Hold { group, .. } => format!("hold {group}"),
                Action::Remove { group } => format!("remove {group}"),
            })
            .collect()
    }

    #[test]
    fn a_new_release_for_my_group_is_applied() {
        let mut w = world(&["production"]);
        assert!(w.plan(&AppliedFleet::default()).is_empty(), "nothing yet");
        let v1 = w.release("production", 1, "v1");
        assert_eq!(
            applied_hash(&w.plan(&AppliedFleet::default())),
            [format!("apply production {}", v1.hash())]
        );
        assert!(w.plan(&serving("production", &v1)).is_empty(), "v1 serves");
        let v2 = w.release("production", 2, "v2");
        assert_eq!(
            applied_hash(&w.plan(&serving("production", &v1))),
            [format!("apply production {}", v2.hash())]
        );
    }

    #[test]
    fn a_rollback_applies_the_earlier_release() {
        let mut w = world(&["production"]);
        let v1 = w.release("production", 1, "v1");
        let v2 = w.release("production", 2, "v2");
        w.write(Op::Rollback(Rollback {
            group: "production".into(),
            seq: 3,
            to_version: None,
        }));
        assert_eq!(
            applied_hash(&w.plan(&serving("production", &v2))),
            [format!("apply production {}", v1.hash())]
        );
        assert!(w.plan(&serving("production", &v1)).is_empty());
    }

    #[test]
    fn a_release_for_a_group_i_am_not_in_does_nothing() {
        let mut w = world(&["production"]);
        w.release("staging", 1, "v1");
        assert!(w.plan(&AppliedFleet::default()).is_empty());
        // Positive control: the same release for my group is applied.
        let mine = w.release("production", 1, "v1");
        assert_eq!(w.plan(&AppliedFleet::default()).len(), 1, "{mine:?}");
    }

    #[test]
    fn an_emergency_stop_starts_nothing_new() {
        let mut w = world(&["production"]);
        w.release("production", 1, "v1");
        w.write(Op::EStop {
            groups: vec!["production".into()],
            reason: "arm hit a wall".into(),
        });
        assert_eq!(
            applied_hash(&w.plan(&AppliedFleet::default())),
            ["hold production"]
        );
        w.write(Op::Resume {
            groups: vec!["production".into()],
        });
        assert!(applied_hash(&w.plan(&AppliedFleet::default()))[0].starts_with("apply"));
    }

    #[test]
    fn a_release_that_failed_its_health_gate_is_not_retried() {
        let mut w = world(&["production"]);
        let v1 = w.release("production", 1, "v1");
        let v2 = w.release("production", 2, "v2");
        let mut applied = serving("production", &v1);
        applied.groups.get_mut("production").expect("group").failed = Some(Failure {
            release: v2.hash().to_string(),
            version: "v2".into(),
            reason: "unhealthy".into(),
        });
        assert!(w.plan(&applied).is_empty());
        // A newer release is applied again.
        let v3 = w.release("production", 3, "v3");
        assert_eq!(
            applied_hash(&w.plan(&applied)),
            [format!("apply production {}", v3.hash())]
        );
    }

    #[test]
    fn an_app_of_a_group_i_left_is_removed() {
        let mut w = world(&["production"]);
        let v1 = w.release("production", 1, "v1");
        let robot = w.robot;
        w.write(Op::SetGroups {
            member: robot,
            groups: vec!["staging".into()],
        });
        assert_eq!(
            applied_hash(&w.plan(&serving("production", &v1))),
            ["remove production"]
        );
    }
}
