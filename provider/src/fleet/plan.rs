//! The reconciler's pure core: what the fleet log wants this robot to run ([`FleetState`]),
//! against what it runs ([`AppliedFleet`]), gives a list of [`Action`]s. No Docker, no clock,
//! no I/O: the applier (`apply`) carries the actions out and records the outcome, which the
//! next call to [`plan`] reads back.
//!
//! Rules: for every group this robot is a member of, the group's desired release
//! ([`GroupState::desired`](peercompute_fleet::GroupState::desired)) is applied unless it is
//! the one serving already, or the one that failed its health gate last (a failed release is
//! not retried in a loop; a new release or a rollback changes the desired entry). A group
//! under an emergency stop starts nothing new ([`Action::Hold`]); once resumed, the container
//! the stop kept is started again first ([`Action::Resume`]), then the planner looks again. Apps of groups this robot left are removed.
//! A release is admitted like a `deploy` ([`admit`]): its spec passes the same schema checks,
//! and it must fit this robot's [`Limits`] beside the apps other groups run here (the app it
//! replaces does not count), and the devices it names must be granted to the fleet by this
//! machine's owner, present, and not held by another group's app when unshared; one that
//! does not is refused, nothing started. (Volume space is admitted by the applier, which
//! reserves it.)

use peercompute_fleet::{FleetState, MemberKey, ReleaseRecord};
use peercompute_runtime::{AdmissionError, Limits, Resources, Usage};
use peercompute_tunnel_proto::DeployRequest;

use super::applied::Applied;
use super::estop::stop_for;
use crate::deploy::{DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_BYTES};
use crate::devices::{DeviceGrants, Holder, Requester};

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
    /// The group's stop was lifted and its serving container was kept stopped: start it again
    /// (or, when it is gone, forget it so its release is applied again).
    Resume { group: String },
    /// This robot is no longer in `group`: stop its app and withdraw its route.
    Remove { group: String },
    /// `release` is not admitted here (`reason` says why, with the numbers): record it as
    /// failed, start nothing, keep the serving release.
    Refuse {
        group: String,
        release: Box<ReleaseRecord>,
        reason: String,
    },
}

/// What a release's app holds on this robot: its spec's CPU and memory, or the defaults a
/// `deploy` gets.
pub(crate) fn resources_of(spec: &DeployRequest) -> Resources {
    Resources {
        cpu_millis: spec.cpu_millis.unwrap_or(DEFAULT_CPU_MILLIS),
        memory_bytes: spec.memory_bytes.unwrap_or(DEFAULT_MEMORY_BYTES),
    }
}

/// What this robot admits releases against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules<'a> {
    pub(crate) limits: &'a Limits,
    pub(crate) devices: &'a DeviceGrants,
}

/// Whether a release's `spec` may run here: the schema checks of a `deploy`, then `limits`
/// against what the apps of the other groups (`others`) hold, then the devices it names
/// (granted to `fleet`, present, and, when unshared, not among `held` by other groups). The
/// refusal names the limit and the numbers, or says who can grant the device.
pub(crate) fn admit(
    spec: &DeployRequest,
    rules: Rules<'_>,
    others: Usage,
    fleet: &Requester,
    held: &[String],
) -> Result<(), String> {
    spec.validate()
        .map_err(|e| format!("the release's spec is refused as a deploy would be: {e}"))?;
    let refused = |e: crate::devices::DeviceRefusal| {
        format!("refused by this robot: {e}; nothing was started")
    };
    let devices = rules
        .devices
        .authorize(fleet, &spec.devices)
        .map_err(refused)?;
    DeviceGrants::check_free(&devices, held.iter().map(String::as_str)).map_err(refused)?;
    rules.limits.check(others, resources_of(spec)).map_err(|e| {
        let limit = match e {
            AdmissionError::TooManyDeploys { .. } => "--max-deploys",
            AdmissionError::Cpu { .. } => "--max-cpu",
            AdmissionError::Memory { .. } => "--max-memory",
            AdmissionError::Empty { .. } | AdmissionError::Duplicate { .. } => "limits",
        };
        format!("refused by this robot's {limit}: {e}; nothing was started")
    })
}

