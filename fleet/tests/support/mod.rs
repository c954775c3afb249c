//! A small fleet for the tests: the fleet key, people with roles and robots, and shortcuts to
//! write and insert entries the way peerctl and robots do (and, for attacks, the way they do
//! not).

#![allow(dead_code, unreachable_pub)]

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    Entry, FleetId, FleetLog, Grant, HealthCheck, InsertError, Invite, Join, JoinToken, MemberKey,
    Op, Release, Role, Rollback, SignedEntry,
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
