//! The postcard form of [`Op`]. Postcard writes struct fields by position and has no notion
//! of an absent field, so the fleet never encodes a [`DeployRequest`] directly: its fields
//! that JSON skips when empty would vanish on encode and decode would read the next field
//! (`health`) in their place. [`OpWire`] spells the wire out instead:
//!
//! ```text
//!  Op variants 0..=11 as they always were; Release (7) carries SpecV1:
//!    image | name | port | env | cpu_millis | memory_bytes
//!  ReleaseV2 (12) carries SpecV2 = SpecV1 | volumes | devices | volume_exclusive
//!  EStopV2 (13): groups | reason | everything
//!  RotateMember (14): old | new | vouch | possession
//!  RotateRoot (15): new | possession
//! ```
//!
//! An e-stop without `everything` is written as `EStop` (9) with the bytes it always had; one
//! with it as `EStopV2`, which older robots refuse rather than take for a stop of the fleet's
//! apps only. An `EStopV2` whose `everything` is false decodes but re-encodes as `EStop`, so
//! the codec's canonical-form check refuses it, as for releases.
//!
//! A release without volumes, devices or `volume_exclusive` is written as `Release` with the
//! bytes it always had (old robots keep reading it, every existing hash stays); any other is
//! written as `ReleaseV2`, which robots older than volumes refuse rather than run the app
//! without its data or hardware. In memory both are [`Op::Release`]; a `ReleaseV2` whose
//! extras are empty decodes, but re-encodes as `Release`, so the codec's canonical-form check
//! refuses it (one release, one encoding, one hash).

use peercompute_tunnel_proto::{DeployRequest, EnvVar, VolumeMount};
use serde::{Deserialize, Serialize};

use crate::entry::{Grant, HealthCheck, Invite, Join, Op, Release, Rollback};
use crate::ids::MemberKey;
use crate::rotation::RotationProof;
use crate::sig::Sig;

/// [`Op`] as postcard writes it: the variants in wire order (never reorder, only append).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) enum OpWire {
    Genesis {
        name: String,
    },
    Invite(Invite),
    Join(Join),
    Enroll {
        member: MemberKey,
        name: String,
        groups: Vec<String>,
    },
    SetGroups {
        member: MemberKey,
        groups: Vec<String>,
    },
    Grant(Grant),
    Ungrant {
        member: MemberKey,
    },
    Release(ReleaseWire<SpecV1>),
    Rollback(Rollback),
    EStop {
        groups: Vec<String>,
        reason: String,
    },
    Resume {
        groups: Vec<String>,
    },
    Revoke {
        member: MemberKey,
        reason: String,
    },
    ReleaseV2(ReleaseWire<SpecV2>),
    EStopV2 {
        groups: Vec<String>,
        reason: String,
        everything: bool,
    },
    RotateMember(RotationProof),
    RotateRoot {
        new: MemberKey,
        possession: Sig,
    },
}

/// [`Release`] with its spec in a fixed wire form.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct ReleaseWire<S> {
    group: String,
    seq: u64,
    version: String,
    spec: S,
    health: HealthCheck,
}

/// The spec of a `Release` (op 7): a deploy request's fields up to `memory_bytes`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SpecV1 {
    image: String,
    name: Option<String>,
    port: u16,
    env: Vec<EnvVar>,
    cpu_millis: Option<u32>,
    memory_bytes: Option<u64>,
}

/// The spec of a `ReleaseV2` (op 12): [`SpecV1`] and the attachments.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SpecV2 {
    base: SpecV1,
    volumes: Vec<VolumeMountWire>,
    devices: Vec<String>,
    volume_exclusive: bool,
}

/// A volume mount with every field written (JSON's `VolumeMount` may skip some).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct VolumeMountWire {
    name: String,
    path: String,
    size_bytes: Option<u64>,
}