/// What this robot should do now in fleet `fleet` (see the module docs); `requester` is the
/// fleet as device grants see it.
pub(crate) fn plan(
    state: &FleetState,
    me: &MemberKey,
    fleet: &str,
    all: &Applied,
    rules: Rules<'_>,
    requester: &Requester,
) -> Vec<Action> {
    let mine = state.groups_of(me);
    let this_fleet = all.fleet(fleet);
    let applied = &this_fleet;
    let mut actions = Vec::new();
    for group in mine {
        // A fleet-wide stop covers groups with no release yet too.
        if let Some(reason) = stop_for(state, group) {
            actions.push(Action::Hold {
                group: group.clone(),
                reason: reason.to_owned(),
            });
            continue;
        }
        let Some(gs) = state.groups.get(group) else {
            continue;
        };
        let current = applied.groups.get(group);
        let serving = current.and_then(|a| a.serving.as_ref());
        if serving.is_some_and(|s| s.stopped.is_some()) {
            actions.push(Action::Resume {
                group: group.clone(),
            });
            continue;
        }
        let Some(desired) = gs.desired() else {
            continue;
        };
        if serving.is_some_and(|s| s.release == desired.hash.to_string()) {
            continue;
        }
        let others = all.usage_except(fleet, group);
        let mut held = all.devices_except(fleet, group);
        held.extend(rules.devices.held_by_others(Holder::Fleet));
        let admitted = admit(&desired.release.spec, rules, others, requester, &held);
        let failed = current
            .and_then(|a| a.failed.as_ref())
            .filter(|f| f.release == desired.hash.to_string());
        // A release that failed its health gate is not retried (a newer release or a rollback
        // moves on); one this robot refused for its limits is, once it fits — the limits were
        // raised at a restart, or another group's app left — and not refused again meanwhile.
        if failed.is_some_and(|f| !f.refused || admitted.is_err()) {
            continue;
        }
        let action = match admitted {
            Ok(()) => Action::Apply {
                group: group.clone(),
                release: Box::new(desired.clone()),
            },
            Err(reason) => Action::Refuse {
                group: group.clone(),
                release: Box::new(desired.clone()),
                reason,
            },
        };
        actions.push(action);
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
    use crate::fleet::applied::{AppliedFleet, AppliedGroup, Failure, Serving};

    const NOW: u64 = 1_800_000_000;
    const FLEET: &str = "pcfTest";
    const M: u64 = 1 << 20;

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
            self.plan_within(applied, &Limits::default())
        }

        fn plan_within(&self, applied: &AppliedFleet, limits: &Limits) -> Vec<Action> {
            self.plan_with(applied, limits, &DeviceGrants::default())
        }

        fn plan_with(
            &self,
            applied: &AppliedFleet,
            limits: &Limits,
            devices: &DeviceGrants,
        ) -> Vec<Action> {
            let mut all = Applied::default();
            all.fleets.insert(FLEET.into(), applied.clone());
            let state = self.log.state().expect("state");
            let requester = Requester::Fleet {
                id: state.fleet,
                name: state.name.clone(),
                name_shared: false,
            };
            plan(
                state,
                &self.robot,
                FLEET,
                &all,
                Rules { limits, devices },
                &requester,
            )
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
                Action::Resume { group } => format!("resume {group}"),
                Action::Remove { group } => format!("remove {group}"),
                Action::Refuse { group, reason, .. } => format!("refuse {group}: {reason}"),
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
        w.write(Op::estop(vec!["production".into()], "arm hit a wall"));
        assert_eq!(
            applied_hash(&w.plan(&AppliedFleet::default())),
            ["hold production"]
        );
        w.write(Op::Resume {
            groups: vec!["production".into()],
        });
        assert!(applied_hash(&w.plan(&AppliedFleet::default()))[0].starts_with("apply"));
        // The container the stop kept is started again first, whatever the release.
        let mut kept = AppliedFleet::default();
        kept.groups.insert(
            "production".into(),
            AppliedGroup {
                serving: Some(Serving {
                    release: "an older release".into(),
                    stopped: Some("arm hit a wall".into()),
                    ..Serving::default()
                }),
                ..AppliedGroup::default()
            },
        );
        assert_eq!(applied_hash(&w.plan(&kept)), ["resume production"]);
        w.write(Op::estop(vec!["production".into()], "again"));
        assert_eq!(applied_hash(&w.plan(&kept)), ["hold production"]);
    }

    #[test]
    fn a_fleet_wide_stop_covers_groups_released_later() {
        let mut w = world(&["production", "staging"]);
        w.release("production", 1, "v1");
        w.write(Op::estop(Vec::new(), "all hands"));
        let held = ["hold production", "hold staging"];
        assert_eq!(applied_hash(&w.plan(&AppliedFleet::default())), held);
        w.release("staging", 1, "s1");
        assert_eq!(applied_hash(&w.plan(&AppliedFleet::default())), held);
        w.write(Op::Resume { groups: Vec::new() });
        assert_eq!(w.plan(&AppliedFleet::default()).len(), 2, "both applied");
    }

    #[test]
    fn an_emergency_stop_kills_the_groups_containers_found_by_label() {
        use std::collections::HashMap;

        use crate::fleet::estop::stop_plan;
        let mut w = world(&["production", "staging"]);
        w.release("production", 1, "v1");
        let labels = |provider: &str, name: &str| {
            HashMap::from([
                (
                    peercompute_runtime::LABEL_PROVIDER.to_owned(),
                    provider.to_owned(),
                ),
                (peercompute_runtime::LABEL_NAME.to_owned(), name.to_owned()),
            ])
        };
        let fleet = w.log.state().expect("state").fleet;
        let grouped = |group: &str, name: &str| {
            let mut l = labels("me/fleet", name);
            l.insert(
                peercompute_runtime::LABEL_FLEET_GROUP.to_owned(),
                format!("{fleet}/{group}"),
            );
            l
        };
        let running = vec![
            ("mine".to_owned(), labels("me/fleet", "web-r1")),
            ("a deploy".to_owned(), labels("me", "web-r1")),
            ("other app".to_owned(), labels("me/fleet", "cam-r1")),
            ("labelled".to_owned(), grouped("production", "new-r1")),
            ("staging's".to_owned(), grouped("staging", "web-r1")),
        ];
        let plan_now = |w: &World| {
            let state = w.log.state().expect("state");
            stop_plan(std::slice::from_ref(state), &w.robot, "me/fleet", &running)
        };
        assert!(plan_now(&w).is_empty(), "no stop yet");
        w.write(Op::estop(vec!["staging".into()], "drill"));
        let ids = |kills: Vec<crate::fleet::estop::StopAction>| {
            kills.into_iter().map(|k| k.container).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(plan_now(&w)),
            ["staging's"],
            "staging has no release: only its labelled container, not web-r1 by route"
        );
        w.write(Op::estop(vec!["production".into()], "arm hit a wall"));
        let kills = plan_now(&w);
        assert_eq!(kills.len(), 3, "{kills:?}");
        assert_eq!(
            (kills[0].container.as_str(), kills[0].route.as_str()),
            ("mine", "web-r1"),
            "matched by route (no group label)"
        );
        assert_eq!(
            (kills[1].container.as_str(), kills[1].route.as_str()),
            ("labelled", "new-r1"),
            "matched by its group label, whatever its app"
        );
        assert_eq!(kills[0].reason, "arm hit a wall");
        assert_eq!(kills[2].reason, "drill");
        w.write(Op::Resume {
            groups: vec!["production".into()],
        });
        assert_eq!(ids(plan_now(&w)), ["staging's"], "production resumed");
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
            refused: false,
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

    fn spec(cpu_millis: Option<u32>, memory_bytes: Option<u64>) -> DeployRequest {
        DeployRequest {
            name: Some("web".into()),
            cpu_millis,
            memory_bytes,
            ..DeployRequest::new(format!("127.0.0.1:5000/web@sha256:{}", "ab".repeat(32)), 80)
        }
    }

    /// An unshared device a deployment holds (published by the deploy path) is refused to a
    /// release; once the deployment lets it go, the release is applied.
    #[test]
    fn a_device_a_deployment_holds_is_refused_to_a_release() {
        let mut w = world(&["production"]);
        let grants = DeviceGrants::new(
            vec!["name=arm,path=/dev/null,fleets=f".parse().expect("a grant")],
            false,
        );
        let entry = w.write(Op::Release(Release {
            group: "production".into(),
            seq: 1,
            version: "v1".into(),
            spec: DeployRequest {
                name: Some("web".into()),
                devices: vec!["arm".into()],
                ..DeployRequest::new(format!("127.0.0.1:5000/web@sha256:{}", "ab".repeat(32)), 80)
            },
            health: HealthCheck {
                path: None,
                timeout_secs: 10,
            },
        }));
        grants.publish_held(Holder::Deploys, vec!["arm".into()]);
        let limits = Limits::default();
        let actions = applied_hash(&w.plan_with(&AppliedFleet::default(), &limits, &grants));
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(
            actions[0]
                .starts_with("refuse production: refused by this robot: device `arm` is in use"),
            "{actions:?}"
        );
        grants.publish_held(Holder::Deploys, Vec::new());
        assert_eq!(
            applied_hash(&w.plan_with(&AppliedFleet::default(), &limits, &grants)),
            vec![format!("apply production {}", entry.hash())]
        );
    }

    /// Devices are admitted for the fleet (by name or id) as the owner granted them; an
    /// unshared one another group's app holds is refused; nothing else is named.
    #[test]
    fn device_admission_table() {
        let lekiwi = FleetId(key(1).verifying_key().to_bytes());
        let grants = DeviceGrants::new(
            [
                "name=arm,path=/dev/null,fleets=lekiwi".to_owned(),
                format!("name=cam,path=/dev/zero,shared=true,fleets={lekiwi}"),
                "name=gone,path=/dev/pc-unplugged,fleets=lekiwi".to_owned(),
                "name=other,path=/dev/null,fleets=warehouse".to_owned(),
            ]
            .iter()
            .map(|g| g.parse().expect("a grant"))
            .collect(),
            false,
        );
        let limits = Limits::default();
        let rules = Rules {
            limits: &limits,
            devices: &grants,
        };
        let fleet = |name: &str| Requester::Fleet {
            id: lekiwi,
            name: name.into(),
            name_shared: false,
        };
        let with = |names: &[&str]| DeployRequest {
            devices: names.iter().map(|n| (*n).to_owned()).collect(),
            ..spec(None, None)
        };
        // (devices asked, the fleet's name, held by other groups, the refusal)
        type Case<'a> = (&'a [&'a str], &'a str, &'a [&'a str], Option<&'a str>);
        let cases: &[Case<'_>] = &[
            (&["arm"], "lekiwi", &[], None),
            (&["cam"], "renamed", &["cam"], None),
            (&["arm", "cam"], "lekiwi", &["cam"], None),
            (
                &["arm"],
                "lekiwi",
                &["arm"],
                Some("device `arm` is in use by another running container and is not shared"),
            ),
            (
                &["leg"],
                "lekiwi",
                &[],
                Some("grants no device named `leg`"),
            ),
            (
                &["other"],
                "lekiwi",
                &[],
                Some("device `other` is not granted to you (fleet lekiwi, pcf"),
            ),
            (
                &["gone"],
                "lekiwi",
                &[],
                Some("(/dev/pc-unplugged) is not present"),
            ),
        ];
        for (names, name, held, refusal) in cases {
            let held: Vec<String> = held.iter().map(|h| (*h).to_owned()).collect();
            let got = admit(&with(names), rules, Usage::default(), &fleet(name), &held);
            match refusal {
                None => assert_eq!(got, Ok(()), "{names:?}"),
                Some(text) => {
                    let reason = got.expect_err("refused");
                    assert!(
                        reason.contains(text) && reason.ends_with("nothing was started"),
                        "{reason} should say {text}"
                    );
                    assert!(!reason.contains("warehouse"), "{reason}");
                }
            }
        }
    }

    #[test]
    fn admission_table() {
        let limits = Limits {
            max_cpu_millis: 2000,
            max_memory_bytes: 1024 * M,
            max_deploys: 3,
        };
        let used = |cpu_millis, memory_bytes, deploys| Usage {
            cpu_millis,
            memory_bytes,
            deploys,
        };
        let mut bad_env = spec(None, None);
        bad_env.env = vec![peercompute_tunnel_proto::EnvVar {
            key: "A=B".into(),
            value: "x".into(),
        }];
        let cases: &[(DeployRequest, Usage, Option<&str>)] = &[
            (spec(None, None), used(0, 0, 0), None),
            (spec(Some(2000), Some(1024 * M)), used(0, 0, 0), None),
            (
                spec(Some(8000), None),
                used(0, 0, 0),
                Some("--max-cpu: asked 8000m CPU, 2000m available of 2000m"),
            ),
            (
                spec(None, Some(2048 * M)),
                used(0, 0, 0),
                Some("--max-memory: asked 2 GiB memory, 1 GiB available of 1 GiB"),
            ),
            (
                spec(Some(1000), None),
                used(1500, 0, 1),
                Some("--max-cpu: asked 1000m CPU, 500m available of 2000m"),
            ),
            (
                spec(None, None),
                used(0, 0, 3),
                Some("--max-deploys: this provider already runs 3 of at most 3"),
            ),
            (bad_env, used(0, 0, 0), Some("refused as a deploy would be")),
        ];
        let none = DeviceGrants::default();
        let rules = Rules {
            limits: &limits,
            devices: &none,
        };
        let fleet = Requester::Fleet {
            id: FleetId([9; 32]),
            name: "f".into(),
            name_shared: false,
        };
        for (spec, used, refusal) in cases {
            let got = admit(spec, rules, *used, &fleet, &[]);
            match refusal {
                None => assert_eq!(got, Ok(()), "{spec:?}"),
                Some(text) => {
                    let reason = got.expect_err("refused");
                    assert!(reason.contains(text), "{reason} should say {text}");
                }
            }
        }
    }

    #[test]
    fn a_release_over_my_limits_is_refused_and_the_serving_one_stays() {
        let mut w = world(&["production"]);
        let v1 = w.release("production", 1, "v1");
        let limits = Limits {
            max_cpu_millis: 400,
            ..Limits::default()
        };
        // v1 asks the default 500m: refused, nothing applied.
        let actions = w.plan_within(&serving("production", &v1), &Limits::default());
        assert!(actions.is_empty(), "v1 serves");
        let v2 = w.release("production", 2, "v2");
        let refused = w.plan_within(&serving("production", &v1), &limits);
        assert_eq!(
            applied_hash(&refused),
            [
                "refuse production: refused by this robot's --max-cpu: asked 500m CPU, 400m available of 400m; nothing was started"
            ]
        );
        let Action::Refuse { release, .. } = &refused[0] else {
            panic!("{refused:?}");
        };
        assert_eq!(release.hash, v2.hash());
        // Positive control: within the limits, v2 is applied.
        assert_eq!(
            applied_hash(&w.plan_within(&serving("production", &v1), &Limits::default())),
            [format!("apply production {}", v2.hash())]
        );
    }

    #[test]
    fn the_app_being_replaced_does_not_count_but_other_groups_do() {
        let mut w = world(&["production", "staging"]);
        let v1 = w.release("production", 1, "v1");
        let mut applied = serving("production", &v1);
        applied
            .groups
            .get_mut("production")
            .and_then(|g| g.serving.as_mut())
            .expect("serving")
            .cpu_millis = 500;
        let limits = Limits {
            max_cpu_millis: 700,
            ..Limits::default()
        };
        let v2 = w.release("production", 2, "v2");
        assert_eq!(
            applied_hash(&w.plan_within(&applied, &limits)),
            [format!("apply production {}", v2.hash())],
            "v2 replaces v1: v1's 500m is not counted"
        );
        w.release("staging", 1, "s1");
        let actions = applied_hash(&w.plan_within(&applied, &limits));
        assert!(
            actions.iter().any(|a| a.starts_with("refuse staging")
                && a.contains("asked 500m CPU, 200m available of 700m")),
            "staging must fit beside production's 500m: {actions:?}"
        );
    }

    #[test]
    fn a_release_refused_for_my_limits_is_applied_once_it_fits_and_not_refused_again_meanwhile() {
        let mut w = world(&["production"]);
        let v1 = w.release("production", 1, "v1");
        let v2 = w.release("production", 2, "v2");
        let mut applied = serving("production", &v1);
        applied.groups.get_mut("production").expect("group").failed = Some(Failure {
            release: v2.hash().to_string(),
            version: "v2".into(),
            reason: "refused by this robot's --max-cpu".into(),
            refused: true,
        });
        let tight = Limits {
            max_cpu_millis: 400,
            ..Limits::default()
        };
        assert!(
            w.plan_within(&applied, &tight).is_empty(),
            "still over the limits: not refused again on every reconcile"
        );
        assert_eq!(
            applied_hash(&w.plan_within(&applied, &Limits::default())),
            [format!("apply production {}", v2.hash())],
            "the limits were raised: applied"
        );
        // Positive control: the same release failed by its health gate stays failed.
        applied
            .groups
            .get_mut("production")
            .and_then(|g| g.failed.as_mut())
            .expect("failed")
            .refused = false;
        assert!(w.plan_within(&applied, &Limits::default()).is_empty());
    }
}
