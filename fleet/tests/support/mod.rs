//! A small fleet for the tests: the fleet key, people with roles and robots, and shortcuts to
//! write and insert entries the way peerctl and robots do (and, for attacks, the way they do
//! not).

#![allow(dead_code, unreachable_pub)]

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    Entry, FleetId, FleetLog, Grant, HealthCheck, InsertError, Invite, Join, JoinToken, MemberKey,
    Op, Release, Role, Rollback, RotationProof, SignedEntry, root_possession,
};
use peercompute_tunnel_proto::DeployRequest;

pub const NOW: u64 = 1_780_000_000;

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn member(k: &SigningKey) -> MemberKey {
    MemberKey(k.verifying_key().to_bytes())
}

pub struct World {
    pub fleet_key: SigningKey,
    pub log: FleetLog,
}

impl World {
    /// A fleet with its genesis.
    pub fn new() -> Self {
        let fleet_key = key(1);
        let mut log = FleetLog::new(FleetId(fleet_key.verifying_key().to_bytes()));
        let genesis = log
            .author(
                &fleet_key,
                Op::Genesis {
                    name: "lekiwi".into(),
                },
                NOW,
            )
            .expect("valid genesis");
        log.insert(genesis, NOW).expect("genesis accepted");
        World { fleet_key, log }
    }

    /// Writes `op` as `author` on the current heads and inserts it.
    pub fn write(&mut self, author: &SigningKey, op: Op) -> Result<SignedEntry, InsertError> {
        self.write_at(author, op, NOW)
    }

    pub fn write_at(
        &mut self,
        author: &SigningKey,
        op: Op,
        at: u64,
    ) -> Result<SignedEntry, InsertError> {
        let signed = self.log.author(author, op, at).expect("valid entry");
        self.log.insert(signed.clone(), NOW + 10_000_000)?;
        Ok(signed)
    }

    /// The fleet key grants `role`.
    pub fn grant(&mut self, who: &SigningKey, role: Role, groups: &[&str], expires: Option<u64>) {
        let fk = self.fleet_key.clone();
        self.write(
            &fk,
            Op::Grant(Grant {
                member: member(who),
                role,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                expires_at: expires,
            }),
        )
        .expect("grant by the fleet key");
    }