impl From<Op> for OpWire {
    fn from(op: Op) -> Self {
        match op {
            Op::Genesis { name } => OpWire::Genesis { name },
            Op::Invite(invite) => OpWire::Invite(invite),
            Op::Join(join) => OpWire::Join(join),
            Op::Enroll {
                member,
                name,
                groups,
            } => OpWire::Enroll {
                member,
                name,
                groups,
            },
            Op::SetGroups { member, groups } => OpWire::SetGroups { member, groups },
            Op::Grant(grant) => OpWire::Grant(grant),
            Op::Ungrant { member } => OpWire::Ungrant { member },
            Op::Release(release) => release_to_wire(release),
            Op::Rollback(rollback) => OpWire::Rollback(rollback),
            Op::EStop {
                groups,
                reason,
                everything: false,
            } => OpWire::EStop { groups, reason },
            Op::EStop {
                groups,
                reason,
                everything: true,
            } => OpWire::EStopV2 {
                groups,
                reason,
                everything: true,
            },
            Op::Resume { groups } => OpWire::Resume { groups },
            Op::Revoke { member, reason } => OpWire::Revoke { member, reason },
            Op::RotateMember(proof) => OpWire::RotateMember(proof),
            Op::RotateRoot { new, possession } => OpWire::RotateRoot { new, possession },
        }
    }
}

impl From<OpWire> for Op {
    fn from(wire: OpWire) -> Self {
        match wire {
            OpWire::Genesis { name } => Op::Genesis { name },
            OpWire::Invite(invite) => Op::Invite(invite),
            OpWire::Join(join) => Op::Join(join),
            OpWire::Enroll {
                member,
                name,
                groups,
            } => Op::Enroll {
                member,
                name,
                groups,
            },
            OpWire::SetGroups { member, groups } => Op::SetGroups { member, groups },
            OpWire::Grant(grant) => Op::Grant(grant),
            OpWire::Ungrant { member } => Op::Ungrant { member },
            OpWire::Release(release) => Op::Release(release.map_spec(SpecV1::into_request)),
            OpWire::Rollback(rollback) => Op::Rollback(rollback),
            OpWire::EStop { groups, reason } => Op::EStop {
                groups,
                reason,
                everything: false,
            },
            OpWire::EStopV2 {
                groups,
                reason,
                everything,
            } => Op::EStop {
                groups,
                reason,
                everything,
            },
            OpWire::Resume { groups } => Op::Resume { groups },
            OpWire::Revoke { member, reason } => Op::Revoke { member, reason },
            OpWire::RotateMember(proof) => Op::RotateMember(proof),
            OpWire::RotateRoot { new, possession } => Op::RotateRoot { new, possession },
            OpWire::ReleaseV2(release) => Op::Release(release.map_spec(SpecV2::into_request)),
        }
    }
}

/// `Release` when the spec has no attachments (today's bytes), else `ReleaseV2`.
fn release_to_wire(release: Release) -> OpWire {
    let Release {
        group,
        seq,
        version,
        spec,
        health,
    } = release;
    let DeployRequest {
        image,
        name,
        port,
        env,
        cpu_millis,
        memory_bytes,
        volumes,
        devices,
        volume_exclusive,
    } = spec;
    let base = SpecV1 {
        image,
        name,
        port,
        env,
        cpu_millis,
        memory_bytes,
    };
    if volumes.is_empty() && devices.is_empty() && !volume_exclusive {
        return OpWire::Release(ReleaseWire {
            group,
            seq,
            version,
            spec: base,
            health,
        });
    }
    let volumes = volumes
        .into_iter()
        .map(|v| VolumeMountWire {
            name: v.name,
            path: v.path,
            size_bytes: v.size_bytes,
        })
        .collect();
    OpWire::ReleaseV2(ReleaseWire {
        group,
        seq,
        version,
        spec: SpecV2 {
            base,
            volumes,
            devices,
            volume_exclusive,
        },
        health,
    })
}

impl<S> ReleaseWire<S> {
    fn map_spec(self, into_request: impl FnOnce(S) -> DeployRequest) -> Release {
        Release {
            group: self.group,
            seq: self.seq,
            version: self.version,
            spec: into_request(self.spec),
            health: self.health,
        }
    }
}

impl SpecV1 {
    fn into_request(self) -> DeployRequest {
        DeployRequest {
            name: self.name,
            env: self.env,
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            ..DeployRequest::new(self.image, self.port)
        }
    }
}

impl SpecV2 {
    fn into_request(self) -> DeployRequest {
        DeployRequest {
            volumes: self
                .volumes
                .into_iter()
                .map(|v| VolumeMount {
                    name: v.name,
                    path: v.path,
                    size_bytes: v.size_bytes,
                })
                .collect(),
            devices: self.devices,
            volume_exclusive: self.volume_exclusive,
            ..self.base.into_request()
        }
    }
}