    pub fn enroll(&mut self, robot: &SigningKey, name: &str, groups: &[&str]) {
        let fk = self.fleet_key.clone();
        self.write(
            &fk,
            Op::Enroll {
                member: member(robot),
                name: name.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
        )
        .expect("enrol by the fleet key");
    }

    /// An invite by the fleet key and its token.
    pub fn invite(&mut self, groups: &[&str], uses: u32, expires_at: u64) -> JoinToken {
        let secret = [42u8; 32];
        let invite_key = member(&SigningKey::from_bytes(&secret));
        let fk = self.fleet_key.clone();
        let entry = self
            .write(
                &fk,
                Op::Invite(Invite {
                    invite_key,
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    name_prefix: Some("lekiwi".into()),
                    expires_at,
                    uses,
                }),
            )
            .expect("invite by the fleet key");
        JoinToken {
            invite: entry.bytes().to_vec(),
            secret,
            bootstrap: vec![],
        }
    }

    /// `robot` joins with `token` under `name`.
    pub fn join(
        &mut self,
        robot: &SigningKey,
        token: &JoinToken,
        name: &str,
        at: u64,
    ) -> Result<SignedEntry, InsertError> {
        let parsed = JoinToken::parse(&token.to_text()).expect("a whole token");
        let op = Op::Join(Join {
            invite: parsed.entry.hash(),
            name: name.into(),
            proof: parsed.proof_for(&member(robot)),
        });
        self.write_at(robot, op, at)
    }
}

pub fn digest(n: u8) -> String {
    format!("127.0.0.1:5000/app@sha256:{}", hex::encode([n; 32]))
}

pub fn release(group: &str, seq: u64, version: &str) -> Op {
    let mut spec = DeployRequest::new(digest(seq as u8), 8080);
    spec.name = Some("app".into());
    Op::Release(Release {
        group: group.into(),
        seq,
        version: version.into(),
        spec,
        health: HealthCheck {
            path: Some("/healthz".into()),
            timeout_secs: 30,
        },
    })
}

/// A release with a volume, a device and `volume_exclusive` (it travels as `ReleaseV2`).
pub fn release_with_attachments(group: &str, seq: u64, version: &str) -> Op {
    let Op::Release(mut r) = release(group, seq, version) else {
        unreachable!("release() makes a release")
    };
    r.spec.volumes = vec![peercompute_tunnel_proto::VolumeMount {
        name: "data".into(),
        path: "/var/lib/app".into(),
        size_bytes: Some(1 << 30),
    }];
    r.spec.devices = vec!["arm".into()];
    r.spec.volume_exclusive = true;
    Op::Release(r)
}

pub fn rollback(group: &str, seq: u64, to: Option<&str>) -> Op {
    Op::Rollback(Rollback {
        group: group.into(),
        seq,
        to_version: to.map(str::to_owned),
    })
}

/// Signs an arbitrary entry with any key: what an attacker with a raw key can make.
pub fn forge(log: &FleetLog, key: &SigningKey, op: Op, at: u64) -> SignedEntry {
    let entry = Entry {
        fleet: log.fleet(),
        parents: log.heads(),
        clock: log.next_clock(),
        author: member(key),
        at,
        op,
    };
    SignedEntry::sign(entry, key).expect("a well-formed entry")
}

// ---------------------------------------------------------------------------------------------
// Helpers of the codec, property, store and fuzz-corpus tests.

/// The receiver's clock [`World::write_at`] inserts with: late enough for every entry here.
pub const LATER: u64 = NOW + 10_000_000;

/// The wire form of `body` (the postcard bytes of an entry, canonical or not) signed by `key`,
/// written from the format in `codec.rs` (`1 | body | Ed25519 over the domain and body`):
/// what someone holding a key can send without going through `SignedEntry::sign`'s checks.
pub fn sign_raw(key: &SigningKey, body: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let mut message = b"peercompute-fleet/1 entry\0".to_vec();
    message.extend_from_slice(body);
    let mut wire = vec![1];
    wire.extend_from_slice(body);
    wire.extend_from_slice(&key.sign(&message).to_bytes());
    wire
}

/// `op` signed by `author` on the current heads of `w` without inserting it (a genesis on an
/// empty log of the same fleet, the only place one may stand).
pub fn author(w: &World, author: &SigningKey, op: Op) -> SignedEntry {
    let log = match op {
        Op::Genesis { .. } => FleetLog::new(w.log.fleet()),
        _ => w.log.clone(),
    };
    log.author(author, op, NOW).expect("a well-formed entry")
}

/// One op of every variant (checked against `op_name` of `fuzz/src/lib.rs` by the codec
/// tests) with an author that may write it; every field that can be set is set. Writes an
/// invite into `w` (the join's proof names it).
pub fn every_op(w: &mut World) -> Vec<(SigningKey, Op)> {
    let fk = w.fleet_key.clone();
    let robot = key(20);
    let token = w.invite(&["production", "staging"], 3, NOW + 3600);
    let parsed = JoinToken::parse(&token.to_text()).expect("a whole token");
    let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut spec = DeployRequest::new(digest(9), 8080);
    spec.name = Some("app".into());
    spec.env = vec![peercompute_tunnel_proto::EnvVar {
        key: "MODE".into(),
        value: "fast".into(),
    }];
    spec.cpu_millis = Some(500);
    spec.memory_bytes = Some(256 << 20);
    let ops = vec![
        Op::Genesis {
            name: "lekiwi".into(),
        },
        Op::Invite(parsed.invite.clone()),
        Op::Enroll {
            member: member(&key(21)),
            name: "lekiwi-2".into(),
            groups: groups(&["production"]),
        },
        Op::SetGroups {
            member: member(&key(21)),
            groups: groups(&["production", "staging"]),
        },
        Op::Grant(Grant {
            member: member(&key(11)),
            role: Role::Developer,
            groups: groups(&["staging"]),
            expires_at: Some(NOW + 86_400),
        }),
        Op::Ungrant {
            member: member(&key(11)),
        },
        Op::Release(Release {
            group: "production".into(),
            seq: 3,
            version: "v3".into(),
            spec,
            health: HealthCheck {
                path: Some("/healthz".into()),
                timeout_secs: 30,
            },
        }),
        rollback("production", 4, Some("v1")),
        Op::estop(groups(&["production"]), "arm hit the wall"),
        Op::Resume { groups: vec![] },
        Op::Revoke {
            member: member(&key(21)),
            reason: "stolen".into(),
        },
        Op::RotateMember(RotationProof::new(&key(11), &key(12))),
        Op::RotateRoot {
            new: member(&key(30)),
            possession: root_possession(&key(30), w.log.fleet()),
        },
    ];
    let join = Op::Join(Join {
        invite: parsed.entry.hash(),
        name: "lekiwi-1".into(),
        proof: parsed.proof_for(&member(&robot)),
    });
    let mut out: Vec<(SigningKey, Op)> = ops.into_iter().map(|op| (fk.clone(), op)).collect();
    out.push((robot, join));
    out
}

/// A status report of robot `key(20)`, signed, naming `release` as healthy.
pub fn signed_status(
    fleet: FleetId,
    release: peercompute_fleet::EntryHash,
) -> peercompute_fleet::SignedStatus {
    use peercompute_fleet::{AppStatus, GroupName, Outcome, Phase, SignedStatus, StatusReport};
    let robot = key(20);
    let report = StatusReport {
        fleet,
        robot: member(&robot),
        at_ms: NOW * 1000,
        agent: "peercompute/0.1".into(),
        uptime_secs: 3600,
        log_len: 2,
        apps: vec![AppStatus {
            group: "production".into(),
            release,
            version: "v3".into(),
            phase: Phase::Healthy,
            serving: Some("v3".into()),
            url: Some("https://app-lekiwi-1.example.org".into()),
            apply_ms: Some(1200),
            reason: None,
            changed_at_ms: NOW * 1000,
        }],
        cpu_permille: 120,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        disk_free_bytes: 10 << 30,
        history: vec![Outcome {
            group: "production".into(),
            release,
            version: "v3".into(),
            phase: Phase::Healthy,
            apply_ms: Some(1200),
            at_ms: NOW * 1000,
        }],
        group_names: vec![GroupName {
            group: "production".into(),
            name: "app".into(),
            url: Some("https://app.example.org".into()),
            refused: None,
        }],
    };
    SignedStatus::sign(report, &robot)
}

/// One message of every kind, in variant order, carrying `entries` (at least one) and a
/// status naming the last of them.
pub fn every_message(
    fleet: FleetId,
    entries: &[&SignedEntry],
) -> Vec<peercompute_fleet::FleetMessage> {
    use peercompute_fleet::{FleetMessage, PushResult};
    let (first, last) = (entries[0].hash(), entries[entries.len() - 1].hash());
    let status = signed_status(fleet, last);
    let bytes: Vec<Vec<u8>> = entries.iter().map(|e| e.bytes().to_vec()).collect();
    vec![
        FleetMessage::Push {
            fleet,
            entries: bytes.clone(),
        },
        FleetMessage::Ack {
            results: vec![
                PushResult::Stored(first),
                PushResult::Duplicate(last),
                PushResult::Refused {
                    reason: "no".into(),
                },
            ],
        },
        FleetMessage::Pull {
            fleet,
            heads: vec![first],
        },
        FleetMessage::Entries {
            entries: bytes,
            more: true,
        },
        FleetMessage::StatusRequest { fleet },
        FleetMessage::Status(status.clone()),
        FleetMessage::Error {
            message: "unknown fleet".into(),
        },
        FleetMessage::Statuses {
            statuses: vec![status],
        },
        FleetMessage::LogsRequest {
            fleet,
            query: peercompute_fleet::LogsQuery {
                group: "production".into(),
                app: Some("web".into()),
                since_secs: Some(600),
                tail: Some(50),
                grep: Some("GET".into()),
            },
        },
        FleetMessage::Logs {
            lines: vec!["GET / 200".into(), "GET /healthz 200".into()],
            truncated: true,
        },
    ]
}

/// Where the op starts in an entry's postcard body: after fleet, parents, clock, author, at.
pub fn op_offset(entry: &Entry) -> usize {
    let head = (
        entry.fleet,
        entry.parents.clone(),
        entry.clock,
        entry.author,
        entry.at,
    );
    postcard::to_allocvec(&head)
        .expect("the head serializes")
        .len()
}

/// The body of `signed` (a release without attachments, so op 7) rewritten as a `ReleaseV2`
/// (op 12) whose volumes, devices and `volume_exclusive` are empty: the same release in a
/// second spelling, which the codec must refuse as not canonical.
pub fn as_empty_release_v2(signed: &SignedEntry) -> Vec<u8> {
    let Op::Release(release) = &signed.entry().op else {
        panic!("not a release")
    };
    let body = &signed.bytes()[1..signed.bytes().len() - 64];
    let op = op_offset(signed.entry());
    assert_eq!(body[op], 7, "a release without attachments travels as op 7");
    let health = postcard::to_allocvec(&release.health).expect("health serializes");
    let spec_end = body.len() - health.len();
    [
        &body[..op],
        &[12],
        &body[op + 1..spec_end],
        &[0, 0, 0],
        &health,
    ]
    .concat()
}

/// The refusal `r` must be.
pub fn refusal(r: Result<impl std::fmt::Debug, InsertError>) -> peercompute_fleet::Refusal {
    match r {
        Err(InsertError::Refused { refusal, .. }) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Inserts `entries` in order into a copy of `base`, each one required to go in.
pub fn insert_all(base: &FleetLog, entries: &[&SignedEntry]) -> FleetLog {
    let mut log = base.clone();
    for e in entries {
        log.insert((*e).clone(), LATER).expect("accepted");
    }
    log
}
